r"""SDMGrad: a stochastic, direction-oriented MGDA on three independent samples.

.. math::

  \hat A = \frac{J_\xi J_{\xi'}^\top}{\big(\tfrac1K \sum_k
    \sqrt{\max((J_\xi J_{\xi'}^\top)_{kk}, 0)}\big)^2 + 10^{-8}}, \qquad
  v \leftarrow \mu v + \hat A (w + \lambda \tilde w), \quad
  w \leftarrow \Pi_\Delta(w - \eta v) \ (\text{n\_iter times}), \qquad
  d = J_\zeta^\top \frac{w + \lambda \tilde w}{1 + \lambda}

Xiao, Ban, Ji, "Direction-oriented Multi-objective Learning: Simple and
Provable Stochastic Algorithms", NeurIPS 2023,
https://openreview.net/forum?id=4Ks8RPcXd9.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from mtl_jax import _checks
from mtl_jax.aggregation import _base

SPLITS = 3  # xi, xi', zeta


def sdmgrad_weights(cross_gramian: jax.Array, w: jax.Array, *,
                    lamda: float = 0.3, lr: float = 10.0,
                    momentum: float = 0.5, n_iter: int = 20
                    ) -> tuple[jax.Array, jax.Array]:
  r"""SDMGrad's inner solver: ``n_iter`` projected heavy-ball steps on ``w``.

  .. math::

    \hat A = A / \big(\overline{\sqrt{\max(A_{kk}, 0)}}^{\,2} + 10^{-8}\big),
    \qquad v_0 = 0,\quad v \leftarrow \mu v + \hat A (w + \lambda \tilde w),
    \quad w \leftarrow \Pi_\Delta(w - \eta v)

  where :math:`A = J_\xi J_{\xi'}^\top` is the cross Gramian of the task
  gradients on two independent samples :math:`\xi, \xi'` (an unbiased
  estimate of :math:`G` that the product of one sample's gradients is not),
  :math:`\tilde w = \mathbf{1}/K` the target direction's weights (the mean
  gradient), :math:`\lambda` the pull towards it, :math:`\eta` the step,
  :math:`\mu` the momentum (its buffer :math:`v` restarts at every call) and
  :math:`\Pi_\Delta` the Euclidean projection on the simplex
  (``optax.projections.projection_simplex``). The update direction on the
  third sample :math:`\zeta` is :math:`J_\zeta^\top c` with
  :math:`c = (w + \lambda\tilde w)/(1 + \lambda)`.

  Conventions: TorchJD's defaults (``lr=10, momentum=0.5, n_iter=20,
  lambda_=0.3``) and its warm start (``w`` carried from call to call, from
  :math:`1/K`). LibMTL uses the same rule with ``lr=5`` (hard-coded) and
  ``SDMGrad_lamda=0.3``; the official repository uses ``lamda=0.6`` and
  multiplies the update by K.

  Args:
    cross_gramian: ``(K, K)`` :math:`A = J_\xi J_{\xi'}^\top` (not symmetric
      in general).
    w: ``(K,)`` the previous call's :math:`w` (``1/K`` at the start).
    lamda: :math:`\lambda \ge 0`.
    lr: :math:`\eta > 0`.
    momentum: :math:`\mu \in [0, 1)`.
    n_iter: the fixed number of inner steps.

  Returns:
    ``(c, w)``: the ``(K,)`` weights of the update on :math:`\zeta` (they
    sum to 1) and the new :math:`w` for the next call; no gradient.

  Example:
    >>> c, w = sdmgrad_weights(jnp.diag(jnp.array([1., .25, 0.])),
    ...                        jnp.full((3,), 1 / 3), n_iter=1)
    >>> c  # 1/13, 1/13, 11/13
    Array([0.0769, 0.0769, 0.8462], dtype=float32)

  References:
    Xiao, Ban, Ji, "Direction-oriented Multi-objective Learning: Simple and
    Provable Stochastic Algorithms", NeurIPS 2023,
    https://openreview.net/forum?id=4Ks8RPcXd9.
  """
  shape = jnp.shape(cross_gramian)
  if len(shape) != 2 or shape[0] != shape[1]:
    raise ValueError(
        f"sdmgrad_weights: the cross Gramian must be (num_tasks, num_tasks), "
        f"got shape {shape}.")
  a = lax.stop_gradient(cross_gramian)
  w = lax.stop_gradient(jnp.asarray(w, a.dtype))
  num_tasks = shape[0]
  scale = jnp.mean(jnp.sqrt(jnp.maximum(jnp.diagonal(a), 0.0)))
  a = a / (scale ** 2 + 1e-8)
  target = jnp.full((num_tasks,), lamda / num_tasks, a.dtype)

  def body(_, carry):
    w, v = carry
    v = momentum * v + a @ (w + target)
    return optax.projections.projection_simplex(w - lr * v), v

  w, _ = lax.fori_loop(0, n_iter, body, (w, jnp.zeros_like(w)))
  return (w + target) / (1.0 + lamda), w


class SDMGradState(NamedTuple):
  w: jax.Array  # (K,) the inner solver's warm start, on the simplex


def sdmgrad(lamda: float = 0.3, lr: float = 10.0, momentum: float = 0.5,
            n_iter: int = 20) -> _base.Aggregator:
  r"""SDMGrad as an :class:`~mtl_jax.aggregation.Aggregator`.

  It needs three independent samples: the train step splits each batch
  into three interleaved parts (``batch_splits=3``; example :math:`i` of a
  device's batch goes to part :math:`i \bmod 3`: :math:`\xi`, :math:`\xi'`,
  :math:`\zeta`), so the per-device batch must be divisible by 3, and every
  part is a third of the batch. ``apply`` gets the :math:`3K \times 3K`
  Gramian of the parts' task gradients, takes :math:`A` from its
  :math:`(\xi, \xi')` block, and returns the weights :math:`(0, 0, c)`: the
  shared parameters move along :math:`J_\zeta^\top c`. The heads get their
  own task's gradient on the whole batch. LibMTL draws three separate
  batches instead (three data-loader steps per training step).

  Args:
    lamda: :math:`\lambda` (TorchJD ``lambda_``, LibMTL ``SDMGrad_lamda``:
      0.3).
    lr: the inner step (TorchJD 10; LibMTL 5).
    momentum: the inner momentum (0.5).
    n_iter: inner steps per call (20).

  Returns:
    An ``Aggregator`` with ``batch_splits=3`` and an :class:`SDMGradState`.
  """
  _base.check_nonnegative(lamda, "lamda", "sdmgrad")
  _checks.number(lr, "lr", "sdmgrad", low=0, low_open=True,
                 hint="It is the inner step (TorchJD: 10; LibMTL: 5).")
  _checks.number(momentum, "momentum", "sdmgrad", low=0, high=1,
                 high_open=True, hint="It is the inner momentum (0.5).")
  n_iter = _checks.integer(n_iter, "n_iter", "sdmgrad", low=1)

  def init(num_tasks, *, key=None):
    del key
    num_tasks = _base.check_num_tasks(num_tasks)
    return {}, SDMGradState(jnp.full((num_tasks,), 1.0 / num_tasks,
                                     jnp.float32))

  def apply(params, state, gramian, *, losses=None):
    del params, losses
    num_tasks = state.w.shape[-1]
    _base.check_split_gramian(gramian, SPLITS, num_tasks, "sdmgrad")
    gramian = lax.stop_gradient(gramian)
    cross = gramian[:num_tasks, num_tasks:2 * num_tasks]
    c, w = sdmgrad_weights(cross, state.w, lamda=lamda, lr=lr,
                           momentum=momentum, n_iter=n_iter)
    zeros = jnp.zeros((2 * num_tasks,), gramian.dtype)
    weights = jnp.concatenate([zeros, c.astype(gramian.dtype)])
    return _base.GradientWeights(weights, SDMGradState(w.astype(state.w.dtype)))

  return _base.Aggregator(init, apply, batch_splits=SPLITS)
