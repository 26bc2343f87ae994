"""What every experiment driver shares: datasets, models and methods from a config.

A config (see ``experiments/configs``) names a dataset, a model and a
method of either family; this module turns those names into objects of the
library:

* :func:`dataset_spec`: the tasks, the loss vector (:mod:`mtl_jax.losses`),
  the metrics (:mod:`mtl_jax.metrics`), their directions, the published
  single-task baselines (if any) and a loader for each split;
* :func:`build_model`: a Flax linen model of :mod:`mtl_jax.models`;
* :func:`build_method`: ``mtl_jax.get(config.method.name, **hparams)``,
  the hyperparameters read from ``config.method.hparams.<name>``; no
  branch on the method's name;
* :func:`build_optimizer`: Adam with step decay, partitioned between the
  model and the method's parameters (:func:`mtl_jax.train.make_optimizer`).

Scalarization keeps its fixed weights in its state, so they are an input of
the compiled train step: one compilation serves every point of a grid and
every single-task baseline (one-hot weights, :func:`with_weights`).
"""
from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import mtl_jax
from mtl_jax import losses as mtl_losses
from mtl_jax import metrics as mtl_metrics
from mtl_jax import models, train
from mtl_jax import weighting as mw
from mtl_jax._factory import normalize

Config = ml_collections.ConfigDict
Loader = Callable[..., Any]


class DatasetSpec(NamedTuple):
  """Everything an experiment needs to know about a dataset."""
  name: str
  tasks: tuple[str, ...]            # the tasks, in loss-vector order
  task_types: tuple[str, ...]       # "regression" / "classification" (UW)
  task_losses: Callable[[Any, Any], jax.Array]  # (outputs, batch) -> (K,)
  metric: mtl_metrics.Metric        # update(state, outputs, batch)
  higher_is_better: Mapping[str, bool]
  published: Mapping[str, float] | None  # published single-task baselines
  load: Loader                      # load(data_config, split, **pipeline kwargs)
  input_key: str = "image"


# ------------------------------------------------------------------ datasets


def _pipeline_kwargs(data: Config) -> dict[str, Any]:
  return {"worker_count": data.get("worker_count", 0),
          "read_threads": data.get("read_threads", 0)}


def _load_digit_scenes(data: Config, split: str, **kwargs) -> Any:
  from mtl_jax.data import digit_scenes
  return digit_scenes.load(
      split, data_dir=data.data_dir, image_size=data.image_size,
      max_digits=data.max_digits, num_train=data.num_train,
      num_validation=data.num_validation, num_test=data.num_test,
      data_seed=data.data_seed, **_pipeline_kwargs(data), **kwargs)


def _digit_attribute_tasks(data: Config) -> tuple[str, ...]:
  """``data.tasks`` (a subset of the ten attributes, ``centre`` and ``sum``),
  else the ten binary attributes."""
  from mtl_jax.data import digit_attributes
  return digit_attributes.check_tasks(data.get("tasks") or
                                      digit_attributes.TASKS)


def _load_digit_attributes(data: Config, split: str, **kwargs) -> Any:
  from mtl_jax.data import digit_attributes
  return digit_attributes.load(
      split, data_dir=data.data_dir, tasks=_digit_attribute_tasks(data),
      num_train=data.num_train, num_validation=data.num_validation,
      num_test=data.num_test, data_seed=data.data_seed,
      **_pipeline_kwargs(data), **kwargs)


def _load_synthetic(data: Config, split: str, **kwargs) -> Any:
  from mtl_jax.data import synthetic
  sizes = {"train": data.num_train, "validation": data.num_validation,
           "test": data.num_test}
  return synthetic.load(split, num_tasks=data.num_tasks,
                        num_examples=sizes[split], problem_seed=data.data_seed,
                        worker_count=data.get("worker_count", 0), **kwargs)


def _mtan_kwargs(data: Config, split: str) -> dict[str, Any]:
  if not data.root:
    raise ValueError(
        f"config.data.root is not set: pass the folder holding train/ and val/ "
        f"of MTAN's preprocessed {data.name} (docs/datasets.md), e.g. "
        f"--config.data.root=/data/{data.name}.")
  return {"data_dir": data.data_dir, "image_size": tuple(data.image_hw),
          "augment": bool(data.augment) and split == data.train_split}


def _load_nyuv2(data: Config, split: str, **kwargs) -> Any:
  from mtl_jax.data import nyuv2
  return nyuv2.load(data.root, split, **_mtan_kwargs(data, split),
                    **_pipeline_kwargs(data), **kwargs)


