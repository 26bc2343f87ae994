"""The Jacobian path of the train step, against the same step computed by hand.

For every gradient-space method: per-task ``jax.grad`` calls give the rows of
the Jacobian, the method gives the weights from their Gramian, the shared
parameters get ``J^T w``, each head its own task's gradient, and the
optimiser updates: the compiled step must equal that to 1e-5. Also: the
representation mode, chunking, the shared/task split, the non-finite guard
and the errors.
"""
import functools

import _train_fixtures as fx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _slow import ENGINE_CORE, core_first, slow

import mtl_jax
from mtl_jax import aggregation, train

TOL = 1e-5
# SDMGrad and MoDo split the batch: tests/train/test_batch_splits.py.
METHODS = tuple(n for n in aggregation.names()
                if getattr(aggregation.get(n, **fx.hparams(n)), "batch_splits",
                           1) == 1)


def _is_head(path):
  return path[0] in fx.HEADS


def _hand_step(name, state, batch, *, heads=True, mode="params"):
  """One step of ``name`` by hand: per-task grads, weights, update."""
  method = fx.get_weighting(name)
  model = fx.TinyMLP()
  params = state.params["model"]

  def losses(p, perturbation=None):
    variables = {"params": p}
    if perturbation is not None:
      variables["perturbations"] = {"features": perturbation}
    out = model.apply(variables, batch["image"], train=True)
    return fx.task_losses(out, batch)

  per_task = [jax.grad(lambda p, k=k: losses(p)[k])(params)
              for k in range(fx.NUM_TASKS)]
  flat = [jax.tree_util.tree_flatten_with_path(g)[0] for g in per_task]
  paths = [tuple(e.key for e in path) for path, _ in flat[0]]
  shared = [i for i, p in enumerate(paths) if not (heads and _is_head(p))]
  task_losses = losses(params)
  if mode == "params":
    rows = np.stack([np.concatenate([np.ravel(f[i][1]) for i in shared])
                     for f in flat]).astype(np.float64)
    gram = rows @ rows.T
  else:
    zeros = jnp.zeros((batch["image"].shape[0], 8), jnp.float32)
    jf = jax.jacrev(lambda e: losses(params, e))(zeros)
    jf = np.asarray(jf, np.float64).reshape(fx.NUM_TASKS, -1)
    gram = jf @ jf.T
  reads_jacobian = isinstance(method, aggregation.JacobianAggregator)
  inputs = rows if reads_jacobian else gram
  # The method's own maths, jitted: eager, an iterative solver would compile
  # every op of its loops on its own.
  apply = jax.jit(functools.partial(aggregation._base.apply_with_grads, method))
  out, method_grads = apply(state.params["method"], state.method_state,
                            jnp.asarray(inputs, jnp.float32), task_losses)
  w = np.asarray(out.weights, np.float64)
  head_w = (np.ones(fx.NUM_TASKS) if out.head_weights is None
            else np.asarray(out.head_weights, np.float64))
  if reads_jacobian:
    direction = np.asarray(out.direction, np.float64)
    offsets = np.cumsum([0] + [np.size(flat[0][i][1]) for i in shared])
  leaves = []
  for i, _path in enumerate(paths):
    if i in shared:
      if reads_jacobian:
        j = shared.index(i)
        leaves.append(direction[offsets[j]:offsets[j + 1]].reshape(
            np.shape(flat[0][i][1])))
      else:
        leaves.append(sum(w[k] * np.asarray(flat[k][i][1], np.float64)
                          for k in range(fx.NUM_TASKS)))
    else:
      leaves.append(sum(head_w[k] * np.asarray(flat[k][i][1], np.float64)
                        for k in range(fx.NUM_TASKS)))
  grads = {"model": jax.tree.unflatten(jax.tree.structure(params),
                                       [jnp.asarray(x, jnp.float32)
                                        for x in leaves]),
           "method": method_grads}
  tx = fx.default_optimizer()
  updates, _ = tx.update(grads, state.opt_state, state.params)
  return optax.apply_updates(state.params, updates), w, out.state


@functools.cache
def _compiled(name, heads, mode, chunk_size=None):
  return jax.jit(fx.make_step(name, task_params=fx.HEADS if heads else None,
                              mode=mode, chunk_size=chunk_size))


