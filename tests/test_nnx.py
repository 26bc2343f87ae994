"""Flax NNX: the weighting modules and the train engine on an NNX model.

The NNX twins of tests/test_flax.py (weighting modules) and of the engine's
linen tests: an NNX model with the linen model's parameters trains exactly as
the linen model does (losses, weights, updates, batch statistics), 4 devices
equal 1, a run resumes from its checkpoints, and bad inputs say what to do.
The tiny models and seeded batches of tests/train/_train_fixtures.py keep
every compile around a second.
"""
import pathlib
import re
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mtl_jax
from mtl_jax import flax as mtl_linen
from mtl_jax import nnx as mtl_nnx
from mtl_jax import train
from mtl_jax.weighting import imtl_l_loss, uncertainty_loss

_HERE = pathlib.Path(__file__).resolve().parent
if str(_HERE / "train") not in sys.path:  # the train tests' fixtures
  sys.path.insert(0, str(_HERE / "train"))
import _train_fixtures as fx  # noqa: E402

LOSSES = jnp.asarray([0.2, 1.0, 5.0])
TOL = 1e-6
DOC = _HERE.parent / "docs" / "nnx.md"


# ------------------------------------------------------------------ models


class TinyMLP(nnx.Module):
  """fx.TinyMLP in NNX, with the linen attribute names (same param tree)."""

  def __init__(self, *, rngs: nnx.Rngs, hidden: int = 8):
    self.Dense_0 = nnx.Linear(fx.FEATURES, hidden, rngs=rngs)
    for name in fx.TASK_NAMES:
      setattr(self, name, nnx.Linear(hidden, 1, rngs=rngs))

  def __call__(self, x):
    h = self.perturb("features", jnp.tanh(self.Dense_0(x)))
    return {name: getattr(self, name)(h)[:, 0] for name in fx.TASK_NAMES}


class LinenBN(nn.Module):
  """A linen trunk with BatchNorm, for the model-state comparison."""

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.BatchNorm(use_running_average=not train, momentum=0.8)(nn.Dense(8)(x))
    h = nn.tanh(h)
    return {name: nn.Dense(1, name=name)(h)[:, 0] for name in fx.TASK_NAMES}


class NNXBN(nnx.Module):
  """LinenBN in NNX, with the linen names (same params and batch_stats)."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.Dense_0 = nnx.Linear(fx.FEATURES, 8, rngs=rngs)
    self.BatchNorm_0 = nnx.BatchNorm(8, momentum=0.8, rngs=rngs)
    for name in fx.TASK_NAMES:
      setattr(self, name, nnx.Linear(8, 1, rngs=rngs))

  def __call__(self, x):
    h = jnp.tanh(self.BatchNorm_0(self.Dense_0(x)))
    return {name: getattr(self, name)(h)[:, 0] for name in fx.TASK_NAMES}


class TwoDropouts(nnx.Module):
  """Two dropout layers over the input, both drawing from ``rngs``' streams."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.scale = nnx.Param(jnp.ones(()))
    self.first = nnx.Dropout(0.5, rngs=rngs)
    self.second = nnx.Dropout(0.5, rngs=rngs)

  def __call__(self, x):
    x = self.scale * x
    return {"first": self.first(x), "second": self.second(x)}


def _linen_init_rng(seed=0):
  """The key fx.init_state's create_train_state gives init_train_state."""
  return jax.random.split(jax.random.PRNGKey(seed), 3)[0]


def _nnx_like(linen_state, net):
  """``net`` holding ``linen_state``'s model values, and its train state."""
  mtl_nnx.update_model(net, {"params": linen_state.params["model"],
                             **linen_state.model_state})
  return net


def _run(step, state, num_steps, first_batch=100):
  metrics = []
  for i in range(num_steps):
    state, m = step(state, fx.make_batch(first_batch + i))
    metrics.append(m)
  return train.to_host(state), jax.device_get(metrics)


def _assert_same_run(ref, got, tol=TOL):
  (ref_state, ref_metrics), (state, metrics) = ref, got
  assert jax.tree.structure(ref_state) == jax.tree.structure(state)
  assert fx.max_abs_diff(ref_state, state) < tol
  for key in ("total", "losses", "weights", "grad_norm"):
    np.testing.assert_allclose([m[key] for m in metrics],
                               [m[key] for m in ref_metrics], rtol=tol, atol=tol)


