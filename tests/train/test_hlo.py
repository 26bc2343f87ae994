"""Collectives of the compiled data-parallel step, read from its HLO.

The gradients must be all-reduced exactly once: the all-reduced elements sum
to (number of params) + K (the loss vector), whatever way XLA combines them.
The compiled step must hold no host transfer (send/recv/callbacks).
"""
import _train_fixtures as fx
import jax
import numpy as np
import pytest

from mtl_jax import train

_SYNTHETIC = """
%all-reduce.1 = (f32[8]{0}, f32[5,8]{1,0}) all-reduce(f32[8]{0} %a, f32[5,8]{1,0} %b), replica_groups={{0,1,2,3}}, to_apply=%add
%all-reduce.2 = f32[3]{0} all-reduce(f32[3]{0} %c), replica_groups={{0,1,2,3}}, to_apply=%add
%ars = (f32[4]{0}, f32[4]{0}) all-reduce-start(f32[4]{0} %d), to_apply=%add
%ard = f32[4]{0} all-reduce-done((f32[4]{0}, f32[4]{0}) %ars)
%ag = f32[16]{0} all-gather(f32[4]{0} %e), dimensions={0}
"""


def test_count_collectives_parses_tuples_async_ops_and_kinds():
  ops = train.count_collectives(_SYNTHETIC)
  assert [(op.kind, op.num_elements) for op in ops] == [
      ("all-reduce", 48), ("all-reduce", 3), ("all-reduce", 4),
      ("all-gather", 16)]
  assert ops[0].shapes == (("f32", (8,)), ("f32", (5, 8)))


def _num_params(state):
  return sum(np.size(x) for x in jax.tree.leaves(state.params))


def _pmap_hlo(name):
  state, _, _ = fx.init_state(name)
  step = train.pmap_step(fx.make_step(name, axis_name="batch"), "batch")
  text = step.lower(train.replicate(state),
                    train.shard_batch(fx.make_batch(0))).compile().as_text()
  return state, text


def _mesh_hlo(name):
  state, _, _ = fx.init_state(name)
  mesh = train.make_mesh("data")
  step = train.mesh_step(fx.make_step(name, axis_name="data"), mesh, "data")
  text = step.lower(train.replicate_on_mesh(train.to_host(state), mesh),
                    train.global_batch(fx.make_batch(0), mesh)).compile().as_text()
  return state, text


@pytest.mark.parametrize("hlo", [_pmap_hlo, _mesh_hlo], ids=["pmap", "mesh"])
@pytest.mark.parametrize("name", ["ew", "gls", "uw"])
@pytest.mark.slow
def test_gradients_are_all_reduced_once(hlo, name):
  state, text = hlo(name)
  ops = train.count_collectives(text)
  kinds = {op.kind for op in ops}
  assert kinds == {"all-reduce"}, ops
  total = sum(op.num_elements for op in ops)
  assert total == _num_params(state) + fx.NUM_TASKS, ops
  assert all(dtype == "f32" for op in ops for dtype, _ in op.shapes)
  assert train.host_transfers(text) == []
  if name == "gls":   # its weights need the global losses before the grads
    assert len(ops) == 2 and ops[0].num_elements == fx.NUM_TASKS


def test_host_transfers_flags_callbacks():
  """A debug callback in the step shows up: the check can fail."""
  def leaky(x):
    jax.debug.callback(lambda v: None, x)
    return x * 2
  text = jax.jit(leaky).lower(np.ones(3, np.float32)).compile().as_text()
  assert train.host_transfers(text)


def _jacobian_hlo(name, **jacobian):
  state, _, _ = fx.init_state(name)
  step = train.pmap_step(fx.make_step(name, axis_name="batch", **jacobian),
                         "batch")
  text = step.lower(train.replicate(state),
                    train.shard_batch(fx.make_batch(0))).compile().as_text()
  model = state.params["model"]
  heads = sum(np.size(x) for h in fx.HEADS for x in jax.tree.leaves(model[h]))
  shared = sum(np.size(x) for x in jax.tree.leaves(model)) - heads
  return text, shared, heads


def _by_kind(ops):
  out = {}
  for op in ops:
    out[op.kind] = out.get(op.kind, 0) + op.num_elements
  return out


@pytest.mark.parametrize("name", ["mgda", "pcgrad"])
@pytest.mark.slow
def test_jacobian_reduce_scatter_moves_a_slice_of_j(name):
  """Default reduction: reduce-scatter of the K x P Jacobian (each device
  keeps P/n columns), an all-reduce of the K x K Gramian with the heads'
  gradients and the K losses, an all-gather of the P-vector update."""
  text, shared, heads = _jacobian_hlo(name)
  k, n = fx.NUM_TASKS, jax.local_device_count()
  padded = -(-shared // n) * n
  by_kind = _by_kind(train.count_collectives(text))
  assert by_kind == {"reduce-scatter": k * padded // n,
                     "all-reduce": k * k + heads + k,
                     "all-gather": padded}, by_kind
  assert train.host_transfers(text) == []


def test_jacobian_all_reduce_moves_the_whole_j():
  text, shared, heads = _jacobian_hlo("mgda", reduction="all_reduce")
  k = fx.NUM_TASKS
  assert _by_kind(train.count_collectives(text)) == {
      "all-reduce": k * shared + heads + k}


def test_features_mode_reduces_only_the_gramian_and_the_gradients():
  text, shared, heads = _jacobian_hlo("mgda", mode="features")
  k = fx.NUM_TASKS
  assert _by_kind(train.count_collectives(text)) == {
      "all-reduce": k * k + shared + heads + k}
