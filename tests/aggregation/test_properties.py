"""TorchJD's properties of the gradient-space methods, as hypothesis tests.

Random Jacobians of several shapes, ranks (rank-deficient ones included),
scales (zero included) and both float dtypes; each method is checked only
for the properties TorchJD asserts for it (REFERENCE 8.6):

* non-conflicting, ``J A(J) >= 0``: UPGrad and DualProj (without their ridge,
  which only bounds the conflict by ``reg_eps``), MGDA, CAGrad (c = 1, 2);
  and the dual-cone methods' documented bound at K > P (singular Gramians,
  duplicate, opposite and zero rows), with and without the ridge;
* permutation-invariant: UPGrad, DualProj, MGDA, IMTL-G, Aligned-MTL, ConFIG;
* linear under scaling: UPGrad (TorchJD's tolerance 6e-2), ConFIG;
* strongly stationary (``||A(J)|| > 0`` where some task can improve): UPGrad,
  DualProj.

The methods see only the K x K Gramian, so one compilation per (K, dtype)
serves every drawn Jacobian. The methods that read J itself
(``JacobianAggregator``: GradDrop, MoCo, DB-MTL, ExcessMTL) are in none of
TorchJD's property lists (their directions are random or depend on the
state); their own invariances are tested in their files.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mtl_jax import aggregation

SETTINGS = settings(deadline=None, max_examples=12, derandomize=True)
NUM_TASKS = (2, 3, 5)


@functools.cache
def _fn(name, **hparams):
  factories = {
      "upgrad": lambda g: aggregation.upgrad_weights(g, **hparams),
      "dualproj": lambda g: aggregation.dualproj_weights(g, **hparams),
      "mgda": aggregation.mgda_weights,
      # c is an argument (traced): c = 1 and c = 2 share a compilation.
      "cagrad": lambda g, c: aggregation.cagrad_weights(g, c),
      "imtl_g": aggregation.imtl_g_weights,
      "aligned_mtl": aggregation.aligned_mtl_weights,
      "config": aggregation.config_weights,
  }
  return jax.jit(factories[name])


@st.composite
def jacobians(draw, scales=(0.0, 1e-3, 1.0, 1e3), dtypes=("float32", "float64")):
  """(J as float64 numpy, dtype name): K tasks, P params, rank r, a scale."""
  k = draw(st.sampled_from(NUM_TASKS))
  p = draw(st.integers(1, 8))
  r = draw(st.integers(1, min(k, p)))
  seed = draw(st.integers(0, 2**31 - 1))
  rng = np.random.default_rng(seed)
  jac = rng.normal(size=(k, r)) @ rng.normal(size=(r, p))
  return jac * draw(st.sampled_from(scales)), draw(st.sampled_from(dtypes))


def _direction(name, jac, dtype, **hparams):
  traced = {"c": hparams.pop("c")} if name == "cagrad" else {}
  with jax.enable_x64(dtype == "float64"):
    j = jnp.asarray(jac, dtype)
    w = _fn(name, **hparams)(j @ j.T, **traced)
    return np.asarray(w @ j, np.float64)


def _non_conflicting(name, jac, dtype, **hparams):
  # Below norm_eps = 1e-4 of trace(G) the dual-cone methods fall back to the
  # mean gradient (TorchJD's rule), where the property is not claimed.
  trace = np.sum(jac * jac)
  assume(trace == 0.0 or trace >= 1e-4)
  d = _direction(name, jac, dtype, **hparams)
  jd = jac @ d
  rtol = 1e-4 if dtype == "float32" else 1e-9
  assert jd.min() >= -rtol * np.linalg.norm(jac) * max(
      np.linalg.norm(d), np.linalg.norm(jac)), (name, jd)


@SETTINGS
@given(case=jacobians())
@pytest.mark.slow
def test_non_conflicting_dual_cone_methods(case):
  for name in ("upgrad", "dualproj"):
    _non_conflicting(name, *case, reg_eps=0.0)


# The methods that project onto the dual cone {x : J x >= 0} (the registry's
# others do not: MGDA and CAGrad, non-conflicting too, are tested below).
PROJECTIONS = ("upgrad", "dualproj")


@functools.cache
def _projection(name):
  """One compilation per (K, dtype): reg_eps is traced."""
  weights = {"upgrad": aggregation.upgrad_weights,
             "dualproj": aggregation.dualproj_weights}[name]
  return jax.jit(lambda g, reg_eps: weights(g, reg_eps=reg_eps))


@st.composite
def wide_jacobians(draw):
  """J with K > P, so G is singular; the last row may repeat the first,
  oppose it or be zero. Scaled so that trace(G) >= norm_eps."""
  k = draw(st.sampled_from((3, 5)))
  p = draw(st.integers(1, k - 1))
  jac = np.random.default_rng(draw(st.integers(0, 2**31 - 1))).normal(
      size=(k, p))
  last = {"random": jac[-1], "duplicate": jac[0], "opposite": -jac[0],
          "zero": 0.0}
  jac[-1] = last[draw(st.sampled_from(sorted(last)))]
  jac = jac * draw(st.sampled_from((0.1, 1.0, 1e3)))
  assume(np.sum(jac * jac) >= 1e-4)
  return jac


def _reference_direction(name, jac):
  """The exact float64 projection(s) onto the dual cone: min ||J^T v||,
  v >= u, as non-negative least squares (scipy's active set)."""
  k = jac.shape[0]
  lowers = np.eye(k) / k if name == "upgrad" else np.full((1, k), 1 / k)
  return sum(jac.T @ (u + scipy.optimize.nnls(jac.T, -jac.T @ u,
                                              maxiter=10_000)[0])
             for u in lowers)


@pytest.mark.parametrize("reg_eps", [0.0, 1e-4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", PROJECTIONS)
@SETTINGS
@given(jac=wide_jacobians())
@pytest.mark.slow
def test_dual_cone_bound_when_k_exceeds_p(name, dtype, reg_eps, jac):
  """The docstrings' bound J d >= -reg_eps tr(G) w, up to rounding (16 eps
  of tr(G) ||w||_1, the scale of J d = G w). Where the exact projection is
  d = 0 (often, at K > P), J d is pure rounding, so a test against max |J d|
  would count noise as conflicts. With reg_eps = 0, d is the exact
  projection too."""
  with jax.enable_x64(dtype == "float64"):
    j = jnp.asarray(jac, dtype)
    w = np.asarray(_projection(name)(j @ j.T, reg_eps), np.float64)
  jac = np.asarray(j, np.float64)  # the J the method saw
  trace = np.trace(jac @ jac.T)
  jd = jac @ (w @ jac)
  rounding = 16 * np.finfo(dtype).eps * trace * np.abs(w).sum()
  assert np.all(jd >= -(reg_eps * trace * w + rounding)), (jd, w)
  if reg_eps == 0.0:
    atol = (1e-3 if dtype == "float32" else 1e-10) * np.sqrt(trace)
    np.testing.assert_allclose(w @ jac, _reference_direction(name, jac),
                               atol=atol)


@SETTINGS
@given(case=jacobians())
def test_non_conflicting_mgda(case):
  _non_conflicting("mgda", *case)


@SETTINGS
@given(case=jacobians(), c=st.sampled_from([1.0, 2.0]))
@pytest.mark.slow
def test_non_conflicting_cagrad(case, c):
  _non_conflicting("cagrad", *case, c=c)


@SETTINGS
@given(case=jacobians(scales=(1.0, 1e3)), data=st.data())
@pytest.mark.slow
def test_permutation_invariant(case, data):
  jac, dtype = case
  perm = np.asarray(data.draw(st.permutations(list(range(jac.shape[0])))))
  for name in ("upgrad", "dualproj", "mgda", "imtl_g", "aligned_mtl",
               "config"):
    d = _direction(name, jac, dtype)
    d_perm = _direction(name, jac[perm], dtype)
    rtol = 5e-3 if dtype == "float32" else 1e-6
    scale = max(np.abs(d).max(), 1e-4 * np.abs(jac).max())
    np.testing.assert_allclose(d_perm, d, atol=rtol * scale, err_msg=name)


@SETTINGS
@given(case=jacobians(scales=(1.0,)),
       coefs=st.lists(st.floats(0.1, 1.0), min_size=12, max_size=12))
@pytest.mark.slow
def test_linear_under_scaling(case, coefs):
  """A(diag(a c1 + b c2) J) = a A(diag(c1) J) + b A(diag(c2) J); J has
  entries of order 1 and the coefficients are >= 0.1, so every scaled
  Gramian stays above UPGrad's norm_eps (TorchJD draws them the same way)."""
  jac, dtype = case
  jac = jac * np.sqrt(jac.size) / max(np.linalg.norm(jac), 1e-12)
  k = jac.shape[0]
  c1, c2 = np.asarray(coefs[:k]), np.asarray(coefs[5:5 + k])
  a, b = coefs[10], coefs[11]
  for name, tol in (("upgrad", 6e-2), ("config", 1e-3)):
    left = _direction(name, (a * c1 + b * c2)[:, None] * jac, dtype)
    right = (a * _direction(name, c1[:, None] * jac, dtype)
             + b * _direction(name, c2[:, None] * jac, dtype))
    np.testing.assert_allclose(left, right, err_msg=name,
                               atol=tol * max(1.0, np.abs(right).max()))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), k=st.sampled_from([3, 5]),
       dtype=st.sampled_from(["float32", "float64"]))
def test_strongly_stationary(seed, k, dtype):
  # A J with J x > 0 for some x: no w >= 0 cancels it, so some task can
  # improve and the direction must not vanish.
  rng = np.random.default_rng(seed)
  x = rng.normal(size=6)
  jac = rng.normal(size=(k, 6))
  jac *= np.sign(jac @ x)[:, None]
  jac += 0.1 * x / np.linalg.norm(x)
  for name in ("upgrad", "dualproj"):
    assert np.linalg.norm(_direction(name, jac, dtype)) > 3e-3, name