def _load_cityscapes(data: Config, split: str, **kwargs) -> Any:
  from mtl_jax.data import cityscapes
  return cityscapes.load(data.root, split, num_classes=data.num_classes,
                         **_mtan_kwargs(data, split), **_pipeline_kwargs(data),
                         **kwargs)


def _load_celeba(data: Config, split: str, **kwargs) -> Any:
  from mtl_jax.data import celeba
  if not data.data_dir:
    raise ValueError("config.data.data_dir is not set: pass the TFDS data_dir "
                     "holding celeb_a in array_record (docs/datasets.md).")
  return celeba.load(data.data_dir, split, **_pipeline_kwargs(data), **kwargs)


def _load_qm9(data: Config, split: str, **kwargs) -> Any:
  from mtl_jax.data import qm9
  ds = qm9.load(split, data_dir=data.data_dir, source_dir=data.root or None,
                perception_table=data.get("perception_table") or None,
                edges=data.edges, split_seed=data.split_seed,
                num_train=data.num_train or None, num_validation=data.num_validation,
                num_test=data.num_test, **_pipeline_kwargs(data), **kwargs)
  return ds.map(functools.partial(qm9_inputs, layout=data.layout,
                                  max_edges=QM9_MAX_EDGES[data.edges]))


def qm9_inputs(batch: Mapping[str, np.ndarray], layout: str = "dense",
               max_edges: int = 0) -> dict[str, Any]:
  """A QM9 batch as the engine reads it: the model's ``graph`` (in the padded
  dense or the edge-list layout, :class:`mtl_jax.models.QM9Net`), the
  standardised ``targets`` (B, 11), and each target as its own (B,) column
  (for the constant predictor of :mod:`experiments.trivial`)."""
  from mtl_jax.data import qm9
  graph = {k: batch[k] for k in ("nodes", "node_mask", "edges", "edge_mask")}
  if layout == "edges":
    graph = models.qm9_edge_list(graph, max_edges)
  elif layout != "dense":
    raise ValueError(f"data.layout must be 'dense' or 'edges', got {layout!r}.")
  targets = np.asarray(batch["targets"])
  return {"graph": graph, "targets": targets,
          **{t: targets[:, k] for k, t in enumerate(qm9.TARGETS)}}


# Edges per molecule in the edge-list layout: the complete graph of QM9's
# largest molecule (29 atoms), and the most bonds of any molecule, counted
# both ways (56, measured on all 130,831; the layout checks it per batch).
QM9_MAX_EDGES = {"complete": 29 * 28, "bonded": 56}


def qm9_spec(data: Config) -> DatasetSpec:
  """QM9's 11 targets: MSE on standardised targets, MAE in the papers' units,
  the published single-task MAEs."""
  from mtl_jax.data import qm9
  _, std = qm9.statistics(data.data_dir, source_dir=data.root or None,
                          perception_table=data.get("perception_table") or None)
  return DatasetSpec(
      "qm9", qm9.TARGETS, ("regression",) * qm9.NUM_TASKS, mtl_losses.qm9_losses,
      mtl_metrics.qm9_metrics(std), {f"{t}/mae": False for t in qm9.TARGETS},
      {f"{t}/mae": v for t, v in qm9.STL_BASELINES.items()}, _load_qm9,
      input_key="graph")


def synthetic_metric(num_tasks: int) -> mtl_metrics.Metric:
  """Per-task mean squared error ``task_k/mse`` of the synthetic regression."""

  def init():
    return (jnp.zeros((num_tasks,), jnp.float32), jnp.zeros((), jnp.int32))

  def update(state, outputs, batch):
    err = jnp.square(outputs["y"] - batch["y"]).astype(jnp.float32)
    return (state[0] + jnp.sum(err, axis=(0, 2)),
            state[1] + err.shape[0] * err.shape[2])

  def compute(state):
    mse = state[0] / jnp.maximum(state[1], 1).astype(jnp.float32)
    return {f"task_{k}/mse": mse[k] for k in range(num_tasks)}

  return mtl_metrics.Metric(init, update, compute)


