"""One optimiser for the model and the method's parameters, partitioned.

The param tree is ``{"model": ..., "method": ...}``. :func:`make_optimizer`
gives each half its own optax transformation through ``optax.partition``, so
that the method's parameters (UW's log-variances, IMTL-L's log-scales) get
their own learning rate and, by default, no weight decay: decaying a
log-variance towards 0 pulls every task weight towards a fixed value, which
is a regulariser on the method, not on the network.
"""
from __future__ import annotations

from typing import Any

import jax
import optax

ScalarOrSchedule = float | optax.Schedule

MODEL = "model"
METHOD = "method"


def param_labels(params: Any) -> Any:
  """Labels every leaf with its top-level key: ``"model"`` or ``"method"``.

  Raises:
    ValueError: when the top-level keys are not ``{"model", "method"}``.
  """
  keys = set(params)
  if keys != {MODEL, METHOD}:
    raise ValueError(
        f"the param tree must have exactly the top-level keys {{'model', "
        f"'method'}}, got {sorted(keys)}; build it with "
        "mtl_jax.train.create_train_state.")
  return {key: jax.tree.map(lambda _, k=key: k, params[key]) for key in keys}


def _adam(learning_rate: ScalarOrSchedule,
          weight_decay: float) -> optax.GradientTransformation:
  if weight_decay:
    return optax.adamw(learning_rate, weight_decay=weight_decay)
  return optax.adam(learning_rate)


def make_optimizer(model: optax.GradientTransformation | ScalarOrSchedule,
                   *, method_learning_rate: ScalarOrSchedule,
                   weight_decay: float = 0.0,
                   method_weight_decay: float = 0.0,
                   method_tx: optax.GradientTransformation | None = None,
                   ) -> optax.GradientTransformation:
  """Partitioned optimiser: one transformation per top-level param key.

  Args:
    model: the model's optax transformation, or a learning rate (float or
      schedule) for Adam (AdamW when ``weight_decay`` > 0).
    method_learning_rate: learning rate of the method's parameters.
    weight_decay: decoupled weight decay of the model parameters; only used
      when ``model`` is a learning rate.
    method_weight_decay: decoupled weight decay of the method's
      parameters; 0 (none) by default.
    method_tx: a full transformation for the method's parameters; when
      given, ``method_learning_rate`` and ``method_weight_decay`` are
      ignored.

  Returns:
    An ``optax.GradientTransformation`` for ``{"model": ..., "method": ...}``.

  Example:
    >>> tx = make_optimizer(optax.sgd(0.1), method_learning_rate=1e-2)
  """
  if not isinstance(model, optax.GradientTransformation):
    model = _adam(model, weight_decay)
  elif weight_decay:
    raise ValueError(
        f"weight_decay={weight_decay!r} is only used when `model` is a "
        "learning rate; put the decay in the model transformation instead "
        "(e.g. optax.adamw(lr, weight_decay=...)).")
  if method_weight_decay < 0 or weight_decay < 0:
    raise ValueError(
        f"weight decays must be >= 0, got weight_decay={weight_decay!r}, "
        f"method_weight_decay={method_weight_decay!r}.")
  if method_tx is None:
    method_tx = _adam(method_learning_rate, method_weight_decay)
  return optax.partition({MODEL: model, METHOD: method_tx}, param_labels)
