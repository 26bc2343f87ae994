"""QM9's configs against the papers' protocol, their smoke runs on fixture
molecules, the plateau schedule, and the page beside the published table."""
import importlib
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import common, report
from experiments import qm9 as qm9_driver
from experiments import run as run_lib
from experiments import train as train_main
from experiments.configs import qm9 as qm9_config
from experiments.configs import qm9_cpu as qm9_cpu_config
from mtl_jax import models, train
from mtl_jax.data import qm9

FIXTURES = pathlib.Path(__file__).parents[1] / "data" / "fixtures" / "qm9"


def test_qm9_config_is_the_papers_protocol():
  """Every setting of the papers' QM9 protocol (Nash-MTL's trainer, reused by
  FAMO and FairGrad), as the reference restates it."""
  c = qm9_config.get_config()
  assert (c.data.name, c.data.edges, c.data.batch_size) == ("qm9", "complete", 120)
  assert (c.data.num_test, c.data.num_validation) == (10000, 10000)
  assert c.data.num_train == 130831 - 20000
  assert (c.model.name, c.model.dim, c.model.edge_hidden) == ("qm9_net", 64, 128)
  assert (c.model.message_steps, c.model.set2set_steps) == (3, 3)
  assert c.optim.learning_rate == 1e-3 and c.optim.method_learning_rate == 0.025
  assert c.optim.weight_decay == 0.0 and c.optim.decay_every_epochs == 0.0
  assert (c.optim.plateau_factor, c.optim.plateau_patience,
          c.optim.plateau_min_lr) == (0.7, 5, 1e-5)
  assert c.train.num_epochs == 300 and c.train.num_steps == 0
  assert c.train.eval_every == common.steps_per_epoch(c) == 923  # every epoch
  assert c.train.select == "best" and c.compare.seeds == 3
  assert c.compare.baselines == "published"
  assert c.protocol.lr_grid == "1e-3,5e-4,1e-4"
  h = c.method.hparams
  assert (h.cagrad.c, h.dwa.temperature, h.fairgrad.alpha,
          h.nash_mtl.max_norm) == (0.4, 2, 2, 1)
  assert (h.famo.weight_decay, h.famo.lr) == (1e-3, 0.025)
  assert c.method.jacobian_mode == "params"
  methods = common.parse_list(c.compare.methods)
  published = [m for m in qm9.PUBLISHED if m not in ("stl", "go4align")]
  assert set(published) <= set(methods), set(published) - set(methods)
  spec = common.dataset_spec(_fixture_data(c))
  assert spec.published == {f"{t}/mae": v for t, v in qm9.STL_BASELINES.items()}
  assert spec.published["homo/mae"] == 60.576 and spec.published["cv/mae"] == 0.07212


def test_nash_mtl_runs_its_published_iterations():
  import inspect
  module = importlib.import_module("mtl_jax.aggregation.nash_mtl")
  assert inspect.signature(module.nash_mtl).parameters["optim_niter"].default == 20


def test_cpu_config_changes_only_what_it_says():
  full, cpu = qm9_config.get_config(), qm9_cpu_config.get_config()
  changed = {f"{s}.{k}" for s in ("data", "model", "method", "optim", "train")
             for k in full[s] if full[s][k] != cpu[s][k]}
  assert changed == {"data.edges", "data.layout", "data.num_train", "data.num_validation",
                     "data.num_test", "data.eval_batch_size", "model.dim", "model.edge_hidden",
                     "method.jacobian_mode", "train.num_epochs", "train.eval_every",
                     "train.log_every"}
  assert cpu.compare.baselines == "single_task" and cpu.protocol.lr_search
  assert "db_mtl" not in cpu.compare.methods and "db_mtl" in full.compare.methods
  for name in ("qm9", "qm9_cpu"):
    doc = importlib.import_module(f"experiments.configs.{name}").__doc__
    assert "python -m experiments." in doc and "Runtime" in doc and "Expected result" in doc


