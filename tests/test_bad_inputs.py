"""The one table of bad inputs: each row must raise a ValueError that says so.

Each row of ``CASES`` is ``(id, input, stage, call, match)``: ``call()`` must
raise a ``ValueError`` whose message matches the regex ``match``. ``stage``
says where: ``build`` (the factory or ``get``, before any tracing), ``init``
(a length that needs K) or ``apply`` (a count that needs the inputs, checked
in Python at trace time from static shapes, so no host sync). ``call`` runs
the stages up to that one only, so a row of stage ``build`` also pins that
the error comes at build time.

Rows are made by :func:`bad` (one hyperparameter of one registered method),
:func:`count` (a method initialised for 2 tasks given inputs for 3) and
:func:`row` (anything else). Every hyperparameter of every registered
factory (read with ``inspect``) has at least one row, and every registered
method has a count row; ``test_every_hyperparameter_has_a_row`` fails for a
new method or hyperparameter until its rows are added.

``docs/bad_inputs.md`` is generated from this table::

  python tests/test_bad_inputs.py > docs/bad_inputs.md

and ``test_doc_is_up_to_date`` fails when the two differ.
"""
from __future__ import annotations

import inspect
import math
import pathlib
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax
from mtl_jax import aggregation, weighting

K = 2      # every method is initialised for two tasks
P = 5      # shared parameters of the Jacobian methods
DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "bad_inputs.md"

# The required hyperparameters: a row sets one hyperparameter on top of these.
REQUIRED = {
    "cagrad": {"c": 0.4},
    "constant": {"weights": (1.0, 1.0)},
    "dwa": {"steps_per_epoch": 2},
    "fairgrad": {"alpha": 1.0},
    "scalarization": {"weights": (0.5, 0.5)},
    "uw_so": {"temperature": 2.0},
}
NAN, INF = math.nan, math.inf


class Case(NamedTuple):
  id: str                 # the pytest id, listed in docs/bad_inputs.md
  input: str              # what the user wrote, for the doc
  stage: str              # "build", "init" or "apply"
  call: Callable[[], Any]
  match: str              # regex the ValueError's message must match
  method: str | None = None  # the registered method of a hparam row
  hparam: str | None = None  # and its hyperparameter


def _init(method, num_tasks=K):
  if isinstance(method, aggregation.JacobianAggregator):
    return method.init(num_tasks, num_params=P)
  return method.init(num_tasks)


def _inputs(method, num_tasks):
  """Valid inputs of ``method.apply`` for ``num_tasks`` tasks."""
  rng = np.random.default_rng(0)
  losses = jnp.asarray(rng.uniform(0.5, 2.0, num_tasks), jnp.float32)
  if isinstance(method, weighting.Weighting):
    return (losses,), {}
  splits = getattr(method, "batch_splits", 1)
  jac = jnp.asarray(rng.normal(size=(splits * num_tasks, P)), jnp.float32)
  x = jac if isinstance(method, aggregation.JacobianAggregator) else jac @ jac.T
  return (x,), {"losses": jnp.tile(losses, splits)}


def _hparams_text(hparams):
  return ", ".join(f"{k}={v!r}" for k, v in hparams.items())


def bad(name: str, hparam: str, value: Any, label: str, match: str, *,
        stage: str = "build", **extra: Any) -> Case:
  """A row: ``get(name, hparam=value)`` raises at ``build``, or its
  ``init(2)`` raises (``stage="init"``: a length that needs K)."""
  hparams = {**REQUIRED.get(name, {}), **extra, hparam: value}
  text = f"get({name!r}, {_hparams_text(hparams)})"

  def call():
    method = mtl_jax.get(name, **hparams)
    if stage == "init":
      _init(method)

  if stage == "init":
    text += f".init({K})"
  return Case(f"{name}-{hparam}-{label}", text, stage, call, match, name,
              hparam)


