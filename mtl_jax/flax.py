"""Flax linen modules that hold weighting parameters inside a model.

For users who prefer the weighting inside their model rather than next to it
in the param tree (what :mod:`mtl_jax.train` does). The parameters are
ordinary Flax params, so any optax optimiser trains them.

Example::

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, targets):
      losses = ...                      # (K,) per-task losses
      total, weights = UncertaintyWeighting(num_tasks=2)(losses)
      return total, weights
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.weighting.imtl_l import imtl_l_loss
from mtl_jax.weighting.uw import uncertainty_loss

__all__ = ("IMTLLWeighting", "UncertaintyWeighting")


class UncertaintyWeighting(nn.Module):
  r"""Kendall et al.'s uncertainty weighting with ``log_vars`` as a Flax param.

  Computes :func:`mtl_jax.weighting.uncertainty_loss`:
  :math:`\sum_k c_k e^{-s_k} L_k + s_k / 2`, :math:`c_k` = 1/2 (regression)
  or 1 (classification), with :math:`s` = ``self.param("log_vars")``.

  Attributes:
    num_tasks: K.
    task_types: ``"regression"`` / ``"classification"`` per task; default all
      regression.
    init_log_var: initial log-variance; 0 as in the paper and TorchJD,
      LibMTL and MTAN use -0.5.
  """
  num_tasks: int
  task_types: Sequence[str] | None = None
  init_log_var: float = 0.0

  @nn.compact
  def __call__(self, losses: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Returns ``(total, weights)`` for the ``(K,)`` losses."""
    log_vars = self.param("log_vars", nn.initializers.constant(self.init_log_var),
                          (self.num_tasks,), jnp.float32)
    return uncertainty_loss(losses, log_vars, self.task_types)


class IMTLLWeighting(nn.Module):
  r"""IMTL-L with ``log_scales`` as a Flax param: :math:`\sum_k e^{s_k} L_k - s_k`."""
  num_tasks: int
  init_log_scale: float = 0.0

  @nn.compact
  def __call__(self, losses: jax.Array) -> tuple[jax.Array, jax.Array]:
    log_scales = self.param("log_scales",
                            nn.initializers.constant(self.init_log_scale),
                            (self.num_tasks,), jnp.float32)
    return imtl_l_loss(losses, log_scales)