def _fixture_data(config):
  config.data.root = str(FIXTURES)
  config.data.perception_table = str(FIXTURES / "perception.json")
  return config.data


@pytest.mark.parametrize("name,method", [("qm9", "uw"), ("qm9_cpu", "nash_mtl")])
@pytest.mark.slow
def test_smoke_trains_on_fixture_molecules(name, method, tmp_path):
  config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
  config.data.data_dir = str(tmp_path / "data")
  config.method.name = method
  result = train_main.train_and_evaluate(config, str(tmp_path / "run"))
  records = train.read_metrics(tmp_path / "run")
  assert [r["step"] for r in records] == [1, 2]
  assert not any(r["skipped"] for r in records)
  maes = {k: v for k, v in result["test"].items() if not k.startswith("loss/")}
  assert set(maes) == {f"{t}/mae" for t in qm9.TARGETS}
  assert all(np.isfinite(v) and v > 0 for v in maes.values())
  evals = [json.loads(line) for line in open(tmp_path / "run" / "eval.jsonl")]
  assert [e["lr_scale"] for e in evals] == [1.0, 1.0]  # the plateau schedule ran


def test_cpu_layout_feeds_the_model_the_same_graph(tmp_path):
  config = qm9_cpu_config.get_config("smoke")
  config.data.data_dir = str(tmp_path / "data")
  spec = common.dataset_spec(config.data)
  batch = next(iter(spec.load(config.data, "train", batch_size=3, shuffle=False)))
  assert set(batch["graph"]) == {"nodes", "node_mask", "edges", "edge_mask", "senders",
                                 "receivers"}
  assert batch["graph"]["edges"].shape == (3, 56, 5)
  np.testing.assert_array_equal(batch["mu"], batch["targets"][:, 0])
  config.data.layout = "dense"
  dense = next(iter(spec.load(config.data, "train", batch_size=3, shuffle=False)))
  net = models.QM9Net(dim=8, edge_hidden_size=8)
  variables = net.init(jax.random.PRNGKey(0), dense["graph"])
  a, b = net.apply(variables, dense["graph"]), net.apply(variables, batch["graph"])
  for t in qm9.TARGETS:
    np.testing.assert_allclose(a[t], b[t], rtol=1e-5, atol=1e-5)
  # Each bond once each way: as many edges as nonzero bond entries.
  assert batch["graph"]["edge_mask"].sum() == dense["graph"]["edge_mask"].sum()


# ------------------------------------------------------------ the plateau


def _plateau_config(patience=1, factor=0.5, min_lr=2.5e-4):
  c = qm9_config.get_config("smoke")
  c.optim.learning_rate = 1e-3
  c.optim.plateau_factor, c.optim.plateau_patience = factor, patience
  c.optim.plateau_min_lr = min_lr
  return c


def test_plateau_follows_pytorchs_rule_by_hand():
  """ReduceLROnPlateau(min, factor 0.5, patience 1, threshold 1e-4 rel,
  min_lr 2.5e-4) on the scores 10, 9, 9, 9, 9, 8.9999, 1: improvements at 9
  (counter 0), then 9, 9 (counter 1, 2 > patience: scale 0.5, counter 0),
  9, 8.9999 (not below 9 * (1 - 1e-4): counter 2: 0.25, the floor
  2.5e-4 / 1e-3), then 1 improves: 0.25 stays."""
  records = [{"score": s} for s in (10, 9, 9, 9, 9, 8.9999, 1)]
  run_lib._Plateau(_plateau_config(), records)
  assert [r["lr_scale"] for r in records] == [1, 1, 1, 0.5, 0.5, 0.25, 0.25]


