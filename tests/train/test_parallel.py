"""Data-parallel equivalence: N devices with a global batch == 1 device.

For every method of both families (the gradient-space ones on the Jacobian
path, TinyMLP's heads as task parameters), several steps of the pmapped step (4 fake CPU
devices), the jit(shard_map) step over a mesh and plain jit over a sharded
batch (GSPMD) give the params, weighting state and metrics of the
single-device step on the whole batch, to 1e-5 in float32. DWA's 5 steps with
steps_per_epoch=2 cross two epoch boundaries and reach the ratio rule.
"""
import _train_fixtures as fx
import jax
import numpy as np
import pytest
from _slow import ENGINE_CORE, core_first, slow
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import mtl_jax
from mtl_jax import train

NUM_STEPS = 5
TOL = 1e-5
METHODS = mtl_jax.names()
# The representation mode reduces only the K x K Gramian across devices.
FEATURE_METHODS = ["mgda", *slow("imtl_g")]


def _run(step, state, put_batch, get):
  metrics = []
  for i in range(NUM_STEPS):
    state, m = step(state, put_batch(fx.make_batch(100 + i)))
    metrics.append(m)
  return get(state), get(metrics)


def _single(name, **jacobian):
  state, _, _ = fx.init_state(name)
  step = jax.jit(fx.make_step(name, **jacobian))
  return _run(step, jax.device_put(state), lambda b: b, train.to_host)


def _assert_same(ref, got, what=""):
  (ref_state, ref_metrics), (state, metrics) = ref, got
  assert fx.max_abs_diff(ref_state.params, state.params) < TOL, what
  assert fx.max_abs_diff(ref_state.method_state,
                         state.method_state) < TOL, what
  assert fx.max_abs_diff(ref_state.opt_state, state.opt_state) < TOL, what
  for key in ("total", "losses", "weights", "grad_norm"):
    np.testing.assert_allclose([m[key] for m in metrics],
                               [m[key] for m in ref_metrics], rtol=TOL, atol=TOL,
                               err_msg=f"{what} {key}")


@pytest.fixture(scope="module")
def single_runs():
  return {}


def _reference(cache, name):
  if name not in cache:
    cache[name] = _single(name)
  return cache[name]


# pmap and the mesh in one test per method: its single-device reference is
# then compiled and run once (the two xdist workers keep a reference each).
@pytest.mark.parametrize("name", core_first(METHODS, ENGINE_CORE))
def test_pmap_and_mesh_shard_map_equal_single_device(name, single_runs):
  assert jax.local_device_count() == 4
  ref = _reference(single_runs, name)
  state, _, _ = fx.init_state(name)
  step = train.pmap_step(fx.make_step(name, axis_name="batch"), "batch")
  got = _run(step, train.replicate(state), train.shard_batch, train.unreplicate)
  _assert_same(ref, got, "pmap")
  initial = train.to_host(state)
  assert fx.max_abs_diff(initial.params["model"], got[0].params["model"]) > 1e-3
  mesh = train.make_mesh("data")
  step = train.mesh_step(fx.make_step(name, axis_name="data"), mesh, "data")
  got = _run(step, train.replicate_on_mesh(initial, mesh),
             lambda b: train.global_batch(b, mesh, "data"), train.to_host)
  _assert_same(ref, got, "mesh")


@pytest.mark.parametrize("name", ["mgda", *slow("config")])
def test_all_reduce_jacobian_equals_single_device(name, single_runs):
  """The simple reduction (the whole K x P Jacobian on every device) agrees
  too; the default reduce-scatter is covered by the tests above."""
  state, _, _ = fx.init_state(name)
  step = train.pmap_step(fx.make_step(name, axis_name="batch",
                                      reduction="all_reduce"), "batch")
  got = _run(step, train.replicate(state), train.shard_batch, train.unreplicate)
  _assert_same(_reference(single_runs, name), got)


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_features_mode_pmap_and_mesh_equal_single_device(name):
  ref = _single(name, mode="features")
  state, _, _ = fx.init_state(name)
  step = train.pmap_step(fx.make_step(name, axis_name="batch",
                                      mode="features"), "batch")
  _assert_same(ref, _run(step, train.replicate(state), train.shard_batch,
                         train.unreplicate))
  mesh = train.make_mesh("data")
  step = train.mesh_step(fx.make_step(name, axis_name="data",
                                      mode="features"), mesh, "data")
  _assert_same(ref, _run(step, train.replicate_on_mesh(train.to_host(state),
                                                       mesh),
                         lambda b: train.global_batch(b, mesh, "data"),
                         train.to_host))


@pytest.mark.parametrize("name", ["uw", "mgda", *slow("gls", "rlw")])
def test_gspmd_jit_over_sharded_batch_equals_single_device(name, single_runs):
  """No axis name: jit partitions the whole-batch maths over the mesh."""
  mesh = train.make_mesh("data")
  state, _, _ = fx.init_state(name)
  step = jax.jit(fx.make_step(name), donate_argnums=0)
  sharding = NamedSharding(mesh, P("data"))
  got = _run(step, train.replicate_on_mesh(train.to_host(state), mesh),
             lambda b: jax.device_put(b, sharding), train.to_host)
  _assert_same(_reference(single_runs, name), got)


def test_rlw_draws_the_same_weights_on_every_device():
  state, _, _ = fx.init_state("rlw")
  step = train.pmap_step(fx.make_step("rlw", axis_name="batch"), "batch")
  state = train.replicate(state)
  seen = []
  for i in range(3):
    state, metrics = step(state, train.shard_batch(fx.make_batch(i)))
    weights = np.asarray(metrics["weights"])        # (devices, K)
    np.testing.assert_array_equal(weights, np.broadcast_to(weights[0], weights.shape))
    seen.append(weights[0])
  assert not np.allclose(seen[0], seen[1])          # a fresh draw every step


def test_per_device_losses_differ_but_weights_use_the_global_ones():
  """Without the pmean trick GLS would weight each device differently."""
  state, _, _ = fx.init_state("gls")
  step = train.pmap_step(fx.make_step("gls", axis_name="batch"), "batch")
  batch = fx.make_batch(7)
  _, metrics = step(train.replicate(state), train.shard_batch(batch))
  local = jax.pmap(lambda s, b: fx.task_losses(
      fx.TinyMLP().apply({"params": s.params["model"]}, b["image"], train=True),
      b))(train.replicate(state), train.shard_batch(batch))
  local = np.asarray(local)
  assert np.ptp(local, axis=0).max() > 1e-3
  np.testing.assert_allclose(np.asarray(metrics["losses"])[0], local.mean(0),
                             rtol=1e-6)


def test_shard_batch_rejects_uneven_batches():
  with pytest.raises(ValueError, match="multiple of the 4 local devices"):
    train.shard_batch(fx.make_batch(0, batch_size=6))
