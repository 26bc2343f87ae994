r"""GradVac: raise each pairwise gradient similarity towards a running target.

.. math::

  \phi_{ij} = \cos(g_i^{PC}, g_j), \quad
  g_i^{PC} \mathrel{+}= \frac{\|g_i^{PC}\| \big(\hat\phi_{ij}
  \sqrt{1 - \phi_{ij}^2} - \phi_{ij} \sqrt{1 - \hat\phi_{ij}^2}\big)}
  {\|g_j\| \sqrt{1 - \hat\phi_{ij}^2}}\, g_j
  \ \text{ if } \phi_{ij} < \hat\phi_{ij},

  \hat\phi_{ij} \leftarrow (1 - \beta) \hat\phi_{ij} + \beta \phi_{ij}
  \ \text{ for } j \neq i \text{ in random order}, \qquad
  d = \sum_{i=1}^{K} g_i^{PC}

Wang, Tsvetkov, Firat, Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021,
https://arxiv.org/abs/2010.05874.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax import _checks
from mtl_jax.aggregation import _base
from mtl_jax.aggregation.pcgrad import _visiting_orders


def _check_beta(beta, method: str) -> None:
  _checks.number(beta, "beta", method, low=0, high=1,
                 hint="It is the weight of the newest similarity in the "
                 "moving average (TorchJD and LibMTL: 0.5).")


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  """``num / den``, and 0 where ``den`` is 0 (only reachable with eps = 0)."""
  return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0)


def gradvac_weights(gramian: jax.Array, phi_hat: jax.Array, key: jax.Array,
                    *, beta: float = 0.5, eps: float = 1e-8
                    ) -> tuple[jax.Array, jax.Array]:
  r"""GradVac's weights and updated similarity targets, from the Gramian.

  .. math::

    \phi_{ij} = \frac{(G c_i)_j}{\sqrt{c_i^\top G c_i}\sqrt{G_{jj}} +
    \epsilon}, \qquad
    c_i \mathrel{+}= \frac{\sqrt{c_i^\top G c_i}\,\big(\hat\phi_{ij}
    \sqrt{1 - \phi_{ij}^2} - \phi_{ij} \sqrt{1 - \hat\phi_{ij}^2}\big)}
    {\sqrt{G_{jj}} \sqrt{1 - \hat\phi_{ij}^2} + \epsilon}\, e_j
    \ \text{ if } \phi_{ij} < \hat\phi_{ij},

    \hat\phi_{ij} \leftarrow (1 - \beta) \hat\phi_{ij} + \beta \phi_{ij},
    \qquad w = \sum_{i=1}^{K} c_i

  where :math:`G = J J^\top` is the Gramian of the :math:`K` task gradients
  :math:`g_k` (the rows of :math:`J`); :math:`c_i \in \mathbb{R}^K` starts at
  :math:`e_i` and holds the coefficients of the corrected gradient
  :math:`g_i^{PC} = J^\top c_i`, so :math:`\|g_i^{PC}\| = \sqrt{c_i^\top G
  c_i}`, :math:`g_i^{PC} \cdot g_j = (G c_i)_j` and :math:`\|g_j\| =
  \sqrt{G_{jj}}`; :math:`\phi_{ij}` is the cosine similarity of
  :math:`g_i^{PC}` (as corrected so far) and :math:`g_j`;
  :math:`\hat\phi_{ij}`, the target, is its exponential moving average over
  the calls; :math:`\beta` the weight of the newest value and
  :math:`\epsilon` a guard in the denominators.

  Each row :math:`i` visits the tasks :math:`j \neq i` once, in the order
  ``jax.random.permutation(jax.random.split(key, K)[i], K)`` (the orders of
  :func:`~mtl_jax.aggregation.pcgrad.pcgrad_weights` with the same key). At
  each :math:`j`, a similarity below its target is raised to it with the
  target from before this call; then the target moves towards the
  :math:`\phi_{ij}` measured before the correction, whether or not a
  correction was made (TorchJD; LibMTL at 43368048). Row :math:`i` reads and
  writes only :math:`\hat\phi_{i\cdot}`, so the rows are independent. With
  :math:`\hat\phi = 0` (the first call) the correction is PCGrad's
  projection, up to :math:`\epsilon`.

  Guards: a zero gradient (:math:`G_{jj} = 0`) is never added (TorchJD adds
  it with a coefficient up to :math:`\|g_i^{PC}\| / \epsilon`, which changes
  :math:`w_j` but not :math:`d`). :math:`\phi_{ij}` is clipped to
  :math:`[-1, 1]` (TorchJD does not clip): when :math:`g_i^{PC}` nearly
  vanishes, as with opposite gradients, :math:`\sqrt{c_i^\top G c_i}` is
  rounding noise, and in float32 the unclipped ratio, then
  :math:`\hat\phi` and the weights, blow up on rank-deficient Jacobians.
  Square roots are of values clamped at 0; a division by 0 (only possible
  with ``eps=0``) gives 0.

  Conventions: TorchJD (these weights) draws a fresh order per row, keeps
  one :math:`\hat\phi` for the whole model and puts ``eps`` in both
  denominators. LibMTL does the same with :math:`10^{-8}` and can also keep
  one :math:`\hat\phi` per layer or per matrix (``GradVac_group_type`` 1 or
  2), correcting each block of :math:`g_i` separately; here, use one
  GradVac per block for that.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    phi_hat: ``(K, K)`` targets :math:`\hat\phi` from the previous call
      (zeros at the first); its diagonal is not used.
    key: a PRNG key for the visiting orders.
    beta: :math:`\beta \in [0, 1]`, the weight of the new similarity in the
      moving average (TorchJD and LibMTL: 0.5).
    eps: :math:`\epsilon \ge 0` in the denominators (TorchJD: 1e-8).

  Returns:
    ``(weights, phi_hat)``: the ``(K,)`` weights :math:`w` (no gradient) and
    the ``(K, K)`` updated targets, in the dtype of the given ``phi_hat``
    (so a state holding them keeps its dtype).

  Example:
    >>> g = jnp.array([[18., -22.], [-22., 38.]])
    >>> w, phi_hat = gradvac_weights(g, jnp.zeros((2, 2)),
    ...                              jax.random.PRNGKey(0))
    >>> w  # targets 0: PCGrad's weights
    Array([2.2222, 1.5789], dtype=float32)

  References:
    Wang, Tsvetkov, Firat, Cao, "Gradient Vaccine: Investigating and
    Improving Multi-task Optimization in Massively Multilingual Models",
    ICLR 2021, https://arxiv.org/abs/2010.05874.
  """
  _base.check_gramian(gramian, None, "gradvac_weights")
  num_tasks = gramian.shape[0]
  if jnp.shape(phi_hat) != (num_tasks, num_tasks):
    raise ValueError(
        f"gradvac_weights: phi_hat must be ({num_tasks}, {num_tasks}) like the "
        f"Gramian, got shape {jnp.shape(phi_hat)}. Start from zeros.")
  gramian = lax.stop_gradient(gramian)
  dtype = _base.float_dtype(gramian)
  beta = jnp.asarray(beta, dtype)
  eps = jnp.asarray(eps, dtype)
  norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))   # ||g_j||
  orders = _visiting_orders(key, num_tasks)

  def row(i, order, targets):

    def body(p, carry):
      c, cg, targets = carry                  # cg = G c = (g_i^PC . g_k)_k
      j = order[p]
      norm_i = jnp.sqrt(jnp.maximum(c @ cg, 0.0))
      phi = jnp.clip(_safe_div(cg[j], norm_i * norms[j] + eps), -1.0, 1.0)
      target = targets[j]
      sin_phi = jnp.sqrt(jnp.maximum(1.0 - phi * phi, 0.0))
      sin_target = jnp.sqrt(jnp.maximum(1.0 - target * target, 0.0))
      step = _safe_div(norm_i * (target * sin_phi - phi * sin_target),
                       norms[j] * sin_target + eps)
      visit = j != i
      step = jnp.where(visit & (phi < target) & (norms[j] > 0), step, 0.0)
      c = c.at[j].add(step)
      cg = cg + step * gramian[j]
      targets = targets.at[j].set(
          jnp.where(visit, (1 - beta) * target + beta * phi, target))
      return c, cg, targets

    c0 = jnp.zeros((num_tasks,), dtype).at[i].set(1.0)
    c, _, targets = lax.fori_loop(0, num_tasks, body,
                                  (c0, gramian[i], targets))
    return c, targets

  coefficients, new_phi_hat = jax.vmap(row)(
      jnp.arange(num_tasks), orders, jnp.asarray(phi_hat, dtype))
  weights = lax.stop_gradient(jnp.sum(coefficients, axis=0))
  new_phi_hat = lax.stop_gradient(new_phi_hat).astype(jnp.result_type(phi_hat))
  return weights, new_phi_hat


class GradVacState(NamedTuple):
  phi_hat: jax.Array  # (K, K) float, the targets phi_hat_ij; zeros at init
  key: jax.Array      # (2,) uint32 PRNG key (or a typed key), split every step


def gradvac(beta: float = 0.5, eps: float = 1e-8,
            seed: int = 0) -> _base.Aggregator:
  r"""GradVac as an :class:`~mtl_jax.aggregation.Aggregator`.

  The state holds the targets :math:`\hat\phi` (zeros at ``init``, in the
  default float dtype: float32, or float64 under ``jax_enable_x64``) and the
  PRNG key, split at every call: ``apply`` uses the second half of
  ``jax.random.split(state.key)`` and keeps the first. Replicate the state
  (as a data-parallel train step does) and every device draws the same
  orders. ``init`` again to reset.

  Args:
    beta: see :func:`gradvac_weights` (default 0.5).
    eps: see :func:`gradvac_weights` (default 1e-8).
    seed: seeds the key when ``init`` is given none.

  Returns:
    An ``Aggregator`` with no parameters and a :class:`GradVacState`.
  """
  _check_beta(beta, "gradvac")
  _base.check_nonnegative(eps, "eps", "gradvac")
  seed = _base.check_seed(seed, "gradvac")

  def init_state(num_tasks: int, key: jax.Array | None) -> GradVacState:
    key = jax.random.PRNGKey(seed) if key is None else key
    return GradVacState(jnp.zeros((num_tasks, num_tasks)), key)

  def weights_fn(state: GradVacState, gramian: jax.Array):
    key, sub = jax.random.split(state.key)
    weights, phi_hat = gradvac_weights(gramian, state.phi_hat, sub,
                                       beta=beta, eps=eps)
    return weights, GradVacState(phi_hat, key)

  return _base.gramian_aggregator(weights_fn, init_state, "gradvac",
                                  num_tasks_of=lambda s: s.phi_hat.shape[-1])