def test_plateau_scale_reaches_the_update_and_replays_on_resume():
  config = _plateau_config(patience=0)
  tx = common.build_optimizer(config)
  params = {"model": {"w": jnp.ones(3)}, "method": {}}
  grads = {"model": {"w": jnp.ones(3)}, "method": {}}
  opt_state = tx.init(params)
  first, _ = tx.update(grads, opt_state, params)
  scaled, _ = tx.update(grads, common.with_update_scale(opt_state, 0.25), params)
  np.testing.assert_allclose(scaled["model"]["w"], 0.25 * first["model"]["w"], rtol=1e-6)
  # A resumed run replays the restored records' scores to the same scale.
  records = [{"score": 5.0}, {"score": 6.0}, {"score": 7.0}]
  live = run_lib._Plateau(config, [])
  for r in records:
    live._update(dict(r))
  replayed = run_lib._Plateau(config, [dict(r) for r in records])
  assert float(replayed.state.scale) == float(live.state.scale) == 0.25


def test_plateau_is_off_by_default_and_checks_its_factor():
  config = importlib.import_module("experiments.configs.default").get_config()
  assert common.plateau(config) is None
  config.optim.plateau_factor = 1.5
  with pytest.raises(ValueError, match="plateau_factor"):
    common.plateau(config)


# ------------------------------------------------------------- the page


def test_spearman_by_hand():
  # Ranks (1, 2, 3, 4) against (2, 1, 4, 3): sum d^2 = 4, rho = 1 - 6*4 / (4*15) = 0.6.
  rho, p = qm9_driver.spearman([1.0, 2.0, 3.0, 4.0], [20.0, 10.0, 40.0, 30.0])
  assert rho == pytest.approx(0.6)
  assert 0 < p < 1
  assert qm9_driver.spearman([1, 2, 3], [3, 2, 1])[0] == pytest.approx(-1.0)


def test_rank_rows_keep_shared_finite_methods_in_published_order():
  rows = qm9_driver.rank_rows({"ew": 5.0, "mgda": 1.0, "nash_mtl": math.inf, "ours": 0.0},
                              {"ew": 177.6, "uw_o": 77.8, "mgda": 120.5, "nash_mtl": 62.0})
  assert [r["method"] for r in rows] == ["ew", "mgda"]
  assert [(r["rank_ours"], r["rank_published"]) for r in rows] == [(2, 2), (1, 1)]


def test_block_sets_our_table_beside_the_published_one():
  config = qm9_cpu_config.get_config()
  summaries = []
  for i, m in enumerate(("ew", "uw_o", "mgda", "nash_mtl", "uw_so_norm")):
    s = {"method": m, "delta_m_metric_mean": float(i), "delta_m_metric_std": 0.5}
    s.update({f"{t}/mae_mean": 1.0 + i for t in qm9.TARGETS})
    summaries.append(s)
  text = qm9_driver.block(config, summaries, {"ew": {"mean": 900.0, "std": 1.0}}, 60.0)
  assert "| ew (LS) |" in text and "| uw_o (SI) |" in text
  assert "| Nash-MTL (`nash_mtl`) |" in text and "177.6 ± 3.4" in text
  assert "+900.00 ± 1.00" in text
  # ours: ew 0, uw_o 1, mgda 2, nash 3; published: nash 62 < uw_o 77.8 < mgda 120.5 < ew 177.6.
  rho = qm9_driver.spearman([0, 1, 2, 3], [177.6, 77.8, 120.5, 62.0])[0]
  assert f"**ρ = {rho:+.2f}**" in text and "over these 4 methods" in text
  assert report.fixed_text(3.0, 0.5) in text


def test_write_page_keeps_the_prose_around_the_block(tmp_path):
  page = tmp_path / "qm9" / "README.md"
  qm9_driver.write_page(str(page), "first")
  page.write_text(page.read_text().replace("# QM9", "# QM9\n\nprose above"))
  qm9_driver.write_page(str(page), "second")
  text = page.read_text()
  assert "prose above" in text and "second" in text and "first" not in text
