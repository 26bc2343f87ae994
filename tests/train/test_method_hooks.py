"""The step's hooks for methods that do more than weight: their contract.

Toy methods, so that each hook is checked on its own against a hand
computation: a loss weighting's ``after_update`` (FAMO's extra step), a
gradient method's ``aux_loss`` (its own learnable params), ``head_weights``
and ``JacobianAggregator`` (the whole flat Jacobian, ``(K, P)`` buffers in
the train state, sized at init).
"""
from typing import NamedTuple

import _train_fixtures as fx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import aggregation, train, weighting
from mtl_jax.aggregation import _base

SGD = optax.sgd(1.0)


def _step(method, optimizer=SGD, **jacobian):
  options = None
  if isinstance(method, aggregation.GradientMethod):
    jacobian.setdefault("task_params", fx.HEADS)
    options = train.JacobianOptions(**jacobian)
  return jax.jit(train.make_train_step(train.module_apply_fn(fx.TinyMLP()),
                                       fx.task_losses, method, optimizer,
                                       jacobian=options))


def _state(method, task_params=fx.HEADS):
  return train.create_train_state(jax.random.PRNGKey(0), fx.TinyMLP(),
                                  fx.make_batch(0), method, SGD, fx.NUM_TASKS,
                                  task_params=task_params)


def _losses(model_params, batch):
  out = fx.TinyMLP().apply({"params": model_params}, batch["image"],
                           train=True)
  return fx.task_losses(out, batch)


def _task_grads(model_params, batch):
  return [jax.grad(lambda p, k=k: _losses(p, batch)[k])(model_params)
          for k in range(fx.NUM_TASKS)]


class _Seen(NamedTuple):
  before: jax.Array
  after: jax.Array


def _recording_weighting():
  def init(num_tasks, *, key=None):
    del key
    zeros = jnp.zeros((num_tasks,), jnp.float32)
    return {}, _Seen(zeros, zeros)

  def apply(params, state, losses):
    del params
    return weighting.WeightedLoss(jnp.sum(losses), jnp.ones_like(losses),
                                  state)

  def after_update(params, state, before, after):
    del params, state
    return _Seen(before, after)

  return weighting.Weighting(init, apply, after_update)


def test_after_update_gets_the_same_batch_at_the_updated_params():
  method = _recording_weighting()
  state = _state(method, task_params=None)
  batch = fx.make_batch(3)
  new, metrics = _step(method, optax.sgd(0.02))(state, batch)
  np.testing.assert_allclose(new.method_state.before, metrics["losses"],
                             rtol=1e-6)
  np.testing.assert_allclose(new.method_state.after,
                             _losses(new.params["model"], batch), rtol=1e-5)
  # A small step down the sum of the losses: each of them went down.
  assert np.all(np.asarray(new.method_state.after)
                < np.asarray(new.method_state.before))


def test_after_update_is_skipped_with_the_step():
  method = _recording_weighting()
  state = _state(method, task_params=None)
  batch = fx.make_batch(3)
  batch["y"][:, 0] = np.nan
  new, metrics = _step(method)(state, batch)
  assert bool(metrics["skipped"])
  assert np.all(np.asarray(new.method_state.after) == 0)


def test_after_update_pmap_equals_single_device():
  method = _recording_weighting()
  state = _state(method, task_params=None)
  batch = fx.make_batch(4)
  ref, _ = _step(method)(state, batch)
  step = train.pmap_step(train.make_train_step(
      train.module_apply_fn(fx.TinyMLP()), fx.task_losses, method, SGD,
      axis_name="batch"), "batch")
  got, _ = step(train.replicate(state), train.shard_batch(batch))
  got = train.unreplicate(got)
  assert fx.max_abs_diff(ref.method_state, got.method_state) < 1e-5


def _gramian_toy(head_weights=None):
  """Weights 1; params s trained by aux_loss = sum_k s_k^2 / 2 + s_k G_kk."""

  def init(num_tasks, *, key=None):
    del key
    return ({"s": jnp.full((num_tasks,), 0.5, jnp.float32)},
            _base.StatelessState(jnp.zeros((num_tasks,), jnp.int8)))

  def apply(params, state, gram, *, losses=None):
    del losses
    s = params["s"]
    aux = jnp.sum(0.5 * s ** 2 + s * jnp.diagonal(gram))
    return aggregation.GradientWeights(
        jnp.ones_like(s), state, head_weights=head_weights, aux_loss=aux)

  return aggregation.Aggregator(init, apply)


def test_aux_loss_trains_the_method_params():
  method = _gramian_toy()
  state = _state(method)
  batch = fx.make_batch(5)
  new, _ = _step(method)(state, batch)
  grads = _task_grads(state.params["model"], batch)
  shared = [jnp.concatenate([jnp.ravel(g["Dense_0"][n]) for n in ("kernel",
                                                                 "bias")])
            for g in grads]
  diag = np.array([float(jnp.sum(r * r)) for r in shared])
  # SGD(1): s <- s - (s + diag G).
  np.testing.assert_allclose(new.params["method"]["s"], -diag, rtol=1e-4)


