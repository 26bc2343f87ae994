r"""Default config: digit scenes, quick. Every other config starts from this one.

Command (one run; `experiments.compare` runs this config for every method):

  python -m experiments.train --config experiments/configs/default.py \
      --config.method.name=uw_so --workdir runs/digit_scenes_uw_so

Runtime: about 20 s per run on a 2-core CPU, after about 10 s of compilation
(the scenes are generated once, in about 10 s, into ~/.cache/mtl_jax).
Expected result: the test metrics of one run; see docs/results/digit_scenes/results.md for
the comparison of every method over 2 seeds that this config produces.

Sections: data, model, method (its name, and every method's hyperparameters
under ``method.hparams.<name>``; only those of ``method.name`` are used),
optim, train, compare (the drivers), sweep.
Override any field from the command line, e.g. ``--config.train.num_steps=600``.
``get_config("smoke")`` (or ``--config path.py:smoke``) shrinks the run to a
tiny model and two steps, for tests.
"""
from ml_collections import config_dict

# Chosen by `python -m experiments.temperature_sweep` on the validation split
# (docs/experiments.md, "Choosing T"): 1/L spans about 0.01 (depth, L1 in cm)
# to a few units (segmentation, normals, count).
DIGIT_SCENES_TEMPERATURE = 10.0


