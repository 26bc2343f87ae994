r"""Digit strips: the main benchmark, four tasks of three kinds on real digits.

Each example is a strip of three real handwritten digits from scikit-learn's
bundled set (left l, centre c, right r; 8x24; split-disjoint pools), read
from a TFDS array_record copy generated once (mtl_jax.data.digit_attributes).
The tasks:

* ``centre``: c's class, 10-way softmax CE, ``centre/accuracy``;
* ``product``: l * c (0..81) as a regression, MSE, ``product/mae`` and
  ``product/rmse`` (lower is better); the head starts at the mean, 20.25;
* ``left_even``: l even, BCE, ``left_even/accuracy``;
* ``left_smaller``: l < c, BCE, ``left_smaller/accuracy``.

Every task needs the identities of l and c, so the tasks share what they
learn; the product's MSE starts about 600 times above the BCEs (421 vs 0.7),
so equal weighting lets it dominate the shared trunk and the weighting
matters. The comparison checks both (experiments.evidence): every task is
learnt well above the constant predictor, some multi-task rows beat the
single-task baselines, the methods separate, and the scales differ by > 100x.

How the task set was chosen (test accuracy / MAE, 1-2 seeds, EW vs alone):
* the sum l + c + r in place of the product: learnt by every method, but its
  MSE starts only ~33x above the BCEs;
* the number 10 l + r: 1400x, but nothing else needs r, so EW starves
  ``centre`` (0.30 against 0.97 alone);
* the XOR l + r odd: stays at its trivial accuracy in some seeds.

Command (the main job: the whole protocol, about 10 minutes on 2 CPU cores):

  python -m experiments.compare
  python -m experiments.train --config experiments/configs/digit_strips.py \
      --config.method.name=uw_so --workdir runs/digit_strips_uw_so

Runtime: 6.1 min for the main job from a fresh clone on a quiet 2-core CPU
(install excluded, 24 s; 162 runs; 7.7 min for 156 runs under load). A run is 1000 steps of batch 64 through a
128x128 MLP: 2-6 s in-process once compiled, gradient-space methods 1.5-3x.
Expected result: docs/results/digit_strips/results.md (all four checks pass;
FAMO, CAGrad and Nash-MTL lowest Delta_m, then Aligned-MTL and uw_so_norm;
MGDA highest).
"""
from experiments.configs import default

# UW-SO's T, chosen on validation by `python -m experiments.temperature_sweep
# --config experiments/configs/digit_strips.py` (1 seed, learning rate 1e-2,
# T in 1, 2, 5, 10, 20, 50, 100, 1000): validation Delta_m +17.6, +8.0,
# +11.2, +9.4, +15.5, +7.8, +16.4, +11.3 %. The curve is noisy (T = 20 to
# 1000 give near-equal weights, so their spread is seed noise); T = 50 is
# the protocol's pick, not a claim that it is the best T. The main job's
# results use it. The later 3-seed sweep at the main job's learning rates
# (docs/results/digit_strips/temperature_sweep.md) picks T = 2 on
# validation; its test Delta_m is within noise of T = 50's in the paired
# test, and at T = 2 one task takes all the weight at some step.
TEMPERATURE = 50.0


def get_config(arg: str = ""):
  """The digit-strips config (``arg="smoke"``: tiny data, two steps)."""
  config = default.get_config()
  config.name = "digit_strips"
  config.data.name = "digit_attributes"   # the same strips, other tasks
  config.data.tasks = ("centre", "product", "left_even", "left_smaller")
  config.data.batch_size = 64
  config.data.eval_batch_size = 500
  config.data.num_train = 8000
  config.data.num_validation = 1000
  config.data.num_test = 1000
  config.model.name = "digit_attribute_net"
  config.model.hidden = (128, 128)
  config.model.widths = ()
  config.model.start_at_mean = True     # regression heads start at their means
  config.model.depth_scale, config.model.depth_offset = 1.0, 0.0  # no depth task
  config.method.hparams.uw_so.temperature = TEMPERATURE
  # The default methods of both families, and UW-SO's automatic-temperature
  # variants (evaluated against UW-SO tuned on validation).
  config.compare.methods += ",uw_so_norm,uw_so_rel,uw_so_entropy"
  # Vmapped lanes pay for this MLP on a 2-core CPU (1.2-1.7x for 4 lanes;
  # docs/experiments.md, "Vmapped lanes").
  config.scalarization.lanes = 4
  config.compare.paired += ",uw_so_norm:uw_so,uw_so_norm:ew"
  # The temperature sweep's rows besides the T grid (the UW-SO issue's
  # evaluation): the automatic variants, UW-O and EW.
  config.sweep.variants = default.VARIANTS
  config.sweep.temperatures = "1,2,5,10,20,50,100,1000"
  config.sweep.seeds = 3
  config.optim.learning_rate = 1e-2
  config.optim.decay_every_epochs = 4.0
  config.train.num_steps = 1000
  config.train.eval_every = 250
  config.train.log_every = 50
  config.compare.seeds = 3
  # The full protocol by default: each row's learning rate chosen on
  # validation (1 seed per rate), then 3 seeds at it. A first search over
  # 1e-2, 3e-3, 1e-3 picked 1e-2 for most rows, the top of that grid, so the
  # grid reaches up to 3e-2. The reduced protocol reuses a committed search:
  # --config.protocol.lr_search=False --config.protocol.learning_rates=\
  #   docs/results/digit_strips/learning_rates.json
  config.protocol.lr_search = True
  config.protocol.lr_grid = "3e-2,1e-2,3e-3,1e-3"
  config.compare.scalarization_step = 0.2   # 4 tasks: a simplex grid
  config.compare.baselines = "single_task"
  if arg == "smoke":
    default.smoke(config)
    config.data.num_train, config.data.num_validation = 16, 8
    config.data.num_test = 8
    config.model.hidden = (8,)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'smoke'.")
  return config
