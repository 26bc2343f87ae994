r"""UW: Uncertainty Weighting with learnable homoscedastic log-variances.

.. math::

  \mathcal{L} = \sum_{k=1}^{K} c_k\, e^{-s_k} L_k + \tfrac{1}{2} s_k,
  \qquad c_k = \begin{cases} 1/2 & \text{regression} \\
                             1 & \text{classification} \end{cases}

Kendall, Gal, Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses
for Scene Geometry and Semantics", CVPR 2018, https://arxiv.org/abs/1705.07115.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import _checks
from mtl_jax.weighting import _base

TASK_TYPES = ("regression", "classification")


def _as_task_types(task_types: Sequence[str]) -> tuple[str, ...]:
  """``task_types`` as a tuple of known types, or a ValueError saying why."""
  if isinstance(task_types, str):
    raise ValueError(
        f"task_types must be a sequence with one entry per task, got the "
        f"string {task_types!r}; write ({task_types!r},) * num_tasks.")
  try:
    task_types = tuple(task_types)
  except TypeError:
    raise ValueError(
        f"task_types must be None or a sequence with one entry per task, each "
        f"one of {TASK_TYPES}, got {task_types!r}.") from None
  unknown = [t for t in task_types if t not in TASK_TYPES]
  if unknown:
    raise ValueError(
        f"unknown task type(s) {unknown}; each entry of task_types must be one "
        f"of {TASK_TYPES}.")
  return task_types


def task_type_factors(task_types: Sequence[str] | None,
                      num_tasks: int) -> np.ndarray:
  """The factor ``c_k`` of each task: 0.5 (regression) or 1 (classification).

  Raises a ValueError for an unknown type or a length that is not
  ``num_tasks``. ``None`` means every task is a regression.
  """
  if task_types is None:
    return np.full((num_tasks,), 0.5)
  task_types = _as_task_types(task_types)
  if len(task_types) != num_tasks:
    raise ValueError(
        f"task_types has {len(task_types)} entries but there are {num_tasks} "
        "tasks; give one type per task.")
  return np.array([0.5 if t == "regression" else 1.0 for t in task_types])


def uncertainty_loss(losses: jax.Array, log_vars: jax.Array,
                     task_types: Sequence[str] | None = None
                     ) -> tuple[jax.Array, jax.Array]:
  r"""Kendall et al.'s uncertainty-weighted total loss.

  .. math::

    \mathcal{L} = \sum_{k=1}^{K} c_k\, e^{-s_k} L_k + \tfrac{1}{2} s_k

  where :math:`s_k = \log \sigma_k^2` is the learnable log-variance of task
  :math:`k` and :math:`c_k` is 1/2 for a regression task (Gaussian
  likelihood, eq. 7 of the paper) and 1 for a classification task (softmax
  with temperature :math:`\sigma^2`, eq. 10). The effective weight of task
  :math:`k` is :math:`w_k = c_k e^{-s_k}`. For a fixed loss the optimum is
  :math:`s_k = \log(2 c_k L_k)`, i.e. :math:`s_k = \log L_k` for regression,
  where :math:`w_k = 1 / (2 L_k)`: proportional to the UW-O weights.

  Conventions differ across public code (LibMTL and MTAN use the regression
  form for every task and initialise :math:`s = -0.5`; TorchJD and the
  Nash-MTL repository use 0). This function follows the paper: the form is
  chosen per task by ``task_types``.

  Args:
    losses: ``(K,)`` per-task losses.
    log_vars: ``(K,)`` log-variances :math:`s_k`, learnable.
    task_types: one of ``"regression"`` / ``"classification"`` per task;
      default all regression.

  Returns:
    ``(total, weights)``: the scalar total and the ``(K,)`` effective weights
    :math:`c_k e^{-s_k}` with no gradient attached.

  Example:
    >>> total, w = uncertainty_loss(jnp.array([1.0, 2.0]), jnp.zeros(2))
    >>> float(total), w
    (1.5, Array([0.5, 0.5], dtype=float32))

  References:
    Kendall, Gal, Cipolla, "Multi-Task Learning Using Uncertainty to Weigh
    Losses for Scene Geometry and Semantics", CVPR 2018,
    https://arxiv.org/abs/1705.07115.
  """
  _base.check_losses_shape(losses, None, "uncertainty_loss")
  if jnp.shape(log_vars) != jnp.shape(losses):
    raise ValueError(
        f"uncertainty_loss: log_vars has shape {jnp.shape(log_vars)} but "
        f"losses has shape {jnp.shape(losses)}; give one log-variance per task.")
  factors = task_type_factors(task_types, jnp.shape(losses)[0])
  dtype = jnp.result_type(losses, log_vars)
  factors = jnp.asarray(factors, dtype)
  precision = jnp.exp(-log_vars.astype(dtype))
  total = jnp.sum(factors * precision * losses + 0.5 * log_vars)
  return total, jax.lax.stop_gradient(factors * precision)


def uw(task_types: Sequence[str] | None = None,
       init_log_var: float = 0.0) -> _base.Weighting:
  """UW as a :class:`~mtl_jax.weighting.Weighting`.

  The learnable parameters are ``{"log_vars": (K,)}``; put them in the param
  tree (e.g. ``params["method"]``) so the optimiser updates them with the
  model.

  Args:
    task_types: see :func:`uncertainty_loss`; its length fixes the number of
      tasks when given.
    init_log_var: initial value of every :math:`s_k`. 0 (the paper, TorchJD)
      by default; LibMTL and MTAN use -0.5.

  Returns:
    A ``Weighting`` whose ``init`` returns ``({"log_vars": ...},
    StatelessState)``.
  """
  if task_types is not None:
    task_types = _as_task_types(task_types)  # validate early
  _checks.number(init_log_var, "init_log_var", "uw",
                 hint="It is the initial log-variance s_k (the paper: 0; "
                 "LibMTL: -0.5).")
  init_log_var = float(init_log_var)

  def init(num_tasks, *, key=None):
    num_tasks = _base.check_num_tasks(num_tasks)
    if task_types is not None:
      task_type_factors(task_types, num_tasks)
    return ({"log_vars": jnp.full((num_tasks,), init_log_var, jnp.float32)},
            _base.stateless(num_tasks, key))

  def apply(params, state, losses):
    _base.check_losses_shape(losses, _base.recorded_num_tasks(state, "uw"),
                             "uw")
    total, weights = uncertainty_loss(losses, params["log_vars"], task_types)
    return _base.WeightedLoss(total, weights, state)

  return _base.Weighting(init, apply)
