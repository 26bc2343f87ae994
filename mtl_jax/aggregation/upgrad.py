r"""UPGrad: each task gradient projected onto the dual cone, then averaged.

.. math::

  w = \sum_{i=1}^K \operatorname*{argmin}_{v \ge p_i e_i} v^\top G v,
  \qquad d = J^\top w

Quinton, Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
https://arxiv.org/abs/2406.16232 (Unconflicting Projection of Gradients).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mtl_jax.aggregation import _base, _qp


def upgrad_weights(gramian: jax.Array, pref_vector: Any = None, *,
                   norm_eps: float = 1e-4, reg_eps: float = 1e-4,
                   max_iters: int | None = None) -> jax.Array:
  r"""UPGrad's weights: the sum of the projected, preference-scaled gradients.

  .. math::

    w = \sum_{i=1}^K \operatorname*{argmin}_{v \ge p_i e_i} v^\top A v,
    \qquad A = \frac{G}{\operatorname{tr}(G)} + \epsilon_{reg} I

  where :math:`G = J J^\top` is the Gramian of the :math:`K` task gradients
  :math:`g_i` (the rows of :math:`J`), :math:`p` the preference vector
  (:math:`1/K` by default), :math:`e_i` the i-th basis vector and
  :math:`\epsilon_{reg}` = ``reg_eps``; :math:`G / \operatorname{tr}(G)` is
  replaced by zeros when :math:`\operatorname{tr}(G)` < ``norm_eps``. The
  i-th problem gives the weights of the projection of :math:`p_i g_i` onto
  the dual cone :math:`\{x : J x \ge 0\}` (Proposition 1 of the paper), so
  :math:`d = J^\top w` conflicts with no task: :math:`J d \ge 0`. With the
  ridge this holds up to :math:`J d \ge -\epsilon_{reg} \operatorname{tr}(G)
  \, w`, as in TorchJD; ``reg_eps=0`` makes it exact, on singular Gramians
  too (K > P, duplicate, opposite or zero rows; TorchJD's quadprog needs a
  positive definite matrix there). Both hold when
  :math:`\operatorname{tr}(G)` >= ``norm_eps``, up to rounding: a few
  machine epsilons of :math:`\operatorname{tr}(G) \lVert w \rVert_1`,
  the scale of :math:`J d = G w`. At K > P the exact projection is often
  :math:`d = 0`, and then :math:`J d` is all rounding: measure a conflict
  against that scale, not against :math:`\max_k |(J d)_k|`.

  Solver (written here, :mod:`mtl_jax.aggregation._qp`; no kept JAX library
  solves an inequality-constrained QP, TorchJD calls quadprog on the host):
  the K problems are vmapped, and each is solved exactly by a few
  primal-dual active-set (Newton) steps and a Lawson-Hanson active-set
  finish, one batched masked :math:`K \times K` Cholesky solve per step, for
  exactly ``max_iters`` steps inside ``jit``. It solves in the Gramian's
  dtype: in float32 a rank-deficient Gramian (for which :math:`A` has a
  condition number up to :math:`1/\epsilon_{reg}`) gives weights to a few
  1e-4 relative (rounding :math:`A` to float32 alone costs 1e-4); TorchJD
  solves in float64.

  Conventions: TorchJD's ``UPGradWeighting`` (with ``QuadprogProjector``),
  including its normalisation and ridge. LibMTL's ``UPGrad`` is the same
  with :math:`p = 1/K` only. The weights carry no gradient (TorchJD runs
  this under ``no_grad``).

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    pref_vector: ``(K,)`` non-negative preference :math:`p`; None gives
      :math:`1/K` (TorchJD's default).
    norm_eps: below this trace, :math:`G` counts as zero (TorchJD: 1e-4).
    reg_eps: ridge added to the normalised Gramian (TorchJD: 1e-4).
    max_iters: the fixed number of solver steps; None gives K + 10, which
      solved every tested Gramian with K up to 40 with a margin.

  Returns:
    ``(K,)`` weights :math:`w`, >= :math:`p` entrywise.

  Example:
    >>> upgrad_weights(jnp.array([[18., -22.], [-22., 38.]]))
    Array([1.1109, 0.7894], dtype=float32)

  References:
    Quinton, Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
    https://arxiv.org/abs/2406.16232.
  """
  _base.check_gramian(gramian, None, "upgrad_weights")
  num_tasks = gramian.shape[0]
  _base.check_pref_vector(pref_vector, num_tasks, "upgrad_weights")
  gramian = jax.lax.stop_gradient(gramian)
  dtype = _base.float_dtype(gramian)
  pref = jax.lax.stop_gradient(_base.pref_or_mean(pref_vector, num_tasks,
                                                  dtype))
  matrix = _qp.normalize_regularize(gramian, norm_eps, reg_eps)
  newton_steps, active_set_steps = _qp.split_budget(max_iters, num_tasks)
  projected = _qp.project_to_dual_cone(matrix, jnp.diag(pref),
                                       newton_steps=newton_steps,
                                       active_set_steps=active_set_steps)
  return jnp.sum(projected, axis=0)


def upgrad(pref_vector: Any = None, norm_eps: float = 1e-4,
           reg_eps: float = 1e-4,
           max_iters: int | None = None) -> _base.Aggregator:
  """UPGrad as an :class:`~mtl_jax.aggregation.Aggregator`.

  Args:
    pref_vector: see :func:`upgrad_weights`; its length is checked at
      ``init``.
    norm_eps: see :func:`upgrad_weights`.
    reg_eps: see :func:`upgrad_weights`.
    max_iters: see :func:`upgrad_weights`.

  Returns:
    An ``Aggregator`` with no parameters and a state that only records K.

  Example:
    >>> method = upgrad()
    >>> params, state = method.init(2)
    >>> out = method.apply(params, state, jnp.array([[18., -22.], [-22., 38.]]),
    ...                    losses=jnp.array([1., 1.]))
    >>> out.weights  # upgrad_weights of the Gramian
    Array([1.1109, 0.7894], dtype=float32)
  """
  _qp.check_projection_hparams(pref_vector, norm_eps, reg_eps, max_iters,
                               "upgrad")

  def check_init(num_tasks: int) -> None:
    _base.check_pref_vector(pref_vector, num_tasks, "upgrad")

  return _base.gramian_aggregator(
      lambda state, g: (upgrad_weights(g, pref_vector, norm_eps=norm_eps,
                                       reg_eps=reg_eps, max_iters=max_iters),
                        state),
      _base.stateless, "upgrad", check_init=check_init)