# ------------------------------------------------------- weighting modules


@pytest.mark.parametrize("task_types", [
    None, ("classification", "regression", "classification")])
def test_uncertainty_weighting_matches_linen_and_the_function(task_types):
  log_vars = jnp.asarray([-0.4, 0.1, 0.9])
  module = mtl_nnx.UncertaintyWeighting(3, task_types)
  assert set(nnx.to_pure_dict(nnx.state(module, nnx.Param))) == {"log_vars"}
  np.testing.assert_array_equal(module.log_vars[...], np.zeros(3))
  module.log_vars[...] = log_vars
  linen = mtl_linen.UncertaintyWeighting(num_tasks=3, task_types=task_types)
  linen_vars = {"params": {"log_vars": log_vars}}
  got = module(LOSSES)
  for ref in (uncertainty_loss(LOSSES, log_vars, task_types),
              linen.apply(linen_vars, LOSSES)):
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-6)
  # The gradient in the losses is the weights; nnx.grad reaches log_vars.
  np.testing.assert_allclose(jax.grad(lambda l: module(l)[0])(LOSSES), got[1],
                             rtol=1e-6)
  grads = nnx.grad(lambda m: m(LOSSES)[0])(module)
  ref = jax.grad(lambda s: uncertainty_loss(LOSSES, s, task_types)[0])(log_vars)
  np.testing.assert_allclose(grads["log_vars"][...], ref, rtol=1e-6)


def test_imtl_l_weighting_matches_linen_and_the_function():
  module = mtl_nnx.IMTLLWeighting(3, init_log_scale=0.3)
  np.testing.assert_allclose(module.log_scales[...], np.full(3, 0.3), rtol=1e-7)
  log_scales = jnp.asarray([0.5, -0.2, -1.0])
  module.log_scales[...] = log_scales
  got = module(LOSSES)
  linen = mtl_linen.IMTLLWeighting(num_tasks=3)
  for ref in (imtl_l_loss(LOSSES, log_scales),
              linen.apply({"params": {"log_scales": log_scales}}, LOSSES)):
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-6)
  # nnx.grad differentiates the module's nnx.Param.
  grads = nnx.grad(lambda m: m(LOSSES)[0])(module)
  ref = jax.grad(lambda s: imtl_l_loss(LOSSES, s)[0])(log_scales)
  np.testing.assert_allclose(grads["log_scales"][...], ref, rtol=1e-6)


def test_uncertainty_weighting_trains_inside_an_nnx_model():
  """log_vars move towards log L under nnx.Optimizer (regression optimum)."""
  uw = mtl_nnx.UncertaintyWeighting(3)
  opt = nnx.Optimizer(uw, optax.adam(0.1), wrt=nnx.Param)

  @nnx.jit
  def step(uw, opt):
    opt.update(uw, nnx.grad(lambda m: m(LOSSES)[0])(uw))

  for _ in range(150):
    step(uw, opt)
  np.testing.assert_allclose(uw.log_vars[...], np.log(LOSSES), atol=0.1)


@pytest.mark.parametrize("make, match", [
    (lambda: mtl_nnx.UncertaintyWeighting(0), "num_tasks must be a positive integer"),
    (lambda: mtl_nnx.UncertaintyWeighting(2, ("regression", "seg")),
     "unknown task type"),
    (lambda: mtl_nnx.UncertaintyWeighting(3, ("regression",) * 2),
     "task_types has 2 entries but there are 3 tasks"),
    (lambda: mtl_nnx.UncertaintyWeighting(2, init_log_var=float("nan")),
     "init_log_var must be a finite number"),
    (lambda: mtl_nnx.IMTLLWeighting(2.0), "num_tasks must be a positive integer"),
    (lambda: mtl_nnx.IMTLLWeighting(2, init_log_scale=None),
     "init_log_scale must be a finite number"),
])
def test_weighting_modules_reject_bad_arguments(make, match):
  with pytest.raises(ValueError, match=match):
    make()


# --------------------------------------------- the engine on an NNX model


