r"""Digit scenes, full: a wider DigitSceneNet trained 10x longer, 3 seeds.

Command:

  python -m experiments.compare --config experiments/configs/digit_scenes_full.py
  python -m experiments.train --config experiments/configs/digit_scenes_full.py \
      --config.method.name=uw_so --workdir runs/digit_scenes_full_uw_so

Runtime: about 5 minutes per run on a 2-core CPU (3000 steps of batch 32,
widths (16, 32, 64)); the comparison takes a few hours on CPU, minutes on a
GPU. Expected result: lower errors than the quick config on every task, and a
smaller spread between the methods (the paper's finding that longer training
and larger networks reduce the influence of the weighting); not measured here.
"""
from experiments.configs import default


def get_config(arg: str = ""):
  """The full digit-scenes config (``arg="smoke"``: two steps)."""
  config = default.get_config()
  config.name = "digit_scenes_full"
  config.model.widths = (16, 32, 64)
  config.train.num_steps = 3000               # 24 epochs of 4000 scenes
  config.train.eval_every = 250
  config.train.log_every = 50
  config.optim.decay_every_epochs = 8.0       # x0.5 at 1/3 and 2/3 of training
  config.compare.seeds = 3
  config.compare.scalarization_step = 0.2
  if arg == "smoke":
    default.smoke(config)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'smoke'.")
  return config
