r"""Gradient-space methods for multi-task learning: pure functions and factories.

Each method is a pure function of the :math:`K \times K` Gramian
:math:`G = J J^\top` of the task gradients, returning the weights :math:`w` of
the update direction :math:`d = J^\top w`, and a factory returning an
:class:`Aggregator` (``init``, ``apply``), found by name with :func:`get`.
The train step of :mod:`mtl_jax.train` computes the Jacobian and runs them.
"""
from mtl_jax.aggregation._base import Aggregator
from mtl_jax.aggregation._base import GradientWeights
from mtl_jax.aggregation._base import StatelessState
from mtl_jax.aggregation._base import combine
from mtl_jax.aggregation._base import gramian
from mtl_jax.aggregation._registry import get
from mtl_jax.aggregation._registry import names
from mtl_jax.aggregation.aligned_mtl import aligned_mtl
from mtl_jax.aggregation.aligned_mtl import aligned_mtl_weights
from mtl_jax.aggregation.cagrad import cagrad
from mtl_jax.aggregation.cagrad import cagrad_weights
from mtl_jax.aggregation.config import config
from mtl_jax.aggregation.config import config_weights
from mtl_jax.aggregation.constant import constant
from mtl_jax.aggregation.constant import constant_weights
from mtl_jax.aggregation.db_mtl import DBMTLState
from mtl_jax.aggregation.db_mtl import db_mtl
from mtl_jax.aggregation.db_mtl import db_mtl_direction
from mtl_jax.aggregation.dualproj import dualproj
from mtl_jax.aggregation.dualproj import dualproj_weights
from mtl_jax.aggregation.excess_mtl import ExcessMTLState
from mtl_jax.aggregation.excess_mtl import excess_mtl
from mtl_jax.aggregation.excess_mtl import excess_mtl_weights
from mtl_jax.aggregation.fairgrad import fairgrad
from mtl_jax.aggregation.fairgrad import fairgrad_weights
from mtl_jax.aggregation.graddrop import GradDropState
from mtl_jax.aggregation.graddrop import graddrop
from mtl_jax.aggregation.graddrop import graddrop_direction
from mtl_jax.aggregation.gradnorm import GradNormState
from mtl_jax.aggregation.gradnorm import gradnorm
from mtl_jax.aggregation.gradnorm import gradnorm_loss
from mtl_jax.aggregation.gradnorm import gradnorm_weights
from mtl_jax.aggregation.gradvac import GradVacState
from mtl_jax.aggregation.gradvac import gradvac
from mtl_jax.aggregation.gradvac import gradvac_weights
from mtl_jax.aggregation.imtl import imtl
from mtl_jax.aggregation.imtl import imtl_weights
from mtl_jax.aggregation.imtl_g import imtl_g
from mtl_jax.aggregation.imtl_g import imtl_g_weights
from mtl_jax.aggregation.mean import mean
from mtl_jax.aggregation.mean import mean_weights
from mtl_jax.aggregation.mgda import mgda
from mtl_jax.aggregation.mgda import mgda_weights
from mtl_jax.aggregation.moco import MoCoState
from mtl_jax.aggregation.moco import moco
from mtl_jax.aggregation.moco import moco_direction
from mtl_jax.aggregation.modo import MoDoState
from mtl_jax.aggregation.modo import modo
from mtl_jax.aggregation.modo import modo_weights
from mtl_jax.aggregation.nash_mtl import NashMTLState
from mtl_jax.aggregation.nash_mtl import nash_mtl
from mtl_jax.aggregation.nash_mtl import nash_mtl_weights
from mtl_jax.aggregation.pcgrad import PCGradState
from mtl_jax.aggregation.pcgrad import pcgrad
from mtl_jax.aggregation.pcgrad import pcgrad_weights
from mtl_jax.aggregation.random import RandomState
from mtl_jax.aggregation.random import random
from mtl_jax.aggregation.random import random_weights
from mtl_jax.aggregation.sdmgrad import SDMGradState
from mtl_jax.aggregation.sdmgrad import sdmgrad
from mtl_jax.aggregation.sdmgrad import sdmgrad_weights
from mtl_jax.aggregation.sum_ import sum_
from mtl_jax.aggregation.sum_ import sum_weights
from mtl_jax.aggregation.upgrad import upgrad
from mtl_jax.aggregation.upgrad import upgrad_weights

__all__ = (
    "Aggregator",
    "DBMTLState",
    "ExcessMTLState",
    "GradDropState",
    "GradNormState",
    "GradVacState",
    "GradientWeights",
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