def count(name: str, match: str) -> Case:
  """A row: ``name`` initialised for 2 tasks, applied to inputs for 3."""

  def call():
    method = mtl_jax.get(name, **REQUIRED.get(name, {}))
    params, state = _init(method)
    args, kwargs = _inputs(method, K + 1)
    method.apply(params, state, *args, **kwargs)

  family = mtl_jax.family(name)
  reads_jacobian = isinstance(mtl_jax.get(name, **REQUIRED.get(name, {})),
                              aggregation.JacobianAggregator)
  what = ("3 losses" if family == "weighting" else
          "a Jacobian of 3 rows" if reads_jacobian else "a Gramian of 3 tasks")
  return Case(f"{name}-count", f"get({name!r}).init({K}), apply to {what}",
              "apply", call, match, name)


def row(case_id: str, text: str, stage: str, call: Callable[[], Any],
        match: str) -> Case:
  return Case(case_id, text, stage, call, match)


LOSSES = r"got 3 losses but the method was initialised for 2 tasks\. Pass one"
GRAMIAN = r"got a 3x3 Gramian but the method was initialised for 2 tasks"
JACOBIAN = r"got a Jacobian of 3 rows but the method was initialised for 2"
SPLIT = r"3 x 2 tasks = 6 rows \(part-major\), got 9x9"
TEMPERATURE = r"temperature must be a number > 0, got {}\. Small T"
NONNEG = r"{}: {} must be a finite number >= 0, got {}\."
POSITIVE = r"{}: {} must be a finite number > 0, got {}\."
POS_INT = r"{}: {} must be a positive integer, got {}\."
SEED = r"{}: seed must be an integer, got {}\. It seeds jax\.random\.PRNGKey"
PREF = r"{}: pref_vector must be "
LENGTH = r"{}: {} has 3 entries but there are 2 tasks"
TAU = r"{}: tau must be a number > 0, got {}\. T = tau \* mean_k 1/\(L_k \+ eps\)"
EMA = r"{}: ema must be a finite number in \[0, 1\), got {}\. It is the decay"
TARGET = (r"{}: target must be a finite number in \[0, 1\], got {}\. It is the "
          r"least entropy")


def _jit_apply_ew():
  method = weighting.ew()
  params, state = method.init(K)
  jax.jit(method.apply)(params, state, jnp.ones(K + 1))


def _famo_after_update():
  method = weighting.famo()
  params, state = method.init(K)
  method.after_update(params, state, jnp.ones(K), jnp.ones(K + 1))


def _apply_count(name, **hparams):
  method = mtl_jax.get(name, **hparams)
  params, state = method.init(K)
  method.apply(params, state, jnp.ones(K + 1))


def _apply_other(name, **inputs):
  method = mtl_jax.get(name)
  params, state = _init(method)
  (x,), kwargs = _inputs(method, K)
  kwargs.update(inputs)
  method.apply(params, state, x, **kwargs)


def _apply_wide_jacobian():
  method = aggregation.db_mtl()
  params, state = method.init(K, num_params=P)
  method.apply(params, state, jnp.ones((K, P + 1)), losses=jnp.ones(K))


