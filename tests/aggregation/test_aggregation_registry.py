"""Contract of every registered gradient-space method: the registry, shapes,
dtypes, a stable state (no retrace), jit and vmap, no gradient, bad input."""
import functools

import _asserts
import _inputs
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _slow import core_first

import mtl_jax
from mtl_jax import aggregation

METHODS = aggregation.names()
REQUIRED = {"cagrad": {"c": 0.5}, "fairgrad": {"alpha": 1.0}}
# Required hyperparameters with one entry per task, built for K tasks.
PER_TASK = {"constant": lambda k: {"weights": tuple(np.arange(1.0, k + 1.0))}}


def _hparams(name, k=3):
  hparams = dict(REQUIRED.get(name, {}))
  if name in PER_TASK:
    hparams.update(PER_TASK[name](k))
  return hparams


@functools.cache
def _method(name, k=3):
  return aggregation.get(name, **_hparams(name, k))


def _losses(k, dtype=np.float32):
  # Every apply gets the losses: GradNorm and IMTL need them, the others
  # ignore them.
  return jnp.asarray(np.linspace(0.5, 1.5, k), dtype)


def _gramian(seed, k, dtype=np.float32):
  jac = _inputs.jacobian(seed, k, k + 3, k, dtype=np.float64)
  return jnp.asarray(jac @ jac.T, dtype)


# JacobianAggregators (GradDrop, MoCo, DB-MTL, ExcessMTL) read the
# (K, P) Jacobian itself and return the direction; those with (K, P) buffers
# need num_params at init. The same contract holds with J in place of G.
def _init(method, k, **kwargs):
  if isinstance(method, aggregation.JacobianAggregator):
    kwargs["num_params"] = k + 3
  return method.init(k, **kwargs)


def _splits(method):
  return getattr(method, "batch_splits", 1)


def _input(method, seed, k, dtype=np.float32):
  """What ``method.apply`` reads: G, or the (k, k + 3) J of that G."""
  if isinstance(method, aggregation.JacobianAggregator):
    return jnp.asarray(_inputs.jacobian(seed, k, k + 3, k), dtype)
  # SDMGrad, MoDo: the Gramian of the K tasks on each part of the batch.
  return _gramian(seed, _splits(method) * k, dtype)


def test_names_and_the_unified_entry_point():
  assert set(METHODS) >= {"mgda", "upgrad", "dualproj", "imtl_g",
                          "aligned_mtl", "cagrad", "nash_mtl", "fairgrad",
                          "pcgrad", "gradvac", "config"}
  assert set(METHODS) <= set(mtl_jax.names())
  assert not set(METHODS) & set(mtl_jax.weighting.names())
  for name in METHODS:
    assert isinstance(mtl_jax.get(name, **_hparams(name)),
                      aggregation.GradientMethod)
    assert mtl_jax.family(name) == "aggregation"


@pytest.mark.parametrize("name", core_first(METHODS))
@pytest.mark.parametrize("k", [1, 2, 5])
def test_weights_shape_dtype_and_stable_state(name, k):
  method = _method(name, k)
  params, state = _init(method, k, key=jax.random.PRNGKey(1))
  seq = [_input(method, s, k) for s in range(3)]
  traces = []

  def counted(p, s, g):
    traces.append(None)
    return method.apply(p, s, g, losses=_losses(k))

  jitted = jax.jit(counted)
  for g in seq:
    out = jitted(params, state, g)
    # One weight per row: K, or K per part of the batch (SDMGrad, MoDo).
    _asserts.assert_finite_shape(out.weights, (_splits(method) * k,))
    assert out.weights.dtype == jnp.float32
    if isinstance(method, aggregation.JacobianAggregator):
      _asserts.assert_finite_shape(out.direction, (k + 3,))
      assert out.direction.dtype == jnp.float32
    assert jax.tree.structure(out.state) == jax.tree.structure(state)
    for new, old in zip(jax.tree.leaves(out.state), jax.tree.leaves(state)):
      assert new.dtype == old.dtype and new.shape == old.shape
    state = out.state
  assert len(traces) == 1


@pytest.mark.parametrize("name", core_first(METHODS))
def test_float64_in_float64_out(name):
  method = _method(name)
  with jax.enable_x64():
    params, state = _init(method, 3)
    out = method.apply(params, state, _input(method, 0, 3, np.float64),
                       losses=_losses(3, np.float64))
    assert out.weights.dtype == jnp.float64


@pytest.mark.parametrize("name", core_first(METHODS))
def test_vmap_over_gramians(name):
  method = _method(name)
  params, state = _init(method, 3)
  grams = jnp.stack([_input(method, s, 3) for s in range(4)])

  def weights(g):
    return method.apply(params, state, g, losses=_losses(3)).weights

  batched = jax.jit(jax.vmap(weights))
  # One Gramian at a time, through one compilation (eager, a solver's loops
  # would be traced and compiled again for every Gramian).
  single = jax.jit(weights)
  expected = np.stack([single(g) for g in grams])
  np.testing.assert_allclose(batched(grams), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", core_first(METHODS))
def test_weights_carry_no_gradient(name):
  method = _method(name)
  params, state = _init(method, 3)
  _asserts.assert_no_gradient(
      lambda g: method.apply(params, state, g, losses=_losses(3)).weights,
      _input(method, 2, 3))


@pytest.mark.parametrize("name", core_first(METHODS))
def test_gramian_of_the_wrong_size_or_shape(name):
  method = _method(name)
  params, state = _init(method, 3)
  expected = ("3 x 3 tasks = 9 rows" if _splits(method) == 3 else
              "initialised for 3 tasks")
  with pytest.raises(ValueError, match=expected):
    method.apply(params, state, _input(method, 0, 2), losses=_losses(3))
  if isinstance(method, aggregation.JacobianAggregator):
    with pytest.raises(ValueError, match=r"\(num_tasks, num_params\) matrix"):
      method.apply(params, state, jnp.ones((3,)), losses=_losses(3))
    return
  with pytest.raises(ValueError, match="square"):
    method.apply(params, state, jnp.ones((3, 4)), losses=_losses(3))


@pytest.mark.parametrize("name", core_first(METHODS))
def test_registry_errors(name):
  with pytest.raises(ValueError, match="takes no hyperparameter"):
    aggregation.get(name, not_a_hyperparameter=1, **_hparams(name))
  if name in REQUIRED or name in PER_TASK:
    with pytest.raises(ValueError, match="needs the hyperparameter"):
      aggregation.get(name)


def test_unknown_name():
  with pytest.raises(ValueError, match="valid names are"):
    aggregation.get("gradnorm2")
  with pytest.raises(ValueError, match="positive integer"):
    _method("mgda").init(0)
