r"""Trains one multi-task model from a config file (Flax-examples style).

  python -m experiments.train --config experiments/configs/default.py \
      --config.method.name=uw_so --config.method.hparams.uw_so.temperature=2 \
      --workdir runs/uw_so

Writes into ``--workdir``: ``config.json``, ``metrics.jsonl`` (per step:
task losses, task weights, total, gradient and parameter norms),
``eval.jsonl`` (validation metrics every ``train.eval_every`` steps),
``result.json`` (final validation and test metrics) and, with
``--config.train.checkpoint_every=N``, ``checkpoints/`` (a killed run
resumes from there when started again with the same command).
"""
from __future__ import annotations

import json
import os
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import run as run_lib
from mtl_jax import metrics as mtl_metrics

FLAGS = flags.FLAGS
def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
  """Trains ``config`` into ``workdir``; returns ``result.json``'s content.

  The method is ``mtl_jax.get(config.method.name, **hparams)`` with the
  hyperparameters of ``config.method.hparams.<name>`` (recorded in
  ``result.json``). On NYUv2 and Cityscapes the result also holds Delta_m against the published
  single-task baselines, in both conventions.
  """
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=1))
  program = run_lib.build_program(config)
  result = run_lib.run(program, workdir, seed=config.train.seed)
  published = program.spec.published
  if published:
    result["delta_m_published"] = {
        mode: mtl_metrics.delta_m(result["test"], published,
                                  program.spec.higher_is_better, mode=mode)
        for mode in ("metric", "task")}
  return result



def define_flags() -> None:
  """The command-line flags (defined only when this module is the program)."""
  flags.DEFINE_string("workdir", None, "Directory for logs, checkpoints, results.")
  config_flags.DEFINE_config_file(
      "config", None, "Config file, e.g. experiments/configs/default.py.",
      lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  if FLAGS.workdir is None:
    raise app.UsageError("--workdir is required.")
  result = train_and_evaluate(FLAGS.config, FLAGS.workdir)
  logging.info("test metrics: %s", json.dumps(result["test"]))
  print(json.dumps({k: result[k] for k in ("test", "final_weights", "wall_s")
                    if k in result}, indent=1))
  if "delta_m_published" in result:
    print("Delta_m vs published single-task baselines (%):",
          result["delta_m_published"])


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config"])
  app.run(main)
