"""CelebA through tfds.data_source, with tfds.testing.mock_data (no TF, no download)."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from mtl_jax.data import celeba


def test_batches_from_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=6):
    ds = celeba.load(tmp_path, "train", batch_size=3, num_epochs=1, shard_index=0,
                     shard_count=1)
    batches = list(ds)
  assert len(batches) == 2
  for b in batches:
    assert b["image"].shape == (3, 64, 64, 3) and b["image"].dtype == np.float32
    assert b["image"].min() >= 0.0 and b["image"].max() <= 1.0 and b["image"].std() > 0
    assert b["attributes"].shape == (3, celeba.NUM_TASKS) and b["attributes"].dtype == np.int32
    assert set(np.unique(b["attributes"])) <= {0, 1}


def test_attribute_columns_follow_the_tfds_features():
  example = {"image": np.zeros((218, 178, 3), np.uint8),
             "attributes": {name: i % 3 == 0 for i, name in enumerate(celeba.ATTRIBUTES)}}
  out = celeba.decode(example)
  np.testing.assert_array_equal(out["attributes"], [i % 3 == 0 for i in range(40)])
  assert len(set(celeba.ATTRIBUTES)) == 40 and celeba.TASKS == celeba.ATTRIBUTES


def test_resize_keeps_a_constant_image_constant():
  image = np.full((218, 178, 3), 51, np.uint8)
  np.testing.assert_allclose(celeba.resize(image), 0.2, atol=1e-6)


def test_missing_data_explains_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    celeba.load(tmp_path, "train", batch_size=2)
  msg = str(e.value)
  assert "tfds build celeb_a --file_format=array_record" in msg
  assert "tensorflow" in msg.lower() and str(tmp_path) in msg


def test_bad_split_raises(tmp_path):
  with pytest.raises(ValueError, match="split"):
    celeba.load(tmp_path, "val", batch_size=2)
