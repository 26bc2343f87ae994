"""Every model builds, runs, and returns float32 {task: output} of the right shape."""
import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import models

KEY = jax.random.PRNGKey(0)
TINY = (4, 8, 8)  # three-level SegNet, inputs divisible by 8


def _shapes(model, x, train=True):
  """(variables, outputs) as ShapeDtypeStructs: traced, never compiled."""
  variables = jax.eval_shape(functools.partial(model.init, train=False), KEY, x)

  def apply(variables, x):
    if "batch_stats" in variables:
      return model.apply(variables, x, train=train, mutable=["batch_stats"])[0]
    return model.apply(variables, x, train=train)

  return variables, jax.eval_shape(apply, variables, x)


def _host_variables(model, x, seed=0):
  """Random variables of the model's shapes, drawn on the host.

  Eager ``model.init`` compiles every initializer op by op and ``jax.jit``
  compiles the whole model, both slow on CPU; the numerical tests only need
  some parameters of the right shapes.
  """
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), KEY, x)

  def draw(path, s):
    name = jax.tree_util.keystr(path)
    if "'var'" in name or "'scale'" in name:
      return jnp.ones(s.shape, s.dtype)
    if "'mean'" in name:
      return jnp.zeros(s.shape, s.dtype)
    fan_in = int(np.prod(s.shape[:-1])) or 1
    return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(fan_in), s.dtype)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _num_params(model, x):
  shapes = jax.eval_shape(functools.partial(model.init, train=False), KEY, x)
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"]))


# ---------------------------------------------------------------- shapes


CASES = [
    ("segnet_nyuv2", lambda d: models.SegNet(filters=TINY, dtype=d),
     (2, 16, 24, 3),
     {"segmentation": (2, 16, 24, 13), "depth": (2, 16, 24, 1),
      "normal": (2, 16, 24, 3)}),
    ("segnet_cityscapes",
     lambda d: models.SegNet(models.CITYSCAPES_HEADS, filters=TINY, dtype=d),
     (2, 16, 32, 3),
     {"segmentation": (2, 16, 32, 7), "depth": (2, 16, 32, 1)}),
    ("mtan_nyuv2", lambda d: models.MTAN(filters=TINY, dtype=d),
     (2, 16, 24, 3),
     {"segmentation": (2, 16, 24, 13), "depth": (2, 16, 24, 1),
      "normal": (2, 16, 24, 3)}),
    ("mtan_cityscapes",
     lambda d: models.MTAN(models.CITYSCAPES_HEADS, filters=TINY, dtype=d),
     (2, 16, 32, 3),
     {"segmentation": (2, 16, 32, 7), "depth": (2, 16, 32, 1)}),
    ("resnet18", lambda d: models.ResNet18(width=4, dtype=d), (2, 64, 64, 3),
     {"attributes": (2, 40)}),
    ("digit_scene", lambda d: models.DigitSceneNet(num_count_classes=6,
                                                   dtype=d),
     (3, 32, 32, 1),
     {"segmentation": (3, 32, 32, 11), "depth": (3, 32, 32, 1),
      "normal": (3, 32, 32, 3), "count": (3, 6)}),
    ("mlp", lambda d: models.MLPTrunk(num_tasks=3, dtype=d), (2, 250),
     {"y": (2, 3, 100)}),
    ("digit_attribute",
     lambda d: models.DigitAttributeNet(tasks=("x", "y", "z"), hidden=(16, 8),
                                        dtype=d),
     (3, 8, 24, 1), {"x": (3,), "y": (3,), "z": (3,)}),
    ("digit_strip",
     lambda d: models.DigitAttributeNet(tasks=("centre", "sum", "b"), hidden=(8,),
                                        output_sizes=(10, 1, 1),
                                        output_offsets=(0.0, 13.5, 0.0), dtype=d),
     (3, 8, 24, 1), {"centre": (3, 10), "sum": (3,), "b": (3,)}),
    ("digit_attribute_conv",
     lambda d: models.DigitAttributeNet(tasks=("x", "y"), hidden=(8,),
                                        widths=(4, 4), dtype=d),
     (2, 8, 24, 1), {"x": (2,), "y": (2,)}),
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16],
                         ids=["f32", "bf16"])
@pytest.mark.parametrize("name,make,in_shape,out_shapes", CASES,
                         ids=[c[0] for c in CASES])
