"""Every bundled model names its heads and marks its shared features for the
gradient-space methods; ``init`` stays free of perturbations."""
import functools

import jax
import jax.numpy as jnp
import pytest

from mtl_jax import models, train

KEY = jax.random.PRNGKey(0)

CASES = [
    ("digit_scene_net", models.DigitSceneNet(widths=(4, 8)), (2, 8, 8, 3), 4),
    ("segnet", models.SegNet(filters=(4, 8)), (2, 8, 8, 3), 3),
    ("mtan", models.MTAN(filters=(4, 8)), (2, 8, 8, 3), 3),
    ("resnet18", models.ResNet18(num_attributes=5, width=4), (2, 16, 16, 3), 1),
    ("mlp", models.MLPTrunk(num_tasks=3, width=8, depth=2, out_dim=4), (2, 250),
     1),
    ("digit_attribute_net",
     models.DigitAttributeNet(tasks=("a", "b", "c"), hidden=(8,)),
     (2, 8, 24, 1), 3),
    ("digit_strip_net",
     models.DigitAttributeNet(tasks=("centre", "sum", "a", "b"), hidden=(8,),
                              output_sizes=(10, 1, 1, 1)),
     (2, 8, 24, 1), 4),
]


def _variables(model, shape):
  return jax.eval_shape(functools.partial(model.init, train=False), KEY,
                        jnp.zeros(shape))


@pytest.mark.parametrize("name,model,shape,heads", CASES,
                         ids=[c[0] for c in CASES])
def test_default_rule_selects_the_heads_only(name, model, shape, heads):
  variables = _variables(model, shape)
  assert "perturbations" not in variables
  mask = train.task_param_mask(variables["params"], models.task_params(model))
  assert any(mask) and not all(mask)
  flat = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
  selected = {jax.tree_util.keystr(p[:1]) for (p, _), m in zip(flat, mask) if m}
  assert len([s for s in selected if "head" in s]) == heads


@pytest.mark.parametrize("name,model,shape,heads", CASES,
                         ids=[c[0] for c in CASES])
def test_shared_features_are_marked(name, model, shape, heads):
  del heads
  variables = _variables(model, shape)
  batch = {"image": jnp.zeros(shape)}
  init = train.module_apply_fn(model).init_perturbations
  perturbations = jax.eval_shape(lambda v: init(v, batch), variables)
  leaves = jax.tree.leaves(perturbations)
  assert leaves and all(x.shape[0] == shape[0] for x in leaves)


def test_a_wrapper_is_looked_through_and_unknown_models_raise():
  import flax.linen as nn

  class Wrapper(nn.Module):
    net: nn.Module

    def __call__(self, x, train):
      return self.net(x, train)

  assert models.task_params(Wrapper(models.SegNet())) == ("head_*",)

  class Bare(nn.Module):
    def __call__(self, x, train):
      return {"a": x}

  with pytest.raises(ValueError, match="declares no task-specific"):
    models.task_params(Bare())
