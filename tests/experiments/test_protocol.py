"""The papers' protocol: selection on validation, paired comparisons, the
benchmark's checks and the constant predictor, on hand-made inputs and on
the smoke config."""
import json
import math

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import common, evidence, protocol, trivial
from experiments import run as run_lib
from experiments.configs import default
from mtl_jax import train

SPEC = common.dataset_spec(default.get_config().data)


@pytest.fixture
def config(tmp_path):
  config = default.get_config("smoke")
  config.data.data_dir = str(tmp_path / "data")
  return config


# ------------------------------------------------------- paired comparison


def test_paired_by_hand():
  # d = [1, 2, 4]: mean 7/3, std (ddof 1) sqrt(7/3), t = 7/3 / (sqrt(7/3)/sqrt 3)
  out = protocol.paired({0: 1.0, 1: 2.0, 2: 4.0}, {0: 0.0, 1: 0.0, 2: 0.0})
  assert out["n"] == 3 and out["mean"] == pytest.approx(7 / 3)
  assert out["std"] == pytest.approx(math.sqrt(7 / 3))
  assert out["t"] == pytest.approx(math.sqrt(7))  # 2.65 < 4.30
  assert out["verdict"] == "within noise"
  # d = [-1.0, -1.1, -0.9]: mean -1, std 0.1, t = -17.3: a lower.
  out = protocol.paired({0: 1.0, 1: 0.9, 2: 1.1, 7: 5.0},
                        {0: 2.0, 1: 2.0, 2: 2.0})
  assert out["n"] == 3 and out["t"] == pytest.approx(-10 * math.sqrt(3))
  assert out["verdict"] == "a lower"
  assert protocol.paired({0: 1.0}, {0: 0.0})["verdict"] == "too few seeds"


def test_selection_score_is_delta_m_and_inf_on_missing_metrics():
  ref = {"segmentation/miou": 0.2, "depth/abs_err": 10.0}
  vals = {"segmentation/miou": 0.3, "depth/abs_err": 12.0}
  # miou 50 % better (-50), depth 20 % worse (+20): mean -15.
  assert run_lib.selection_score(vals, ref, SPEC) == pytest.approx(-15.0)
  assert run_lib.selection_score({"depth/abs_err": 1.0}, ref, SPEC) == math.inf
  # Zero or non-finite references are left out (Delta_m divides by them).
  assert run_lib.selection_score(
      vals, dict(ref, **{"count/accuracy": 0.0}), SPEC) == pytest.approx(-15.0)


def _state(value):
  return train.TrainState(
      step=jnp.zeros((), jnp.int32), params={"model": {"w": jnp.array(value)},
                                             "method": {}},
      opt_state=None, model_state={}, method_state=None,
      rng=jnp.zeros((2,), jnp.uint32), consecutive_skips=jnp.zeros((), jnp.int32),
      total_skips=jnp.zeros((), jnp.int32))


def test_selector_keeps_the_best_record_and_stops_on_patience():
  ref = {"segmentation/miou": 0.1}
  sel = run_lib._Selector(SPEC, ref, None, patience=2, select="best")
  stops = [sel.add({"step": s, "segmentation/miou": m}, _state(float(s)))
           for s, m in ((1, 0.2), (2, 0.3), (3, 0.25), (4, 0.29))]
  assert stops == [False, False, False, True]  # 2 evaluations without a gain
  assert sel.best["step"] == 2 and sel.best["score"] == pytest.approx(-200.0)
  assert float(sel.best_view.params["model"]["w"]) == 2.0  # its parameters
  last = run_lib._Selector(SPEC, ref, None, patience=0, select="last")
  for s, m in ((1, 0.3), (2, 0.2)):
    last.add({"step": s, "segmentation/miou": m}, _state(float(s)))
  assert last.best["step"] == 2
  with pytest.raises(ValueError, match="'best' or 'last'"):
    run_lib._Selector(SPEC, ref, None, 0, "first")


def test_default_reference_is_the_first_record_of_the_trained_tasks():
  first = {k: 1.0 + i for i, k in enumerate(SPEC.higher_is_better)}
  ref = run_lib.default_reference(SPEC, first, (0.0, 1.0, 0.0, 0.0))
  assert set(ref) == {"depth/abs_err", "depth/rel_err"}
  assert ref["depth/abs_err"] == first["depth/abs_err"]


