r"""NYUv2 with MTAN (SegNet plus task-specific attention), otherwise as nyuv2_segnet.

Command:

  python -m experiments.train --config experiments/configs/nyuv2_mtan.py \
      --config.data.root=/data/nyuv2 --config.method.name=uw_so \
      --config.method.hparams.uw_so.temperature=2 --workdir runs/nyuv2_mtan_uw_so

Runtime: a few hours per run on one GPU (200 epochs, batch 8, 288x384).
Expected result: published SegNet-MTAN Delta_m (Nash-MTL / FAMO papers):
LS (EW) 5.59, UW 4.05, DWA 3.57, RLW 7.78 percent against the single-task
SegNet; LibMTL's reruns differ by several points (UW -0.09, EW 2.35).
"""
from experiments.configs import nyuv2_segnet


def get_config(arg: str = ""):
  """NYUv2 MTAN config (``arg="smoke"``: a tiny MTAN, two steps)."""
  config = nyuv2_segnet.get_config()
  config.name = "nyuv2_mtan"
  config.model.name = "mtan"
  if arg == "smoke":
    nyuv2_segnet.smoke(config)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; use '' or 'smoke'.")
  return config
