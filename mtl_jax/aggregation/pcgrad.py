r"""PCGrad: project each task gradient off the gradients it conflicts with.

.. math::

  g_i^{PC} \leftarrow g_i^{PC} - \frac{\min(g_i^{PC} \cdot g_j, 0)}
  {\|g_j\|^2}\, g_j \ \text{ for } j \neq i \text{ in random order}, \qquad
  d = \sum_{i=1}^{K} g_i^{PC}

Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task
Learning", NeurIPS 2020, https://arxiv.org/abs/2001.06782.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from mtl_jax.aggregation import _base


def _visiting_orders(key: jax.Array, num_tasks: int) -> jax.Array:
  """The ``(K, K)`` random orders in which each row visits the other tasks.

  Row ``i`` is ``jax.random.permutation(jax.random.split(key, K)[i], K)``: a
  fresh permutation per task :math:`i` (TorchJD), in which :math:`i` itself is
  skipped. GradVac draws its orders the same way, so with the same key both
  methods visit the tasks in the same order.
  """
  keys = jax.random.split(key, num_tasks)
  return jax.vmap(lambda k: jax.random.permutation(k, num_tasks))(keys)


def _projected_rows(gramian: jax.Array, key: jax.Array) -> jax.Array:
  r"""``(K, K)`` coefficients :math:`C` with :math:`g_i^{PC} = J^\top c_i`."""
  num_tasks = gramian.shape[0]
  dtype = _base.float_dtype(gramian)
  diag = jnp.diagonal(gramian)
  orders = _visiting_orders(key, num_tasks)

  def row(i, order):

    def body(p, c):
      j = order[p]
      dot = gramian[j] @ c                     # g_i^PC . g_j
      gjj = diag[j]                            # ||g_j||^2
      project = (j != i) & (dot < 0) & (gjj > 0)
      step = jnp.where(project, dot / jnp.where(gjj > 0, gjj, 1.0), 0.0)
      return c.at[j].add(-step.astype(dtype))

    c0 = jnp.zeros((num_tasks,), dtype).at[i].set(1.0)
    return lax.fori_loop(0, num_tasks, body, c0)

  return jax.vmap(row)(jnp.arange(num_tasks), orders)


def pcgrad_weights(gramian: jax.Array, key: jax.Array) -> jax.Array:
  r"""PCGrad's weights: the sum of the projected gradients, from the Gramian.

  .. math::

    c_i \leftarrow c_i - \frac{\min\big((G c_i)_j, 0\big)}{G_{jj}}\, e_j
    \ \text{ for } j \neq i \text{ in random order}, \qquad
    w = \sum_{i=1}^{K} c_i

  where :math:`G = J J^\top` is the Gramian of the :math:`K` task gradients
  :math:`g_k` (the rows of :math:`J`), :math:`c_i \in \mathbb{R}^K` starts at
  :math:`e_i` and holds the coefficients of the projected gradient
  :math:`g_i^{PC} = J^\top c_i`, so that :math:`(G c_i)_j = g_i^{PC} \cdot
  g_j` and :math:`G_{jj} = \|g_j\|^2`. Each row projects :math:`g_i^{PC}` off
  every :math:`g_j` it conflicts with at that point, visiting the tasks in
  the order ``jax.random.permutation(jax.random.split(key, K)[i], K)`` and
  skipping :math:`j = i`. A zero gradient (:math:`G_{jj} = 0`) is never
  projected on. :math:`w_i \ge 1`, and :math:`d = J^\top w` is Yu et al.'s
  update (a sum, not a mean). For :math:`K = 2` the result does not depend
  on the key.

  Conventions: TorchJD (these weights) draws a fresh permutation per row,
  skips :math:`j = i` and adds no :math:`\epsilon`. LibMTL shuffles all
  tasks, :math:`i` included (a no-op on the first visit, a projection on
  :math:`g_i` when :math:`g_i^{PC}` has come to conflict with it), and
  divides by :math:`\|g_j\|^2 + 10^{-8}`. The Nash-MTL repository also sums.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    key: a PRNG key for the visiting orders. Give every device the same key
      to get the same weights on all of them.

  Returns:
    ``(K,)`` weights, each at least 1; they carry no gradient.

  Example:
    >>> g = jnp.array([[18., -22.], [-22., 38.]])
    >>> pcgrad_weights(g, jax.random.PRNGKey(0))
    Array([2.2222, 1.5789], dtype=float32)

  References:
    Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task
    Learning", NeurIPS 2020, https://arxiv.org/abs/2001.06782.
  """
  _base.check_gramian(gramian, None, "pcgrad_weights")
  gramian = lax.stop_gradient(gramian)
  return jnp.sum(_projected_rows(gramian, key), axis=0)


class PCGradState(NamedTuple):
  key: jax.Array    # (2,) uint32 PRNG key (or a typed key), split every step
  tasks: jax.Array  # (K,) int8 zeros: records K


def pcgrad(seed: int = 0) -> _base.Aggregator:
  """PCGrad as an :class:`~mtl_jax.aggregation.Aggregator`.

  The state holds the PRNG key, split at every call: ``apply`` uses the
  second half of ``jax.random.split(state.key)`` and keeps the first.
  Replicate the state (as a data-parallel train step does) and every device
  draws the same orders.

  Args:
    seed: seeds the key when ``init`` is given none.

  Returns:
    An ``Aggregator`` with no parameters and a :class:`PCGradState`.
  """
  seed = _base.check_seed(seed, "pcgrad")

  def init_state(num_tasks: int, key: jax.Array | None) -> PCGradState:
    key = jax.random.PRNGKey(seed) if key is None else key
    return PCGradState(key, jnp.zeros((num_tasks,), jnp.int8))

  def weights_fn(state: PCGradState, gramian: jax.Array):
    key, sub = jax.random.split(state.key)
    return pcgrad_weights(gramian, sub), state._replace(key=key)

  return _base.gramian_aggregator(weights_fn, init_state, "pcgrad",
                                  num_tasks_of=lambda s: s.tasks.shape[-1])
