r"""DualProj: the preference-weighted gradient projected onto the dual cone.

.. math::

  w = \operatorname*{argmin}_{v \ge p} v^\top G v, \qquad d = J^\top w

Lopez-Paz, Ranzato, "Gradient Episodic Memory for Continual Learning",
NeurIPS 2017, https://arxiv.org/abs/1706.08840 (the projection, their
Equation 11); named and studied as an aggregator in Quinton, Rey, "Jacobian
Descent for Multi-Objective Optimization", 2024,
https://arxiv.org/abs/2406.16232.
"""
from __future__ import annotations

from typing import Any

import jax

from mtl_jax.aggregation import _base, _qp


def dualproj_weights(gramian: jax.Array, pref_vector: Any = None, *,
                     norm_eps: float = 1e-4, reg_eps: float = 1e-4,
                     max_iters: int | None = None) -> jax.Array:
  r"""DualProj's weights: :math:`J^\top p` projected onto the dual cone.

  .. math::

    w = \operatorname*{argmin}_{v \ge p} v^\top A v, \qquad
    A = \frac{G}{\operatorname{tr}(G)} + \epsilon_{reg} I

  where :math:`G = J J^\top` is the Gramian of the :math:`K` task gradients
  (the rows of :math:`J`), :math:`p` the preference vector (:math:`1/K` by
  default, so :math:`J^\top p` is the mean gradient) and
  :math:`\epsilon_{reg}` = ``reg_eps``; :math:`G / \operatorname{tr}(G)` is
  replaced by zeros when :math:`\operatorname{tr}(G)` < ``norm_eps``.
  :math:`J^\top w` is the projection of :math:`J^\top p` onto the dual cone
  :math:`\{x : J x \ge 0\}`, the closest direction that conflicts with no
  task. With the ridge, :math:`d = J^\top w` only satisfies
  :math:`J d \ge -\epsilon_{reg} \operatorname{tr}(G) \, w`, as in TorchJD;
  ``reg_eps=0`` makes it exact, on singular Gramians too, up to rounding
  (see :func:`~mtl_jax.aggregation.upgrad.upgrad_weights` for the scale of
  the rounding and the condition on ``norm_eps``).

  Solver (written here, :mod:`mtl_jax.aggregation._qp`, shared with UPGrad;
  no kept JAX library solves an inequality-constrained QP, TorchJD calls
  quadprog on the host): a few primal-dual active-set (Newton) steps and a
  Lawson-Hanson active-set finish, one masked :math:`K \times K` Cholesky
  solve per step, for exactly ``max_iters`` steps inside ``jit``; exact on
  the optimal active set. It solves in the Gramian's dtype (see
  :func:`~mtl_jax.aggregation.upgrad.upgrad_weights` for float32 accuracy);
  TorchJD solves in float64.

  Conventions: TorchJD's ``DualProjWeighting`` (with ``QuadprogProjector``),
  including its normalisation and ridge; LibMTL has no DualProj. GEM
  projects one gradient onto the cone of the memories' gradients. The
  weights carry no gradient (TorchJD runs this under ``no_grad``).

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
    >>> g = jnp.array([[18., -22.], [-22., 38.]])
    >>> dualproj_weights(g)
    Array([0.6109, 0.5   ], dtype=float32)

  References:
    Lopez-Paz, Ranzato, "Gradient Episodic Memory for Continual Learning",
    NeurIPS 2017, https://arxiv.org/abs/1706.08840.
    Quinton, Rey, "Jacobian Descent for Multi-Objective Optimization", 2024,
    https://arxiv.org/abs/2406.16232.
  """
  _base.check_gramian(gramian, None, "dualproj_weights")
  num_tasks = gramian.shape[0]
  _base.check_pref_vector(pref_vector, num_tasks, "dualproj_weights")
  gramian = jax.lax.stop_gradient(gramian)
  dtype = _base.float_dtype(gramian)
  pref = jax.lax.stop_gradient(_base.pref_or_mean(pref_vector, num_tasks,
                                                  dtype))
  matrix = _qp.normalize_regularize(gramian, norm_eps, reg_eps)
  newton_steps, active_set_steps = _qp.split_budget(max_iters, num_tasks)
  return _qp.project_to_dual_cone(matrix, pref, newton_steps=newton_steps,
                                  active_set_steps=active_set_steps)


def dualproj(pref_vector: Any = None, norm_eps: float = 1e-4,
             reg_eps: float = 1e-4,
             max_iters: int | None = None) -> _base.Aggregator:
  """DualProj as an :class:`~mtl_jax.aggregation.Aggregator`.

  Args:
    pref_vector: see :func:`dualproj_weights`; its length is checked at
      ``init``.
    norm_eps: see :func:`dualproj_weights`.
    reg_eps: see :func:`dualproj_weights`.
    max_iters: see :func:`dualproj_weights`.

  Returns:
    An ``Aggregator`` with no parameters and a state that only records K.
  """
  _qp.check_projection_hparams(pref_vector, norm_eps, reg_eps, max_iters,
                               "dualproj")

  def check_init(num_tasks: int) -> None:
    _base.check_pref_vector(pref_vector, num_tasks, "dualproj")

  return _base.gramian_aggregator(
      lambda state, g: (dualproj_weights(g, pref_vector, norm_eps=norm_eps,
                                         reg_eps=reg_eps, max_iters=max_iters),
                        state),
      _base.stateless, "dualproj", check_init=check_init)