@pytest.mark.parametrize("name, jacobian", [
    ("uw", {}),
    ("upgrad", {}),
    ("mgda", {"mode": "features"}),
])
@pytest.mark.slow
def test_nnx_model_trains_like_the_linen_model(name, jacobian):
  """Same initial values: same losses, weights, updates and states.

  UW takes the weighted-sum path, UPGrad the Jacobian path with the heads as
  task parameters, MGDA the representation mode through ``self.perturb``.
  """
  linen_state, _, _ = fx.init_state(name)
  net = _nnx_like(linen_state, TinyMLP(rngs=nnx.Rngs(5)))
  state = mtl_nnx.create_train_state(
      _linen_init_rng(), net, fx.get_weighting(name), fx.default_optimizer(),
      fx.NUM_TASKS, task_params=fx.HEADS if name != "uw" else None)
  assert jax.tree.structure(state) == jax.tree.structure(linen_state)
  assert fx.max_abs_diff(state, linen_state) == 0
  # The linen step without options is the one the train tests share.
  linen_step = (jax.jit(fx.make_step(name, **jacobian)) if jacobian
                else fx.jitted_step(name, donate=False))
  ref = _run(linen_step, linen_state, 2)
  got = _run(jax.jit(fx.make_step(
      name, model_apply=mtl_nnx.model_apply_fn(net), **jacobian)), state, 2)
  _assert_same_run(ref, got)
  assert fx.max_abs_diff(got[0].params, train.to_host(state).params) > 1e-3


def test_batch_stats_train_and_evaluate_like_linen():
  """BatchNorm: model_state["batch_stats"] updated in training, read in
  evaluation, as for the linen model with the same values."""
  tx = fx.default_optimizer()
  weighting = fx.get_weighting("uw")
  linen = LinenBN()
  linen_state = train.create_train_state(jax.random.PRNGKey(0), linen,
                                         fx.make_batch(0), weighting, tx,
                                         fx.NUM_TASKS)
  net = _nnx_like(linen_state, NNXBN(rngs=nnx.Rngs(3)))
  model_apply, variables = mtl_nnx.split_model(net)
  assert set(variables) == {"params", "batch_stats"}
  state = train.init_train_state(_linen_init_rng(), variables, weighting, tx,
                                 fx.NUM_TASKS)
  assert fx.max_abs_diff(state, linen_state) == 0
  linen_apply = train.module_apply_fn(linen)
  ref = _run(jax.jit(train.make_train_step(linen_apply, fx.task_losses,
                                           weighting, tx)), linen_state, 2)
  got = _run(jax.jit(train.make_train_step(model_apply, fx.task_losses,
                                           weighting, tx)), state, 2)
  _assert_same_run(ref, got)
  stats = got[0].model_state["batch_stats"]["BatchNorm_0"]
  assert np.abs(stats["mean"]).max() > 1e-3        # the running stats moved
  batch = fx.make_batch(7)
  ref_eval = train.make_eval_step(linen_apply, fx.task_losses)(ref[0], batch)
  got_eval = train.make_eval_step(model_apply, fx.task_losses)(got[0], batch)
  assert fx.max_abs_diff(ref_eval, got_eval) < TOL
  # Written back, the NNX model in eval mode predicts what the step evaluated.
  mtl_nnx.update_model(net, got[0])
  net.eval()
  assert fx.max_abs_diff(net(batch["image"]), got_eval[1]) < TOL


@pytest.mark.parametrize("rngs", [nnx.Rngs(params=0, dropout=1), nnx.Rngs(0)],
                         ids=["dropout-stream", "default-stream"])
