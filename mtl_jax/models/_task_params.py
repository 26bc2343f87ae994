"""The default shared/task split of a model, for the gradient-space methods."""
from __future__ import annotations

from typing import Any

import flax.linen as nn


def task_params(model: nn.Module) -> Any:
  """The task-specific parameters of ``model``, as a rule for the train step.

  Every bundled model declares its heads in ``TASK_PARAMS`` (glob patterns
  on module names, e.g. ``("head_*",)``); a wrapper module that holds the
  model in a field (``net``, ``model``, ``module``) is looked through. Pass
  the result as ``JacobianOptions(task_params=...)`` to the train step.

  Raises:
    ValueError: when the model declares none, saying how to give a rule.
  """
  seen = model
  for _ in range(4):
    rule = getattr(type(seen), "TASK_PARAMS", None)
    if rule is not None:
      return rule
    inner = next((getattr(seen, f) for f in ("net", "model", "module")
                  if isinstance(getattr(seen, f, None), nn.Module)), None)
    if inner is None:
      break
    seen = inner
  raise ValueError(
      f"{type(model).__name__} declares no task-specific parameters "
      "(a TASK_PARAMS class attribute). Pass "
      "JacobianOptions(task_params=...) to make_train_step yourself: glob patterns on the head modules' names "
      "(e.g. 'head_*'), or None to treat every parameter as shared.")
