"""Multi-task models with hard parameter sharing (Flax linen).

Every model's ``__call__(x, train)`` returns ``{task: output}`` with float32
outputs, whatever the compute ``dtype``; parameters are float32. For the
gradient-space methods every model names its task-specific parameters
(``Model.TASK_PARAMS``, :func:`task_params`) and marks its shared features
(:func:`mark_features`).
"""
from mtl_jax.models._layers import mark_features
from mtl_jax.models._task_params import task_params
from mtl_jax.models.digit_attribute import DigitAttributeNet
from mtl_jax.models.digit_scene import DigitSceneNet
from mtl_jax.models.mlp import MLPTrunk
from mtl_jax.models.mtan import MTAN
from mtl_jax.models.qm9 import QM9Net
from mtl_jax.models.qm9 import edge_list as qm9_edge_list
from mtl_jax.models.resnet import ResNet18
from mtl_jax.models.segnet import CITYSCAPES_HEADS, NYUV2_HEADS, SegNet

__all__ = (
    "CITYSCAPES_HEADS",
    "MTAN",
    "NYUV2_HEADS",
    "DigitAttributeNet",
    "DigitSceneNet",
    "MLPTrunk",
    "QM9Net",
    "ResNet18",
    "SegNet",
    "mark_features",
    "qm9_edge_list",
    "task_params",
)