CASES = [(name, True) for name in METHODS] + [("mgda", False), ("config", False)]


@pytest.mark.parametrize("name,heads",
                         core_first(CASES, ENGINE_CORE | {"pcgrad"}),
                         ids=[f"{n}-{'heads' if h else 'all_shared'}"
                              for n, h in CASES])
def test_step_equals_hand_computation(name, heads):
  state, _, _ = fx.init_state(name)
  batch = fx.make_batch(3)
  new, metrics = _compiled(name, heads, "params")(state, batch)
  params, w, method_state = _hand_step(name, state, batch, heads=heads)
  assert fx.max_abs_diff(new.params, params) < TOL
  np.testing.assert_allclose(metrics["weights"], w, rtol=1e-4, atol=TOL)
  assert fx.max_abs_diff(new.method_state, method_state) < TOL
  np.testing.assert_allclose(metrics["total"],
                             np.dot(w, np.asarray(metrics["losses"])),
                             rtol=1e-5)
  assert not bool(metrics["skipped"])


@pytest.mark.parametrize("name", ["mgda", *slow("imtl_g")])
def test_features_mode_equals_hand_computation(name):
  state, _, _ = fx.init_state(name)
  batch = fx.make_batch(4)
  new, metrics = _compiled(name, True, "features")(state, batch)
  params, w, _ = _hand_step(name, state, batch, mode="features")
  np.testing.assert_allclose(metrics["weights"], w, rtol=1e-4, atol=TOL)
  assert fx.max_abs_diff(new.params, params) < TOL


@pytest.mark.parametrize("chunk_size", [1, 3, *slow(2, 7)])
def test_chunks_give_the_same_step(chunk_size):
  state, _, _ = fx.init_state("mgda")
  batch = fx.make_batch(5)
  ref, ref_metrics = _compiled("mgda", True, "params")(state, batch)
  got, metrics = _compiled("mgda", True, "params", chunk_size)(state, batch)
  assert fx.max_abs_diff(ref.params, got.params) < 1e-6
  np.testing.assert_allclose(metrics["weights"], ref_metrics["weights"],
                             atol=1e-6)


def test_the_method_state_is_carried_in_the_train_state():
  # MGDA is stateless: the state only records K and stays put; the first
  # step's weights differ from the second's (new batch, new params).
  state, _, _ = fx.init_state("mgda")
  assert isinstance(state.method_state, aggregation.StatelessState)
  step = _compiled("mgda", True, "params")
  state1, m1 = step(state, fx.make_batch(1))
  state2, m2 = step(state1, fx.make_batch(2))
  assert jax.tree.structure(state2) == jax.tree.structure(state)
  assert not np.allclose(m1["weights"], m2["weights"])


def test_heads_get_their_own_unweighted_gradient():
  # With EW-like weights (1, 1, 1) the shared update would be the plain sum;
  # here check the heads directly: an SGD step moves head k by -lr * g_k.
  state, _, _ = fx.init_state("mgda", optimizer=optax.sgd(1.0))
  step = jax.jit(fx.make_step("mgda", optimizer=optax.sgd(1.0)))
  batch = fx.make_batch(6)
  new, _ = step(state, batch)
  model = fx.TinyMLP()
  for k, head in enumerate(fx.HEADS):
    g = jax.grad(lambda p, k=k: fx.task_losses(
        model.apply({"params": p}, batch["image"], train=True), batch)[k])(
            state.params["model"])
    moved = jax.tree.map(lambda a, b: a - b, state.params["model"][head],
                         new.params["model"][head])
    assert fx.max_abs_diff(moved, g[head]) < 1e-6


@jax.custom_vjp
def _nan_gradient(x):
  return x


def _nan_gradient_fwd(x):
  return x, None


def _nan_gradient_bwd(_, g):
  # NaN wherever a gradient actually flows (a zero cotangent stays zero, so
  # the other tasks' rows stay finite).
  return (jnp.where(g != 0, jnp.nan, 0.0),)


_nan_gradient.defvjp(_nan_gradient_fwd, _nan_gradient_bwd)


