"""A training process for the subprocess tests (kill/resume and multi-host).

Not a test module. Run as ``python train_worker.py --workdir ... --out ...``;
set ``XLA_FLAGS`` (fake device count) in its environment. With
``--num-processes 2`` it joins a localhost ``jax.distributed`` run with gloo
CPU collectives and reads only its own slice of every global batch.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__),
                                                "..", "..")))


def _parse():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--method", default="dwa")
  parser.add_argument("--modes", default="single")  # comma list: single,pmap,mesh
  parser.add_argument("--num-steps", type=int, default=8)
  parser.add_argument("--checkpoint-every", type=int, default=2)
  parser.add_argument("--sleep", type=float, default=0.0)
  parser.add_argument("--num-processes", type=int, default=1)
  parser.add_argument("--process-id", type=int, default=0)
  parser.add_argument("--port", type=int, default=0)
  # A wider shared layer: a state of tens of MB, so that an asynchronous
  # checkpoint write lasts long enough to be killed in the middle of it.
  parser.add_argument("--hidden", type=int, default=0)
  return parser.parse_args()


def main():
  args = _parse()
  from mtl_jax import train
  if args.num_processes > 1:
    train.initialize_distributed(f"127.0.0.1:{args.port}", args.num_processes,
                                 args.process_id)
  import _train_fixtures as fx
  import jax
  import numpy as np
  if args.hidden:
    class Wide(fx.TinyMLP):
      hidden: int = args.hidden
    fx.TinyMLP = Wide

  class ProcessSlice(fx.SeededBatches):
    """This process's rows of each global batch, optionally slowed down."""

    def __next__(self):
      batch = super().__next__()
      if args.sleep:
        time.sleep(args.sleep)
      n = fx.BATCH // jax.process_count()
      rows = slice(jax.process_index() * n, (jax.process_index() + 1) * n)
      return {k: v[rows] for k, v in batch.items()}

  results = {"device_count": np.array(jax.device_count()),
             "process_count": np.array(jax.process_count())}
  for mode in args.modes.split(","):
    state, _, _ = fx.init_state(args.method)
    if mode == "single":
      step, placement = jax.jit(fx.make_step(args.method), donate_argnums=0), None
    elif mode == "pmap":
      step = train.pmap_step(fx.make_step(args.method, axis_name="batch"))
      placement = train.pmap_placement()
    else:
      mesh = train.make_mesh("data")
      step = train.mesh_step(fx.make_step(args.method, axis_name="data"),
                             mesh, "data")
      placement = train.mesh_placement(mesh, "data")
    final = train.train(step, state, ProcessSlice(), num_steps=args.num_steps,
                        workdir=os.path.join(args.workdir, mode),
                        placement=placement, log_every=2,
                        checkpoint_every=args.checkpoint_every,
                        task_names=fx.TASK_NAMES, progress=False)
    for path, leaf in jax.tree_util.tree_flatten_with_path(final.params)[0]:
      results[f"{mode}{jax.tree_util.keystr(path)}"] = np.asarray(leaf)
    results[f"{mode}.step"] = np.asarray(final.step)
  np.savez(f"{args.out}-{jax.process_index()}.npz", **results)


if __name__ == "__main__":
  main()
