"""Records every method's parameters and state after 3 train steps.

  python tests/train/make_step_fixture.py   # rewrites fixtures/step_fixture.npz

The digit strips' model (experiments/configs/digit_strips.py: tasks centre,
product, left_even, left_smaller; a 128x128 trunk; the product head starting
at its mean) on one fixed batch of the strips' format, each method of
``mtl_jax.names()`` with its default hyperparameters (plus the few a factory
requires), the config's Jacobian options (the model's heads as task
parameters, ``JacobianOptions(mode="params", chunk_size=1)``) and fixed seeds.
tests/train/test_step_fixture.py recomputes the same numbers and compares,
so a refactor of the train step must keep them (issue 21).

The optimiser is plain SGD, not the config's Adam: Adam's first steps move
every parameter by about the learning rate times the sign of its gradient,
so a gradient scaled by a wrong constant (a sum for a mean) would leave the
recorded parameters unchanged, and a gradient near zero turns rounding into
a move of up to the learning rate. SGD keeps the update linear in the
gradient, so both show.

A leaf of more than :data:`MAX_VALUES` numbers (the two trunk kernels, the
(K, P) buffers of MoCo, DB-MTL and ExcessMTL) is kept at every ``stride``-th
flat index, an odd stride so that every column of a 2^n-wide kernel is hit:
all 37 methods in full would take 8 MB, this about 2 MB, and a change of
the step moves far more numbers than it could slip between.

Rerun this script only when a change of the numbers is intended, and say
why in the commit.
"""
import os
import sys

# The XLA flags of tests/conftest.py, so that the fixture is compiled as the
# test compiles it (LLVM's lowest level changes the last bits of float32).
for _FLAG in ("--xla_force_host_platform_device_count=4",
              "--xla_backend_optimization_level=0"):
  if _FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " "
                               + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import concurrent.futures  # noqa: E402
import functools  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import mtl_jax  # noqa: E402
from mtl_jax import losses, models, train  # noqa: E402

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                    "step_fixture.npz")
STEPS = 3
BATCH = 12  # divisible by 3: SDMGrad and MoDo split the batch in 3
SEED = 0
# experiments/configs/digit_strips.py's tasks and model.
TASKS = ("centre", "product", "left_even", "left_smaller")
OUTPUT_SIZES = (10, 1, 1, 1)   # digit_attributes.OUTPUT_SIZES
OFFSETS = (0.0, 20.25, 0.0, 0.0)  # start_at_mean: E[l * c] = 20.25
HIDDEN = (128, 128)
MAX_VALUES = 4096  # numbers kept of one leaf
# SGD's rate on the model and the methods' parameters, a tenth of the
# config's: rebuilt with LLVM's level 3 in place of 0 (the same maths in
# another order), the fixture moves by up to 1.7e-6 at 1e-2 (CAGrad's
# solver) and by less than 1e-6 at 1e-3 but for FAMO's logits
# (test_step_fixture.py), while a change of the step still moves the
# parameters by far more (EW's trunk moves by 0.01, MGDA's by 4e-5).
LEARNING_RATE = 1e-3
# The hyperparameters a factory requires, at the digit strips' config values;
# every other hyperparameter keeps its default. DWA's epoch is one step, so
# its ratio rule runs within the 3 steps.
HPARAMS = {
    "cagrad": {"c": 0.4},
    "constant": {"weights": (0.1, 0.2, 0.3, 0.4)},
    "dwa": {"steps_per_epoch": 1},
    "fairgrad": {"alpha": 1.0},
    "scalarization": {"weights": (0.1, 0.2, 0.3, 0.4)},
    "uw_so": {"temperature": 50.0},
}