def test_dropout_draws_from_the_step_keys(rngs):
  net = TwoDropouts(rngs=rngs)
  model_apply, variables = mtl_nnx.split_model(net, input_key="x")
  assert set(variables) == {"params"}          # no key arrays in the state
  batch = {"x": jnp.ones((64,))}
  key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
  apply = jax.jit(model_apply, static_argnames="train")
  out_a, state = apply(variables, batch, train=True, rngs={"dropout": key_a})
  assert state == {}
  again, _ = apply(variables, batch, train=True, rngs={"dropout": key_a})
  out_b, _ = apply(variables, batch, train=True, rngs={"dropout": key_b})
  masks = {k: np.asarray(v) > 0 for k, v in out_a.items()}
  assert 0.2 < masks["first"].mean() < 0.8     # a rate-0.5 mask
  assert not np.array_equal(masks["first"], masks["second"])  # two layers
  assert fx.max_abs_diff(out_a, again) == 0                   # the key decides
  assert not np.array_equal(np.asarray(out_a["first"]), np.asarray(out_b["first"]))
  evaluated, _ = model_apply(variables, batch, train=False, rngs={})
  np.testing.assert_array_equal(evaluated["first"], batch["x"])
  # The train step's rng drives the masks: a new key every step.
  tx = train.make_optimizer(optax.sgd(0.0), method_learning_rate=0.0)
  ew = mtl_jax.get("ew")
  state = mtl_nnx.create_train_state(jax.random.PRNGKey(1), net, ew, tx, 2)
  losses = lambda out, b: jnp.stack([jnp.mean(out["first"]), jnp.mean(out["second"])])
  step = jax.jit(train.make_train_step(model_apply, losses, ew, tx))
  state, first = step(state, batch)
  _, second = step(state, batch)
  assert not np.allclose(first["losses"], second["losses"])


