r"""Random: a random convex combination of the task gradients (RGW).

.. math::

  w = \mathrm{softmax}(z), \quad z \sim \mathcal{N}(0, I_K) \text{ drawn at
  every call}, \qquad d = J^\top w

Lin, Ye, Xu, Shi, Zhang, Kwok, "Reasonable Effectiveness of Random Weighting:
A Litmus Test for Multi-Task Learning", TMLR 2022,
https://arxiv.org/abs/2111.10603 (random gradient weighting, RGW).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax.aggregation import _base


def random_weights(gramian: jax.Array, draw: jax.Array) -> jax.Array:
  r"""Random's weights for a given normal draw.

  .. math::

    w = \mathrm{softmax}(z)

  where :math:`z \in \mathbb{R}^K` is the injected draw (a sample of
  :math:`\mathcal{N}(0, I_K)`; the factory draws a fresh one per call) and
  :math:`K` the size of the Gramian :math:`G = J J^\top`, read only for its
  shape and dtype. The weights lie on the simplex.

  Conventions: TorchJD's ``Random`` (softmax of ``randn``), the RGW of Lin
  et al. In gradient space each head gets its own unweighted gradient;
  :func:`mtl_jax.weighting.rlw` weights the losses instead, so it also
  scales every head by its weight.

  Args:
    gramian: ``(K, K)`` Gramian :math:`G`.
    draw: ``(K,)`` the normal draw :math:`z`.

  Returns:
    ``(K,)`` weights summing to 1, in the Gramian's dtype, with no gradient.

  Example:
    >>> g = jnp.array([[18., -22.], [-22., 38.]])
    >>> random_weights(g, jnp.array([1.5410, -0.2934]))
    Array([0.8623, 0.1377], dtype=float32)

  References:
    Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test
    for Multi-Task Learning", TMLR 2022, https://arxiv.org/abs/2111.10603.
  """
  _base.check_gramian(gramian, None, "random_weights")
  if jnp.shape(draw) != (gramian.shape[0],):
    raise ValueError(
        f"random_weights: the draw must have shape ({gramian.shape[0]},), one "
        f"normal sample per task, got shape {jnp.shape(draw)}.")
  dtype = _base.float_dtype(gramian)
  return jax.lax.stop_gradient(jax.nn.softmax(jnp.asarray(draw, dtype)))


class RandomState(NamedTuple):
  key: jax.Array    # (2,) uint32 PRNG key (or a typed key), split every call
  tasks: jax.Array  # (K,) int8 zeros: records K


def random(seed: int = 0) -> _base.Aggregator:
  """Random as an :class:`~mtl_jax.aggregation.Aggregator`.

  The state holds the PRNG key, split at every call as PCGrad's: ``apply``
  draws :math:`z` = ``jax.random.normal(split(key)[1], (K,))`` and keeps
  ``split(key)[0]``. Replicate the state and every device draws the same
  weights.

  Args:
    seed: seeds the key when ``init`` is given none.

  Returns:
    An ``Aggregator`` with no parameters and a :class:`RandomState`.
  """
  seed = _base.check_seed(seed, "random")

  def init_state(num_tasks: int, key: jax.Array | None) -> RandomState:
    key = jax.random.PRNGKey(seed) if key is None else key
    return RandomState(key, jnp.zeros((num_tasks,), jnp.int8))

  def weights_fn(state: RandomState, gramian: jax.Array):
    key, sub = jax.random.split(state.key)
    draw = jax.random.normal(sub, (gramian.shape[0],),
                             _base.float_dtype(gramian))
    return random_weights(gramian, draw), state._replace(key=key)

  return _base.gramian_aggregator(weights_fn, init_state, "random")