def _nan_grad_losses(outputs, batch):
  """Finite losses; the gradient of task 1 is NaN."""
  outputs = dict(outputs, depth=_nan_gradient(outputs["depth"]))
  return fx.task_losses(outputs, batch)


def test_non_finite_task_gradient_skips_the_step_and_names_the_task():
  state, _, _ = fx.init_state("mgda")
  method = mtl_jax.get("mgda")
  step = jax.jit(train.make_train_step(
      train.module_apply_fn(fx.TinyMLP()), _nan_grad_losses, method,
      fx.default_optimizer()))
  new, metrics = step(state, fx.make_batch(0))
  assert bool(metrics["skipped"])
  assert np.all(np.isfinite(metrics["losses"]))
  np.testing.assert_array_equal(metrics["task_grads_finite"],
                                [True, False, True])
  assert fx.max_abs_diff(new.params, state.params) == 0.0
  record = train.writers.step_record(train.to_host(metrics), fx.TASK_NAMES)
  assert record["non_finite_grad_tasks"] == ["depth"]
  with pytest.raises(train.NonFiniteError, match=r"gradient of task\(s\) \['depth'\]"):
    train.loop.check_skips([record], 0)


# --- the shared/task split -------------------------------------------------


def test_task_param_rules():
  params = fx.init_state("ew")[0].params["model"]
  order = [tuple(e.key for e in path) for path, _ in
           jax.tree_util.tree_flatten_with_path(params)[0]]
  by_glob = train.task_param_mask(params, "seg")
  by_list = train.task_param_mask(params, ["seg", "dep*"])
  by_fn = train.task_param_mask(params, lambda path: path[0] == "normal")
  assert [p for p, m in zip(order, by_glob) if m] == [("seg", "bias"),
                                                      ("seg", "kernel")]
  assert sum(by_list) == 4 and sum(by_fn) == 2
  assert train.task_param_mask(params, None) == [False] * len(order)


@pytest.mark.parametrize("rule,what", [("head_*", "no parameter"),
                                       ("*", "every parameter")])
def test_a_rule_that_selects_nothing_or_everything_is_an_error(rule, what):
  params = fx.init_state("ew")[0].params["model"]
  with pytest.raises(ValueError, match=what) as info:
    train.task_param_mask(params, rule)
  assert "Dense_0" in str(info.value)  # the message lists the modules


def test_bad_rule_type():
  params = fx.init_state("ew")[0].params["model"]
  with pytest.raises(ValueError, match="glob pattern"):
    train.task_param_mask(params, [])


# --- errors: gradient and loss-weighting methods are not interchangeable --


def test_jacobian_options_with_a_loss_weighting_are_an_error():
  with pytest.raises(ValueError, match="only applies to gradient-space"):
    train.make_train_step(train.module_apply_fn(fx.TinyMLP()),
                          fx.task_losses, mtl_jax.get("uw_so", temperature=2.0),
                          fx.default_optimizer(),
                          jacobian=train.JacobianOptions(task_params=fx.HEADS))


def test_jacobian_options_with_a_custom_gradient_fn_are_an_error():
  with pytest.raises(ValueError, match="one or the other"):
    train.make_train_step(train.module_apply_fn(fx.TinyMLP()),
                          fx.task_losses, mtl_jax.get("mgda"),
                          fx.default_optimizer(),
                          gradient_fn=lambda *args: None,
                          jacobian=train.JacobianOptions(chunk_size=2))


def test_gradient_methods_are_rejected_where_a_weighting_is_expected():
  method = mtl_jax.get("mgda")
  with pytest.raises(ValueError, match="gradient-space method"):
    train.weighted_sum_gradients(method)
  with pytest.raises(ValueError, match="weighting=None"):
    train.make_eval_step(train.module_apply_fn(fx.TinyMLP()), fx.task_losses,
                         weighting=method)
  with pytest.raises(ValueError, match="loss-weighting method goes to"):
    train.jacobian_gradients(mtl_jax.get("ew"))


@pytest.mark.parametrize("field,value", [
    ("mode", "rep"), ("chunk_size", 0), ("chunk_size", 2.0),
    ("reduction", "psum"), ("task_params", [])])
