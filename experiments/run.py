"""One training run: train, evaluate on validation every N steps, test at the end.

Every driver (``train``, ``compare``, ``scalarization``,
``temperature_sweep``) goes through :func:`build_program` and
:func:`run`:

* :func:`build_program` builds the model, method, optimiser and the jitted
  train and eval steps of a config once. Runs of the same program (seeds,
  scalarization weight vectors) reuse the compiled steps: one compilation
  per method, not per run.
* :func:`run` trains with the library loop :func:`mtl_jax.train.train`
  (``metrics.jsonl`` with the per-step losses and weights, checkpoints and
  resume when ``train.checkpoint_every > 0``, the non-finite guard), called
  in chunks of ``train.eval_every`` steps; after each chunk it evaluates on
  the validation split (``eval.jsonl``: the validation curves); at the end it
  evaluates on the test split and writes ``result.json``.

Model selection on validation (the papers' protocol): every validation
record gets a *selection score*, Delta_m (%, average over metrics) against a
``reference`` (the single-task baselines' validation metrics once they are
known, otherwise the constant predictor's, :mod:`experiments.trivial`). The
run keeps the parameters of its best score and reports the **test** metrics
of those parameters; with ``train.patience > 0`` it stops after that many
evaluations without improvement. ``train.select="last"`` reports the last
step instead. The test split is evaluated once, at the end.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import serialization

import mtl_jax
from experiments import common
from mtl_jax import metrics as mtl_metrics
from mtl_jax import train
from mtl_jax._factory import normalize
from mtl_jax.train.loop import check_skips
from mtl_jax.train.writers import step_record

Config = ml_collections.ConfigDict
RESULT = "result.json"
EVAL_LOG = "eval.jsonl"
BEST = "best.msgpack"  # the selected parameters of a run with checkpoints
# One jitted eval update per data and model config (make_eval_update).
_EVAL_UPDATES: dict[str, Any] = {}


# The drivers' default benchmark: the digit strips (the main job).
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs",
                              "digit_strips.py")


class Row(NamedTuple):
  """One method (or fixed weight vector) over seeds: a line of a results table."""
  label: str
  kind: str                      # "method", "grid", "single_task"
  results: list[dict[str, Any]]  # one per seed; failed runs have "failed"
  run_dirs: list[str]
  weights: tuple[float, ...] | None = None
  learning_rate: float | None = None  # the rate the seeds ran at
  search: dict[str, float] | None = None  # lr -> validation score


class Program(NamedTuple):
  """A config turned into compiled functions, shared by the runs of a method."""
  config: Config
  spec: common.DatasetSpec
  model: Any
  method: Any       # from mtl_jax.get(config.method.name, **hparams)
  hparams: dict[str, Any]  # the keyword arguments it was built with
  optimizer: Any
  step_fn: Any      # the pure train step (state, batch) -> (state, metrics)
  train_step: Any   # step_fn jitted, donating the state
  eval_update: Any  # jitted, see make_eval_update
  num_steps: int


def build_program(config: Config) -> Program:
  """Builds (but does not yet compile) the steps of ``config``."""
  spec = common.dataset_spec(config.data)
  model = common.build_model(config)
  hparams = common.method_hparams(config, spec,
                                  common.steps_per_epoch(config))
  method = mtl_jax.get(config.method.name, **hparams)
  optimizer = common.build_optimizer(config)
  apply_fn = train.module_apply_fn(model, input_key=spec.input_key)
  step = train.make_train_step(apply_fn, spec.task_losses, method,
                               optimizer, compute_dtype=common.compute_dtype(config),
                               jacobian=common.jacobian_options(config, model, method))
  return Program(config, spec, model, method, hparams, optimizer, step,
                 jax.jit(step, donate_argnums=0),
                 make_eval_update(config, spec, model),
                 common.num_steps(config))


def _eval_key(config: Config) -> str:
  return json.dumps([config.data.to_dict(), config.model.to_dict(),
                     config.train.compute_dtype], sort_keys=True, default=str)


def make_eval_update(config: Config, spec: common.DatasetSpec, model: Any):
  """The jitted eval step, shared by every program with the same data and model.

  ``update(state, metric_state, loss_sum, count, batch)`` runs the model with
  ``train=False`` (:func:`mtl_jax.train.make_eval_step`), adds the batch to
  the on-device metric accumulators and to the sums of the task losses.
  ``state`` is an :func:`eval_view` of the train state, whose structure does
  not depend on the method: methods share one compilation.
  """
  key = _eval_key(config)
  if key not in _EVAL_UPDATES:
    apply_fn = train.module_apply_fn(model, input_key=spec.input_key)
    eval_step = train.make_eval_step(apply_fn, spec.task_losses,
                                     compute_dtype=common.compute_dtype(config))

    def update(state, metric_state, loss_sum, count, batch):
      out, outputs = eval_step(state, batch)
      n = jax.tree.leaves(batch)[0].shape[0]
      return (spec.metric.update(metric_state, outputs, batch),
              loss_sum + n * out["losses"], count + n)

    _EVAL_UPDATES[key] = jax.jit(update)
  return _EVAL_UPDATES[key]



def eval_view(state: train.TrainState) -> train.TrainState:
  """The parts of a train state that evaluation reads (model params and state)."""
  return state.replace(params={"model": state.params["model"], "method": {}},
                       opt_state=None, method_state=None)


# -------------------------------------------------------------------- data


@functools.lru_cache(maxsize=16)
def _cached_eval_batches(key: str, split: str, batch_size: int,
                         config_json: str) -> tuple:
  del key
  data = ml_collections.ConfigDict(json.loads(config_json))
  spec = common.dataset_spec(data)
  return tuple(jax.device_put(b) for b in _eval_iter(spec, data, split,
                                                     batch_size))


def _eval_iter(spec, data: Config, split: str, batch_size: int) -> Iterator:
  return iter(spec.load(data, split, batch_size=batch_size, shuffle=False,
                        num_epochs=1, drop_remainder=False, seed=0,
                        shard_index=0, shard_count=1))


def eval_batches(program: Program, split: str) -> Iterator:
  """One pass over ``split``; kept in memory when ``data.cache_eval``."""
  data = program.config.data
  if data.get("cache_eval", False):
    return iter(_cached_eval_batches(
        data.name, split, data.eval_batch_size, data.to_json()))
  return _eval_iter(program.spec, data, split, data.eval_batch_size)


def train_batches(program: Program, seed: int) -> Iterator:
  """The infinite, shuffled train stream of one run (seeded)."""
  data = program.config.data
  return iter(program.spec.load(data, data.train_split,
                                batch_size=data.batch_size, seed=seed,
                                shuffle=True, num_epochs=None))


# -------------------------------------------------------------- evaluation


def evaluate(program: Program, state: train.TrainState,
             split: str) -> dict[str, float]:
  """Task metrics (``task/metric``) and mean task losses (``loss/task``)."""
  spec = program.spec
  view = jax.device_put(eval_view(state))
  metric_state = spec.metric.init()
  loss_sum = jnp.zeros((len(spec.tasks),), jnp.float32)
  count = jnp.zeros((), jnp.int32)
  for batch in eval_batches(program, split):
    metric_state, loss_sum, count = program.eval_update(
        view, metric_state, loss_sum, count, batch)
  values = {k: float(v) for k, v in spec.metric.compute(metric_state).items()}
  losses = np.asarray(loss_sum) / max(int(count), 1)
  values.update({f"loss/{t}": float(v) for t, v in zip(spec.tasks, losses)})
  return values


# --------------------------------------------------------------------- run


def _method_section(config: Config) -> dict[str, Any]:
  """``config.method`` with the hyperparameters of its method only (the
  other methods' entries do not change this run)."""
  section = config.method.to_dict()
  name = normalize(config.method.name)
  section["hparams"] = section["hparams"].get(name, {})
  return section


def fingerprint(config: Config, seed: int,
                weights: Sequence[float] | None,
                reference: Mapping[str, float] | None = None) -> str:
  """A hash of everything that determines a run's result."""
  text = json.dumps([config.data.to_dict(), config.model.to_dict(),
                     _method_section(config), config.optim.to_dict(),
                     {k: v for k, v in config.train.to_dict().items()
                      if k not in ("progress", "reuse")},
                     seed, list(weights) if weights is not None else None,
                     dict(reference) if reference else None],
                    sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_result(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, RESULT)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_eval_log(workdir: str) -> list[dict[str, Any]]:
  """The validation records of a run, in step order."""
  path = os.path.join(workdir, EVAL_LOG)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _write_eval_log(workdir: str, records: Sequence[dict[str, Any]]) -> None:
  with open(os.path.join(workdir, EVAL_LOG), "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")


def init_state(program: Program, seed: int,
               weights: Sequence[float] | None = None) -> train.TrainState:
  """The step-0 state of a run: model init from ``seed``, method state."""
  sample = next(iter(eval_batches(program, program.config.data.eval_split)))
  sample = jax.tree.map(lambda x: x[:1], sample)
  state = train.create_train_state(
      jax.random.PRNGKey(seed), program.model, sample, program.method,
      program.optimizer, num_tasks=len(program.spec.tasks),
      input_key=program.spec.input_key,
      task_params=getattr(common.jacobian_options(
          program.config, program.model, program.method), "task_params",
          None))
  if weights is not None:
    state = common.with_weights(state, weights)
  return state


def _eval_every(config: Config, num_steps: int) -> int:
  """Steps between evaluations: ``train.eval_every``, or once at the end."""
  every = int(config.train.eval_every)
  return every if every > 0 else max(1, num_steps)


def _eval_steps(config: Config, num_steps: int) -> list[int]:
  """The steps after which a run evaluates (the last step included)."""
  every = _eval_every(config, num_steps)
  return [e for e in [*range(every, num_steps, every), num_steps] if e > 0]


class _Evaluation:
  """The train loop's hook: evaluate on the validation split, select, step
  the plateau schedule, log; stop after ``train.patience`` evaluations
  without a better score. The state stays on the device."""

  def __init__(self, program: Program, workdir: str, selector: _Selector,
               schedule: _Plateau, records: list[dict[str, Any]], *,
               checkpoints: bool):
    self.program, self.workdir = program, workdir
    self.selector, self.schedule, self.records = selector, schedule, records
    self.checkpoints = checkpoints

  def __call__(self, step: int, state: train.TrainState
               ) -> tuple[train.TrainState, bool]:
    split = self.program.config.data.eval_split
    values = evaluate(self.program, state, split)
    record = {"step": step, "split": split, **values}
    stop = self.selector.add(record, state)
    state = self.schedule.step(record, state)
    self.records.append(record)
    if self.checkpoints and self.selector.best is record:
      self.selector.save(self.workdir)
    _write_eval_log(self.workdir, self.records)
    name = os.path.basename(self.workdir)
    logging.info("%s step %d/%d: %s", name, step, self.program.num_steps,
                 _short(values))
    if stop:
      logging.info("%s: no better validation score for %d evaluations; "
                   "stopping at step %d", name, self.selector.patience, step)
    return state, stop


def _latest_checkpoint(workdir: str) -> int:
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    return 0
  steps = [int(d) for d in os.listdir(path) if d.isdigit()]
  return max(steps, default=0)


def selection_score(values: Mapping[str, Any],
                    reference: Mapping[str, float],
                    spec: common.DatasetSpec) -> float:
  """Delta_m (%, average over metrics) of ``values`` against ``reference``.

  Lower is better; ``inf`` when a metric is missing or not finite.
  """
  ref = {k: float(v) for k, v in reference.items()
         if math.isfinite(float(v)) and float(v) != 0.0}
  if not ref or any(not math.isfinite(float(values.get(k, math.nan)))
                    for k in ref):
    return math.inf
  return float(mtl_metrics.delta_m(values, ref, spec.higher_is_better,
                                   mode="metric"))


def default_reference(spec: common.DatasetSpec, first: Mapping[str, Any],
                      weights: Sequence[float] | None) -> dict[str, float]:
  """A run's own first validation record, restricted to its trained tasks
  (non-zero weights): the reference when none is given."""
  tasks = [t for i, t in enumerate(spec.tasks)
           if weights is None or weights[i] != 0]
  return {k: float(first[k]) for k in spec.higher_is_better
          if common.metric_task(k) in tasks and k in first}


class _Selector:
  """Keeps the best validation record and a host copy of its parameters."""

  def __init__(self, spec, reference, weights, patience: int, select: str):
    if select not in ("best", "last"):
      raise ValueError(f"train.select must be 'best' or 'last', got "
                       f"{select!r}.")
    self.spec, self.reference, self.weights = spec, reference, weights
    self.patience, self.select = int(patience), select
    self.best: dict[str, Any] | None = None
    self.best_view: Any = None
    self.stale = 0

  def add(self, record: dict[str, Any], state: train.TrainState) -> bool:
    """Scores ``record`` (in place); returns whether the run should stop."""
    if self.reference is None:
      self.reference = default_reference(self.spec, record, self.weights)
    record["score"] = selection_score(record, self.reference, self.spec)
    better = (self.best is None or self.select == "last"
              or record["score"] < self.best["score"])
    if better:
      self.best, self.best_view = record, jax.device_get(eval_view(state))
      self.stale = 0
    else:
      self.stale += 1
    return self.patience > 0 and self.stale >= self.patience

  def restore(self, records: Sequence[dict[str, Any]], workdir: str,
              template: train.TrainState) -> None:
    """Resumes the selection from ``records`` and ``best.msgpack``."""
    for record in records:
      if self.reference is None:
        self.reference = default_reference(self.spec, record, self.weights)
      if self.best is None or record["score"] < self.best["score"] or (
          self.select == "last"):
        self.best = record
    path = os.path.join(workdir, BEST)
    if self.best is not None and os.path.exists(path):
      with open(path, "rb") as f:
        self.best_view = serialization.from_bytes(
            jax.device_get(eval_view(template)), f.read())

  def save(self, workdir: str) -> None:
    """Writes the best parameters (atomically) for a resumed run."""
    tmp = os.path.join(workdir, BEST + ".tmp")
    with open(tmp, "wb") as f:
      f.write(serialization.to_bytes(self.best_view))
    os.replace(tmp, os.path.join(workdir, BEST))



class _Plateau:
  """ReduceLROnPlateau on the validation score (``optim.plateau_factor``).

  Stepped after each evaluation with the record's selection score; the
  resulting scale goes into the optimiser state (:func:`common.with_update_scale`)
  and into the record (``lr_scale``). A resumed run replays the scores of
  its restored records, so the schedule needs no state of its own on disk.
  """

  def __init__(self, config: Config, records: Sequence[dict[str, Any]]):
    self.tx = common.plateau(config)
    self.state = None
    if self.tx is not None:
      self.state = self.tx.init(None)
      for record in records:
        self._update(record)

  def _update(self, record: dict[str, Any]) -> None:
    _, self.state = self.tx.update(jnp.zeros(()), self.state,
                                   value=jnp.asarray(record["score"], jnp.float32))
    record["lr_scale"] = float(self.state.scale)

  def apply(self, state: train.TrainState) -> train.TrainState:
    if self.tx is None:
      return state
    return state.replace(opt_state=common.with_update_scale(state.opt_state,
                                                            self.state.scale))

  def step(self, record: dict[str, Any], state: train.TrainState) -> train.TrainState:
    if self.tx is None:
      return state
    self._update(record)
    return self.apply(state)


def run(program: Program, workdir: str, *, seed: int,
        weights: Sequence[float] | None = None,
        reference: Mapping[str, float] | None = None) -> dict[str, Any]:
  """Trains one run into ``workdir`` and returns its result (also ``result.json``).

  Selects the parameters of the best validation score against ``reference``
  (``None``: the run's own first validation record; see the module
  docstring) and reports their test metrics. With ``train.reuse`` a finished
  run of the same :func:`fingerprint` is loaded instead of trained again.
  Raises :class:`mtl_jax.train.NonFiniteError` when training diverges.
  """
  config = program.config
  os.makedirs(workdir, exist_ok=True)
  key = fingerprint(config, seed, weights, reference)
  cached = load_result(workdir)
  if config.train.reuse and cached and cached.get("fingerprint") == key:
    logging.info("reusing %s", workdir)
    return {**cached, "reused": True}
  t0 = time.perf_counter()
  ckpt = int(config.train.checkpoint_every)
  resumed = _latest_checkpoint(workdir) if ckpt > 0 else 0
  if resumed == 0:  # a fresh run: forget logs of an earlier one
    _fresh(workdir)
  records = [r for r in read_eval_log(workdir) if r["step"] <= resumed]
  state = init_state(program, seed, weights)
  selector = _Selector(program.spec, reference, weights,
                       config.train.get("patience", 0),
                       config.train.get("select", "best"))
  selector.restore(records, workdir, state)
  schedule = _Plateau(config, records)
  state = schedule.apply(state)
  evaluation = _Evaluation(program, workdir, selector, schedule, records,
                           checkpoints=ckpt > 0)
  state = train.train(
      program.train_step, state, train_batches(program, seed),
      num_steps=program.num_steps, workdir=workdir,
      log_every=max(1, config.train.log_every),
      checkpoint_every=ckpt if ckpt > 0 else None,
      max_consecutive_skips=config.train.max_consecutive_skips,
      task_names=program.spec.tasks, progress=config.train.progress,
      hook=evaluation, hook_every=_eval_every(config, program.num_steps))
  if selector.best_view is None:  # resumed past the end without best.msgpack
    selector.best_view = jax.device_get(eval_view(state))
  return _finish(program, workdir, selector, records, key, seed, weights, t0)


def _finish(program: Program, workdir: str, selector: _Selector,
            records: list[dict[str, Any]], key: str, seed: int,
            weights: Sequence[float] | None, t0: float) -> dict[str, Any]:
  """Evaluates the selected parameters on the test split; ``result.json``."""
  config = program.config
  test = evaluate(program, selector.best_view, config.data.test_split)
  best = selector.best or (records[-1] if records else {})
  result = {
      "fingerprint": key, "seed": seed,
      "weights": list(weights) if weights is not None else None,
      "method": config.method.name, "hparams": program.hparams,
      "steps": program.num_steps,
      "learning_rate": float(config.optim.learning_rate),
      "selected_step": best.get("step"), "score": best.get("score"),
      "trained_steps": records[-1]["step"] if records else 0,
      "validation": best, "last_validation": records[-1] if records else {},
      "reference": selector.reference,
      "test": test, "test_split": config.data.test_split,
      "wall_s": time.perf_counter() - t0,
      "final_weights": final_weights(workdir, program.spec.tasks),
  }
  with open(os.path.join(workdir, RESULT), "w") as f:
    json.dump(result, f, indent=1)
  return result


def _fresh(workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  for name in (EVAL_LOG, "metrics.jsonl", RESULT, BEST):
    if os.path.exists(os.path.join(workdir, name)):
      os.remove(os.path.join(workdir, name))


def lane(tree: Any, i: int) -> Any:
  """Lane ``i`` of a pytree stacked on axis 0."""
  return jax.tree.map(lambda x: x[i], tree)


def run_lanes(program: Program, workdirs: Sequence[str], *, seed: int,
              weights: Sequence[Sequence[float]],
              reference: Mapping[str, float] | None = None
              ) -> list[dict[str, Any]]:
  """Trains several scalarization weight vectors in one vmapped program.

  ``jax.vmap`` of the pure train step over the states of the lanes (which
  differ only in their weights; every lane sees the same batches and the same
  initial model). Writes each lane's ``metrics.jsonl``, ``eval.jsonl`` and
  ``result.json`` like :func:`run`, with the same selection on validation
  (per lane; ``train.patience`` is ignored: the lanes train together). Worth
  it on accelerators with memory to spare; on a CPU the batched convolutions
  are slower than running the lanes one after the other. No checkpoints.
  """
  config = program.config
  t0 = time.perf_counter()
  for d in workdirs:
    _fresh(d)
  states = [init_state(program, seed, w) for w in weights]
  stacked = jax.tree.map(lambda *x: jnp.stack(x), *states)
  step = jax.jit(jax.vmap(program.step_fn, in_axes=(0, None)),
                 donate_argnums=0)
  writers = [train.MetricsWriter(d) for d in workdirs]
  selectors = [_Selector(program.spec, reference, w, 0,
                         config.train.get("select", "best")) for w in weights]
  batches = train_batches(program, seed)
  records: list[list[dict[str, Any]]] = [[] for _ in workdirs]
  done, split = 0, config.data.eval_split
  try:
    for end in _eval_steps(config, program.num_steps):
      pending = []
      for _ in range(end - done):
        stacked, metrics = step(stacked, next(batches))
        pending.append(metrics)
      done = end
      host = jax.device_get(pending)
      for i, (writer, d) in enumerate(zip(writers, workdirs)):
        recs = [step_record(lane(h, i), program.spec.tasks) for h in host]
        writer.write(recs)
        check_skips(recs, config.train.max_consecutive_skips)
        state_i = lane(stacked, i)
        record = {"step": end, "split": split,
                  **evaluate(program, state_i, split)}
        selectors[i].add(record, state_i)
        records[i].append(record)
        _write_eval_log(d, records[i])
  finally:
    for writer in writers:
      writer.close()
  results = [_finish(program, d, selectors[i], records[i],
                     fingerprint(config, seed, w, reference), seed, w, t0)
             for i, (d, w) in enumerate(zip(workdirs, weights))]
  for result, d in zip(results, workdirs):  # each lane's share of the time
    result["wall_s"] = (time.perf_counter() - t0) / len(workdirs)
    with open(os.path.join(d, RESULT), "w") as f:
      json.dump(result, f, indent=1)
  return results


def final_weights(workdir: str, tasks: Sequence[str]) -> list[float]:
  """The task weights logged at the last step of ``metrics.jsonl``."""
  records = train.read_metrics(workdir)
  return [records[-1]["weights"][t] for t in tasks] if records else []


def _short(values: dict[str, float]) -> str:
  return ", ".join(f"{k}={v:.4g}" for k, v in values.items()
                   if not k.startswith("loss/"))


# ----------------------------------------------------------- driver helpers


def override(config, **fields):
  """A copy of ``config`` with fields replaced, ``__`` for each dot:
  ``method__name="uw_so"``, ``method__hparams__uw_so__temperature=2.0``."""
  config = config.copy_and_resolve_references()
  for dotted, value in fields.items():
    *path, name = dotted.split("__")
    node = config
    for key in path:
      node = node[key]
    node[name] = value
  return config


def run_row(program: Program, workdir: str, label: str, kind: str,
            seeds: Sequence[int],
            weights: Sequence[float] | None = None,
            reference: Mapping[str, float] | None = None,
            on_run: Any | None = None) -> Row:
  """Runs one method (or weight vector) for every seed; failures are kept.

  Run ``seed`` goes to ``workdir/label/seed_<seed>``; ``on_run(result)`` is
  called after each (progress).
  """
  results, dirs = [], []
  for seed in seeds:
    run_dir = os.path.join(workdir, label, f"seed_{seed}")
    t0 = time.perf_counter()
    try:
      result = run(program, run_dir, seed=seed, weights=weights,
                   reference=reference)
    except train.NonFiniteError as e:
      logging.warning("%s seed %d diverged: %s", label, seed, e)
      result = {"failed": str(e), "seed": seed,
                "wall_s": time.perf_counter() - t0}
    results.append(result)
    dirs.append(run_dir)
    logging.info("%s seed %d: %.1f s", label, seed, result["wall_s"])
    if on_run is not None:
      on_run(result)
  return Row(label, kind, results, dirs,
             tuple(weights) if weights is not None else None,
             float(program.config.optim.learning_rate))