def make_batch() -> dict[str, np.ndarray]:
  """A batch of digit strips: 8x24 images in [0, 1], (left, centre, right)
  digit classes and each task's target (mtl_jax.data.digit_attributes)."""
  rng = np.random.default_rng(SEED)
  image = rng.uniform(size=(BATCH, 8, 24, 1)).astype(np.float32)
  image[image < 0.5] = 0.0  # a dark background, as in the real strips
  l, c, _ = rng.integers(0, 10, size=(3, BATCH))
  return {"image": image,
          "centre": c.astype(np.int32),
          "product": (l * c).astype(np.float32),
          "left_even": (l % 2 == 0).astype(np.int32),
          "left_smaller": (l < c).astype(np.int32)}


def make_model() -> models.DigitAttributeNet:
  return models.DigitAttributeNet(tasks=TASKS, hidden=HIDDEN, widths=(),
                                  output_sizes=OUTPUT_SIZES,
                                  output_offsets=OFFSETS)


def _run(name: str, batch: dict[str, np.ndarray]):
  """The state after :data:`STEPS` jitted steps of method ``name``."""
  method = mtl_jax.get(name, **HPARAMS.get(name, {}))
  model = make_model()
  tx = train.make_optimizer(optax.sgd(LEARNING_RATE),
                            method_learning_rate=LEARNING_RATE)
  jacobian = {}
  if mtl_jax.family(name) == "aggregation":
    jacobian = {"task_params": models.task_params(model),
                "mode": "params", "chunk_size": 1}
  state = train.create_train_state(
      jax.random.PRNGKey(SEED), model, batch, method, tx, len(TASKS),
      task_params=jacobian.get("task_params"))
  step = train.make_train_step(
      train.module_apply_fn(model),
      functools.partial(losses.digit_attribute_losses, tasks=TASKS), method,
      tx, jacobian=train.JacobianOptions(**jacobian) if jacobian else None)
  compiled = jax.jit(step).lower(state, batch).compile()
  for _ in range(STEPS):
    state, metrics = compiled(state, batch)
  if int(metrics["total_skips"]):
    raise RuntimeError(f"{name}: a step was skipped (non-finite losses).")
  return state


def sample(leaf) -> np.ndarray:
  """``leaf``, or every ``stride``-th number of it (odd ``stride``) when it
  has more than :data:`MAX_VALUES`."""
  leaf = np.asarray(leaf)
  if leaf.size <= MAX_VALUES:
    return leaf
  stride = (leaf.size // MAX_VALUES + 1) | 1
  return leaf.ravel()[::stride]


def record(name: str, state) -> dict[str, np.ndarray]:
  """``name``'s model parameters, method parameters and method state, flat
  and :func:`sample`-d.

  Keys: ``<name>/model<path>``, ``<name>/method_params<path>`` and
  ``<name>/method_state<path>``, with ``jax.tree_util.keystr`` paths. After
  a rename of ``TrainState.method_state`` only this function changes.
  """
  parts = {"model": state.params["model"],
           "method_params": state.params["method"],
           "method_state": state.method_state}
  out = {}
  for part, tree in parts.items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      out[f"{name}/{part}{jax.tree_util.keystr(path)}"] = sample(leaf)
  return out


def compute(names=None) -> dict[str, np.ndarray]:
  """:func:`record` of every method in ``names`` (default: all).

  Two threads: XLA compiles outside the GIL, so two methods compile at once.
  """
  batch = jax.tree.map(jnp.asarray, make_batch())
  names = mtl_jax.names() if names is None else names
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    states = list(pool.map(lambda n: _run(n, batch), names))
  out = {}
  for name, state in zip(names, states):
    out.update(record(name, state))
  return out


def main() -> None:
  arrays = compute()
  os.makedirs(os.path.dirname(PATH), exist_ok=True)
  np.savez_compressed(PATH, **arrays)
  print(f"{PATH}: {len(mtl_jax.names())} methods, {len(arrays)} arrays, "
        f"{os.path.getsize(PATH) / 1e6:.2f} MB")


if __name__ == "__main__":
  sys.exit(main())
