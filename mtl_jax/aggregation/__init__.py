r"""Gradient-space methods for multi-task learning: pure functions and factories.

Each method is a pure function of the :math:`K \times K` Gramian
:math:`G = J J^\top` of the task gradients, returning the weights :math:`w` of
the update direction :math:`d = J^\top w`, and a factory returning an
:class:`Aggregator` (``init``, ``apply``), found by name with :func:`get`.
The few methods that read the Jacobian itself return the update direction
instead (:class:`JacobianAggregator`).
The train step of :mod:`mtl_jax.train` computes the Jacobian and runs them.
"""
from mtl_jax.aggregation._base import (
    Aggregator,
    GradientDirection,
    GradientMethod,
    GradientWeights,
    JacobianAggregator,
    StatelessState,
    combine,
    gramian,
)
from mtl_jax.aggregation._registry import get, names
from mtl_jax.aggregation.aligned_mtl import aligned_mtl, aligned_mtl_weights
from mtl_jax.aggregation.cagrad import cagrad, cagrad_weights
from mtl_jax.aggregation.config import config, config_weights
from mtl_jax.aggregation.constant import constant, constant_weights
from mtl_jax.aggregation.db_mtl import DBMTLState, db_mtl, db_mtl_direction
from mtl_jax.aggregation.dualproj import dualproj, dualproj_weights
from mtl_jax.aggregation.excess_mtl import ExcessMTLState, excess_mtl, excess_mtl_weights
from mtl_jax.aggregation.fairgrad import fairgrad, fairgrad_weights
from mtl_jax.aggregation.graddrop import GradDropState, graddrop, graddrop_direction
from mtl_jax.aggregation.gradnorm import GradNormState, gradnorm, gradnorm_loss, gradnorm_weights
from mtl_jax.aggregation.gradvac import GradVacState, gradvac, gradvac_weights
from mtl_jax.aggregation.imtl import imtl, imtl_weights
from mtl_jax.aggregation.imtl_g import imtl_g, imtl_g_weights
from mtl_jax.aggregation.mean import mean, mean_weights
from mtl_jax.aggregation.mgda import mgda, mgda_weights
from mtl_jax.aggregation.moco import MoCoState, moco, moco_direction
from mtl_jax.aggregation.modo import MoDoState, modo, modo_weights
from mtl_jax.aggregation.nash_mtl import NashMTLState, nash_mtl, nash_mtl_weights
from mtl_jax.aggregation.pcgrad import PCGradState, pcgrad, pcgrad_weights
from mtl_jax.aggregation.random import RandomState, random, random_weights
from mtl_jax.aggregation.sdmgrad import SDMGradState, sdmgrad, sdmgrad_weights
from mtl_jax.aggregation.sum_ import sum_, sum_weights
from mtl_jax.aggregation.upgrad import upgrad, upgrad_weights

__all__ = (
    "Aggregator",
    "DBMTLState",
    "ExcessMTLState",
    "GradDropState",
    "GradNormState",
    "GradVacState",
    "GradientDirection",
    "GradientMethod",
    "GradientWeights",
    "JacobianAggregator",
    "MoCoState",
    "MoDoState",
    "NashMTLState",
    "PCGradState",
    "RandomState",
    "SDMGradState",
    "StatelessState",
    "aligned_mtl",
    "aligned_mtl_weights",
    "cagrad",
    "cagrad_weights",
    "combine",
    "config",
    "config_weights",
    "constant",
    "constant_weights",
    "db_mtl",
    "db_mtl_direction",
    "dualproj",
    "dualproj_weights",
    "excess_mtl",
    "excess_mtl_weights",
    "fairgrad",
    "fairgrad_weights",
    "get",
    "graddrop",
    "graddrop_direction",
    "gradnorm",
    "gradnorm_loss",
    "gradnorm_weights",
    "gradvac",
    "gradvac_weights",
    "gramian",
    "imtl",
    "imtl_g",
    "imtl_g_weights",
    "imtl_weights",
    "mean",
    "mean_weights",
    "mgda",
    "mgda_weights",
    "moco",
    "moco_direction",
    "modo",
    "modo_weights",
    "names",
    "nash_mtl",
    "nash_mtl_weights",
    "pcgrad",
    "pcgrad_weights",
    "random",
    "random_weights",
    "sdmgrad",
    "sdmgrad_weights",
    "sum_",
    "sum_weights",
    "upgrad",
    "upgrad_weights",
)
