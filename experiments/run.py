"""One training run: train, evaluate on validation every N steps, test at the end.

Every driver (``train``, ``compare``, ``scalarization``,
``temperature_sweep``) goes through :func:`build_program` and
:func:`run`:

* :func:`build_program` builds the model, weighting, optimiser and the jitted
  train and eval steps of a config once. Runs of the same program (seeds,
  scalarization weight vectors) reuse the compiled steps: one compilation
  per method, not per run.
* :func:`run` trains with the library loop :func:`mtl_jax.train.train`
  (``metrics.jsonl`` with the per-step losses and weights, checkpoints and
  resume when ``train.checkpoint_every > 0``, the non-finite guard), called
  in chunks of ``train.eval_every`` steps; after each chunk it evaluates on
  the validation split (``eval.jsonl``: the validation curves); at the end it
  evaluates on the test split and writes ``result.json``.

No early stopping: the reported model is the one after the last step.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from typing import Any, Iterator, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from experiments import common
from mtl_jax import train

Config = ml_collections.ConfigDict
RESULT = "result.json"
EVAL_LOG = "eval.jsonl"


class Program(NamedTuple):
  """A config turned into compiled functions, shared by the runs of a method."""
  config: Config
  spec: common.DatasetSpec
  model: Any
  weighting: Any
  optimizer: Any
  train_step: Any   # jitted (state, batch) -> (state, metrics), donates state
  eval_update: Any  # jitted, see make_eval_update
  num_steps: int


def build_program(config: Config) -> Program:
  """Builds (but does not yet compile) the steps of ``config``."""
  spec = common.dataset_spec(config.data)
  model = common.build_model(config)
  weighting = common.build_weighting(config, spec,
                                     common.steps_per_epoch(config))
  optimizer = common.build_optimizer(config)
  apply_fn = train.module_apply_fn(model, input_key=spec.input_key)
  step = train.make_train_step(apply_fn, spec.task_losses, weighting,
                               optimizer, compute_dtype=common.compute_dtype(config))
  return Program(config, spec, model, weighting, optimizer,
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
  not depend on the weighting: methods share one compilation.
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


_EVAL_UPDATES: dict[str, Any] = {}


def eval_view(state: train.TrainState) -> train.TrainState:
  """The parts of a train state that evaluation reads (model params and state)."""
  return state.replace(params={"model": state.params["model"], "weighting": {}},
                       opt_state=None, weighting_state=None)


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


def fingerprint(config: Config, seed: int,
                weights: Optional[Sequence[float]]) -> str:
  """A hash of everything that determines a run's result."""
  text = json.dumps([config.data.to_dict(), config.model.to_dict(),
                     config.weighting.to_dict(), config.optim.to_dict(),
                     {k: v for k, v in config.train.to_dict().items()
                      if k not in ("progress", "reuse")},
                     seed, list(weights) if weights is not None else None],
                    sort_keys=True, default=str)
  return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_result(workdir: str) -> Optional[dict[str, Any]]:
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
               weights: Optional[Sequence[float]] = None) -> train.TrainState:
  """The step-0 state of a run: model init from ``seed``, weighting state."""
  sample = next(iter(eval_batches(program, program.config.data.eval_split)))
  sample = jax.tree.map(lambda x: x[:1], sample)
  state = train.create_train_state(
      jax.random.PRNGKey(seed), program.model, sample, program.weighting,
      program.optimizer, num_tasks=len(program.spec.tasks),
      input_key=program.spec.input_key)
  if weights is not None:
    state = common.with_weights(state, weights)
  return state


def _chunks(num_steps: int, eval_every: int) -> list[int]:
  every = eval_every if eval_every > 0 else num_steps
  ends = list(range(every, num_steps, every)) + [num_steps]
  return [e for e in ends if e > 0]


def _latest_checkpoint(workdir: str) -> int:
  path = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(path):
    return 0
  steps = [int(d) for d in os.listdir(path) if d.isdigit()]
  return max(steps, default=0)


def run(program: Program, workdir: str, *, seed: int,
        weights: Optional[Sequence[float]] = None) -> dict[str, Any]:
  """Trains one run into ``workdir`` and returns its result (also ``result.json``).

  With ``train.reuse`` a finished run of the same :func:`fingerprint` is
  loaded instead of trained again. Raises :class:`mtl_jax.train.NonFiniteError`
  when training diverges.
  """
  config = program.config
  os.makedirs(workdir, exist_ok=True)
  key = fingerprint(config, seed, weights)
  cached = load_result(workdir)
  if config.train.reuse and cached and cached.get("fingerprint") == key:
    logging.info("reusing %s", workdir)
    return {**cached, "reused": True}
  t0 = time.perf_counter()
  ckpt = int(config.train.checkpoint_every)
  resumed = _latest_checkpoint(workdir) if ckpt > 0 else 0
  if resumed == 0:  # a fresh run: forget logs of an earlier one
    for name in (EVAL_LOG, "metrics.jsonl", RESULT):
      if os.path.exists(os.path.join(workdir, name)):
        os.remove(os.path.join(workdir, name))
  records = [r for r in read_eval_log(workdir) if r["step"] <= resumed]
  state = init_state(program, seed, weights)
  batches = train_batches(program, seed)
  split = config.data.eval_split
  for end in _chunks(program.num_steps, config.train.eval_every):
    if end <= resumed:
      continue
    state = train.train(
        program.train_step, state, batches, num_steps=end, workdir=workdir,
        log_every=max(1, config.train.log_every),
        checkpoint_every=ckpt if ckpt > 0 else None,
        max_consecutive_skips=config.train.max_consecutive_skips,
        task_names=program.spec.tasks, progress=config.train.progress)
    values = evaluate(program, state, split)
    records.append({"step": end, "split": split, **values})
    _write_eval_log(workdir, records)
    logging.info("%s step %d/%d: %s", os.path.basename(workdir), end,
                 program.num_steps, _short(values))
  test = evaluate(program, state, config.data.test_split)
  result = {
      "fingerprint": key, "seed": seed,
      "weights": list(weights) if weights is not None else None,
      "weighting": config.weighting.name, "steps": program.num_steps,
      "validation": records[-1] if records else {}, "test": test,
      "test_split": config.data.test_split, "wall_s": time.perf_counter() - t0,
      "final_weights": final_weights(workdir, program.spec.tasks),
  }
  with open(os.path.join(workdir, RESULT), "w") as f:
    json.dump(result, f, indent=1)
  return result


def final_weights(workdir: str, tasks: Sequence[str]) -> list[float]:
  """The task weights logged at the last step of ``metrics.jsonl``."""
  records = train.read_metrics(workdir)
  return [records[-1]["weights"][t] for t in tasks] if records else []


def _short(values: dict[str, float]) -> str:
  return ", ".join(f"{k}={v:.4g}" for k, v in values.items()
                   if not k.startswith("loss/"))
