"""Every documented ValueError, and the opt-in check of the loss values."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.weighting import (
  imtl_l_loss,
  uncertainty_loss,
)

L2 = jnp.asarray([0.5, 2.0])
L3 = jnp.asarray([0.5, 2.0, 1.0])

BAD_TEMPERATURE = [0.0, -1.0, -1e-9, float("nan")]


@pytest.mark.parametrize("temperature", BAD_TEMPERATURE)
@pytest.mark.parametrize("build", [
    lambda t: weighting.uw_so(t),
    lambda t: weighting.get("uw_so", temperature=t),
    lambda t: weighting.dwa(t, steps_per_epoch=2),
    lambda t: weighting.get("dwa", temperature=t, steps_per_epoch=2),
], ids=["uw_so", "get_uw_so", "dwa", "get_dwa"])
def test_temperature_must_be_positive(build, temperature):
  with pytest.raises(ValueError, match="temperature must be a number > 0") as info:
    build(temperature)
  assert repr(temperature) in str(info.value)  # the message shows the value


@pytest.mark.parametrize("steps_per_epoch", [None, 0, -3, 2.0, True])
def test_dwa_needs_steps_per_epoch(steps_per_epoch):
  with pytest.raises(ValueError, match="steps_per_epoch"):
    weighting.dwa(2.0, steps_per_epoch=steps_per_epoch)


@pytest.mark.parametrize("call", [
    lambda: weighting.uw_so(1.0, eps=-1e-3),
    lambda: weighting.uw_o(eps=-1.0),
], ids=["uw_so", "uw_o"])
def test_eps_must_be_non_negative(call):
  with pytest.raises(ValueError, match="eps must be a finite number >= 0"):
    call()


@pytest.mark.parametrize("num_tasks", [0, -2, 1.5, True, "3"])
@pytest.mark.parametrize("name", ["ew", "uw", "imtl_l", "gls", "rlw"])
def test_init_rejects_bad_num_tasks(name, num_tasks):
  with pytest.raises(ValueError, match="num_tasks must be a positive integer"):
    weighting.get(name).init(num_tasks)


# --- losses that do not match the number of tasks ----------------------------

def test_scalarization_rejects_other_number_of_losses():
  method = weighting.scalarization((0.5, 0.5))
  params, state = method.init(2)
  with pytest.raises(ValueError, match=r"got 3 losses .* 2 tasks"):
    method.apply(params, state, L3)


def test_dwa_rejects_other_number_of_losses():
  method = weighting.dwa(steps_per_epoch=2)
  params, state = method.init(2)
  with pytest.raises(ValueError, match=r"got 3 losses .* 2 tasks"):
    method.apply(params, state, L3)
  with pytest.raises(ValueError, match=r"got 3 losses .* 2 tasks"):
    jax.jit(method.apply)(params, state, L3)  # shapes are checked at trace time


@pytest.mark.parametrize("name", ["uw", "imtl_l"])
def test_learned_methods_reject_other_number_of_losses(name):
  method = weighting.get(name)
  params, state = method.init(2)
  with pytest.raises(ValueError, match=r"got 3 losses .* 2 tasks"):
    method.apply(params, state, L3)


def test_uncertainty_loss_rejects_mismatched_log_vars():
  with pytest.raises(ValueError, match="log_vars has shape"):
    uncertainty_loss(L3, jnp.zeros(2))


def test_imtl_l_loss_rejects_mismatched_log_scales():
  with pytest.raises(ValueError, match="log_scales"):
    imtl_l_loss(L3, jnp.zeros(2))


def test_uw_rejects_task_types_of_other_length():
  method = weighting.uw(task_types=("regression", "classification"))
  with pytest.raises(ValueError, match=r"task_types has 2 entries .* 3 tasks"):
    method.init(3)
  with pytest.raises(ValueError, match=r"task_types has 2 entries .* 3 tasks"):
    uncertainty_loss(L3, jnp.zeros(3), ("regression", "classification"))


@pytest.mark.parametrize("name", ["ew", "uw_o", "gls", "rlw", "uw", "imtl_l",
                                  "scalarization"])
def test_losses_must_be_a_vector(name):
  hparams = {"weights": (0.5, 0.5)} if name == "scalarization" else {}
  method = weighting.get(name, **hparams)
  params, state = method.init(2)
  with pytest.raises(ValueError, match=r"shape \(num_tasks,\)"):
    method.apply(params, state, jnp.ones((4, 2)))


# --- task types ----------------------------------------------------------------

def test_unknown_task_type():
  with pytest.raises(ValueError, match=r"unknown task type.*segmentation"):
    uncertainty_loss(L2, jnp.zeros(2), ("regression", "segmentation"))
  with pytest.raises(ValueError, match=r"unknown task type.*depth"):
    weighting.uw(task_types=("depth", "regression"))  # at construction


def test_task_types_string_is_rejected():
  with pytest.raises(ValueError, match="sequence with one entry per task"):
    uncertainty_loss(L2, jnp.zeros(2), "classification")


# --- the registry --------------------------------------------------------------

def test_unknown_method_lists_the_valid_names():
  with pytest.raises(ValueError, match="unknown weighting method 'uw_x'") as info:
    weighting.get("uw_x")
  for name in weighting.names():
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name,hparams,bad", [
    ("ew", {"temperature": 2.0}, "temperature"),
    ("uw_so", {"temperature": 2.0, "tau": 1.0}, "tau"),
    ("uw", {"init_log_vars": 0.0}, "init_log_vars"),
    ("dwa", {"steps_per_epoch": 2, "T": 2.0}, "T"),
])
def test_unknown_hyperparameter(name, hparams, bad):
  with pytest.raises(ValueError, match="takes no hyperparameter") as info:
    weighting.get(name, **hparams)
  assert repr(bad) in str(info.value)


# --- check_losses=True -----------------------------------------------------------

CHECKED = {
    "uw_o": lambda: weighting.uw_o(check_losses=True),
    "uw_so": lambda: weighting.uw_so(2.0, check_losses=True),
    "gls": lambda: weighting.gls(check_losses=True),
}
BAD_LOSSES = {"zero": 0.0, "negative": -1.0, "nan": math.nan, "inf": math.inf}
MESSAGE = "needs positive, finite losses"


@pytest.mark.parametrize("bad", sorted(BAD_LOSSES))
@pytest.mark.parametrize("name", sorted(CHECKED))
def test_check_losses_raises_eagerly(name, bad):
  method = CHECKED[name]()
  params, state = method.init(3)
  losses = jnp.asarray([1.0, BAD_LOSSES[bad], 2.0])
  with pytest.raises(ValueError, match=MESSAGE) as info:
    method.apply(params, state, losses)
  assert name in str(info.value) and "[1]" in str(info.value)  # method, index


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("bad", ["zero", "nan"])
@pytest.mark.parametrize("name", sorted(CHECKED))
def test_check_losses_raises_under_jit(name, bad):
  method = CHECKED[name]()
  params, state = method.init(3)
  apply = jax.jit(method.apply)
  out = apply(params, state, L3)  # positive losses pass
  jax.block_until_ready(out)
  with pytest.raises(jax.errors.JaxRuntimeError, match=MESSAGE):
    jax.block_until_ready(
        apply(params, state, jnp.asarray([1.0, BAD_LOSSES[bad], 2.0])))


@pytest.mark.parametrize("name", sorted(CHECKED))
def test_check_losses_is_off_by_default(name):
  # A zero loss is weighted, not rejected: UW-O gives it 1/eps = 1e8.
  method = weighting.get(name, **({"temperature": 2.0}
                                  if name == "uw_so" else {}))
  out = method.apply(*method.init(2), jnp.asarray([0.0, 1.0]))
  assert out.weights.shape == (2,)
  if name == "uw_o":
    np.testing.assert_allclose(out.weights, [1e8, 1.0], rtol=1e-6)


@pytest.mark.parametrize("name, required", [("uw_so", "temperature"),
                                            ("scalarization", "weights")])
def test_missing_required_hyperparameter_is_a_value_error(name, required):
  with pytest.raises(ValueError, match=required):
    weighting.get(name)


def test_dwa_accepts_numpy_integer_steps_per_epoch():
  method = weighting.get("dwa", steps_per_epoch=np.int64(1))
  params, state = method.init(2)
  for _ in range(3):
    out = method.apply(params, state, jnp.array([1.0, 2.0]))
    state = out.state
  assert state.step.dtype == jnp.int32
  np.testing.assert_allclose(np.sum(out.weights), 2.0, rtol=1e-6)