@pytest.mark.slow
def test_selected_parameters_are_the_ones_tested(config, tmp_path):
  """The test metrics of a run equal those of the same run stopped at its
  selected step (same seed, same batches: the same parameters)."""
  config.train.num_steps, config.optim.learning_rate = 4, 0.05
  program = run_lib.build_program(config)
  full = run_lib.run(program, str(tmp_path / "full"), seed=0)
  records = run_lib.read_eval_log(str(tmp_path / "full"))
  assert [r["step"] for r in records] == [1, 2, 3, 4]
  best = min(records, key=lambda r: r["score"])
  assert full["selected_step"] == best["step"]
  assert full["validation"]["score"] == best["score"]
  config.train.num_steps, config.train.select = best["step"], "last"
  # The same compiled step, stopped at the selected step.
  short = run_lib.run(program._replace(config=config, num_steps=best["step"]),
                      str(tmp_path / "short"), seed=0)
  for k, v in full["test"].items():
    assert short["test"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


def test_committed_rates_round_trip_and_errors(config, tmp_path):
  rows = [run_lib.Row("ew", "method", [], [], None, 5e-3, {"0.01": 3.0,
                                                           "0.005": 1.0}),
          run_lib.Row("stl_depth", "single_task", [], [], (0, 1, 0, 0), 1e-2)]
  path = str(tmp_path / "lr.json")
  protocol.write_rates(path, rows)
  config.protocol.learning_rates = path
  assert protocol.committed_rates(config) == {"ew": 5e-3, "stl_depth": 1e-2}
  assert json.load(open(path))["ew"]["validation_scores"]["0.005"] == 1.0
  config.protocol.learning_rates = str(tmp_path / "missing.json")
  with pytest.raises(FileNotFoundError, match="lr_search"):
    protocol.committed_rates(config)
  config.protocol.lr_search, config.protocol.lr_grid = True, "1e-2,-1"
  with pytest.raises(ValueError, match="positive learning rates"):
    protocol.lr_grid(config)


def test_run_counts():
  config = default.get_config()
  config.compare.seeds = 3
  assert protocol.num_runs(config, 10) == 30
  config.protocol.lr_search, config.protocol.lr_grid = True, "1e-2,3e-3,1e-3"
  assert protocol.num_runs(config, 10) == 10 * (3 + 2)
  assert protocol.num_reports(config, 10) == 10 * (3 + 3)


# ------------------------------------------------------ constant predictor


def test_constant_predictor_by_hand():
  seg = np.zeros((2, 4, 4), np.int32)
  seg[0, :2, :2] = 3  # 4 of 32 pixels are class 3
  depth = np.stack([np.full((4, 4, 1), 100.0), np.full((4, 4, 1), 300.0)])
  normal = np.zeros((2, 4, 4, 3), np.float32)
  normal[0, ..., 2], normal[1, ..., 0] = 1.0, 1.0
  batch = {"segmentation": seg, "depth": depth.astype(np.float32),
           "normal": normal, "count": np.array([2, 2], np.int32)}
  consts = trivial.fit(SPEC, [batch])
  assert consts["segmentation"] == 0 and consts["count"] == 2
  assert consts["depth"] == pytest.approx(200.0)
  np.testing.assert_allclose(consts["normal"], [0.5 ** 0.5, 0, 0.5 ** 0.5],
                             rtol=1e-6)
  shapes = {"segmentation": (4, 4, 11), "depth": (4, 4, 1),
            "normal": (4, 4, 3), "count": (5,)}
  m = trivial.trivial_metrics(SPEC, consts, [batch], shapes)
  assert m["segmentation/pixel_acc"] == pytest.approx(28 / 32)
  assert m["depth/abs_err"] == pytest.approx(100.0)
  assert m["count/accuracy"] == pytest.approx(1.0)
  assert m["normal/mean"] == pytest.approx(45.0, abs=0.01)
  assert trivial.clearly_above(0.3, 0.1, True, 3.0)
  assert not trivial.clearly_above(0.29, 0.1, True, 3.0)
  assert trivial.clearly_above(5.0, 10.0, False, 2.0)
  assert not trivial.clearly_above(5.1, 10.0, False, 2.0)
  # Accuracies: the error must halve (majority 0.6: error 0.4 -> at most 0.2).
  assert trivial.bar(0.6, True, 2.0, "error") == pytest.approx(0.8)
  assert trivial.clearly_above(0.8, 0.6, True, 2.0, "error")
  assert not trivial.clearly_above(0.79, 0.6, True, 2.0, "error")


# --------------------------------------------------------------- the checks


def test_constant_predictor_of_the_synthetic_regression_by_hand():
  # One (B, K, D) target holds every task: the constant is its mean over the
  # examples, per task and output; its MSE is each task's target variance.
  spec = common.dataset_spec(ml_collections.ConfigDict(
      {"name": "synthetic", "num_tasks": 2}))
  y = np.array([[[1.0, 2.0], [10.0, 0.0]], [[3.0, 2.0], [30.0, 4.0]]],
               np.float32)  # (B=2, K=2, D=2)
  batch = {"x": np.zeros((2, 3), np.float32), "y": y}
  consts = trivial.fit(spec, [batch, batch])
  np.testing.assert_allclose(consts["y"], [[2.0, 2.0], [20.0, 2.0]])
  m = trivial.trivial_metrics(spec, consts, [batch], {"y": (2, 2)})
  assert m["task_0/mse"] == pytest.approx((1 + 0 + 1 + 0) / 4)
  assert m["task_1/mse"] == pytest.approx((100 + 4 + 100 + 4) / 4)


def _row(label, kind, values, run_dirs=None):
  results = [{"seed": s, "test": dict(v), "validation": dict(v)}
             for s, v in enumerate(values)]
  return run_lib.Row(label, kind, results, run_dirs or ["."] * len(values))


def test_transfer_and_spread_checks_by_hand():
  spec = common.dataset_spec(default.get_config().data)
  base = dict.fromkeys(spec.higher_is_better, 1.0)
  stl = [_row(f"stl_{t}", "single_task", [base, base, base])
         for t in spec.tasks]
  stl[3] = _row("stl_count", "single_task",
                [dict(base, **{"count/accuracy": a}) for a in (0.5, 0.6, 0.7)])
  # count 0.8 +- 0.1 vs 0.6 +- 0.1: gain 0.2 = 2 pooled std: not > 2.
  near = _row("a", "method", [dict(base, **{"count/accuracy": a})
                              for a in (0.7, 0.8, 0.9)])
  assert not evidence.transfer_check(stl + [near], spec)["passed"]
  far = _row("b", "method", [dict(base, **{"count/accuracy": a})
                             for a in (0.75, 0.85, 0.95)])
  assert evidence.transfer_check(stl + [far], spec)["passed"]
  b_test = dict.fromkeys(spec.higher_is_better, 1.0)
  # Delta_m of a row whose miou is m: -100 (m - 1) / 10 metrics.
  good = _row("good", "method", [dict(base, **{"segmentation/miou": m})
                                 for m in (1.9, 2.0, 2.1)])
  bad = _row("bad", "method", [dict(base, **{"segmentation/miou": m})
                               for m in (0.9, 1.0, 1.1)])
  out = evidence.spread_check([good, bad], spec, b_test)
  assert out["passed"] and "gap 10.00 = 10.0 pooled std" in out["lines"][0]


def test_scale_check_reads_the_first_step(tmp_path):
  with open(tmp_path / "metrics.jsonl", "w") as f:
    f.write(json.dumps({"step": 1, "losses": {"segmentation": 2.0,
                                              "depth": 80.0, "normal": 0.3,
                                              "count": 1.5}}) + "\n")
  row = _row("ew", "method", [{}], [str(tmp_path)])
  out = evidence.scale_check([row], SPEC)
  assert out["passed"] and "267x" in out["lines"][0]


def test_sweep_variants_take_hparams_overrides():
  from experiments import run as run_lib  # pylint: disable=g-import-not-at-top
  from experiments import temperature_sweep  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  assert temperature_sweep.parse_variant("ew", config) == {
      "method__name": "ew"}
  fields = temperature_sweep.parse_variant(
      "uw_so_entropy:tau=4:target=0.9", config)
  assert fields == {"method__name": "uw_so_entropy",
                    "method__hparams__uw_so_entropy__tau": 4.0,
                    "method__hparams__uw_so_entropy__target": 0.9}
  changed = run_lib.override(config, **fields)
  assert changed.method.hparams.uw_so_entropy.tau == 4.0
  assert config.method.hparams.uw_so_entropy.tau is None  # a copy
  with pytest.raises(ValueError, match=r"'uw_so_tau=4' is not field=value"):
    temperature_sweep.parse_variant("uw_so_rel:uw_so_tau=4", config)
  with pytest.raises(ValueError, match="not field=value"):
    temperature_sweep.parse_variant("uw_so_rel:tau", config)