def dataset_spec(data: Config) -> DatasetSpec:
  """The :class:`DatasetSpec` of ``config.data.name``."""
  name = data.name
  if name == "digit_scenes":
    return DatasetSpec(
        name, mtl_losses.DIGIT_SCENE_TASKS,
        ("classification", "regression", "regression", "classification"),
        mtl_losses.digit_scene_losses, mtl_metrics.digit_scene_metrics(),
        mtl_metrics.DIGIT_SCENE_HIGHER_IS_BETTER, None, _load_digit_scenes)
  if name == "digit_attributes":
    from mtl_jax.data import digit_attributes
    tasks = _digit_attribute_tasks(data)
    return DatasetSpec(
        name, tasks,
        tuple("regression" if digit_attributes.KINDS[t] == "regression"
              else "classification" for t in tasks),
        functools.partial(mtl_losses.digit_attribute_losses, tasks=tasks),
        mtl_metrics.digit_attribute_metrics(tasks),
        mtl_metrics.digit_attribute_higher_is_better(tasks), None,
        _load_digit_attributes)
  if name == "synthetic":
    k = data.num_tasks
    tasks = tuple(f"task_{i}" for i in range(k))
    return DatasetSpec(
        name, tasks, ("regression",) * k, mtl_losses.synthetic_losses,
        synthetic_metric(k), {f"{t}/mse": False for t in tasks}, None,
        _load_synthetic, input_key="x")
  if name == "nyuv2":
    return DatasetSpec(
        name, mtl_losses.NYUV2_TASKS,
        ("classification", "regression", "regression"),
        mtl_losses.nyuv2_losses, mtl_metrics.nyuv2_metrics(),
        mtl_metrics.NYUV2_HIGHER_IS_BETTER, mtl_metrics.NYUV2_STL_BASELINES,
        _load_nyuv2)
  if name == "cityscapes":
    published = (mtl_metrics.CITYSCAPES_STL_BASELINES
                 if data.num_classes == 7 else None)
    return DatasetSpec(
        name, mtl_losses.CITYSCAPES_TASKS, ("classification", "regression"),
        mtl_losses.cityscapes_losses,
        mtl_metrics.cityscapes_metrics(data.num_classes),
        mtl_metrics.CITYSCAPES_HIGHER_IS_BETTER, published, _load_cityscapes)
  if name == "qm9":
    return qm9_spec(data)
  if name == "celeba":
    from mtl_jax.data import celeba
    return DatasetSpec(
        name, tuple(celeba.TASKS), ("classification",) * celeba.NUM_TASKS,
        mtl_losses.celeba_losses, mtl_metrics.celeba_metrics(),
        mtl_metrics.CELEBA_HIGHER_IS_BETTER, None, _load_celeba)
  raise ValueError(f"unknown dataset {name!r}; expected one of digit_scenes, "
                   "digit_attributes, synthetic, nyuv2, cityscapes, celeba, qm9.")


def metric_task(metric_name: str) -> str:
  """The task a metric belongs to: the part of its name before ``/``."""
  return metric_name.split("/", 1)[0]


# -------------------------------------------------------------------- models


class OutputAffine(nn.Module):
  """Wraps a model: ``outputs[task] * scale + offset`` for some tasks.

  Puts a regression head in its target's units at initialisation. The digit
  scenes' depth is in centimetres (about 70 to 410) while a freshly
  initialised head outputs values near 0; under Adam each parameter moves by
  about the learning rate per step, so without this the depth head cannot
  reach the targets within a short run (its L1 stays near 300).
  """
  net: nn.Module
  affine: tuple[tuple[str, float, float], ...]  # (task, scale, offset)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    out = dict(self.net(x, train))
    for task, scale, offset in self.affine:
      out[task] = out[task] * scale + offset
    return out


def build_model(config: Config) -> nn.Module:
  """The Flax model of ``config.model`` for ``config.data``."""
  m = config.model
  model = _build_net(config)
  scale, offset = m.get("depth_scale", 1.0), m.get("depth_offset", 0.0)
  if scale != 1.0 or offset != 0.0:
    model = OutputAffine(model, (("depth", float(scale), float(offset)),))
  return model


def _build_net(config: Config) -> nn.Module:
  m, data = config.model, config.data
  if m.name == "digit_scene_net":
    return models.DigitSceneNet(widths=tuple(m.widths))
  if m.name == "digit_attribute_net":
    from mtl_jax.data import digit_attributes
    tasks = _digit_attribute_tasks(data)
    # With model.start_at_mean, a regression head starts at its target's
    # mean (digit_attributes.TARGET_MEANS); otherwise at 0.
    offsets = tuple(digit_attributes.TARGET_MEANS.get(t, 0.0)
                    if m.get("start_at_mean", False) else 0.0 for t in tasks)
    return models.DigitAttributeNet(
        tasks=tasks, hidden=tuple(m.hidden), widths=tuple(m.widths),
        output_sizes=tuple(digit_attributes.OUTPUT_SIZES[t] for t in tasks),
        output_offsets=offsets)
  if m.name in ("segnet", "mtan"):
    if data.name == "nyuv2":
      heads = models.NYUV2_HEADS
    else:
      heads = (("segmentation", data.num_classes), ("depth", 1))
    cls = models.SegNet if m.name == "segnet" else models.MTAN
    return cls(heads=heads, filters=tuple(m.filters))
  if m.name == "resnet18":
    return models.ResNet18(num_attributes=40, width=m.width)
  if m.name == "qm9_net":
    return models.QM9Net(dim=m.dim, edge_hidden_size=m.edge_hidden,
                         message_steps=m.message_steps, set2set_steps=m.set2set_steps)
  if m.name == "mlp":
    return models.MLPTrunk(num_tasks=data.num_tasks, width=m.width,
                           depth=m.depth)
  raise ValueError(f"unknown model {m.name!r}; expected digit_scene_net, "
                   "digit_attribute_net, segnet, mtan, resnet18, mlp or qm9_net.")