def test_output_shapes_and_float32(name, make, in_shape, out_shapes, dtype):
  variables, out = _shapes(make(dtype), jnp.zeros(in_shape))
  assert {k: v.shape for k, v in out.items()} == out_shapes
  assert {k: v.dtype for k, v in out.items()} == dict.fromkeys(out_shapes,
                                                                jnp.float32)
  assert {p.dtype for p in jax.tree.leaves(variables)} == {
      np.dtype(jnp.float32)}


NUMERIC_CASES = [c for c in CASES if not c[0].endswith("_cityscapes")]


@pytest.mark.parametrize("name,make,in_shape,out_shapes", NUMERIC_CASES,
                         ids=[c[0] for c in NUMERIC_CASES])
@pytest.mark.slow
def test_forward_is_finite_and_normals_are_unit(name, make, in_shape,
                                                out_shapes):
  model = make(jnp.float32)
  x = jax.random.normal(jax.random.PRNGKey(1), in_shape)
  variables = _host_variables(model, x)
  out = model.apply(variables, x, train=False)
  assert {k: v.shape for k, v in out.items()} == out_shapes
  for k, v in out.items():
    assert np.all(np.isfinite(v)), k
  if "normal" in out:
    np.testing.assert_allclose(jnp.linalg.norm(out["normal"], axis=-1), 1.0,
                               rtol=1e-5)


def test_bf16_compute_is_used_and_close_to_f32():
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 250))
  f32 = models.MLPTrunk(num_tasks=2)
  bf16 = models.MLPTrunk(num_tasks=2, dtype=jnp.bfloat16)
  variables = _host_variables(f32, x)
  y32 = f32.apply(variables, x, train=False)["y"]
  y16 = bf16.apply(variables, x, train=False)["y"]
  assert not np.array_equal(y32, y16)  # really computed in bf16
  np.testing.assert_allclose(y16, y32, atol=0.05 * float(jnp.abs(y32).max()))


