r"""UW-SO on losses measured against their first step: no temperature, no scale.

.. math::

  \ell_k = \frac{\mathrm{sg}(L_k) + \epsilon}{\mathrm{sg}(L_k^{(1)}) + \epsilon},
  \qquad
  v = \mathrm{softmax}\!\left(\frac{2}{\sum_i 1/\ell_i}\cdot\frac{1}{\ell}\right),
  \qquad
  w_k = \frac{v_k / (L_k^{(1)} + \epsilon)}{\sum_j v_j / (L_j^{(1)} + \epsilon)},
  \qquad
  \mathcal{L} = \sum_{k=1}^{K} w_k L_k

UW-SO (Kirchdorfer, Elich, Kutsche, Stuckenschmidt, Schott, Köhler,
"Analytical Uncertainty-Based Loss Weighting in Multi-Task Learning", GCPR
2024, https://arxiv.org/abs/2408.07985) applied to each task's loss divided
by its value at the first step :math:`L_k^{(1)}`, with the relative
temperature of :func:`~mtl_jax.weighting.uw_so_rel_weights` at its default
:math:`\tau = K/2`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _checks
from mtl_jax.weighting import _base
from mtl_jax.weighting.uw_so_rel import check_tau, uw_so_rel_weights


class InitialLossState(NamedTuple):
  """State of :func:`uw_so_norm`: the first step's losses.

  ``initial`` holds zeros until the first ``apply``, which stores that step's
  stop-gradient losses there for the rest of training; ``count`` is the
  number of steps seen. Both are part of the train state, so a run resumed
  from a checkpoint keeps its first step's losses.
  """
  initial: jax.Array  # (K,)
  count: jax.Array    # () int32


def uw_so_norm_weights(losses: jax.Array, initial: jax.Array,
                       tau: float | None = None,
                       eps: float = 1e-8) -> jax.Array:
  r"""UW-SO's relative-temperature softmax of the losses relative to their start.

  .. math::

    \ell_k = \frac{\mathrm{sg}(L_k) + \epsilon}{\mathrm{sg}(L_k^{(1)}) +
    \epsilon}, \qquad
    v = \mathrm{uw\_so\_rel}(\ell;\, \tau), \qquad
    w_k = \frac{v_k / (L_k^{(1)} + \epsilon)}{\sum_j v_j / (L_j^{(1)} +
    \epsilon)}

  **Why.** A weighting that sees only the current losses cannot tell a task
  whose loss is small because it is solved from a task whose loss is small
  because its units are small. The two need opposite weights: UW-SO (and
  UW-O) give the solved task more weight, which starves the others when one
  binary task is learnt early (the digit attributes: all ten tasks start at
  0.69); softening the softmax until that stops (a large T, or
  :func:`~mtl_jax.weighting.uw_so_rel` at :math:`\tau = K/2`) leaves the
  tasks of small units starved by the large ones (GradNorm's synthetic
  regression, whose task scales span :math:`10^4`). Dividing each loss by
  its first value separates the two: :math:`1 / L_k^{(1)}` removes each
  task's units (every :math:`\ell_k` starts at 1, and the weighted loss
  :math:`w_k L_k` no longer depends on a rescaling of task :math:`k`), and
  the softmax of :math:`1/\ell` moves weight towards the tasks that have
  progressed most, as UW-SO moves it towards small losses.

  **Properties.**

  * Multiplying task :math:`k`'s losses (first step included) by
    :math:`c_k > 0` divides :math:`w_k` by :math:`c_k` before the
    normalisation: every :math:`w_k L_k` keeps its share of the total (up to
    :math:`\epsilon`).
  * At the first step every :math:`\ell_k = 1`, :math:`v` is uniform and
    :math:`w_k \propto 1 / L_k^{(1)}`: each task starts with the same
    weighted loss.
  * :math:`v` obeys :func:`~mtl_jax.weighting.uw_so_rel_weights`' bounds
    (two of its entries differ by less than :math:`e^{K/\tau}`); :math:`w`
    adds the ratio of the first losses, which is as large as the tasks'
    units make it.

  **Evaluation.** Against UW-SO with T tuned on validation, on the four
  offline benchmarks: ``docs/results/uw_so_auto.md`` (3 seeds, selection
  on validation, test :math:`\Delta_m`).

  **How it fails.** Everything rests on the first step's losses. A task
  whose first loss is far above its scale (a regression head that starts
  far from its targets) is treated as a task of large units and weighted
  down for the whole run, recovering at most a factor :math:`e^{K/\tau}`
  through :math:`v`; a noisy first batch shifts every weight for good. A task
  that cannot improve (an irreducible loss) loses weight to the others, by at
  most the same factor. A fixed, tuned T can still win where a sharper
  preference for the smallest loss helps.

  Args:
    losses: ``(..., K)`` per-task losses, positive.
    initial: ``(..., K)`` the losses of the first step, positive.
    tau: the relative temperature of :func:`uw_so_rel_weights` applied to
      :math:`\ell`; ``None`` (default): :math:`K/2`.
    eps: added to each loss and first loss before any division.

  Returns:
    ``(..., K)`` weights on the simplex, with no gradient attached.

  Example:
    >>> w = uw_so_norm_weights(jnp.array([0.5, 20.0]), jnp.array([1.0, 40.0]))
    >>> w.round(4)  # both halved: v uniform, w proportional to 1 / L^(1)
    Array([0.9756, 0.0244], dtype=float32)

  References:
    Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning", GCPR 2024, https://arxiv.org/abs/2408.07985.
  """
  losses = jax.lax.stop_gradient(losses)
  first = jax.lax.stop_gradient(initial).astype(losses.dtype) + eps
  ratio = (losses + eps) / first
  v = uw_so_rel_weights(ratio, tau, 0.0)
  raw = v / first
  return raw / jnp.sum(raw, axis=-1, keepdims=True)


def uw_so_norm(tau: float | None = None, eps: float = 1e-8, *,
               check_losses: bool = False) -> _base.Weighting:
  """UW-SO on first-step-relative losses as a :class:`~mtl_jax.weighting.Weighting`.

  Args:
    tau: see :func:`uw_so_norm_weights`; ``None`` (default): :math:`K/2`.
    eps: see :func:`uw_so_norm_weights`.
    check_losses: raise when a loss is zero, negative or non-finite (a host
      round trip per step; for debugging).

  Returns:
    A ``Weighting`` with no learnable parameters and an
    :class:`InitialLossState`.

  Example:
    >>> method = uw_so_norm()
    >>> params, state = method.init(2)
    >>> out = method.apply(params, state, jnp.array([1.0, 40.0]))
    >>> out.weights.round(4)  # the first step: proportional to 1 / L
    Array([0.9756, 0.0244], dtype=float32)
    >>> out = method.apply(params, out.state, jnp.array([0.5, 40.0]))
    >>> out.weights.round(4)  # task 0 has halved its loss: more weight
    Array([0.9873, 0.0127], dtype=float32)
  """
  check_tau(tau, "uw_so_norm")
  _base.check_eps(eps, "uw_so_norm")
  check_losses = _checks.flag(check_losses, "check_losses", "uw_so_norm")
  check = ((lambda l: _base.check_positive_losses(l, "uw_so_norm"))
           if check_losses else None)

  def init_state(num_tasks: int, key) -> InitialLossState:
    del key
    return InitialLossState(jnp.zeros((num_tasks,)), jnp.zeros((), jnp.int32))

  def step(params, state: InitialLossState, losses):
    del params
    losses = jax.lax.stop_gradient(losses).astype(state.initial.dtype)
    initial = jnp.where(state.count == 0, losses, state.initial)
    weights = uw_so_norm_weights(losses, initial, tau, eps)
    return weights, InitialLossState(initial, state.count + 1)

  return _base.fixed_weighting(
      step, init_state, "uw_so_norm", check=check,
      num_tasks_of=lambda state: jnp.shape(state.initial)[-1])