class Flagged(nnx.Module):
  """A BatchNorm model whose ``__call__`` also takes the train flag."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.bn = nnx.BatchNorm(2, use_running_average=True, rngs=rngs)

  def __call__(self, x, *, train: bool, scale: float):
    return {"y": scale * self.bn(x), "train": jnp.asarray(train),
            "running": jnp.asarray(self.bn.use_running_average)}


def test_the_train_flag_sets_the_mode_and_reaches_call():
  model_apply, variables = mtl_nnx.split_model(
      Flagged(rngs=nnx.Rngs(0)), input_key="x", train_arg="train", scale=2.0)
  batch = {"x": jnp.asarray([[1.0, 2.0], [3.0, 6.0]])}
  out, state = model_apply(variables, batch, train=True, rngs={})
  assert bool(out["train"]) and not bool(out["running"])
  # Normalised by the batch's statistics, which the new state records.
  np.testing.assert_allclose(out["y"], 2.0 * np.array([[-1.0, -1.0], [1.0, 1.0]]),
                             atol=1e-4)
  np.testing.assert_allclose(state["batch_stats"]["bn"]["mean"],
                             0.01 * np.array([2.0, 4.0]), rtol=1e-5)
  out, same = model_apply(variables, batch, train=False, rngs={})
  assert not bool(out["train"]) and bool(out["running"])
  assert same["batch_stats"] is variables["batch_stats"]


@pytest.mark.slow
def test_four_devices_equal_one_for_an_nnx_model():
  """pmap and jit(shard_map) over 4 fake CPU devices, UPGrad's Jacobian path
  (per-device VJPs through the NNX model, reduce-scattered)."""
  assert jax.local_device_count() == 4
  linen_state, _, _ = fx.init_state("upgrad")
  net = _nnx_like(linen_state, TinyMLP(rngs=nnx.Rngs(0)))
  model_apply = mtl_nnx.model_apply_fn(net)
  state = mtl_nnx.create_train_state(
      jax.random.PRNGKey(2), net, fx.get_weighting("upgrad"),
      fx.default_optimizer(), fx.NUM_TASKS, task_params=fx.HEADS)
  host = train.to_host(state)
  ref = _run(jax.jit(fx.make_step("upgrad", model_apply=model_apply)), state, 2)
  pmapped = train.pmap_step(
      fx.make_step("upgrad", axis_name="batch", model_apply=model_apply))
  got = _run(lambda s, b: pmapped(s, train.shard_batch(b)),
             train.replicate(host), 2)
  _assert_same_run(ref, (jax.tree.map(lambda x: x[0], got[0]),
                         jax.tree.map(lambda x: x[0], got[1])), tol=1e-5)
  mesh = train.make_mesh("data")
  meshed = train.mesh_step(
      fx.make_step("upgrad", axis_name="data", model_apply=model_apply), mesh)
  got = _run(lambda s, b: meshed(s, train.global_batch(b, mesh, "data")),
             train.replicate_on_mesh(host, mesh), 2)
  _assert_same_run(ref, got, tol=1e-5)


def test_checkpoint_resume_through_train(tmp_path):
  """train.train on an NNX model with batch statistics: a run stopped at
  step 2 and resumed ends where the uninterrupted 4-step run does, and the
  final values go back into the model."""
  net = NNXBN(rngs=nnx.Rngs(0))
  weighting, tx = fx.get_weighting("uw"), fx.default_optimizer()
  step = jax.jit(train.make_train_step(mtl_nnx.model_apply_fn(net),
                                       fx.task_losses, weighting, tx),
                 donate_argnums=0)

  def run(workdir, num_steps):
    state = mtl_nnx.create_train_state(jax.random.PRNGKey(0), net, weighting,
                                       tx, fx.NUM_TASKS)
    return train.train(step, state, fx.SeededBatches(), num_steps=num_steps,
                       workdir=workdir, checkpoint_every=2, progress=False,
                       async_checkpoints=False)

  straight = run(tmp_path / "a", 4)
  assert int(run(tmp_path / "b", 2).step) == 2
  resumed = run(tmp_path / "b", 4)
  assert int(resumed.step) == 4
  assert fx.max_abs_diff(straight, resumed) < TOL
  before = mtl_nnx.model_variables(net)
  mtl_nnx.update_model(net, resumed)
  after = mtl_nnx.model_variables(net)
  assert fx.max_abs_diff(before, after) > 1e-3
  assert fx.max_abs_diff(after, {"params": resumed.params["model"],
                                 **resumed.model_state}) == 0
  assert isinstance(net.Dense_0.kernel.get_value(), jax.Array)


# -------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("model, match", [
    (fx.TinyMLP(), r"linen module TinyMLP.*module_apply_fn"),
    (TinyMLP, "got the class TinyMLP: pass an instance"),
    ({"kernel": jnp.ones(2)}, "got dict. Build the network as a subclass"),
    (nnx.Dropout(0.5), "holds no nnx.Param"),
])
def test_bad_models_are_rejected(model, match):
  for fn in (mtl_nnx.model_apply_fn, mtl_nnx.model_variables):
    with pytest.raises(ValueError, match=match):
      fn(model)


def test_bad_states_and_step_options_are_rejected():
  net = TinyMLP(rngs=nnx.Rngs(0))
  state = mtl_nnx.create_train_state(jax.random.PRNGKey(0), net,
                                     mtl_jax.get("ew"), fx.default_optimizer(),
                                     fx.NUM_TASKS)
  with pytest.raises(ValueError, match="unreplicate"):
    mtl_nnx.update_model(net, train.replicate(train.to_host(state)))
  with pytest.raises(ValueError, match=r"no leaf .*BatchNorm_0"):
    mtl_nnx.update_model(NNXBN(rngs=nnx.Rngs(0)), state)
  with pytest.raises(ValueError, match="takes a TrainState"):
    mtl_nnx.update_model(net, [state.params])
  with pytest.raises(ValueError, match="collections"):   # another model's state
    mtl_nnx.model_apply_fn(NNXBN(rngs=nnx.Rngs(0)))(
        {"params": state.params["model"]}, fx.make_batch(0), train=False, rngs={})
  no_keys = mtl_nnx.model_apply_fn(TwoDropouts(rngs=nnx.Rngs(0)), input_key="x")
  with pytest.raises(ValueError, match=r"rng_names=\('dropout',\)"):
    no_keys({"params": {"scale": jnp.ones(())}}, {"x": jnp.ones(3)},
            train=True, rngs={})
  unmarked = mtl_nnx.model_apply_fn(NNXBN(rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="marks no shared features"):
    unmarked.init_perturbations(mtl_nnx.model_variables(NNXBN(rngs=nnx.Rngs(0))),
                                fx.make_batch(0))


# -------------------------------------------------------------------- docs


def test_docs_example_runs(capsys):
  text = DOC.read_text()
  code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
  namespace = {"__name__": "__doc_example__"}
  exec(compile(code, str(DOC), "exec"), namespace)
  metrics = namespace["metrics"]
  assert int(metrics["step"]) == namespace["NUM_STEPS"]
  assert np.all(np.isfinite(metrics["losses"]))
  assert "weights" in capsys.readouterr().out
  assert "nnx_quickstart.ipynb" in text