@pytest.mark.parametrize("make", [
    lambda: models.SegNet(filters=TINY, dtype=jnp.bfloat16),
    lambda: models.MTAN(filters=TINY, dtype=jnp.bfloat16),
    lambda: models.ResNet18(width=4, dtype=jnp.bfloat16),
    lambda: models.DigitSceneNet(widths=(4, 8), dtype=jnp.bfloat16),
], ids=["segnet", "mtan", "resnet18", "digit_scene"])
def test_bf16_models_convolve_in_bf16(make):
  """Every convolution of a bf16 model runs in bf16 (checked on the jaxpr)."""
  model = make()
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(functools.partial(model.init, train=False), KEY, x)
  jaxpr = jax.make_jaxpr(
      lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(
          variables)
  convs = []

  def collect(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == "conv_general_dilated":
        convs.append(eqn.outvars[0].aval.dtype)
      for sub in jax.extend.core.jaxprs_in_params(eqn.params):
        collect(sub)

  collect(jaxpr.jaxpr)
  assert convs and set(convs) == {np.dtype(jnp.bfloat16)}


# ---------------------------------------------------------- architecture


def _conv(cin, cout, k=3):
  """PyTorch conv (with bias) + BatchNorm (weight, bias)."""
  return k * k * cin * cout + cout + 2 * cout


def _pred(cout, c=64):
  return 9 * c * c + c + c * cout + cout


def _att(c0, c1, c2):
  return _conv(c0, c1, 1) + _conv(c1, c2, 1)


def _segnet_reference_count(heads):
  """Parameters of MTAN's PyTorch SegNetSplit, layer by layer."""
  enc = [_conv(3, 64), _conv(64, 128), _conv(128, 256), _conv(256, 512),
         _conv(512, 512)]
  dec = [_conv(64, 64), _conv(128, 64), _conv(256, 128), _conv(512, 256),
         _conv(512, 512)]
  conv_enc = [_conv(64, 64), _conv(128, 128), 2 * _conv(256, 256),
              2 * _conv(512, 512), 2 * _conv(512, 512)]
  conv_dec = [_conv(64, 64), _conv(64, 64), 2 * _conv(128, 128),
              2 * _conv(256, 256), 2 * _conv(512, 512)]
  return sum(enc + dec + conv_enc + conv_dec) + sum(_pred(c) for c in heads)


def _mtan_reference_count(heads):
  """Parameters of MTAN's PyTorch SegNet with attention, layer by layer."""
  enc_att = [_att(64, 64, 64), _att(256, 128, 128), _att(512, 256, 256),
             _att(1024, 512, 512), _att(1024, 512, 512)]
  dec_att = [_att(128, 64, 64), _att(192, 64, 64), _att(384, 128, 128),
             _att(768, 256, 256), _att(1024, 512, 512)]
  enc_block_att = [_conv(64, 128), _conv(128, 256), _conv(256, 512),
                   _conv(512, 512), _conv(512, 512)]
  dec_block_att = [_conv(64, 64), _conv(128, 64), _conv(256, 128),
                   _conv(512, 256), _conv(512, 512)]
  per_task = sum(enc_att) + sum(dec_att)
  return (_segnet_reference_count(heads) + len(heads) * per_task
          + sum(enc_block_att) + sum(dec_block_att))


@pytest.mark.parametrize("heads", [models.NYUV2_HEADS, models.CITYSCAPES_HEADS],
                         ids=["nyuv2", "cityscapes"])
@pytest.mark.slow
def test_full_size_parameter_counts_match_mtan_reference(heads):
  x = jnp.zeros((1, 64, 64, 3))
  channels = [c for _, c in heads]
  assert _num_params(models.SegNet(heads), x) == _segnet_reference_count(
      channels)
  assert _num_params(models.MTAN(heads), x) == _mtan_reference_count(channels)


def test_resnet18_parameter_count_matches_torchvision():
  # torchvision resnet18: 11,689,512 with a 1000-way fc (512*1000 + 1000).
  trunk = 11_689_512 - 513_000
  x = jnp.zeros((1, 64, 64, 3))
  assert _num_params(models.ResNet18(), x) == trunk + 512 * 40 + 40


def test_mlp_parameter_count():
  trunk = (250 * 100 + 100) + 3 * (100 * 100 + 100)
  assert _num_params(models.MLPTrunk(num_tasks=5), jnp.zeros((1, 250))) == (
      trunk + 5 * (100 * 100 + 100))


def test_heads_are_independent():
  """Changing one task's head parameters changes only that task's output."""
  model = models.MLPTrunk(num_tasks=3)
  x = jax.random.normal(KEY, (2, 250))
  variables = _host_variables(model, x)
  y = model.apply(variables, x)["y"]
  params = jax.tree.map(lambda p: p, variables["params"])
  params["heads"]["kernel"] = params["heads"]["kernel"].at[:, 1].add(1.0)
  y2 = model.apply({"params": params}, x)["y"]
  np.testing.assert_array_equal(y2[:, [0, 2]], y[:, [0, 2]])
  assert not np.allclose(y2[:, 1], y[:, 1])


@pytest.mark.slow
def test_mtan_attention_is_task_specific():
  model = models.MTAN(filters=TINY)
  x = jax.random.normal(KEY, (2, 16, 24, 3))
  variables = _host_variables(model, x)
  names = set(variables["params"])
  for task, _ in models.NYUV2_HEADS:
    assert f"{task}_encoder_att_0" in names
    assert f"{task}_decoder_att_0" in names
  # Zeroing one task's attention masks changes only that task's output.
  out = model.apply(variables, x, train=False)
  params = dict(variables["params"])
  for k in [k for k in names if k.startswith("depth_") and "_att_" in k]:
    params[k] = jax.tree.map(jnp.zeros_like, params[k])
  out2 = model.apply({**variables, "params": params}, x, train=False)
  np.testing.assert_array_equal(out2["segmentation"], out["segmentation"])
  np.testing.assert_array_equal(out2["normal"], out["normal"])
  assert not np.array_equal(out2["depth"], out["depth"])


def test_segnet_rejects_indivisible_input():
  with pytest.raises(ValueError, match="divisible"):
    models.SegNet(filters=TINY).init(KEY, jnp.zeros((1, 12, 16, 3)),
                                     train=False)


@pytest.mark.slow
def test_eval_mode_uses_running_statistics():
  """With train=False an example's output ignores the rest of the batch."""
  model = models.DigitSceneNet(num_count_classes=6)
  x = jax.random.normal(KEY, (3, 32, 32, 1))
  other = x.at[1:].set(jax.random.normal(jax.random.PRNGKey(9), (2, 32, 32, 1)))
  variables = _host_variables(model, x)
  a = model.apply(variables, x, train=False)["segmentation"]
  b = model.apply(variables, other, train=False)["segmentation"]
  np.testing.assert_allclose(a[0], b[0], atol=1e-5)
  # In training mode batch statistics are used and the running ones updated.
  a, updated = model.apply(variables, x, train=True, mutable=["batch_stats"])
  b, _ = model.apply(variables, other, train=True, mutable=["batch_stats"])
  assert not np.allclose(a["segmentation"][0], b["segmentation"][0])
  before = jax.tree.leaves(variables["batch_stats"])
  after = jax.tree.leaves(updated["batch_stats"])
  assert any(not np.allclose(u, v) for u, v in zip(before, after))


NORMAL_HEADS = [
    ("digit_scene", models.DigitSceneNet(), (2, 32, 32, 3)),
    ("segnet", models.SegNet(filters=(4,)), (1, 2, 2, 3)),
    ("mtan", models.MTAN(filters=(4,)), (1, 2, 2, 3)),
]


@pytest.mark.parametrize("model,shape", [c[1:] for c in NORMAL_HEADS],
                         ids=[c[0] for c in NORMAL_HEADS])
@pytest.mark.slow
def test_normals_have_a_bounded_gradient_at_init(model, shape):
  """Pixels whose features are all 0 after the ReLU (a black image gives
  many; in SegNet and MTAN every pixel) must not send ~1/eps^2 through the
  normalisation and the cosine loss: that overflowed Adam's second moment
  of the normal head's bias (issue 14; SegNet's and MTAN's heads sent 1e24
  before they got the same fix, issue 23)."""
  from mtl_jax import losses  # pylint: disable=g-import-not-at-top
  image = jnp.zeros(shape)
  key = jax.random.PRNGKey(0)
  # The model's own init, compiled once at LLVM's lowest level: eager, or at
  # the default level, compiling its truncated-normal draws takes most of
  # this test's time, and the draws are the same random draws either way.
  init = jax.jit(functools.partial(model.init, train=False)).lower(
      key, image).compile({"xla_backend_optimization_level": 0})
  variables = init(key, image)
  target = jnp.zeros(shape).at[..., 2].set(1.0)

  def loss(params):
    out = model.apply({**variables, "params": params}, image, train=False)
    return losses.normal_cosine_loss(out["normal"], target), out

  grads, out = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
  largest = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads))
  assert np.isfinite(largest) and largest < 1e3
  np.testing.assert_allclose(jnp.linalg.norm(out["normal"], axis=-1), 1.0,
                             rtol=1e-5)


