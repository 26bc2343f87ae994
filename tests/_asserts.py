"""Shared property checks for the weighting tests.

Each method's tests call only the checks whose property holds for it (UW-SO
weights lie on the simplex, UW-O weights do not; every method's weights are
the gradient of its total).
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def assert_finite_shape(x, shape: tuple[int, ...]) -> None:
  """``x`` has exactly ``shape`` and no NaN or Inf."""
  x = np.asarray(x)
  assert x.shape == tuple(shape), f"shape {x.shape}, expected {tuple(shape)}"
  assert np.all(np.isfinite(x)), f"non-finite values: {x}"


def assert_simplex(w, *, atol: float = 1e-6) -> None:
  """``w`` (..., K) is non-negative and each row sums to 1."""
  w = np.asarray(w, np.float64)
  assert np.all(w >= 0.0), f"negative weight in {w}"
  np.testing.assert_allclose(w.sum(axis=-1), 1.0, atol=atol)


def assert_permutation_equivariant(fn: Callable, losses, perm, *,
                                   atol: float = 1e-6, rtol: float = 1e-6
                                   ) -> None:
  """``fn(losses[perm]) == fn(losses)[perm]``: no task is treated specially."""
  losses = jnp.asarray(losses)
  perm = np.asarray(perm)
  np.testing.assert_allclose(fn(losses[perm]), np.asarray(fn(losses))[perm],
                             atol=atol, rtol=rtol)


def assert_no_gradient(fn: Callable, x, *, argnums: int = 0) -> None:
  """The output of ``fn`` is stop-gradient in its input ``x``.

  The Jacobian of ``fn`` at ``x`` is all zeros (and not NaN), so a weight
  vector built by ``fn`` cannot leak gradient into what it weights.
  """
  jac = jax.jit(jax.jacrev(fn, argnums=argnums))(x)
  for leaf in jax.tree.leaves(jac):
    np.testing.assert_array_equal(np.asarray(leaf), 0.0)


@functools.partial(jax.jit, static_argnums=0)
def _weights_and_grads(apply, params, state, losses):
  weights = apply(params, state, losses).weights
  grad_total = jax.grad(lambda l: apply(params, state, l).total)(losses)
  grad_weighted = jax.grad(
      lambda l: jnp.sum(apply(params, state, l).weights * l))(losses)
  return weights, grad_total, grad_weighted


def assert_grad_equals_weights(apply: Callable, params, state, losses, *,
                               rtol: float = 1e-5, atol: float = 1e-6) -> None:
  """For ``apply(params, state, losses) -> WeightedLoss``:

  * ``d total / d losses == weights`` (the documented meaning of weights);
  * ``d sum(weights * losses) / d losses == weights``: the weights carry no
    gradient, so they act as constants in any loss built from them.

  Jitted with ``apply`` static (one compile per method and shape): build the
  method once per test module, not once per example.
  """
  weights, grad_total, grad_weighted = _weights_and_grads(
      apply, params, state, jnp.asarray(losses))
  np.testing.assert_allclose(grad_total, weights, rtol=rtol, atol=atol)
  np.testing.assert_allclose(grad_weighted, weights, rtol=rtol, atol=atol)


@functools.partial(jax.jit, static_argnums=(0, 1))
def grad_under_scaling(total: Callable, task_losses: Callable, theta, scales):
  """``d/dtheta total(scales * task_losses(theta))``: the model's gradient
  when each task loss ``L_k = c_k f_k(theta)`` is rescaled by ``c_k``."""
  scales = jnp.asarray(scales)
  return jax.grad(lambda t: total(scales * task_losses(t)))(theta)


def assert_scale_invariant(total: Callable, task_losses: Callable, theta,
                           scales, *, rtol: float = 1e-4, atol: float = 1e-6
                           ) -> None:
  """Rescaling any task's loss by a constant leaves the gradient unchanged."""
  base = grad_under_scaling(total, task_losses, theta, jnp.ones_like(scales))
  scaled = grad_under_scaling(total, task_losses, theta, scales)
  np.testing.assert_allclose(scaled, base, rtol=rtol, atol=atol)