@pytest.mark.parametrize("reduction", ["reduce_scatter", "all_reduce"])
def test_aux_loss_gradients_agree_across_devices(reduction):
  method = _gramian_toy()
  state = _state(method)
  batch = fx.make_batch(6)
  ref, _ = _step(method)(state, batch)
  step = train.pmap_step(train.make_train_step(
      train.module_apply_fn(fx.TinyMLP()), fx.task_losses, method, SGD,
      axis_name="batch", jacobian=train.JacobianOptions(
          task_params=fx.HEADS, reduction=reduction)),
      "batch")
  got, _ = step(train.replicate(state), train.shard_batch(batch))
  assert fx.max_abs_diff(ref.params, train.unreplicate(got).params) < 1e-5


def test_head_weights_scale_each_heads_own_gradient():
  scale = jnp.array([2.0, 3.0, 0.5])
  method = _gramian_toy(head_weights=scale)
  state = _state(method)
  batch = fx.make_batch(7)
  new, _ = _step(method)(state, batch)
  grads = _task_grads(state.params["model"], batch)
  for k, head in enumerate(fx.HEADS):
    expected = jax.tree.map(lambda p, g, k=k: p - scale[k] * g,
                            state.params["model"][head], grads[k][head])
    assert fx.max_abs_diff(new.params["model"][head], expected) < 1e-5


class _BufferState(NamedTuple):
  total: jax.Array  # (K, P) running sum of the Jacobians


def _jacobian_toy():
  """d = 2 * (sum of every Jacobian seen so far)[0]; weights [1, 0, 0]."""

  def init(num_tasks, *, key=None, num_params=None):
    del key
    num_params = _base.check_num_params(num_params, "toy")
    return {}, _BufferState(jnp.zeros((num_tasks, num_params), jnp.float32))

  def apply(params, state, jac, *, losses=None):
    del params, losses
    _base.check_jacobian(jac, state.total.shape[0], state.total.shape[1],
                         "toy")
    total = state.total + jac
    weights = jnp.zeros((jac.shape[0],)).at[0].set(1.0)
    return aggregation.GradientDirection(2.0 * total[0], weights,
                                         _BufferState(total))

  return aggregation.JacobianAggregator(init, apply)


def _shared_rows(model_params, batch):
  return np.stack([np.concatenate([np.ravel(g["Dense_0"]["bias"]),
                                   np.ravel(g["Dense_0"]["kernel"])])
                   for g in _task_grads(model_params, batch)])


def test_a_jacobian_method_gets_the_flat_jacobian_and_keeps_its_buffer():
  method = _jacobian_toy()
  state = _state(method)
  num_shared = fx.FEATURES * 8 + 8
  assert state.method_state.total.shape == (fx.NUM_TASKS, num_shared)
  step = _step(method)
  b1, b2 = fx.make_batch(8), fx.make_batch(9)
  s1, _ = step(state, b1)
  rows1 = _shared_rows(state.params["model"], b1)  # leaves in sorted order
  np.testing.assert_allclose(s1.method_state.total, rows1, rtol=1e-5,
                             atol=1e-6)
  s2, m2 = step(s1, b2)
  rows2 = _shared_rows(s1.params["model"], b2)
  np.testing.assert_allclose(s2.method_state.total, rows1 + rows2,
                             rtol=1e-5, atol=1e-6)
  bias = s1.params["model"]["Dense_0"]["bias"]
  np.testing.assert_allclose(s2.params["model"]["Dense_0"]["bias"],
                             bias - 2.0 * (rows1 + rows2)[0, :8], rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(m2["weights"], [1.0, 0.0, 0.0])


@pytest.mark.parametrize("wrap", ["pmap", "mesh"])
def test_a_jacobian_method_is_exact_across_devices(wrap):
  method = _jacobian_toy()
  state = _state(method)
  batches = [fx.make_batch(10 + i) for i in range(3)]
  ref, step = state, _step(method)   # one compilation for the three steps
  for b in batches:
    ref, _ = step(ref, b)
  make = lambda axis: train.make_train_step(
      train.module_apply_fn(fx.TinyMLP()), fx.task_losses, method, SGD,
      axis_name=axis, jacobian=train.JacobianOptions(task_params=fx.HEADS))
  if wrap == "pmap":
    step = train.pmap_step(make("batch"), "batch")
    got = train.replicate(state)
    for b in batches:
      got, _ = step(got, train.shard_batch(b))
    got = train.unreplicate(got)
  else:
    mesh = train.make_mesh("data")
    step = train.mesh_step(make("data"), mesh, "data")
    got = train.replicate_on_mesh(train.to_host(state), mesh)
    for b in batches:
      got, _ = step(got, train.global_batch(b, mesh, "data"))
    got = train.to_host(got)
  assert fx.max_abs_diff(ref.params, got.params) < 1e-5
  assert fx.max_abs_diff(ref.method_state, got.method_state) < 1e-5


def test_buffers_sized_for_other_task_params_are_an_error():
  method = _jacobian_toy()
  state = _state(method, task_params=None)  # every parameter counted
  with pytest.raises(ValueError, match="same task_params"):
    _step(method)(state, fx.make_batch(1))


def test_missing_num_params_names_where_it_comes_from():
  with pytest.raises(ValueError, match="num_params"):
    _jacobian_toy().init(3)


def test_a_jacobian_method_in_features_mode_is_an_error():
  method = _jacobian_toy()
  state = _state(method)
  with pytest.raises(ValueError, match="mode='params'"):
    _step(method, mode="features")(state, fx.make_batch(1))