def test_digit_attribute_heads_are_separate_linear_maps_of_one_trunk():
  """Head k's logit is v_k . h + c_k on the shared features h: changing one
  head's parameters moves that task's logit only."""
  tasks = ("a", "b", "c")
  model = models.DigitAttributeNet(tasks=tasks, hidden=(8,))
  x = jax.random.uniform(jax.random.PRNGKey(3), (4, 8, 24, 1))
  variables = _host_variables(model, x)
  out = model.apply(variables, x)
  params = jax.tree.map(lambda p: p, variables["params"])
  params["head_b"] = {"kernel": params["head_b"]["kernel"],
                      "bias": params["head_b"]["bias"] + 1.0}
  moved = model.apply({"params": params}, x)
  np.testing.assert_allclose(moved["b"], out["b"] + 1.0, rtol=1e-6)
  for t in ("a", "c"):
    np.testing.assert_array_equal(moved[t], out[t])


def test_digit_attribute_net_rejects_bad_shapes():
  with pytest.raises(ValueError, match="at least one task"):
    jax.eval_shape(functools.partial(
        models.DigitAttributeNet(tasks=()).init, train=False), KEY,
                   jnp.zeros((1, 8, 24, 1)))
  with pytest.raises(ValueError, match="divisible by 16"):
    jax.eval_shape(functools.partial(
        models.DigitAttributeNet(tasks=("a",), widths=(2, 2, 2, 2)).init,
        train=False), KEY, jnp.zeros((1, 8, 24, 1)))


def test_digit_strip_regression_head_starts_at_its_offset():
  model = models.DigitAttributeNet(tasks=("centre", "sum"), hidden=(8,),
                                   output_sizes=(10, 1), output_offsets=(0.0, 13.5))
  x = jax.random.uniform(jax.random.PRNGKey(3), (4, 8, 24, 1))
  params = jax.jit(functools.partial(model.init, train=False))(KEY, x)["params"]
  np.testing.assert_array_equal(params["head_sum"]["bias"], [13.5])
  np.testing.assert_array_equal(params["head_centre"]["bias"], np.zeros(10))
  with pytest.raises(ValueError, match="one output size"):
    jax.eval_shape(functools.partial(
        models.DigitAttributeNet(tasks=("a", "b"), output_sizes=(10,)).init,
        train=False), KEY, jnp.zeros((1, 8, 24, 1)))