CASES = [
    # --- the four cases -------------------------------------------
    bad("uw_so", "temperature", None, "none",
        "uw_so: " + TEMPERATURE.format("None")),
    bad("uw_so", "temperature", "abc", "str",
        "uw_so: " + TEMPERATURE.format("'abc'")),
    bad("scalarization", "weights", (1.5, -0.5), "negative",
        r"scalarization: weights must be a vector of finite numbers >= 0, "
        r"one per task, not all zero, got \(1\.5, -0\.5\)\. w_k is the fixed "
        r"share of task k"),
    count("ew", "ew: " + LOSSES),
    # --- loss weighting: hyperparameters --------------------------------------
    bad("dwa", "temperature", None, "none", "dwa: " + TEMPERATURE.format("None")),
    bad("dwa", "temperature", -1.0, "negative",
        "dwa: " + TEMPERATURE.format("-1.0")),
    bad("dwa", "steps_per_epoch", None, "none",
        r"dwa needs steps_per_epoch, a positive int .* got None"),
    bad("dwa", "steps_per_epoch", 2.5, "float",
        r"dwa needs steps_per_epoch, a positive int .* got 2\.5"),
    bad("famo", "lr", "abc", "str", POSITIVE.format("famo", "lr", "'abc'")),
    bad("famo", "lr", 0.0, "zero", POSITIVE.format("famo", "lr", "0.0")),
    bad("famo", "weight_decay", -1e-3, "negative",
        NONNEG.format("famo", "weight_decay", "-0.001")),
    bad("famo", "weight_decay", None, "none",
        NONNEG.format("famo", "weight_decay", "None")),
    bad("famo", "min_losses", (0.0, NAN), "nan",
        r"famo: min_losses must be a vector of finite numbers, one per task, "
        r"got \(0\.0, nan\)"),
    bad("famo", "min_losses", (0.0, 0.0, 0.0), "length",
        LENGTH.format("famo", "min_losses"), stage="init"),
    bad("gls", "check_losses", "yes", "str",
        r"gls: check_losses must be True or False, got 'yes'\."),
    bad("imtl_l", "init_log_scale", NAN, "nan",
        r"imtl_l: init_log_scale must be a finite number, got nan\."),
    bad("imtl_l", "init_log_scale", None, "none",
        r"imtl_l: init_log_scale must be a finite number, got None\."),
    bad("rlw", "seed", None, "none", SEED.format("rlw", "None")),
    bad("rlw", "seed", 1.5, "float", SEED.format("rlw", "1.5")),
    bad("scalarization", "weights", (0.0, 0.0), "zeros",
        r"scalarization: weights must be .*, not all zero, got \(0\.0, 0\.0\)"),
    bad("scalarization", "weights", (1.0, NAN), "nan",
        r"scalarization: weights must be a vector of finite numbers >= 0, one "
        r"per task, got \(1\.0, nan\)"),
    bad("scalarization", "weights", None, "none",
        r"scalarization: weights must be a vector .* got None\."),
    bad("scalarization", "weights", ("a", "b"), "str",
        r"scalarization: weights must be a vector .* got \('a', 'b'\)"),
    bad("scalarization", "weights", (0.2, 0.3, 0.5), "length",
        r"scalarization: init got num_tasks=2 but the method was built for 3 "
        r"tasks \(one per weight\)", stage="init"),
    bad("stch", "mu", 0.0, "zero", POSITIVE.format("stch", "mu", "0.0")),
    bad("stch", "mu", "abc", "str", POSITIVE.format("stch", "mu", "'abc'")),
    bad("stch", "weights", (1.0, -1.0), "negative",
        r"stch: weights must be a vector of finite numbers >= 0, one per task,"
        r" not all zero, got \(1\.0, -1\.0\)\. They are the preferences"),
    bad("stch", "weights", (0.5, 0.5, 0.5), "length",
        r"stch: weights must have shape \(2,\), one entry per task",
        stage="init"),
    bad("stch", "reference", (0.0, INF), "inf",
        r"stch: reference must be a vector of finite numbers, one per task, "
        r"got \(0\.0, inf\)"),
    bad("stch", "reference", "abc", "str",
        r"stch: reference must be a vector of finite numbers.* got 'abc'"),
    bad("stch", "warmup_epochs", -1, "negative",
        r"stch: warmup_epochs must be None \(stateless form\) or an int >= 0"),
    bad("stch", "steps_per_epoch", None, "none",
        r"stch with warmup_epochs needs steps_per_epoch, a positive int .* got "
        r"None", warmup_epochs=1),
    bad("stch", "steps_per_epoch", 5, "without_warmup",
        r"stch: steps_per_epoch=5 is only used with warmup_epochs"),
    bad("uw", "task_types", 3, "int",
        r"task_types must be None or a sequence with one entry per task, .* "
        r"got 3\."),
    bad("uw", "task_types", ("depth", "regression"), "unknown",
        r"unknown task type\(s\) \['depth'\]"),
    bad("uw", "task_types", ("regression",) * 3, "length",
        r"task_types has 3 entries but there are 2 tasks", stage="init"),
    bad("uw", "init_log_var", INF, "inf",
        r"uw: init_log_var must be a finite number, got inf\."),
    bad("uw", "init_log_var", None, "none",
        r"uw: init_log_var must be a finite number, got None\."),
    bad("uw_o", "eps", -1.0, "negative",
        NONNEG.format("uw_o", "eps", "-1.0") + " It guards"),
    bad("uw_o", "eps", None, "none", NONNEG.format("uw_o", "eps", "None")),
    bad("uw_o", "check_losses", 1, "int",
        r"uw_o: check_losses must be True or False, got 1\."),
    bad("uw_so", "temperature", 0.0, "zero",
        "uw_so: " + TEMPERATURE.format("0.0")),
    bad("uw_so", "temperature", NAN, "nan",
        "uw_so: " + TEMPERATURE.format("nan")),
    bad("uw_so", "eps", "abc", "str", NONNEG.format("uw_so", "eps", "'abc'")),
    bad("uw_so", "check_losses", None, "none",
        r"uw_so: check_losses must be True or False, got None\."),
    bad("uw_so_rel", "tau", 0.0, "zero", TAU.format("uw_so_rel", "0.0")),
    bad("uw_so_rel", "tau", "abc", "str", TAU.format("uw_so_rel", "'abc'")),
    bad("uw_so_rel", "eps", -1.0, "negative",
        NONNEG.format("uw_so_rel", "eps", "-1.0")),
    bad("uw_so_rel", "ema", 1.0, "one", EMA.format("uw_so_rel", "1.0")),
    bad("uw_so_rel", "ema", "abc", "str", EMA.format("uw_so_rel", "'abc'")),
    bad("uw_so_rel", "check_losses", "yes", "str",
        r"uw_so_rel: check_losses must be True or False, got 'yes'\."),
    bad("uw_so_norm", "tau", 0.0, "zero", TAU.format("uw_so_norm", "0.0")),
    bad("uw_so_norm", "eps", -1.0, "negative",
        NONNEG.format("uw_so_norm", "eps", "-1.0")),
    bad("uw_so_norm", "check_losses", "yes", "str",
        r"uw_so_norm: check_losses must be True or False, got 'yes'\."),
    bad("uw_so_entropy", "target", 1.5, "above_one",
        TARGET.format("uw_so_entropy", "1.5")),
    bad("uw_so_entropy", "target", -0.1, "negative",
        TARGET.format("uw_so_entropy", "-0.1")),
    bad("uw_so_entropy", "target", None, "none",
        TARGET.format("uw_so_entropy", "None")),
    bad("uw_so_entropy", "tau", -1.0, "negative",
        TAU.format("uw_so_entropy", "-1.0")),
    bad("uw_so_entropy", "eps", NAN, "nan",
        NONNEG.format("uw_so_entropy", "eps", "nan")),
    bad("uw_so_entropy", "ema", -0.1, "negative",
        EMA.format("uw_so_entropy", "-0.1")),
    bad("uw_so_entropy", "check_losses", 0, "int",
        r"uw_so_entropy: check_losses must be True or False, got 0\."),
    # --- loss weighting: losses for another number of tasks -------------------
    count("dwa", "dwa: " + LOSSES),
    count("famo", "famo: " + LOSSES),
    count("gls", "gls: " + LOSSES),
    count("imtl_l", "imtl_l: " + LOSSES),
    count("rlw", "rlw: " + LOSSES),
    count("scalarization", "scalarization: " + LOSSES),
    count("stch", "stch: " + LOSSES),
    count("uw", "uw: " + LOSSES),
    count("uw_o", "uw_o: " + LOSSES),
    count("uw_so", "uw_so: " + LOSSES),
    count("uw_so_entropy", "uw_so_entropy: " + LOSSES),
    count("uw_so_norm", "uw_so_norm: " + LOSSES),
    count("uw_so_rel", "uw_so_rel: " + LOSSES),
    row("uw_so_rel-ema-count",
        "get('uw_so_rel', ema=0.9).init(2), apply to 3 losses", "apply",
        lambda: _apply_count("uw_so_rel", ema=0.9), "uw_so_rel: " + LOSSES),
    row("ew-count-jit", "jax.jit(get('ew').apply) on 3 losses after init(2)",
        "apply", _jit_apply_ew, "ew: " + LOSSES),
    row("famo-after_update-count",
        "get('famo').after_update(..., losses_after of 3 tasks) after init(2)",
        "apply", _famo_after_update, "famo: " + LOSSES),
    row("ew-init-num_tasks", "get('ew').init(0)", "init",
        lambda: weighting.ew().init(0),
        r"num_tasks must be a positive integer, got 0\."),
    # --- gradient space: hyperparameters --------------------------------------
    bad("aligned_mtl", "pref_vector", (1.0, -1.0), "negative",
        PREF.format("aligned_mtl") + r"finite and >= 0, got \[1\.0, -1\.0\]"),
    bad("aligned_mtl", "pref_vector", "abc", "str",
        PREF.format("aligned_mtl") + r"None or a vector .* got 'abc'\."),
    bad("aligned_mtl", "pref_vector", (1.0, 1.0, 1.0), "length",
        r"aligned_mtl: pref_vector has 3 entries but there are 2 tasks",
        stage="init"),
    bad("aligned_mtl", "scale_mode", "max", "unknown",
        r"aligned_mtl: scale_mode must be one of \('min', 'median', 'rmse'\), "
        r"got 'max'\."),
    bad("cagrad", "c", None, "none", NONNEG.format("cagrad", "c", "None")),
    bad("cagrad", "c", -0.1, "negative", NONNEG.format("cagrad", "c", "-0.1")),
    bad("cagrad", "norm_eps", NAN, "nan",
        NONNEG.format("cagrad", "norm_eps", "nan")),
    bad("cagrad", "rescale", 3, "unknown",
        r"cagrad: rescale must be 0 \(TorchJD\), 1 .* or 2 .*, got 3\."),
    bad("cagrad", "max_iters", 0, "zero",
        POS_INT.format("cagrad", "max_iters", "0")),
    bad("cagrad", "polish_iters", -1, "negative",
        r"cagrad: polish_iters must be an integer >= 0, got -1\."),
    bad("config", "pref_vector", (NAN, 1.0), "nan",
        PREF.format("config") + r"finite and >= 0, got \[nan, 1\.0\]"),
    bad("config", "pref_vector", (1.0, 1.0, 1.0), "length",
        r"config: pref_vector has 3 entries but there are 2 tasks",
        stage="init"),
    bad("constant", "weights", None, "none",
        r"constant: weights must be a vector of finite numbers, one per task, "
        r"got None\."),
    bad("constant", "weights", (1.0, INF), "inf",
        r"constant: weights must be finite, got \[1\.0, inf\]\."),
    bad("constant", "weights", (1.0, 1.0, 1.0), "length",
        r"constant: weights has 3 entries but there are 2 tasks", stage="init"),
    bad("db_mtl", "beta", None, "none", NONNEG.format("db_mtl", "beta", "None")),
    bad("db_mtl", "beta_sigma", -1.0, "negative",
        NONNEG.format("db_mtl", "beta_sigma", "-1.0")),
    bad("dualproj", "pref_vector", "abc", "str",
        PREF.format("dualproj") + r"None or a vector .* got 'abc'\."),
    bad("dualproj", "norm_eps", -1.0, "negative",
        NONNEG.format("dualproj", "norm_eps", "-1.0")),
    bad("dualproj", "reg_eps", None, "none",
        NONNEG.format("dualproj", "reg_eps", "None")),
    bad("dualproj", "max_iters", 0, "zero",
        POS_INT.format("dualproj", "max_iters", "0")),
    bad("excess_mtl", "robust_step_size", 0.0, "zero",
        POSITIVE.format("excess_mtl", "robust_step_size", "0.0")),
    bad("excess_mtl", "n_warmup_steps", -1, "negative",
        r"excess_mtl: n_warmup_steps must be an integer >= 0, got -1\."),
    bad("fairgrad", "alpha", None, "none",
        NONNEG.format("fairgrad", "alpha", "None")),
    bad("fairgrad", "max_iters", 2.5, "float",
        POS_INT.format("fairgrad", "max_iters", "2.5")),
    bad("fairgrad", "reg_eps", NAN, "nan",
        NONNEG.format("fairgrad", "reg_eps", "nan")),
    bad("graddrop", "leak", 1.5, "above_one",
        r"graddrop: leak must lie in \[0, 1\], got 1\.5\."),
    bad("graddrop", "leak", "abc", "str",
        r"graddrop: leak must be None, a number or a vector .* got 'abc'\."),
    bad("graddrop", "leak", (0.5, 0.5, 0.5), "length",
        r"graddrop: leak has 3 entries but there are 2 tasks", stage="init"),
    bad("graddrop", "seed", None, "none", SEED.format("graddrop", "None")),
    bad("gradnorm", "alpha", -1.0, "negative",
        NONNEG.format("gradnorm", "alpha", "-1.0")),
    bad("gradnorm", "steps_per_epoch", 0, "zero",
        POS_INT.format("gradnorm", "steps_per_epoch", "0")),
    bad("gradvac", "beta", 1.5, "above_one",
        r"gradvac: beta must be a finite number in \[0, 1\], got 1\.5\."),
    bad("gradvac", "eps", None, "none", NONNEG.format("gradvac", "eps", "None")),
    bad("gradvac", "seed", "abc", "str", SEED.format("gradvac", "'abc'")),
    bad("mgda", "epsilon", -1.0, "negative",
        NONNEG.format("mgda", "epsilon", "-1.0")),
    bad("mgda", "max_iters", 0, "zero", POS_INT.format("mgda", "max_iters", "0")),
    bad("moco", "beta", None, "none", NONNEG.format("moco", "beta", "None")),
    bad("moco", "beta_sigma", "abc", "str",
        NONNEG.format("moco", "beta_sigma", "'abc'")),
    bad("moco", "gamma", NAN, "nan", NONNEG.format("moco", "gamma", "nan")),
    bad("moco", "gamma_sigma", -1.0, "negative",
        NONNEG.format("moco", "gamma_sigma", "-1.0")),
    bad("moco", "rho", INF, "inf", NONNEG.format("moco", "rho", "inf")),
    bad("modo", "gamma", 0.0, "zero", POSITIVE.format("modo", "gamma", "0.0")),
    bad("modo", "gamma", "abc", "str",
        POSITIVE.format("modo", "gamma", "'abc'")),
    bad("modo", "rho", None, "none", NONNEG.format("modo", "rho", "None")),
    bad("nash_mtl", "max_norm", 0.0, "zero",
        POSITIVE.format("nash_mtl", "max_norm", "0.0")
        + r" .* pass None for no clipping\."),
    bad("nash_mtl", "update_weights_every", 0, "zero",
        POS_INT.format("nash_mtl", "update_weights_every", "0")),
    bad("nash_mtl", "optim_niter", None, "none",
        POS_INT.format("nash_mtl", "optim_niter", "None")),
    bad("pcgrad", "seed", 1.5, "float", SEED.format("pcgrad", "1.5")),
    bad("random", "seed", None, "none", SEED.format("random", "None")),
    bad("sdmgrad", "lamda", -1.0, "negative",
        NONNEG.format("sdmgrad", "lamda", "-1.0")),
    bad("sdmgrad", "lr", None, "none", POSITIVE.format("sdmgrad", "lr", "None")),
    bad("sdmgrad", "momentum", 1.0, "one",
        r"sdmgrad: momentum must be a finite number in \[0, 1\), got 1\.0\."),
    bad("sdmgrad", "n_iter", 0, "zero", POS_INT.format("sdmgrad", "n_iter", "0")),
    bad("upgrad", "pref_vector", (1.0, -1.0), "negative",
        PREF.format("upgrad") + r"finite and >= 0, got \[1\.0, -1\.0\]"),
    bad("upgrad", "norm_eps", "abc", "str",
        NONNEG.format("upgrad", "norm_eps", "'abc'")),
    bad("upgrad", "reg_eps", -1.0, "negative",
        NONNEG.format("upgrad", "reg_eps", "-1.0")),
    bad("upgrad", "max_iters", 2.5, "float",
        POS_INT.format("upgrad", "max_iters", "2.5")),
    # --- gradient space: a Gramian or Jacobian for another number of tasks ----
    *(count(name, f"{name}: " + GRAMIAN) for name in (
        "aligned_mtl", "cagrad", "config", "constant", "dualproj", "fairgrad",
        "gradnorm", "gradvac", "imtl", "imtl_g", "mean", "mgda", "nash_mtl",
        "pcgrad", "random", "sum", "upgrad")),
    *(count(name, f"{name}: " + JACOBIAN)
      for name in ("db_mtl", "excess_mtl", "graddrop", "moco")),
    *(count(name, f"{name} reads the Gramian .* on 3 independent parts .* "
          + SPLIT) for name in ("modo", "sdmgrad")),
    *(row(f"{name}-losses-count",
          f"get({name!r}).apply(..., losses of 3 tasks) after init(2)",
          "apply", lambda name=name: _apply_other(name, losses=jnp.ones(3)),
          rf"{name}: losses must have shape \(2,\), one loss per task, got "
          r"shape \(3,\)\.") for name in ("db_mtl", "gradnorm", "imtl", "moco")),
    row("gradnorm-losses-none", "get('gradnorm').apply(params, state, G)",
        "apply", lambda: _apply_other("gradnorm", losses=None),
        r"gradnorm needs the task losses: apply\(params, state, inputs, "
        r"losses=L\)"),
    row("db_mtl-jacobian-columns",
        f"get('db_mtl').init(2, num_params={P}), apply to a (2, {P + 1}) "
        "Jacobian", "apply", _apply_wide_jacobian,
        rf"db_mtl: got a Jacobian of {P + 1} columns but the method's buffers "
        rf"were built for num_params={P}"),
    row("moco-init-num_params", "get('moco').init(2)", "init",
        lambda: aggregation.moco().init(K),
        r"moco keeps \(num_tasks, num_params\) buffers: its init needs "
        r"num_params"),
    # --- the registry ----------------------------------------------------------
    row("get-unknown-name", "get('uw_x')", "build",
        lambda: mtl_jax.get("uw_x"),
        r"unknown method 'uw_x'; loss-weighting methods: \["),
    row("get-unknown-hparam", "get('uw_so', temperature=2.0, tau=1.0)",
        "build", lambda: mtl_jax.get("uw_so", temperature=2.0, tau=1.0),
        r"weighting method 'uw_so' takes no hyperparameter\(s\) \['tau'\]; it "
        r"takes \['temperature', 'eps', 'check_losses'\]"),
    row("get-missing-required", "get('cagrad')", "build",
        lambda: mtl_jax.get("cagrad"),
        r"gradient-space method 'cagrad' needs the hyperparameter\(s\) "
        r"\['c'\], e\.g\. get\('cagrad', c=\.\.\.\)"),
]
IDS = [case.id for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_input_raises(case):
  with pytest.raises(ValueError, match=case.match):
    case.call()


def _factories():
  # pylint: disable=protected-access
  from mtl_jax.aggregation._registry import _FACTORIES as gradient
  from mtl_jax.weighting._registry import _FACTORIES as loss
  return {**loss, **gradient}


def test_every_method_and_hyperparameter_has_a_row():
  factories = _factories()
  assert sorted(factories) == sorted(mtl_jax.names())
  covered = {(case.method, case.hparam) for case in CASES}
  missing = [(name, hparam) for name, factory in sorted(factories.items())
             for hparam in inspect.signature(factory).parameters
             if (name, hparam) not in covered]
  assert not missing, f"add a bad(...) row for each of {missing}"
  no_count = [name for name in factories if f"{name}-count" not in IDS]
  assert not no_count, f"add a count(...) row for each of {no_count}"


def test_ids_are_unique_and_stages_known():
  assert len(IDS) == len(set(IDS))
  assert {case.stage for case in CASES} <= {"build", "init", "apply"}


# --- docs/bad_inputs.md ----------------------------------------------------------

HEADER = """\
# Bad inputs and what you see

Every method checks what it is given and raises a `ValueError` that names
the method, the bad value and what is accepted, instead of failing later
inside a traced step or training on silently. This page lists every case
that the test suite checks, one row per case of the table in
`tests/test_bad_inputs.py`; it grows with every method (each new method or
hyperparameter needs its rows there, and a test fails until it has them).

*Raised at*: `build` is the factory or `mtl_jax.get` (no tracing yet);
`init` is `init(num_tasks)`, for a hyperparameter whose length must be the
number of tasks; `apply` is the first call, checked in Python from the
static shapes when it is traced (under `jit` too, with no host round trip).
Values that are traced (a hyperparameter swept with `jax.vmap`) cannot be
checked before they run and pass through.

Generated by `python tests/test_bad_inputs.py > docs/bad_inputs.md`;
`test_doc_is_up_to_date` fails when this page and the table differ.

| Test id | Input | Raised at | What you see (first line of the message) |
|---|---|---|---|
"""


def _first_line(case: Case) -> str:
  try:
    case.call()
  except ValueError as error:
    return str(error).splitlines()[0]
  raise AssertionError(f"{case.id}: no ValueError")


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


# Faults of a training run: (case, what the user sees, the test).
FAULTS = [
    ("The newest checkpoint step is damaged (first bytes overwritten, or "
     "array bytes flipped)",
     "a RuntimeWarning naming the step and its path; the step is moved to "
     "`<step>.damaged` and the run resumes from the newest intact step",
     "tests/train/test_checkpoint_faults.py::"
     "test_damaged_latest_step_falls_back_to_the_previous_one"),
    ("Every checkpoint step is damaged",
     "`CheckpointError`: no intact checkpoint in the directory; use a new "
     "workdir or delete it",
     "tests/train/test_checkpoint_faults.py::"
     "test_no_intact_step_is_an_error_naming_the_workdir"),
    ("Resuming a workdir written by another model",
     "`CheckpointMismatchError` naming the first differing leaf, saved vs "
     "expected shape and dtype, and the fix",
     "tests/train/test_checkpoint_faults.py::"
     "test_a_checkpoint_of_another_model_names_the_first_differing_leaf"),
    ("The disk fills up, or the filesystem turns read-only, while saving",
     "`CheckpointError` naming the step and the intact one; after space is "
     "freed the same command resumes",
     "tests/train/test_checkpoint_faults.py::"
     "test_a_full_disk_fails_clearly_and_keeps_the_last_checkpoint"),
    ("SIGKILL during an asynchronous checkpoint write",
     "the half-written step is ignored; the rerun resumes and ends where an "
     "uninterrupted run ends",
     "tests/train/test_subprocess.py::"
     "test_sigkill_during_an_asynchronous_checkpoint_write"),
    ("Both processes of a two-process run killed mid-run",
     "restarting both resumes from their common checkpoint, same result as "
     "an uninterrupted run",
     "tests/train/test_subprocess.py::"
     "test_two_processes_killed_and_restarted_equal_an_uninterrupted_run"),
    ("A NaN or Inf in the method's parameters or state given to `train`",
     "`NonFiniteError` naming the leaf; nothing is trained or checkpointed",
     "tests/train/test_checkpoint_faults.py::"
     "test_nan_in_the_method_params_is_named_and_never_checkpointed"),
    ("A NaN in one device's batch",
     "the step is skipped on every device, a warning names the task, the "
     "checkpoints hold finite values only",
     "tests/train/test_checkpoint_faults.py::"
     "test_nan_in_one_devices_batch_is_skipped_named_and_never_checkpointed"),
]

FAULTS_HEADER = """
## Faults during training

| Case | What you see | Test |
|---|---|---|
"""


def render_doc() -> str:
  lines = [f"| `{case.id}` | `{_cell(case.input)}` | {case.stage} | "
           f"{_cell(_first_line(case))} |" for case in CASES]
  faults = [f"| {case} | {seen} | `{test}` |" for case, seen, test in FAULTS]
  return (HEADER + "\n".join(lines) + "\n" + FAULTS_HEADER
          + "\n".join(faults) + "\n")


def test_every_fault_row_names_an_existing_test():
  root = pathlib.Path(__file__).resolve().parent.parent
  for _, _, test in FAULTS:
    path, name = test.split("::")
    assert f"def {name}(" in (root / path).read_text(), test


def _doc_ids(text: str) -> list[str]:
  return re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE)


def test_doc_lists_every_case():
  assert _doc_ids(DOC.read_text()) == IDS, (
      "docs/bad_inputs.md and the table differ; regenerate it with "
      "python tests/test_bad_inputs.py > docs/bad_inputs.md")


def test_doc_is_up_to_date():
  assert DOC.read_text() == render_doc(), (
      "a message changed; regenerate the page with "
      "python tests/test_bad_inputs.py > docs/bad_inputs.md")


if __name__ == "__main__":
  print(render_doc(), end="")
