r"""RLW: random loss weighting.

.. math::

  w = \mathrm{softmax}(z), \quad z \sim \mathcal{N}(0, I_K), \qquad
  \mathcal{L} = \sum_{k=1}^{K} w_k L_k

Lin, Ye, Xu, Shi, Zhang, Kwok, "Reasonable Effectiveness of Random Weighting:
A Litmus Test for Multi-Task Learning", TMLR 2022,
https://arxiv.org/abs/2111.10603.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtl_jax import _checks
from mtl_jax.weighting import _base


def rlw_weights(key: jax.Array, num_tasks: int,
                dtype: jnp.dtype = jnp.float32) -> jax.Array:
  r"""One draw of random weights on the simplex.

  .. math::

    w = \mathrm{softmax}(z), \qquad z \sim \mathcal{N}(0, I_K)

  where :math:`K` is the number of tasks. A fresh draw every step.

  Args:
    key: a PRNG key. Give every device the same key to get the same weights
      on all of them.
    num_tasks: :math:`K`.
    dtype: dtype of the weights.

  Returns:
    ``(K,)`` weights summing to 1.

  References:
    Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test
    for Multi-Task Learning", TMLR 2022, https://arxiv.org/abs/2111.10603.
  """
  num_tasks = _base.check_num_tasks(num_tasks)
  return jax.nn.softmax(jax.random.normal(key, (num_tasks,), dtype))


class RLWState(NamedTuple):
  key: jax.Array    # (2,) uint32 PRNG key, split at every step
  tasks: jax.Array  # (K,) int8 zeros: records K for apply's check


def rlw(seed: int = 0) -> _base.Weighting:
  """RLW as a :class:`~mtl_jax.weighting.Weighting`.

  The state holds the PRNG key. Replicate it (as a data-parallel train step
  does with the whole state) and every device draws the same weights.

  Args:
    seed: an integer; seeds the key when ``init`` is given none.
  """
  seed = _checks.integer(seed, "seed", "rlw",
                         hint="It seeds jax.random.PRNGKey(seed).")

  def init_state(num_tasks: int, key: jax.Array | None) -> RLWState:
    key = jax.random.PRNGKey(seed) if key is None else key
    return RLWState(key, jnp.zeros((num_tasks,), jnp.int8))

  def weights_fn(params, state, losses):
    del params
    key, sub = jax.random.split(state.key)
    return (rlw_weights(sub, losses.shape[-1], jnp.result_type(losses)),
            state._replace(key=key))

  return _base.fixed_weighting(weights_fn, init_state, "rlw")
