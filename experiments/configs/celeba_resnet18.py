r"""CelebA: 40 binary attributes, ResNet-18 trunk with one linear head each.

Command (TFDS celeb_a prepared as array_record in /data/tfds, see
docs/datasets.md):

  python -m experiments.train --config experiments/configs/celeba_resnet18.py \
      --config.data.data_dir=/data/tfds --config.method.name=uw_so \
      --workdir runs/celeba_uw_so

Protocol (REFERENCE.md section 2): Adam, weight decay 1e-5, batch 512, 100
epochs of 162,770 images at 64x64, learning rate 1e-3 halved every 30 epochs
(the paper tunes it per method), 3 seeds; metrics on the test split: mean
error and mean F1 over the 40 attributes. No single-task baselines by default
(40 extra runs): ``compare`` reports the metrics without Delta_m.

UW-SO's T: BCE losses are 0.05 to 0.7, 1/L about 1.5 to 20, so T = 5 keeps
the softmax from saturating (not tuned).

Runtime: 31,800 steps; a few hours per run on one GPU (bfloat16 recommended:
``--config.train.compute_dtype=bfloat16``). Expected result: mean error near
0.09 for every method; the paper finds the differences between methods small
on CelebA. Not measured here.
"""
from experiments.configs import default


def get_config(arg: str = ""):
  """CelebA ResNet-18 config (``arg="smoke"``: a tiny ResNet, two steps)."""
  config = default.get_config()
  config.name = "celeba_resnet18"
  config.data.name = "celeba"
  config.data.data_dir = ""             # --config.data.data_dir=/data/tfds
  config.data.batch_size = 512
  config.data.eval_batch_size = 500
  config.data.num_train = 162770
  config.data.cache_eval = False
  config.data.worker_count = 4          # image decoding and resizing
  config.model.name = "resnet18"
  config.model.width = 64
  config.model.depth_scale, config.model.depth_offset = 1.0, 0.0
  config.method.hparams.uw_so.temperature = 5.0
  config.optim.learning_rate = 1e-3
  config.optim.decay_every_epochs = 30.0
  config.train.num_steps = 0
  config.train.num_epochs = 100.0
  config.train.eval_every = 3180        # every 10 epochs
  config.train.log_every = 100
  config.train.checkpoint_every = 3180
  config.compare.seeds = 3
  config.compare.scalarization_step = 0.0
  config.compare.baselines = "none"
  if arg == "smoke":
    default.smoke(config)
    config.data.batch_size = config.data.eval_batch_size = 2
    config.data.worker_count = 0
    config.model.width = 4
    config.train.checkpoint_every = 0
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'smoke'.")
  return config
