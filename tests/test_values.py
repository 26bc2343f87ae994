"""The one table of pinned values of mtl_jax.weighting and mtl_jax.aggregation.

Each row is ``(fn_or_method, kwargs, inputs, expected)``:

* a pure function: ``fn(*inputs, **kwargs)`` must equal ``expected`` (an
  array, or a tuple ``(total, weights)``);
* a registry name: ``get(name, **kwargs)`` is initialised for K tasks and
  applied to each loss vector of ``inputs`` in turn (the state carried from
  step to step); the last step's ``(total, weights)`` must equal ``expected``.

Every expected number is computed by hand in the row's comment, never by the
library. All rows are checked in float32 and in float64 with the same fixed
absolute tolerance ``ATOL``.

``GRADIENT_ROWS`` pins the gradient-space methods on TorchJD's Jacobian
``J = [[-4, 1, 1], [6, 1, 1]]`` (Gramian ``[[18, -22], [-22, 38]]``): each row
is ``(name, kwargs, weights W(G), direction J^T W(G))``, the values of
TorchJD's own table (``tests/unit/aggregation/test_values.py``), checked to
``GRADIENT_ATOL`` = 1e-4 as TorchJD does. A name is built with
``mtl_jax.aggregation.get(name, **kwargs)``, initialised for two tasks and
applied once, with the keyword inputs of an optional fifth element
(``{"losses": [...]}`` for the methods that read the losses). A pure
function ``fn`` in place of the name is called as ``fn(G, **kwargs)`` (to
inject a random draw) and covers the method ``fn``'s name without
``_weights``. A method that reads J itself (``JacobianAggregator``: GradDrop,
MoCo, DB-MTL, ExcessMTL) is initialised with ``num_params=3`` and applied to
J; its row holds the weights it reports and the direction it returns (in
general not ``J^T w``).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import aggregation, weighting
from mtl_jax.aggregation import graddrop_direction, random_weights
from mtl_jax.weighting import (
  dwa_weights,
  famo_loss,
  famo_weights,
  gls_loss,
  imtl_l_loss,
  rlw_weights,
  scalarization_grid,
  stch_loss,
  uncertainty_loss,
  uw_o_weights,
  uw_so_entropy_weights,
  uw_so_norm_weights,
  uw_so_rel_weights,
  uw_so_weights,
)

ATOL = 1e-5
LN2 = math.log(2.0)
E = math.e
# The largest weight a distribution with entropy rho log K can give one task
# (the K - 1 others equal): the a >= 1/K with -a ln a - (1 - a) ln(1 - a)
# + (1 - a) ln(K - 1) = rho ln K, solved by bisection in float64 numpy
# (scipy.optimize.brentq, xtol 1e-15), not by the library.
ENTROPY_BOUND_K2 = 0.6839807  # rho = 0.9: -a ln a - (1-a) ln(1-a) = 0.6238325
ENTROPY_BOUND_K3 = 0.5623041  # rho = 0.9: ... + (1-a) ln 2 = 0.9887511
ENTROPY_BOUND_K3_HALF = 0.8405385  # rho = 0.5: ... + (1-a) ln 2 = 0.5493061

ROWS = [
    # --- pure functions ---------------------------------------------------
    # 1 / [0.5, 2] = [2, 0.5] (eps = 1e-8 moves them by < 1e-7).
    (uw_o_weights, {}, ([0.5, 2.0],), [2.0, 0.5]),
    # eps = 1: 1 / (1 + 1) = 0.5, 1 / (3 + 1) = 0.25.
    (uw_o_weights, {"eps": 1.0}, ([1.0, 3.0],), [0.5, 0.25]),
    # softmax([2, 0.5] / 2) = softmax([1, 0.25]):
    # 1 / (1 + e^-0.75) = 0.6791787, e^-0.75 / (1 + e^-0.75) = 0.3208213.
    (uw_so_weights, {"temperature": 2.0}, ([0.5, 2.0],),
     [0.6791787, 0.3208213]),
    # softmax([2, 1, 0.5]) = [e^2, e^1, e^0.5] / (7.389056 + 2.718282 + 1.648721)
    # = [7.389056, 2.718282, 1.648721] / 11.756059.
    (uw_so_weights, {"temperature": 1.0}, ([0.5, 1.0, 2.0],),
     [0.6285317, 0.2312239, 0.1402444]),
    # The saturation example: 1/L = [20, 2], T = 1: [1/(1+e^-18), e^-18/(...)]
    # = [1 - 1.523e-8, 1.523e-8].
    (uw_so_weights, {"temperature": 1.0}, ([0.05, 0.5],), [1.0, 1.523e-8]),
    # Relative temperature, default tau = K / 2 = 1 for K = 2: u = 1/L = [2, 0.5], shares p = u / sum u
    # = [0.8, 0.2], logits (K / tau) p = [1.6, 0.4]: [1, e^-1.2] / (1 + e^-1.2)
    # = [1, 0.3011942] / 1.3011942.
    (uw_so_rel_weights, {}, ([0.5, 2.0],), [0.7685248, 0.2314752]),
    # The same losses times 100: the same weights (T = tau mean u scales too).
    (uw_so_rel_weights, {}, ([50.0, 200.0],), [0.7685248, 0.2314752]),
    # tau = 2, K = 3: u = [2, 1, 0.5], p = [4, 2, 1] / 7, logits 1.5 p =
    # [6, 3, 1.5] / 7: [e^0.857143, e^0.428571, e^0.214286] = [2.356418,
    # 1.535063, 1.238977] / 5.130458.
    (uw_so_rel_weights, {"tau": 2.0}, ([0.5, 1.0, 2.0],),
     [0.4592998, 0.2992058, 0.2414943]),
    # tau = inf: logits 0, equal weights.
    (uw_so_rel_weights, {"tau": math.inf}, ([0.5, 1.0, 2.0],),
     [1 / 3, 1 / 3, 1 / 3]),
    # Entropy floor, rho = 0.9: the relative weights [0.7685, 0.2315] have
    # entropy 0.541 < 0.9 ln 2 = 0.6238, so T rises until the entropy is
    # 0.6238; with K = 2 that is the bound (a, 1 - a).
    (uw_so_entropy_weights, {"target": 0.9}, ([0.5, 2.0],),
     [ENTROPY_BOUND_K2, 1.0 - ENTROPY_BOUND_K2]),
    # L = [1, 2]: logits [4/3, 2/3], weights [1, e^-2/3] / (1 + e^-2/3) =
    # [0.6607564, 0.3392436], entropy 0.6405 >= 0.6238: the floor does not act.
    (uw_so_entropy_weights, {"target": 0.9}, ([1.0, 2.0],),
     [0.6607564, 0.3392436]),
    # L = [0.1, 1, 1]: u = [10, 1, 1], logits 3 p = [2.5, 0.25, 0.25], relative
    # weights [0.8259, 0.0870, 0.0870] of entropy 0.583 < 0.9 ln 3 = 0.9888;
    # raised to the floor with the two equal losses equal: (a, (1 - a) / 2).
    (uw_so_entropy_weights, {"target": 0.9}, ([0.1, 1.0, 1.0],),
     [ENTROPY_BOUND_K3, (1.0 - ENTROPY_BOUND_K3) / 2,
      (1.0 - ENTROPY_BOUND_K3) / 2]),
    # rho = 0.5 on the same losses: entropy 0.583 >= 0.5 ln 3 = 0.5493, the
    # relative weights stay.
    (uw_so_entropy_weights, {"target": 0.5}, ([0.1, 1.0, 1.0],),
     [0.8259013, 0.0870494, 0.0870494]),
    # rho = 0.5, L = [0.01, 1, 1]: u = [100, 1, 1], logits 3 [100, 1, 1] / 102,
    # relative weights [0.9019, 0.0490, 0.0490] of entropy 0.389 < 0.5493:
    # raised to (a, (1 - a) / 2).
    (uw_so_entropy_weights, {"target": 0.5}, ([0.01, 1.0, 1.0],),
     [ENTROPY_BOUND_K3_HALF, (1.0 - ENTROPY_BOUND_K3_HALF) / 2,
      (1.0 - ENTROPY_BOUND_K3_HALF) / 2]),
    # The default rho = 0.9 on [0.1, 1, 1]: the rho = 0.9 row above.
    (uw_so_entropy_weights, {}, ([0.1, 1.0, 1.0],),
     [ENTROPY_BOUND_K3, (1.0 - ENTROPY_BOUND_K3) / 2,
      (1.0 - ENTROPY_BOUND_K3) / 2]),
    # uw_so_norm, losses over the first step's: L = [0.5, 20], L1 = [1, 40]:
    # ratios [0.5, 0.5], equal, so v = [1/2, 1/2]; v / L1 = [0.5, 0.0125]
    # normalised: [40, 1] / 41.
    (uw_so_norm_weights, {}, ([0.5, 20.0], [1.0, 40.0]),
     [40 / 41, 1 / 41]),
    # K = 3, L = [0.5, 1, 8], L1 = [1, 1, 4]: ratios [0.5, 1, 2], inverse
    # [2, 1, 0.5], shares [4, 2, 1] / 7; tau = K / 2, logits 2 p = [8, 4, 2]
    # / 7: [e^1.142857, e^0.571429, e^0.285714] = [3.135715, 1.770795,
    # 1.330712] / 6.237222 = v; v / L1 = [0.502742, 0.283908, 0.053337]
    # normalised: [0.5985116, 0.3379904, 0.0634980].
    (uw_so_norm_weights, {}, ([0.5, 1.0, 8.0], [1.0, 1.0, 4.0]),
     [0.5985116, 0.3379904, 0.0634980]),
    # target = 0: no floor, the uw_so_rel row; target = 1: equal weights.
    (uw_so_entropy_weights, {"target": 0.0}, ([0.5, 2.0],),
     [0.7685248, 0.2314752]),
    (uw_so_entropy_weights, {"target": 1.0}, ([0.1, 1.0, 1.0],),
     [1 / 3, 1 / 3, 1 / 3]),
    # s = 0, regression: 0.5 * 1 + 0.5 * 2 + 0 = 1.5; weights 0.5 e^0 = 0.5.
    (uncertainty_loss, {}, ([1.0, 2.0], [0.0, 0.0]), (1.5, [0.5, 0.5])),
    # s = [-1, 1], regression: 0.5 e^1 * 1 - 0.5 + 0.5 e^-1 * 2 + 0.5
    # = 1.3591409 + 0.3678794 = 1.7270204; weights [0.5 e, 0.5 / e].
    (uncertainty_loss, {}, ([1.0, 2.0], [-1.0, 1.0]),
     (1.7270204, [1.3591409, 0.1839397])),
    # classification then regression, s = [ln 2, 0], L = [1, 2]:
    # e^-ln2 * 1 + 0.5 ln 2 + 0.5 * 2 + 0 = 0.5 + 0.3465736 + 1 = 1.8465736;
    # weights [e^-ln2, 0.5] = [0.5, 0.5].
    (uncertainty_loss, {"task_types": ("classification", "regression")},
     ([1.0, 2.0], [LN2, 0.0]), (1.8465736, [0.5, 0.5])),
    # r = [1/2, 2/2] = [0.5, 1], T = 2: 2 softmax([0.25, 0.5])
    # = 2 [1/(1+e^0.25), 1/(1+e^-0.25)] = [0.875647, 1.124353].
    (dwa_weights, {"temperature": 2.0}, ([1.0, 2.0], [2.0, 2.0]),
     [0.8756470, 1.1243530]),
    # Equal ratios [3, 3, 3]: 3 * (1/3) = 1 each, whatever T.
    (dwa_weights, {"temperature": 0.1}, ([3.0, 6.0, 9.0], [1.0, 2.0, 3.0]),
     [1.0, 1.0, 1.0]),
    # One task: softmax of one number is 1, whatever the key.
    (rlw_weights, {"num_tasks": 1}, (jax.random.PRNGKey(7),), [1.0]),
    # (1 * 4)^(1/2) = 2.
    (gls_loss, {}, ([1.0, 4.0],), 2.0),
    # (2 * 4 * 8)^(1/3) = 64^(1/3) = 4.
    (gls_loss, {}, ([2.0, 4.0, 8.0],), 4.0),
    # (1e-8 * 1e8)^(1/2) = 1: computed in log space, no underflow.
    (gls_loss, {}, ([1e-8, 1e8],), 1.0),
    # s = [0, ln 0.5]: e^0 * 1 - 0 + 0.5 * 2 - ln 0.5 = 1 + 1 + ln 2 = 2.6931472;
    # weights e^s = [1, 0.5].
    (imtl_l_loss, {}, ([1.0, 2.0], [0.0, -LN2]), (2.6931472, [1.0, 0.5])),
    # Step 0.5, two tasks: only [0.5, 0.5].
    (scalarization_grid, {"step": 0.5}, (2,), [[0.5, 0.5]]),
    # Step 0.25, two tasks: counts (3,1), (2,2), (1,3) over 4.
    (scalarization_grid, {"step": 0.25}, (2,),
     [[0.75, 0.25], [0.5, 0.5], [0.25, 0.75]]),
    # Step 0.25, three tasks: counts summing to 4, each >= 1: (2,1,1), (1,2,1),
    # (1,1,2), largest first weight first.
    (scalarization_grid, {"step": 0.25}, (3,),
     [[0.5, 0.25, 0.25], [0.25, 0.5, 0.25], [0.25, 0.25, 0.5]]),
    # One task: the single point [1].
    (scalarization_grid, {"step": 0.1}, (1,), [[1.0]]),

    # --- registry methods: (total, weights) of the last step ----------------
    # 0.5 + 2 = 2.5, weights 1 (summed, not averaged).
    ("ew", {}, ([0.5, 2.0],), (2.5, [1.0, 1.0])),
    # 0.3 * 0.5 + 0.7 * 2 = 0.15 + 1.4 = 1.55.
    ("scalarization", {"weights": (0.3, 0.7)}, ([0.5, 2.0],),
     (1.55, [0.3, 0.7])),
    # init s = 0: 0.5 * 0.5 + 0.5 * 2 + 0 = 1.25, weights 0.5.
    ("uw", {}, ([0.5, 2.0],), (1.25, [0.5, 0.5])),
    # init s = -0.5 (LibMTL): 0.5 e^0.5 (0.5 + 2) + 2 * 0.5 * (-0.5)
    # = 0.8243606 * 2.5 - 0.5 = 1.5609016; weights 0.5 e^0.5 = 0.8243606.
    ("uw", {"init_log_var": -0.5}, ([0.5, 2.0],),
     (1.5609016, [0.8243606, 0.8243606])),
    # classification, s = 0: e^0 * 0.5 + e^0 * 2 = 2.5, weights 1.
    ("uw", {"task_types": ("classification", "classification")},
     ([0.5, 2.0],), (2.5, [1.0, 1.0])),
    # weights 1/L = [2, 0.5]; every term w L = 1, total 2.
    ("uw_o", {}, ([0.5, 2.0],), (2.0, [2.0, 0.5])),
    # weights as the uw_so_weights row above;
    # 0.6791787 * 0.5 + 0.3208213 * 2 = 0.3395894 + 0.6416426 = 0.9812320.
    ("uw_so", {"temperature": 2.0}, ([0.5, 2.0],),
     (0.9812320, [0.6791787, 0.3208213])),
    # weights as the uw_so_rel_weights row: 0.7685248 * 0.5 + 0.2314752 * 2
    # = 0.3842624 + 0.4629504 = 0.8472128.
    ("uw_so_rel", {}, ([0.5, 2.0],), (0.8472128, [0.7685248, 0.2314752])),
    # ema = 0.5: mean [0.5, 1], then 0.5 [0.5, 1] + 0.5 [2, 1] = [1.25, 1];
    # u = [0.8, 1], logits 2 [4, 5] / 9: [1, e^(2/9)] / (1 + e^(2/9)) with
    # e^(2/9) = 1.2488489: [0.4446719, 0.5553281]; total on the current
    # losses 0.4446719 * 2 + 0.5553281 * 1 = 1.4446719.
    ("uw_so_rel", {"ema": 0.5}, ([1.0, 2.0], [2.0, 1.0]),
     (1.4446719, [0.4446719, 0.5553281])),
    # rho = 0.9, the K = 2 bound: total a * 0.5 + (1 - a) * 2 = 2 - 1.5 a
    # = 0.9740290.
    ("uw_so_entropy", {"target": 0.9}, ([0.5, 2.0],),
     (0.9740290, [ENTROPY_BOUND_K2, 1.0 - ENTROPY_BOUND_K2])),
    # rho = 0.5 on [0.01, 1, 1] (the row above): total
    # a * 0.01 + (1 - a) * 1 = 1 - 0.99 a = 0.1678669.
    ("uw_so_entropy", {"target": 0.5}, ([0.01, 1.0, 1.0],),
     (0.1678669, [ENTROPY_BOUND_K3_HALF, (1.0 - ENTROPY_BOUND_K3_HALF) / 2,
                  (1.0 - ENTROPY_BOUND_K3_HALF) / 2])),
    # ema = 0.5 on [1, 2] then [2, 1]: the uw_so_rel ema row, whose entropy
    # (0.687) is above the default floor 0.9 ln 2 = 0.624: the same weights
    # and total.
    ("uw_so_entropy", {"ema": 0.5}, ([1.0, 2.0], [2.0, 1.0]),
     (1.4446719, [0.4446719, 0.5553281])),
    # uw_so_norm: the first step [1, 40] is stored; at [0.5, 40] the ratios
    # are [0.5, 1], shares [2/3, 1/3], logits 2 p = [4/3, 2/3], v = [1,
    # e^(-2/3)] / (1 + e^(-2/3)) = [0.6607564, 0.3392436]; v / L1 = [0.6607564,
    # 0.0084811] normalised: [0.9873272, 0.0126728]; total 0.9873272 * 0.5 +
    # 0.0126728 * 40 = 1.0005743.
    ("uw_so_norm", {}, ([1.0, 40.0], [0.5, 40.0]),
     (1.0005743, [0.9873272, 0.0126728])),
    # First step of epoch 0: weights 1, total 0.5 + 2 = 2.5.
    ("dwa", {"steps_per_epoch": 2}, ([0.5, 2.0],), (2.5, [1.0, 1.0])),
    # Epoch 1 (steps 2, 3) still weights 1: total of step 3 = 0.4 + 0.8.
    ("dwa", {"steps_per_epoch": 2},
     ([1.0, 1.0], [1.0, 1.0], [0.6, 1.2], [0.4, 0.8]), (1.2, [1.0, 1.0])),
    # Epoch means: e0 = [1, 1], e1 = [(0.6+0.4)/2, (1.2+0.8)/2] = [0.5, 1].
    # Step 4 (epoch 2): r = [0.5, 1], T = 2 -> [0.875647, 1.124353] (the
    # dwa_weights row above); total 0.875647 * 0.25 + 1.124353 * 1 = 1.3432648.
    ("dwa", {"steps_per_epoch": 2},
     ([1.0, 1.0], [1.0, 1.0], [0.6, 1.2], [0.4, 0.8], [0.25, 1.0]),
     (1.3432648, [0.8756470, 1.1243530])),
    # One task: softmax(z) = 1 for any draw; total = L.
    ("rlw", {}, ([0.7],), (0.7, [1.0])),
    # total (2 * 4 * 8)^(1/3) = 4; weights 4 / (3 L) = [2/3, 1/3, 1/6].
    ("gls", {}, ([2.0, 4.0, 8.0],), (4.0, [0.6666667, 0.3333333, 0.1666667])),
    # init s = 0: 0.5 + 2 - 0 = 2.5, weights 1.
    ("imtl_l", {}, ([0.5, 2.0],), (2.5, [1.0, 1.0])),
    # init s = ln 2: 2 * (0.5 + 2) - 2 ln 2 = 5 - 1.3862944 = 3.6137056; weights 2.
    ("imtl_l", {"init_log_scale": LN2}, ([0.5, 2.0],),
     (3.6137056, [2.0, 2.0])),

    # --- FAMO and STCH -------------------------------------------------------
    # FAMO, logits 0 (z = [1/2, 1/2]) on [1, 2] (TorchJD's test_famo.py):
    # c = 1 / (0.5 / 1 + 0.5 / 2) = 4/3; value 4/3 * 0.5 * ln 2 = 0.4620981
    # (the 1e-8 moves it by < 1e-8); gradient c z / L = [2/3, 1/3].
    (famo_loss, {}, ([1.0, 2.0], [0.0, 0.0]), 0.4620981),
    (famo_weights, {}, ([1.0, 2.0], [0.0, 0.0]), [0.6666667, 0.3333333]),
    ("famo", {}, ([1.0, 2.0],), (0.4620981, [0.6666667, 0.3333333])),
    # STCH, TorchJD's test_stch.py (mu = 1): weights 1/2 on [0, 0]:
    # log(e^0 + e^0) = ln 2; gradient (1/2) softmax = [1/4, 1/4].
    (stch_loss, {"mu": 1.0}, ([0.0, 0.0],), LN2),
    ("stch", {}, ([0.0, 0.0],), (LN2, [0.25, 0.25])),
    # weights [1, 1] on [1, 1]: log(2 e) = 1 + ln 2 = 1.6931472; gradient
    # softmax = [1/2, 1/2].
    (stch_loss, {"mu": 1.0, "weights": [1.0, 1.0]}, ([1.0, 1.0],), 1.0 + LN2),
    ("stch", {"weights": (1.0, 1.0)}, ([1.0, 1.0],), (1.0 + LN2, [0.5, 0.5])),
    # reference [1, 1] shifts [1, 1] to [0, 0]: ln 2.
    (stch_loss, {"mu": 1.0, "weights": [1.0, 1.0], "reference": [1.0, 1.0]},
     ([1.0, 1.0],), LN2),
    ("stch", {"weights": (1.0, 1.0), "reference": (1.0, 1.0)}, ([1.0, 1.0],),
     (LN2, [0.5, 0.5])),
    # TorchJD's mu = 1e-10 on [1e30, 2e30, 3e30] -> 1e30 cannot be held to an
    # absolute 1e-5 (test_stch.py checks it relatively); the same case scaled
    # by 1e-30: weights 1/3, max(1/3, 2/3, 1) = 1, plus 1e-10 log(1 + 2e^-1e10)
    # = 1; gradient [0, 0, 1/3]. Unshifted, exp(1 / 1e-10) would overflow.
    (stch_loss, {"mu": 1e-10}, ([1.0, 2.0, 3.0],), 1.0),
    ("stch", {"mu": 1e-10}, ([1.0, 2.0, 3.0],), (1.0, [0.0, 0.0, 0.3333333])),
    # LibMTL's form, warmup_epochs = 1, steps_per_epoch = 2. Step 0 (epoch 0,
    # warm-up): ln 1 + ln 2 = ln 2, gradient 1/L = [1, 0.5].
    ("stch", {"warmup_epochs": 1, "steps_per_epoch": 2}, ([1.0, 2.0],),
     (LN2, [1.0, 0.5])),
    # Epoch 1 averages [2, 4], [4, 2] into the nadir n = [3, 3]. Step 5 (epoch
    # 3), L = [3, 1]: f = log(L / n) = [0, -ln 3]; total K mu log(e^0 + 1/3)
    # = 2 ln(4/3) = 0.5753641; softmax [3/4, 1/4], gradient
    # K softmax / L = [2 * 0.75 / 3, 2 * 0.25 / 1] = [0.5, 0.5].
    ("stch", {"warmup_epochs": 1, "steps_per_epoch": 2},
     ([1.0, 2.0], [1.0, 2.0], [2.0, 4.0], [4.0, 2.0], [1.0, 1.0], [3.0, 1.0]),
     (0.5753641, [0.5, 0.5])),

    # --- GradDrop with torch's draws ----------------------------------------
    # TorchJD's J = [[-4, 1, 1], [6, 1, 1]], torch's seed-0 rand(3) = [0.4963,
    # 0.7682, 0.0885] injected. Column 0: P = (1 + 2/10) / 2 = 0.6 > 0.4963,
    # keep the positive 6; columns 1, 2: P = 1 > U, keep both 1s: [6, 2, 2].
    (graddrop_direction, {}, ([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]],
                              [0.4963, 0.7682, 0.0885]), [6.0, 2.0, 2.0]),
]

# float64 repeats every row in double precision: run in CI (-m slow), not in
# README's default suite.
X64 = [False, pytest.param(True, marks=pytest.mark.slow)]


# --- gradient-space methods on TorchJD's pinned Jacobian -------------------

J_BASE = [[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]]
GRADIENT_ATOL = 1e-4

GRADIENT_ROWS = [
    # Frank-Wolfe from [1/2, 1/2]: Gw = [-2, 8], gamma = (3 + 2) / (3 + 18 + 4)
    # = 0.2 towards e_0 -> [0.6, 0.4]; then Gw = [2, 2]: optimal.
    # d = 0.6 [-4, 1, 1] + 0.4 [6, 1, 1] = [0, 1, 1].
    ("mgda", {}, [0.6, 0.4], [0.0, 1.0, 1.0]),
    # Two tasks: w* = argmin over the segment, in closed form; weights
    # 1/2 + (c ||g_0|| / ||J^T w*||) w* (TorchJD's table, c = 0.5).
    ("cagrad", {"c": 0.5}, [0.7041, 0.5], [0.1835, 1.2041, 1.2041]),
    # LibMTL's rescale=1 divides by 1 + c^2 = 1.25: [0.1468, 0.9633, 0.9633]
    # (computed by hand in REFERENCE 8.3).
    ("cagrad", {"c": 0.5, "rescale": 1}, [0.5633, 0.4], [0.1468, 0.9633, 0.9633]),
    # G^-1 = [[38, 22], [22, 18]] / 200, s = [sqrt 18, sqrt 38]
    # = [4.24264, 6.16441]: v = [1.48419, 1.02153] / sum -> [0.59233, 0.40767].
    ("imtl_g", {}, [0.5923, 0.4077], [0.0767, 1.0, 1.0]),
    # eig(G) = 28 -+ sqrt(584) = [3.83391, 52.16609]; w = sqrt(3.83391)
    # G^-1/2 [1/2, 1/2] (TorchJD's table).
    ("aligned_mtl", {}, [0.5591, 0.4083], [0.2133, 0.9673, 0.9673]),
    # u_1 . u_2 = -22 / sqrt(18 * 38) = -0.84119: pinv(U) 1 = (u_1 + u_2) / (1 - 0.84119)
    # = [0.19181, 2.50312, 2.50312]; its unit vector times (g_1 + g_2) . u
    # = 2.93264 gives d (TorchJD's table; no weighting row there).
    ("config", {}, [1.2265, 0.8441], [0.1588, 2.0706, 2.0706]),
    # g_1 . g_2 = -22 < 0 both ways: c_1 = e_1 + (22/38) e_2, c_2 = e_2 +
    # (22/18) e_1; w = c_1 + c_2 = [1 + 11/9, 1 + 11/19] = [2.2222, 1.5789].
    # K = 2 is deterministic (any key).
    ("pcgrad", {}, [2.2222, 1.5789], [0.5848, 3.8012, 3.8012]),
    # Each row projected on the dual cone {x : J x >= 0}: TorchJD's table.
    ("upgrad", {}, [1.1109, 0.7894], [0.2929, 1.9004, 1.9004]),
    # The mean gradient projected on the dual cone: TorchJD's table.
    ("dualproj", {}, [0.6109, 0.5], [0.5563, 1.1109, 1.1109]),
    # G w = 1/w for alpha = 1: w = t [1.45293, 1], t^2 = 1 / 6.03554
    # -> [0.59146, 0.40707] (TorchJD's table).
    ("fairgrad", {"alpha": 1.0}, [0.5915, 0.4071], [0.0766, 0.9985, 0.9985]),
    # The same bargaining solution (G a = 1/a), scaled so that ||J^T a|| =
    # max_norm = 1: a^T G a = K = 2, so a = [0.59146, 0.40707] / sqrt(2)
    # (TorchJD's table pins the direction only).
    ("nash_mtl", {}, [0.4182, 0.2878], [0.0542, 0.7061, 0.7061]),
    # First call: the EMA target starts at 0 > phi, so every conflicting pair
    # is projected as in PCGrad.
    ("gradvac", {}, [2.2222, 1.5789], [0.5848, 3.8012, 3.8012]),
    # 1/K each: d = ([-4, 1, 1] + [6, 1, 1]) / 2 = [1, 1, 1].
    ("mean", {}, [0.5, 0.5], [1.0, 1.0, 1.0]),
    # 1 each: d = [-4 + 6, 2, 2] = [2, 2, 2].
    ("sum", {}, [1.0, 1.0], [2.0, 2.0, 2.0]),
    # d = 1 [-4, 1, 1] + 2 [6, 1, 1] = [8, 3, 3].
    ("constant", {"weights": (1.0, 2.0)}, [1.0, 2.0], [8.0, 3.0, 3.0]),
    # torch's seed-0 draw randn(2) = [1.5410, -0.2934], injected: softmax =
    # [1, e^-1.8344] / (1 + e^-1.8344) = [1, 0.15970] / 1.15970
    # = [0.86229, 0.13771]; d = [6 - 10 * 0.86229, 1, 1] = [-2.6229, 1, 1].
    (random_weights, {"draw": [1.5410, -0.2934]}, [0.8623, 0.1377],
     [-2.6229, 1.0, 1.0]),
    # First call, L(0) = L: r = 1; logits 1: w = 2 softmax([1, 1]) = [1, 1],
    # d = [2, 2, 2] (the balancing loss moves the logits for the next call).
    ("gradnorm", {}, [1.0, 1.0], [2.0, 2.0, 2.0], {"losses": [1.0, 2.0]}),
    # log-scales 0: e^s = 1, so IMTL-G's weights on G (the imtl_g row).
    ("imtl", {}, [0.5923, 0.4077], [0.0767, 1.0, 1.0], {"losses": [1.0, 2.0]}),
    # --- methods that read J itself: (name, kwargs, reported weights, d) ---
    # GradDrop: PRNGKey(5)'s draw for column 0 is below P = 0.6 (as torch's
    # 0.4963 above, with either threefry layout of jax), so d = [6, 2, 2];
    # weights: the share of each row's entries kept, [2/3, 1].
    ("graddrop", {"seed": 5}, [0.6667, 1.0], [6.0, 2.0, 2.0]),
    # MoCo, L = [1, 2]: y = [u_0 / 2, u_1] (unit rows u_i, u_0 . u_1 =
    # -22 / sqrt(684) = -0.841191); y y^T [1/2, 1/2] = [-0.085298, 0.289702];
    # lambda = softmax(1/2 - 0.1 [...]) = [0.509374, 0.490626];
    # d = 0.254687 u_0 + 0.490626 u_1 = [0.237419, 0.139620, 0.139620].
    ("moco", {}, [0.5094, 0.4906], [0.2374, 0.1396, 0.1396],
     {"losses": [1.0, 2.0]}),
    # DB-MTL, L = [1, 2]: B = 0.1 [g_0, g_1 / 2], norms 0.1 [sqrt 18, sqrt 38
    # / 2] = [0.424264, 0.308221]; alpha = [1, 1.376494];
    # d = 0.1 (g_0 + 0.688247 g_1) = [0.012948, 0.168825, 0.168825].
    ("db_mtl", {}, [1.0, 1.3765], [0.0129, 0.1688, 0.1688],
     {"losses": [1.0, 2.0]}),
    # ExcessMTL, first call: S = J^2, e = sum |J_ik| = [6, 8] (the 1e-7 moves
    # it by < 1e-7), used raw: w = [e^6, e^8] / (e^6 + e^8) = [1, e^2] /
    # (1 + e^2) = [0.119203, 0.880797]; d = J^T w = [4.807971, 1, 1].
    ("excess_mtl", {}, [0.1192, 0.8808], [4.8080, 1.0, 1.0]),
]


def _row_id(row):
  fn, kwargs = row[0], row[1]
  name = fn if isinstance(fn, str) else fn.__name__
  args = ",".join(f"{k}={v}" for k, v in kwargs.items())
  return f"{name}({args})" if args else name


def _as_float(x, dtype):
  if isinstance(x, (list, tuple, float)):
    return jnp.asarray(x, dtype)
  return x  # an int (num_tasks) or a PRNG key


def _evaluate(fn, kwargs, inputs, dtype):
  if isinstance(fn, str):
    method = weighting.get(fn, **kwargs)
    params, state = method.init(len(inputs[0]))
    for losses in inputs:
      out = method.apply(params, state, jnp.asarray(losses, dtype))
      state = out.state
    return out.total, out.weights
  if fn is rlw_weights:
    return fn(*inputs, dtype=dtype, **kwargs)
  return fn(*[_as_float(x, dtype) for x in inputs], **kwargs)


def _check(actual, expected):
  if isinstance(expected, tuple):
    assert isinstance(actual, tuple) and len(actual) == len(expected)
    for a, e in zip(actual, expected):
      _check(a, e)
    return
  actual = np.asarray(actual)
  expected = np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  np.testing.assert_allclose(actual, expected, rtol=0.0, atol=ATOL)


@pytest.mark.parametrize("x64", X64, ids=["float32", "float64"])
@pytest.mark.parametrize("row", ROWS, ids=[_row_id(r) for r in ROWS])
def test_pinned_value(row, x64):
  fn, kwargs, inputs, expected = row
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    actual = _evaluate(fn, kwargs, inputs, dtype)
    _check(actual, expected)


@pytest.mark.parametrize("x64", X64, ids=["float32", "float64"])
@pytest.mark.parametrize("row", GRADIENT_ROWS,
                         ids=[_row_id(r) for r in GRADIENT_ROWS])
def test_pinned_gradient_method(row, x64):
  name, kwargs, weights, direction, *inputs = row
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    jac = jnp.asarray(J_BASE, dtype)
    d = None
    if not isinstance(name, str):  # a pure function, its draw injected
      w = name(jac @ jac.T, **{k: jnp.asarray(v, dtype)
                               for k, v in kwargs.items()})
    else:
      method = aggregation.get(name, **kwargs)
      inputs = {k: jnp.asarray(v, dtype)
                for k, v in (inputs[0] if inputs else {}).items()}
      if isinstance(method, aggregation.JacobianAggregator):  # reads J, returns its direction
        params, state = method.init(2, num_params=3)
        out = method.apply(params, state, jac, **inputs)
        w, d = out.weights, out.direction
        assert d.dtype == dtype
      else:
        params, state = method.init(2)
        w = method.apply(params, state, jac @ jac.T, **inputs).weights
    if d is None:
      d = w @ jac
    assert w.dtype == dtype
    np.testing.assert_allclose(w, weights, rtol=0.0, atol=GRADIENT_ATOL)
    np.testing.assert_allclose(d, direction, rtol=0.0, atol=GRADIENT_ATOL)


# --- methods on three parts of the batch: (name, kwargs, [(A, weights on the
# third part)] over successive calls); A is the cross Gramian of parts 1, 2.
A_DIAG = [[1.0, 0.0, 0.0], [0.0, 0.25, 0.0], [0.0, 0.0, 0.0]]
A_EYE = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
SPLIT_ROWS = [
    # TorchJD's test_sdmgrad.py (n_iter = 1): A = diag(1, 1/4, 0) is scaled
    # by (mean sqrt diag)^2 = 1/4 to diag(4, 1, 0); w = 1/3 steps by 10 A
    # (w + 0.1) to [-17, -4, 1/3] -> simplex [0, 0, 1]; (w + 0.1) / 1.3 =
    # [1, 1, 11] / 13. Then A = I: [0, 0, 1] - 10 [0.1, 0.1, 1.1] =
    # [-1, -1, -10] -> [1/2, 1/2, 0]; (w + 0.1) / 1.3 = [6, 6, 1] / 13.
    ("sdmgrad", {"n_iter": 1}, [(A_DIAG, [1 / 13, 1 / 13, 11 / 13]),
                                (A_EYE, [6 / 13, 6 / 13, 1 / 13])]),
    # MoDo, gamma = 1, rho = 0: 1/3 - A 1/3 = [0, 1/4, 1/3], projected on the
    # simplex by adding 5/36 to each: [5, 14, 17] / 36.
    ("modo", {"gamma": 1.0, "rho": 0.0}, [(A_DIAG, [5 / 36, 14 / 36,
                                                   17 / 36])]),
]


@pytest.mark.parametrize("x64", X64, ids=["float32", "float64"])
@pytest.mark.parametrize("row", SPLIT_ROWS, ids=[r[0] for r in SPLIT_ROWS])
def test_pinned_three_part_method(row, x64):
  name, kwargs, calls = row
  with jax.enable_x64(x64):
    dtype = jnp.float64 if x64 else jnp.float32
    method = aggregation.get(name, **kwargs)
    params, state = method.init(3)
    for cross, expected in calls:
      gram = jnp.eye(9, dtype=dtype).at[:3, 3:6].set(jnp.asarray(cross, dtype))
      out = method.apply(params, state, gram)
      np.testing.assert_allclose(out.weights[:6], 0.0)
      np.testing.assert_allclose(out.weights[6:], expected, rtol=0.0,
                                 atol=GRADIENT_ATOL)
      state = out.state


def test_gradient_table_covers_every_method():
  covered = {r[0] if isinstance(r[0], str)
             else r[0].__name__.removesuffix("_weights") for r in GRADIENT_ROWS}
  covered |= {r[0] for r in SPLIT_ROWS}
  assert set(aggregation.names()) <= covered


def test_table_covers_every_function_and_method():
  covered = {r[0] if isinstance(r[0], str) else r[0].__name__ for r in ROWS}
  functions = {"uw_o_weights", "uw_so_weights", "uw_so_rel_weights",
               "uw_so_entropy_weights", "uncertainty_loss",
               "dwa_weights", "rlw_weights", "gls_loss", "imtl_l_loss",
               "scalarization_grid", "famo_loss", "famo_weights", "stch_loss"}
  assert functions | set(weighting.names()) <= covered
