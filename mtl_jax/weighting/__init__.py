"""Loss-weighting methods for multi-task learning: pure functions and factories.

Each method is a pure function of the per-task losses and a factory returning
a :class:`Weighting` (``init``, ``apply``), found by name with :func:`get`.
"""
from mtl_jax.weighting._base import StatelessState, WeightedLoss, Weighting, check_positive_losses
from mtl_jax.weighting._registry import get, names
from mtl_jax.weighting.dwa import DWAState, dwa, dwa_weights
from mtl_jax.weighting.ew import ew
from mtl_jax.weighting.famo import FAMOState, famo, famo_loss, famo_weights
from mtl_jax.weighting.gls import gls, gls_loss
from mtl_jax.weighting.imtl_l import imtl_l, imtl_l_loss
from mtl_jax.weighting.rlw import RLWState, rlw, rlw_weights
from mtl_jax.weighting.scalarization import (
    ScalarizationState,
    scalarization,
    scalarization_grid,
)
from mtl_jax.weighting.stch import STCHState, stch, stch_loss
from mtl_jax.weighting.uw import uncertainty_loss, uw
from mtl_jax.weighting.uw_o import uw_o, uw_o_weights
from mtl_jax.weighting.uw_so import uw_so, uw_so_weights
from mtl_jax.weighting.uw_so_entropy import uw_so_entropy, uw_so_entropy_weights
from mtl_jax.weighting.uw_so_norm import InitialLossState, uw_so_norm, uw_so_norm_weights
from mtl_jax.weighting.uw_so_rel import LossEMAState, uw_so_rel, uw_so_rel_weights

__all__ = (
    "DWAState",
    "FAMOState",
    "InitialLossState",
    "LossEMAState",
    "RLWState",
    "STCHState",
    "ScalarizationState",
    "StatelessState",
    "WeightedLoss",
    "Weighting",
    "check_positive_losses",
    "dwa",
    "dwa_weights",
    "ew",
    "famo",
    "famo_loss",
    "famo_weights",
    "get",
    "gls",
    "gls_loss",
    "imtl_l",
    "imtl_l_loss",
    "names",
    "rlw",
    "rlw_weights",
    "scalarization",
    "scalarization_grid",
    "stch",
    "stch_loss",
    "uncertainty_loss",
    "uw",
    "uw_o",
    "uw_o_weights",
    "uw_so",
    "uw_so_entropy",
    "uw_so_entropy_weights",
    "uw_so_norm",
    "uw_so_norm_weights",
    "uw_so_rel",
    "uw_so_rel_weights",
    "uw_so_weights",
)