def assert_no_retrace(apply: Callable, params, state, losses_seq) -> None:
  """A jitted ``apply`` traces once over a sequence of steps.

  The state returned by one step is fed to the next, so a state whose dtype,
  shape or weak type drifts between steps (a recompile every step in a train
  loop) fails here.
  """
  traces = []

  def counted(p, s, l):
    traces.append(None)
    return apply(p, s, l)

  jitted = jax.jit(counted)
  for losses in losses_seq:
    out = jitted(params, state, jnp.asarray(losses))
    state = out.state
  jax.block_until_ready(out)
  assert len(traces) == 1, f"traced {len(traces)} times over {len(losses_seq)} calls"


def assert_trees_close(actual, expected, *, atol: float, rtol: float = 0.0
                       ) -> None:
  """Leaf-wise ``assert_allclose`` of two pytrees with equal structure."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(e), atol=atol,
                               rtol=rtol)


# --- gradient-space methods (mtl_jax.aggregation), after TorchJD's asserts ---


def direction(weights_fn: Callable, jacobian) -> np.ndarray:
  """``d = J^T w`` with ``w = weights_fn(J J^T)``, in float64 numpy."""
  jacobian = jnp.asarray(jacobian)
  weights = weights_fn(jacobian @ jacobian.T)
  return np.asarray(jnp.tensordot(weights, jacobian, axes=1), np.float64)


def assert_non_conflicting(jacobian, d, *, atol: float = 4e-4) -> None:
  """``J d >= 0``: the direction does not increase any task loss to first
  order. The negative part of ``J d`` must be negligible next to its norm."""
  jd = np.asarray(jacobian, np.float64) @ np.asarray(d, np.float64)
  negative = np.linalg.norm(np.minimum(jd, 0.0))
  assert negative <= atol * max(1.0, np.linalg.norm(jd)), (
      f"J d has negative entries: {jd}")


def assert_permutation_invariant(weights_fn: Callable, jacobian, perm, *,
                                 atol: float = 1e-5, rtol: float = 1e-4) -> None:
  """Permuting the rows of ``J`` leaves the direction unchanged."""
  jacobian = np.asarray(jacobian)
  d = direction(weights_fn, jacobian)
  d_perm = direction(weights_fn, jacobian[np.asarray(perm)])
  scale = max(1.0, float(np.abs(d).max(initial=0.0)))
  np.testing.assert_allclose(d_perm, d, atol=atol * scale, rtol=rtol)


def assert_linear_under_scaling(weights_fn: Callable, jacobian,
                                rng: np.random.Generator, *,
                                atol: float = 1e-4, rtol: float = 1e-4) -> None:
  """``A(diag(a c1 + b c2) J) = a A(diag(c1) J) + b A(diag(c2) J)``."""
  jacobian = np.asarray(jacobian)
  dtype = jacobian.dtype
  k = jacobian.shape[0]
  c1, c2 = (rng.uniform(size=k).astype(dtype) for _ in range(2))
  a, b = rng.uniform(size=2).astype(dtype)
  left = direction(weights_fn, (a * c1 + b * c2)[:, None] * jacobian)
  right = (a * direction(weights_fn, c1[:, None] * jacobian)
           + b * direction(weights_fn, c2[:, None] * jacobian))
  scale = max(1.0, float(np.abs(right).max(initial=0.0)))
  np.testing.assert_allclose(left, right, atol=atol * scale, rtol=rtol)


def assert_strongly_stationary(weights_fn: Callable, jacobian, *,
                               threshold: float = 5e-3) -> None:
  """For a ``J`` with no ``w > 0`` such that ``J^T w = 0``, ``||d|| > threshold``:
  the method does not stop where some task can still improve."""
  d = direction(weights_fn, jacobian)
  assert np.linalg.norm(d) > threshold, f"||d|| = {np.linalg.norm(d)}"