# ------------------------------------------------------------------- method

AUTO = "auto"
"""A hyperparameter filled in from the run (:func:`method_hparams`)."""


def _run_values(config: Config, spec: DatasetSpec,
                steps_per_epoch: int) -> dict[str, Any]:
  k = len(spec.tasks)
  return {"seed": int(config.train.seed),
          "steps_per_epoch": int(steps_per_epoch),
          "task_types": tuple(spec.task_types),
          "weights": (1.0 / k,) * k}


def _from_text(value: str) -> Any:
  """A number or tuple written as text (a command-line override of an
  ``"auto"`` field), else the text itself."""
  try:
    return ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return value


def method_hparams(config: Config, spec: DatasetSpec,
                   steps_per_epoch: int) -> dict[str, Any]:
  """The keyword arguments of ``mtl_jax.get(config.method.name, ...)``.

  They are ``config.method.hparams.<name>`` (none when the method has no
  entry), with ``"auto"`` replaced by the run's value of that argument
  (:func:`_run_values`: the seed, steps per epoch, the dataset's task types,
  equal weights) and ``None`` left to the library's default.
  """
  name = normalize(config.method.name)
  table = config.method.hparams
  raw = table[name].to_dict() if name in table else {}
  run_values = _run_values(config, spec, steps_per_epoch)
  out = {}
  for key, value in raw.items():
    if value is None:
      continue
    if value == AUTO:
      if key not in run_values:
        raise ValueError(
            f"config.method.hparams.{name}.{key} is 'auto', but the run "
            f"fills in only {sorted(run_values)}; give a value.")
      value = run_values[key]
    elif isinstance(value, str):
      value = _from_text(value)
    out[key] = value
  return out


def build_method(config: Config, spec: DatasetSpec, steps_per_epoch: int):
  """``mtl_jax.get(config.method.name, **method_hparams(...))``: a
  ``Weighting`` or a gradient-space ``Aggregator``."""
  return mtl_jax.get(config.method.name,
                     **method_hparams(config, spec, steps_per_epoch))


def with_weights(state: train.TrainState,
                 weights: Sequence[float]) -> train.TrainState:
  """``state`` with other fixed weights for a scalarization run (the
  weights live in its state, :class:`mtl_jax.weighting.ScalarizationState`,
  so one compiled step serves every weight vector)."""
  dtype = state.method_state.weights.dtype
  return state.replace(method_state=mw.ScalarizationState(
      jnp.asarray(weights, dtype)))


def jacobian_options(config: Config, model: nn.Module,
                     method: Any) -> train.JacobianOptions | None:
  """The Jacobian path's options of a gradient-space method (``None`` for
  a loss weighting).

  ``config.model.task_params``: ``"auto"`` takes the model's own
  (``mtl_jax.models.task_params``), ``""`` treats every parameter as shared,
  anything else is a comma-separated list of glob patterns.
  """
  if not isinstance(method, mtl_jax.aggregation.GradientMethod):
    return None
  rule = config.model.get("task_params", "auto")
  if rule == "auto":
    task_params = models.task_params(model)
  elif not rule:
    task_params = None
  else:
    task_params = tuple(p.strip() for p in rule.split(",") if p.strip())
  chunk = int(config.method.get("chunk_size", 0))
  return train.JacobianOptions(
      task_params=task_params,
      mode=config.method.get("jacobian_mode", "params"),
      chunk_size=chunk or None)


# ----------------------------------------------------------------- optimiser


