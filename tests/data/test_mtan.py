"""NYUv2 and Cityscapes from tiny fixtures in MTAN's exact .npy layout."""
import hashlib

import data_fixtures
import numpy as np
import pytest

from mtl_jax.data import LayoutError, _augment, cityscapes, nyuv2

NYU_SIZE = (12, 16)
CS_SIZE = (8, 16)


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
  return data_fixtures.write_nyuv2(tmp_path_factory.mktemp("nyu"), size=NYU_SIZE)


@pytest.fixture(scope="module")
def cs_root(tmp_path_factory):
  return data_fixtures.write_cityscapes(tmp_path_factory.mktemp("cs"), size=CS_SIZE)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("prepared")


def _nyu(root, data_dir, split="train", **kwargs):
  kwargs = {"batch_size": 1, "num_epochs": 1, "shard_index": 0, "shard_count": 1,
            "drop_remainder": False, **kwargs}
  return nyuv2.load(root, split, data_dir=data_dir, image_size=NYU_SIZE, **kwargs)


def _key(x):
  return hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest()


def _files(root, folder, split="train"):
  """{hash of image: {folder: array}} read straight from the fixture files."""
  out = {}
  for path in sorted((root / folder / "image").glob("*.npy")):
    arrays = {f: np.load(root / folder / f / path.name)
              for f in ("image", "label", "depth", "normal")}
    out[_key(arrays["image"].astype(np.float32))] = arrays
  return out


def test_nyuv2_batches_match_the_files(nyu_root, data_dir):
  files = _files(nyu_root, "val")
  batches = list(_nyu(nyu_root, data_dir, "validation", batch_size=1))
  assert len(batches) == len(files) == 3
  for b in batches:
    assert {k: (v.shape, v.dtype) for k, v in b.items()} == {
        "image": ((1, 12, 16, 3), np.float32), "segmentation": ((1, 12, 16), np.int32),
        "depth": ((1, 12, 16, 1), np.float32), "normal": ((1, 12, 16, 3), np.float32)}
    want = files[_key(b["image"][0])]
    np.testing.assert_array_equal(b["segmentation"][0], want["label"].astype(np.int32))
    np.testing.assert_array_equal(b["depth"][0], want["depth"])
    np.testing.assert_array_equal(b["normal"][0], want["normal"])
  seg = np.concatenate([b["segmentation"] for b in batches])
  assert seg.min() == -1 and seg.max() <= 12  # ignore label kept
  depth = np.concatenate([b["depth"] for b in batches])
  assert (depth == 0).any() and (depth >= 0).all()  # invalid depth kept


def test_holdout_is_carved_from_train(nyu_root, data_dir):
  ids = {s: [_key(b["image"][0]) for b in _nyu(nyu_root, data_dir, s, holdout_fraction=0.4)]
         for s in ("train", "train_fit", "train_holdout")}
  assert len(ids["train_holdout"]) == 2 and len(ids["train_fit"]) == 3
  assert sorted(ids["train_fit"] + ids["train_holdout"]) == sorted(ids["train"])


def test_augmented_batches_are_seeded(nyu_root, data_dir):
  def run(seed):
    return [b["depth"] for b in _nyu(nyu_root, data_dir, augment=True, seed=seed,
                                      shuffle=False)]

  a = run(0)
  for x, y in zip(a, run(0)):
    np.testing.assert_array_equal(x, y)
  assert any(not np.array_equal(x, y) for x, y in zip(a, run(1)))


def test_cityscapes_label_sets(cs_root, data_dir):
  for num_classes in (2, 7, 19):
    ds = cityscapes.load(cs_root, "train", batch_size=5, data_dir=data_dir, num_epochs=1,
                         num_classes=num_classes, image_size=CS_SIZE, shard_index=0,
                         shard_count=1)
    (batch,) = list(ds)
    assert set(batch) == {"image", "segmentation", "depth"}
    assert batch["depth"].shape == (5, 8, 16, 1) and batch["segmentation"].dtype == np.int32
    assert batch["segmentation"].min() == -1 and batch["segmentation"].max() == num_classes - 1
  with pytest.raises(ValueError, match="num_classes"):
    cityscapes.load(cs_root, "train", batch_size=1, num_classes=5)


# ------------------------------------------------------------------ errors

