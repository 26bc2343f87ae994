"""Every experiment config builds and trains two steps on fixture data.

Digit scenes, digit attributes and the synthetic regression generate tiny data
into tmp_path; NYUv2 and Cityscapes read fixtures written in MTAN's exact
on-disk layout (tests/data/data_fixtures.py); CelebA reads
tfds.testing.mock_data.
"""
import importlib
import importlib.util
import json
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import train as train_main
from mtl_jax import train

_FIXTURES = pathlib.Path(__file__).parents[1] / "data" / "data_fixtures.py"
_spec = importlib.util.spec_from_file_location("data_fixtures", _FIXTURES)
data_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(data_fixtures)

CONFIGS = ("default", "digit_scenes_quick", "digit_scenes_full", "synthetic",
           "nyuv2_segnet", "nyuv2_mtan", "cityscapes_segnet", "celeba_resnet18",
           "digit_attributes", "digit_strips")


def smoke_config(name):
  return importlib.import_module(f"experiments.configs.{name}").get_config("smoke")


def _with_data(config, tmp_path):
  config.data.data_dir = str(tmp_path / "data")
  if config.data.name == "nyuv2":
    config.data.root = str(data_fixtures.write_nyuv2(
        tmp_path / "nyu", size=tuple(config.data.image_hw)))
  if config.data.name == "cityscapes":
    config.data.root = str(data_fixtures.write_cityscapes(
        tmp_path / "cs", size=tuple(config.data.image_hw)))
  return config