def steps_per_epoch(config: Config) -> int:
  """Train steps in one pass over ``config.data.num_train`` examples."""
  return max(1, int(config.data.num_train) // int(config.data.batch_size))


def num_steps(config: Config) -> int:
  """``train.num_steps`` if > 0, else ``train.num_epochs`` epochs of steps."""
  if config.train.num_steps > 0:
    return int(config.train.num_steps)
  return int(round(config.train.num_epochs * steps_per_epoch(config)))


def learning_rate(config: Config) -> optax.Schedule:
  """Step decay: ``lr * decay_factor ** floor(step / decay_steps)``."""
  o = config.optim
  every = int(round(o.decay_every_epochs * steps_per_epoch(config)))
  if every <= 0 or o.decay_factor == 1.0:
    return optax.constant_schedule(o.learning_rate)
  return optax.exponential_decay(o.learning_rate, transition_steps=every,
                                 decay_rate=o.decay_factor, staircase=True)


def build_optimizer(config: Config) -> optax.GradientTransformation:
  """Adam(W) with step decay on the model; Adam on the method's parameters.

  With ``optim.plateau_factor > 0`` every update is then multiplied by a
  scale held in the optimiser state (``optax.inject_hyperparams(optax.scale)``),
  which the run loop lowers on validation plateaus (:func:`plateau`), as
  PyTorch's ReduceLROnPlateau lowers every parameter group's rate.
  """
  o = config.optim
  wlr = o.method_learning_rate or o.learning_rate
  tx = train.make_optimizer(learning_rate(config),
                            method_learning_rate=wlr,
                            weight_decay=o.weight_decay)
  if plateau(config) is not None:
    tx = optax.chain(tx, optax.inject_hyperparams(optax.scale)(step_size=1.0))
  return tx


def plateau(config: Config) -> optax.GradientTransformationExtraArgs | None:
  """``optax.contrib.reduce_on_plateau`` stepped once per evaluation on the
  validation selection score (``None`` when ``optim.plateau_factor`` is 0).

  PyTorch's ``ReduceLROnPlateau(mode="min", factor, patience,
  threshold=rtol, min_lr)``: the scale drops by ``factor`` after more than
  ``patience`` evaluations without a relative improvement of ``rtol``, down
  to ``min_lr / learning_rate``.
  """
  o = config.optim
  factor = float(o.get("plateau_factor", 0.0))
  if not factor:
    return None
  if not 0.0 < factor < 1.0 or o.plateau_patience < 0:
    raise ValueError(f"optim.plateau_factor must be in (0, 1) and plateau_patience >= 0, "
                     f"got {factor} and {o.plateau_patience}.")
  # PyTorch lowers the rate when the count of bad evaluations exceeds its
  # patience, optax when the count reaches it: optax's patience is one more.
  return optax.contrib.reduce_on_plateau(
      factor=factor, patience=int(o.plateau_patience) + 1, rtol=float(o.plateau_rtol),
      min_scale=float(o.plateau_min_lr) / float(o.learning_rate))


def with_update_scale(opt_state: Any, scale: Any) -> Any:
  """``opt_state`` of :func:`build_optimizer` whose plateau scale (the last
  transformation of its chain) is ``scale``, in a buffer of its own (the
  train step donates the state; the schedule keeps ``scale``)."""
  *inner, scaled = opt_state
  hyper = {**scaled.hyperparams,
           "step_size": jnp.array(scale, jnp.float32, copy=True)}
  return (*inner, scaled._replace(hyperparams=hyper))


def compute_dtype(config: Config) -> jnp.dtype | None:
  """``None`` for float32, else the dtype named by ``train.compute_dtype``."""
  name = config.train.compute_dtype
  return None if name in ("", "float32") else jnp.dtype(name)


def one_hot(k: int, num_tasks: int) -> tuple[float, ...]:
  """The single-task baseline's weights: 1 for task ``k``, 0 elsewhere."""
  return tuple(float(i == k) for i in range(num_tasks))


def single_task_runs(tasks: Sequence[str]
                     ) -> list[tuple[str, str, tuple[float, ...]]]:
  """``(label, kind, weights)`` of the single-task baselines, one per task."""
  return [(f"stl_{task}", "single_task", one_hot(i, len(tasks)))
          for i, task in enumerate(tasks)]


def grid_weights(num_tasks: int, step: float) -> list[tuple[float, ...]]:
  """The simplex grid of ``step`` as tuples rounded for labels (0: no grid)."""
  if not step:
    return []
  return [tuple(float(round(w, 6)) for w in p)
          for p in mw.scalarization_grid(num_tasks, step)]


def parse_list(text: str, cast: Callable[[str], Any] = str) -> list[Any]:
  """``"a, b,c"`` -> ``[cast("a"), cast("b"), cast("c")]``; empty -> []."""
  return [cast(x.strip()) for x in str(text).split(",") if x.strip()]
