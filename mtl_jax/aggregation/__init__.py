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
from mtl_jax.aggregation.dualproj import dualproj
from mtl_jax.aggregation.dualproj import dualproj_weights
from mtl_jax.aggregation.fairgrad import fairgrad
from mtl_jax.aggregation.fairgrad import fairgrad_weights
from mtl_jax.aggregation.gradvac import GradVacState
from mtl_jax.aggregation.gradvac import gradvac
from mtl_jax.aggregation.gradvac import gradvac_weights
from mtl_jax.aggregation.imtl_g import imtl_g
from mtl_jax.aggregation.imtl_g import imtl_g_weights
from mtl_jax.aggregation.mgda import mgda
from mtl_jax.aggregation.mgda import mgda_weights
from mtl_jax.aggregation.nash_mtl import NashMTLState
from mtl_jax.aggregation.nash_mtl import nash_mtl
from mtl_jax.aggregation.nash_mtl import nash_mtl_weights
from mtl_jax.aggregation.pcgrad import PCGradState
from mtl_jax.aggregation.pcgrad import pcgrad
from mtl_jax.aggregation.pcgrad import pcgrad_weights
from mtl_jax.aggregation.upgrad import upgrad
from mtl_jax.aggregation.upgrad import upgrad_weights

__all__ = (
    "Aggregator",
    "GradVacState",
    "GradientWeights",
    "NashMTLState",
    "PCGradState",
    "StatelessState",
    "aligned_mtl",
    "aligned_mtl_weights",
    "cagrad",
    "cagrad_weights",
    "combine",
    "config",
    "config_weights",
    "dualproj",
    "dualproj_weights",
    "fairgrad",
    "fairgrad_weights",
    "get",
    "gradvac",
    "gradvac_weights",
    "gramian",
    "imtl_g",
    "imtl_g_weights",
    "mgda",
    "mgda_weights",
    "names",
    "nash_mtl",
    "nash_mtl_weights",
    "pcgrad",
    "pcgrad_weights",
    "upgrad",
    "upgrad_weights",
)