@pytest.mark.parametrize("name", CONFIGS)
def test_full_config_has_the_sections_and_the_header(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  config = module.get_config()
  for section in ("data", "model", "method", "optim", "train"):
    assert section in config, section
  doc = module.__doc__
  assert "python -m experiments." in doc and "Runtime" in doc
  assert "Expected result" in doc
  assert config.train.num_steps > 0 or config.train.num_epochs > 0


def _train_and_evaluate(config, workdir):
  """One run of ``config``; CelebA reads tfds's mock data."""
  if config.data.name == "celeba":
    with tfds.testing.mock_data(num_examples=8):
      return train_main.train_and_evaluate(config, str(workdir))
  return train_main.train_and_evaluate(config, str(workdir))


_SLOW = pytest.mark.slow  # compiles a SegNet / MTAN / ResNet or a second digit net


@pytest.mark.parametrize("name", [
    "digit_scenes_quick", "synthetic", "digit_attributes", "digit_strips",
    pytest.param("digit_scenes_full", marks=_SLOW),
    pytest.param("nyuv2_segnet", marks=_SLOW),
    pytest.param("nyuv2_mtan", marks=_SLOW),
    pytest.param("cityscapes_segnet", marks=_SLOW),
    pytest.param("celeba_resnet18", marks=_SLOW)])
@pytest.mark.slow
def test_config_trains_two_steps_on_fixture_data(name, tmp_path):
  config = _with_data(smoke_config(name), tmp_path)
  config.method.name = "uw"  # learnable method params in the tree
  result = _train_and_evaluate(config, tmp_path / "run")
  records = train.read_metrics(tmp_path / "run")
  assert [r["step"] for r in records] == [1, 2]
  assert all(np.isfinite(r["total"]) for r in records)
  assert records[0]["weights"] != records[1]["weights"]  # UW's s_k moved
  assert result["steps"] == 2 and result["test"]
  assert all(np.isfinite(v) for v in result["test"].values())
  evals = [json.loads(l) for l in open(tmp_path / "run" / "eval.jsonl")]
  assert [e["step"] for e in evals] == [1, 2]
  if config.data.name in ("nyuv2", "cityscapes"):
    assert set(result["delta_m_published"]) == {"metric", "task"}


def test_quick_is_the_default():
  quick, default = smoke_config("digit_scenes_quick"), smoke_config("default")
  assert quick.to_dict() == default.to_dict()


def test_smoke_shrinks_the_run():
  full, smoke = (importlib.import_module("experiments.configs.default")
                 .get_config(a) for a in ("", "smoke"))
  assert smoke.train.num_steps == 2 < full.train.num_steps
  assert smoke.data.num_train < full.data.num_train
  with pytest.raises(ValueError, match="smoke"):
    importlib.import_module("experiments.configs.default").get_config("tiny")


@pytest.mark.parametrize("name,method,mode", [
    ("digit_scenes_quick", "mgda", "params"),
    ("synthetic", "mgda", "features"),
    pytest.param("celeba_resnet18", "imtl_g", "params", marks=_SLOW)])
@pytest.mark.slow
def test_config_trains_a_gradient_method(name, method, mode, tmp_path):
  """A gradient-space method goes through the same config and driver: the
  step takes the Jacobian path, with the model's own heads as task params."""
  config = _with_data(smoke_config(name), tmp_path)
  config.method.name = method
  config.method.jacobian_mode = mode
  # Chunks of the K VJPs: 2 of the digit scenes' 4 and the synthetic 3 tasks,
  # 20 of CelebA's 40 (a chunk of 2 there unrolls 20 ResNet VJPs: 30 s of
  # compilation on 2 cores).
  config.method.chunk_size = 20 if name == "celeba_resnet18" else 2
  result = _train_and_evaluate(config, tmp_path / "run")
  records = train.read_metrics(tmp_path / "run")
  assert [r["step"] for r in records] == [1, 2]
  assert not any(r["skipped"] for r in records)
  weights = [list(r["weights"].values()) for r in records]
  assert all(np.isfinite(w).all() for w in weights)
  assert result["steps"] == 2
  assert all(np.isfinite(v) for v in result["test"].values())


def test_digit_attributes_config_is_the_many_task_benchmark():
  """Ten classification tasks, BCE losses, no digit-scenes depth affine and
  no simplex grid (infeasible for 10 tasks)."""
  from experiments import common
  config = smoke_config("digit_attributes")
  spec = common.dataset_spec(config.data)
  assert len(spec.tasks) == 10 and set(spec.task_types) == {"classification"}
  assert set(spec.higher_is_better) == {f"{t}/accuracy" for t in spec.tasks}
  assert config.model.depth_scale == 1.0 and config.model.depth_offset == 0.0
  assert config.compare.scalarization_step == 0.0
  model = common.build_model(config)
  assert type(model).__name__ == "DigitAttributeNet"
  config.data.tasks = ("sum_ge16", "centre_even")
  spec = common.dataset_spec(config.data)
  assert spec.tasks == ("sum_ge16", "centre_even")
  assert common.build_model(config).tasks == spec.tasks


def test_digit_strips_config_is_the_mixed_four_task_benchmark():
  """Four tasks of three kinds on the strips, a 4-point simplex grid, the
  sum's head starting at its offset, no depth affine."""
  from experiments import common
  config = smoke_config("digit_strips")
  spec = common.dataset_spec(config.data)
  assert spec.tasks == ("centre", "product", "left_even", "left_smaller")
  assert spec.task_types[spec.tasks.index("product")] == "regression"
  assert spec.higher_is_better["product/mae"] is False
  assert spec.higher_is_better["centre/accuracy"] is True
  full = importlib.import_module("experiments.configs.digit_strips").get_config()
  assert full.compare.scalarization_step == 0.2 and full.compare.seeds == 3
  assert full.data.tasks == config.data.tasks
  assert config.model.depth_scale == 1.0 and config.model.depth_offset == 0.0
  net = common.build_model(config)
  assert type(net).__name__ == "DigitAttributeNet"
  sizes = dict(zip(net.tasks, net.output_sizes))
  assert sizes["centre"] == 10 and sizes["product"] == 1
  assert dict(zip(net.tasks, net.output_offsets)) == {
      "centre": 0.0, "product": 20.25, "left_even": 0.0, "left_smaller": 0.0}