def test_missing_root_shows_layout_and_source(tmp_path):
  with pytest.raises(LayoutError) as e:
    nyuv2.load(tmp_path / "nowhere", "train", batch_size=1, data_dir=tmp_path)
  msg = str(e.value)
  assert "nowhere" in msg and "val/" in msg and "normal/0.npy" in msg
  assert "lorenmt/mtan" in msg


def _broken_copy(tmp_path, write=data_fixtures.write_nyuv2, size=NYU_SIZE):
  return write(tmp_path / "root", num_train=2, num_val=1, size=size)


def test_missing_folder_is_named(tmp_path):
  root = _broken_copy(tmp_path)
  for p in (root / "val" / "normal").iterdir():
    p.unlink()
  (root / "val" / "normal").rmdir()
  with pytest.raises(LayoutError, match="val/normal"):
    _nyu(root, tmp_path / "dd")


def test_inconsistent_files_are_reported(tmp_path):
  root = _broken_copy(tmp_path, data_fixtures.write_cityscapes, CS_SIZE)
  (root / "train" / "depth" / "1.npy").unlink()
  with pytest.raises(LayoutError, match="depth"):
    cityscapes.load(root, "train", batch_size=1, data_dir=tmp_path / "dd",
                    image_size=CS_SIZE)


@pytest.mark.parametrize("folder, array", [
    ("depth", np.zeros((12, 15, 1), np.float32)),       # wrong shape
    ("image", np.zeros((12, 16, 3), np.int64)),         # wrong dtype
    ("label", np.full((12, 16), 13, np.float32)),        # class out of range
])
def test_bad_file_is_named(tmp_path, folder, array):
  root = _broken_copy(tmp_path)
  np.save(root / "train" / folder / "1.npy", array)
  with pytest.raises(ValueError, match=f"train/{folder}/1.npy"):
    _nyu(root, tmp_path / "dd")


def test_bad_split_raises(nyu_root, data_dir):
  with pytest.raises(ValueError, match="split"):
    _nyu(nyu_root, data_dir, "test")


# ------------------------------------------------------------ augmentation

def _example(seed=0, h=12, w=16):
  rng = np.random.default_rng(seed)
  normal = rng.normal(size=(h, w, 3)).astype(np.float32)
  normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
  normal[0, 0] = 0.0
  return {"image": rng.random((h, w, 3), dtype=np.float32),
          "segmentation": rng.integers(-1, 13, (h, w)).astype(np.int32),
          "depth": rng.uniform(1, 5, (h, w, 1)).astype(np.float32), "normal": normal}


def _assert_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_flip_twice_is_identity_and_negates_normal_x():
  ex = _example()
  flipped = _augment.hflip(ex)
  _assert_equal(_augment.hflip(flipped), ex)
  np.testing.assert_array_equal(flipped["normal"][:, ::-1, 0], -ex["normal"][..., 0])
  np.testing.assert_array_equal(flipped["normal"][:, ::-1, 1:], ex["normal"][..., 1:])
  np.testing.assert_array_equal(flipped["image"][:, ::-1], ex["image"])


def test_scale_one_is_identity():
  ex = _example()
  _assert_equal(_augment.scale_crop(ex, 1.0, 0, 0), ex)


@pytest.mark.parametrize("scale", _augment.SCALES)
def test_depth_scales_with_the_crop(scale):
  ex = _example()
  ex["depth"] = np.full_like(ex["depth"], 3.0)
  h, w = 12, 16
  top, left = h - round(h / scale), w - round(w / scale)
  out = _augment.scale_crop(ex, scale, top, left)
  np.testing.assert_allclose(out["depth"], 3.0 / scale, rtol=1e-6)
  inverse = _augment.scale_crop(ex, scale, top, left, inverse_depth=True)
  np.testing.assert_allclose(inverse["depth"], 3.0 * scale, rtol=1e-6)
  # Labels and normals are sampled, never blended: values come from the crop.
  crop = ex["segmentation"][top:top + round(h / scale), left:left + round(w / scale)]
  assert set(np.unique(out["segmentation"])) <= set(np.unique(crop))
  assert out["image"].shape == ex["image"].shape


def test_random_augment_keeps_masks_and_unit_normals():
  ex = _example()
  ex["depth"][2:4] = 0.0
  for seed in range(10):
    out = _augment.random_scale_crop_flip(ex, np.random.default_rng(seed))
    norms = np.linalg.norm(out["normal"], axis=-1)
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))
    assert set(np.unique(out["segmentation"])) <= set(np.unique(ex["segmentation"]))
    assert out["depth"].min() >= 0 and out["depth"].dtype == np.float32