def test_bad_jacobian_options_fail_when_built(field, value):
  with pytest.raises(ValueError, match=field):
    train.JacobianOptions(**{field: value})


def test_features_mode_needs_a_model_apply_that_lists_the_features():
  with pytest.raises(ValueError, match="init_perturbations"):
    train.make_train_step(lambda *a, **k: None, fx.task_losses,
                          mtl_jax.get("mgda"), fx.default_optimizer(),
                          jacobian=train.JacobianOptions(mode="features"))


def test_features_mode_on_a_model_without_marked_features():
  import flax.linen as nn

  class Plain(nn.Module):
    @nn.compact
    def __call__(self, x, train):
      h = nn.Dense(4)(x)
      return {n: nn.Dense(1, name=n)(h)[:, 0] for n in fx.TASK_NAMES}

  method = mtl_jax.get("mgda")
  tx = fx.default_optimizer()
  state = train.create_train_state(jax.random.PRNGKey(0), Plain(),
                                   fx.make_batch(0), method, tx, fx.NUM_TASKS)
  step = train.make_train_step(train.module_apply_fn(Plain()), fx.task_losses,
                               method, tx,
                               jacobian=train.JacobianOptions(mode="features"))
  with pytest.raises(ValueError, match="marks no shared features"):
    jax.jit(step)(state, fx.make_batch(0))


def test_methods_carry_their_hyperparameters_and_show_them():
  method = mtl_jax.get("cagrad", c=0.25)
  hparams = dict(method.hparams)
  assert method.name == "cagrad" and hparams["c"] == 0.25
  assert "max_iters" in hparams  # the defaults too
  assert repr(method).startswith("cagrad(c=0.25, ")
  weighting = mtl_jax.get("UW-SO", temperature=3.0)
  assert weighting.name == "uw_so"
  assert dict(weighting.hparams) == {"temperature": 3.0, "eps": 1e-8,
                                     "check_losses": False}
  for name in ("ew", "mgda", "upgrad", "famo"):
    assert repr(mtl_jax.get(name)).startswith(f"{name}(")


@pytest.mark.parametrize("value", [0, 1.5, True])
def test_a_malformed_aggregator_fails_when_the_step_is_built(value):
  method = mtl_jax.get("mgda")._replace(batch_splits=value)
  with pytest.raises(ValueError, match=r"Aggregator\.batch_splits"):
    train.make_train_step(train.module_apply_fn(fx.TinyMLP()),
                          fx.task_losses, method, fx.default_optimizer())


def test_each_gradient_method_has_the_type_of_what_it_reads():
  """Gramian in, weights out (Aggregator); J in, a direction out
  (JacobianAggregator): the type says which, no flag."""
  for name in aggregation.names():
    method = aggregation.get(name, **fx.hparams(name))
    reads_jacobian = name in ("graddrop", "moco", "db_mtl", "excess_mtl")
    kind = (aggregation.JacobianAggregator if reads_jacobian
            else aggregation.Aggregator)
    assert type(method) is kind, name
  assert "direction" not in aggregation.GradientWeights._fields
  assert "batch_splits" not in aggregation.JacobianAggregator._fields


def test_unknown_name_lists_both_families():
  with pytest.raises(ValueError, match="gradient-space methods") as info:
    mtl_jax.get("pcgrad2")
  assert "uw_so" in str(info.value) and "mgda" in str(info.value)


@pytest.mark.parametrize("mode", ["params", *slow("features")])
def test_bfloat16_model_keeps_the_jacobian_path_in_float32(mode):
  state, _, _ = fx.init_state("upgrad")
  step = jax.jit(fx.make_step("upgrad", compute_dtype=jnp.bfloat16,
                              mode=mode))
  new, metrics = step(state, fx.make_batch(7))
  _, ref = _compiled("upgrad", True, mode)(state, fx.make_batch(7))
  assert not bool(metrics["skipped"])
  for key in ("losses", "weights", "total", "grad_norm"):
    assert metrics[key].dtype == jnp.float32, key
  for leaf in jax.tree.leaves((new.params, new.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  np.testing.assert_allclose(metrics["weights"], ref["weights"], rtol=5e-2,
                             atol=1e-2)