def get_config(arg: str = "") -> config_dict.ConfigDict:
  """The digit-scenes quick config; ``arg="smoke"`` shrinks it for tests."""
  config = config_dict.ConfigDict()
  config.name = "digit_scenes_quick"

  # ---------------------------------------------------------------- data
  config.data = config_dict.ConfigDict()
  config.data.name = "digit_scenes"     # digit_scenes, synthetic, nyuv2, cityscapes, celeba
  config.data.data_dir = config_dict.placeholder(str)  # cache; default ~/.cache/mtl_jax
  config.data.root = config_dict.placeholder(str)      # NYUv2 / Cityscapes .npy folder
  config.data.batch_size = 32           # per process
  config.data.eval_batch_size = 250
  config.data.num_train = 4000          # scenes per split (generated once)
  config.data.num_validation = 500
  config.data.num_test = 500
  config.data.image_size = 32
  config.data.max_digits = 4
  config.data.data_seed = 0
  config.data.augment = False
  config.data.train_split = "train"
  config.data.eval_split = "validation"  # curves during training
  config.data.test_split = "test"        # reported at the end
  config.data.cache_eval = True          # keep the eval splits in memory
  config.data.worker_count = 0           # Grain worker processes
  config.data.read_threads = 0

  # --------------------------------------------------------------- model
  config.model = config_dict.ConfigDict()
  config.model.name = "digit_scene_net"  # digit_scene_net, segnet, mtan, resnet18, mlp
  config.model.widths = (8, 16, 32)      # DigitSceneNet channels per level
  # depth = depth_scale * head + depth_offset: the head starts in the target's
  # units (cm); without it Adam cannot move the depth output from 0 to ~300
  # within a short run (experiments.common.OutputAffine).
  config.model.depth_scale = 100.0
  config.model.depth_offset = 300.0
  # Task-specific parameters for gradient-space methods: "auto" (the model's
  # TASK_PARAMS), "" (all shared) or comma-separated glob patterns.
  config.model.task_params = "auto"

  # -------------------------------------------------------------- method
  # config.method.name picks a method of either family (mtl_jax.names());
  # config.method.hparams.<name> holds the keyword arguments that
  # mtl_jax.get(name, ...) receives, so a driver can switch methods without
  # losing their settings. A method with no entry gets the library's
  # defaults. "auto" is filled in from the run (experiments.common.AUTO):
  # the seed (train.seed), steps_per_epoch (one pass over train), task_types
  # (the dataset's) and weights (1/K each); None takes the library default.
  # Override from the command line, e.g.
  #   --config.method.name=uw_so --config.method.hparams.uw_so.temperature=2
  config.method = config_dict.ConfigDict()
  config.method.name = "ew"
  config.method.jacobian_mode = "params"   # gradient methods: "params" (exact) or "features" (rep_grad)
  # Task gradients per chunk; 0: all at once (one vmapped VJP). On CPU one
  # VJP per task is faster for conv nets (docs/benchmarks.md, 5.0: 2.1x vs
  # 3.3x EW's step on this model); on an accelerator try 0.
  config.method.chunk_size = 1
  h = config.method.hparams = config_dict.ConfigDict()
  # Loss weightings (mtl_jax.weighting).
  h.uw = {"task_types": "auto",           # "auto": the dataset's per-task forms
          "init_log_var": 0.0}            # s_k at step 0 (paper: 0)
  h.uw_o = {"eps": 1e-8}                  # 1 / (L + eps)
  h.uw_so = {"temperature": DIGIT_SCENES_TEMPERATURE, "eps": 1e-8}
  # UW-SO without a temperature grid: T = tau * mean_k 1/L_k (uw_so_rel) or
  # the entropy floor H(w) >= target * log K (uw_so_entropy); tau None: each
  # one's default (K/2; 1); ema: the losses' moving-average decay.
  h.uw_so_rel = {"tau": config_dict.placeholder(float), "eps": 1e-8,
                 "ema": 0.0}
  h.uw_so_norm = {"eps": 1e-8}
  h.uw_so_entropy = {"target": 0.9, "tau": config_dict.placeholder(float),
                     "eps": 1e-8, "ema": 0.0}
  h.dwa = {"temperature": 2.0,            # paper: 2
           "steps_per_epoch": "auto"}     # DWA's epoch: one pass over train
  h.imtl_l = {"init_log_scale": 0.0}
  h.scalarization = {"weights": "auto"}   # K fixed weights; "auto": 1/K each
  h.famo = {"lr": 0.025,                  # FAMO's logit step (TorchJD, LibMTL)
            "weight_decay": 1e-3}         # its coupled L2 on the logits
  h.stch = {"mu": 1.0,                    # smoothing (LibMTL: 1)
            "warmup_epochs": 4,           # LibMTL's nadir warm-up
            "steps_per_epoch": "auto"}    # drop both for TorchJD's stateless form
  h.rlw = {}                              # its key comes from the run's seed
  # Gradient-space methods (mtl_jax.aggregation): the Jacobian path.
  h.cagrad = {"c": 0.4}                   # Nash-MTL repo: 0.4; LibMTL 0.5
  h.fairgrad = {"alpha": 1.0}             # LibMTL: 1.0
  h.nash_mtl = {"max_norm": 1.0}          # ||d|| <= max_norm (TorchJD)
  h.gradvac = {"beta": 0.5, "seed": "auto"}  # paper: 0.5
  h.gradnorm = {"alpha": 1.5}             # LibMTL: 1.5
  h.graddrop = {"leak": 0.0, "seed": "auto"}  # LibMTL: 0
  h.excess_mtl = {"robust_step_size": 1.0,  # TorchJD 1; LibMTL 1e-2
                  "n_warmup_steps": 0}      # TorchJD 0
  h.sdmgrad = {"lamda": 0.3,              # needs batch_size % 3 == 0
               "n_iter": 20}
  h.pcgrad = {"seed": "auto"}
  h.random = {"seed": "auto"}
  h.constant = {"weights": "auto"}

  # --------------------------------------------------------------- optim
  config.optim = config_dict.ConfigDict()
  config.optim.learning_rate = 3e-3      # 1e-3 trains too slowly for 300 steps (EW trials)
  config.optim.weight_decay = 1e-5            # decoupled (AdamW) on the model only
  config.optim.method_learning_rate = 0.0  # UW / IMTL-L params; 0: same as the model
  config.optim.decay_every_epochs = 1.6       # step decay; 0: constant learning rate
  config.optim.decay_factor = 0.5
  # ReduceLROnPlateau on the validation selection score, stepped at each
  # evaluation (experiments.run); 0: off. The QM9 papers: 0.7, 5, 1e-5.
  config.optim.plateau_factor = 0.0
  config.optim.plateau_patience = 5
  config.optim.plateau_rtol = 1e-4            # PyTorch's threshold (relative)
  config.optim.plateau_min_lr = 1e-5

  # --------------------------------------------------------------- train
  config.train = config_dict.ConfigDict()
  config.train.seed = 0
  config.train.num_steps = 300      # > 0 wins over num_epochs
  config.train.num_epochs = 0.0
  config.train.eval_every = 50      # validation curve resolution (steps)
  config.train.log_every = 50       # fetch step metrics from the device
  config.train.checkpoint_every = 0  # > 0: checkpoints and resume
  config.train.max_consecutive_skips = 10  # non-finite steps before stopping
  config.train.compute_dtype = "float32"   # "bfloat16" on accelerators
  config.train.progress = False      # tqdm bar per chunk
  config.train.reuse = True          # skip runs already finished with this config
  # Model selection on validation (experiments.run): "best" tests the
  # parameters of the best validation Delta_m, "last" those of the last step.
  config.train.select = "best"
  config.train.patience = 0          # > 0: stop after N evaluations without a better one

  # -------------------------------------------- compare / sweep drivers
  config.compare = config_dict.ConfigDict()
  # Both families: the loss-based methods (FAMO included), then the
  # gradient-space ones on the Jacobian path.
  config.compare.methods = ("ew,uw,uw_o,uw_so,dwa,rlw,gls,imtl_l,famo,"
                            "mgda,pcgrad,cagrad,imtl_g,nash_mtl,aligned_mtl,"
                            "upgrad")
  config.compare.seeds = 3
  # Paired comparisons of test Delta_m ("scalarization": the grid point
  # chosen on validation).
  config.compare.paired = "uw_so:scalarization,uw_so:uw,uw_so:ew"
  config.compare.seconds_per_run = 0.0  # > 0: the cost estimate printed first
  config.compare.scalarization_step = 0.2   # grid spacing (4 points for 4 tasks); 0: none
  config.compare.baselines = "single_task"  # single_task, published, none
  # The papers' protocol (experiments.protocol): learning rate per row chosen
  # on validation, or read from a committed search (the reduced protocol).
  config.protocol = config_dict.ConfigDict()
  config.protocol.lr_search = False
  config.protocol.lr_grid = "1e-2,5e-3,1e-3,5e-4,1e-4"
  config.protocol.search_seeds = 1
  config.protocol.learning_rates = ""  # JSON of an earlier search; "": optim's
  config.scalarization = config_dict.ConfigDict()  # experiments.scalarization
  config.scalarization.step = 0.1   # the paper's grid: 36 points for 3 tasks, 84 for 4
  config.scalarization.seeds = 1
  config.scalarization.lanes = 1    # weight vectors per vmapped program (GPU/TPU: more)
  config.sweep = config_dict.ConfigDict()  # experiments.temperature_sweep
  config.sweep.temperatures = "0.5,1,2,5,10,20,50"
  config.sweep.seeds = 3
  # The rows besides the T grid: the automatic variants at their defaults,
  # uw_so_rel and uw_so_entropy at their earlier defaults, UW-O and EW
  # (docs/results/uw_so_auto.md; "name:field=value" overrides a
  # config.method.hparams.<name> field for one row).
  config.sweep.variants = VARIANTS

  if arg == "smoke":
    smoke(config)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'smoke'.")
  return config


VARIANTS = ("uw_so_norm,uw_so_rel,uw_so_entropy,uw_so_rel:tau=1,"
            "uw_so_entropy:target=0.5,uw_o,ew")


def smoke(config: config_dict.ConfigDict) -> config_dict.ConfigDict:
  """Shrinks ``config`` in place to a tiny model and two steps (for tests)."""
  config.name += "_smoke"
  config.train.num_steps = 2
  config.train.eval_every = 1
  config.train.log_every = 1
  config.data.batch_size = 4
  config.data.eval_batch_size = 4
  config.compare.seeds = 1
  config.compare.methods = "ew,uw_so"
  config.compare.scalarization_step = 0.0  # no grid (digit scenes: one point)
  config.sweep.temperatures = "1,10"
  config.sweep.seeds = 1
  config.sweep.variants = "uw_so_rel"
  if config.data.name == "digit_scenes":
    config.data.num_train, config.data.num_validation = 16, 8
    config.data.num_test = 8
    config.model.widths = (4, 8)
    config.compare.scalarization_step = 0.25  # one point, (1/4, ..., 1/4)
    config.scalarization.step = 0.2  # four points
  return config
