"""QM9Net: the official parameter count, the factored NNConv against per-edge
matrices, both layouts, padding and atom order, the heads for the gradient family."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import models
from mtl_jax.models import qm9 as qm9_model

KEY = jax.random.PRNGKey(0)


def _graphs(num=3, n_max=7, bonded=True, seed=0, node_dim=11):
  """Random padded dense molecules: atom counts 3..n_max, symmetric edges."""
  rng = np.random.default_rng(seed)
  n = rng.integers(3, n_max + 1, size=num)
  node_mask = (np.arange(n_max)[None] < n[:, None]).astype(np.float32)
  pair = node_mask[:, :, None] * node_mask[:, None, :] * (1 - np.eye(n_max))[None]
  if bonded:
    keep = rng.random((num, n_max, n_max)) < 0.4
    keep = keep | keep.transpose(0, 2, 1)
    pair = pair * keep
  edges = rng.normal(size=(num, n_max, n_max, 5)).astype(np.float32)
  edges = (edges + edges.transpose(0, 2, 1, 3)) * pair[..., None]
  return {"nodes": rng.normal(size=(num, n_max, node_dim)).astype(np.float32),
          "node_mask": node_mask, "edges": edges.astype(np.float32),
          "edge_mask": pair.astype(np.float32)}


def test_parameter_count_is_the_official_models():
  # Nash-MTL's Net(n_tasks=11, num_features=11, dim=64), layer by layer:
  # lin0 11*64+64 = 768; NNConv: edge net 5*128+128 = 768 and 128*4096+4096 =
  # 528,384, root 64*64 = 4,096, bias 64; GRU 3*(2*64*64 + 2*64) = 24,960;
  # Set2Set's LSTM(128, 64) 4*(128*64 + 64*64 + 2*64) = 49,664; lin1
  # 128*64+64 = 8,256; heads 11*65 = 715. Sum: 617,675.
  assert qm9_model.official_parameter_count() == 617_675
  g = _graphs(1, 29)
  shapes = jax.eval_shape(models.QM9Net().init, KEY, g)
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(shapes["params"])) == 617_675
  small = jax.eval_shape(models.QM9Net(dim=16, edge_hidden_size=8, tasks=("a", "b")).init,
                         KEY, g)
  assert (sum(int(np.prod(p.shape)) for p in jax.tree.leaves(small["params"]))
          == qm9_model.official_parameter_count(num_tasks=2, dim=16, edge_hidden=8))


def _reference_nnconv(params, x, edges, adjacency):
  """NNConv with each edge's d x d matrix formed explicitly (PyG's way), numpy float64."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  w1, b1 = p["edge_in"]["linear"]["kernel"], p["edge_in"]["linear"]["bias"]
  kernel, bias = p["edge_out_kernel"], p["edge_out_bias"]
  root = p["root"]["linear"]["kernel"]
  d = x.shape[-1]
  out = np.zeros(x.shape)
  for b in range(x.shape[0]):
    for i in range(x.shape[1]):
      acc, deg = np.zeros(d), 0
      for j in range(x.shape[1]):
        if adjacency[b, i, j] > 0:
          theta = (np.maximum(edges[b, i, j] @ w1 + b1, 0) @ kernel + bias).reshape(d, d)
          acc += x[b, j] @ theta
          deg += 1
      out[b, i] = x[b, i] @ root + acc / max(deg, 1) + p["bias"]
  return out


@pytest.mark.parametrize("bonded", [True, False])
def test_factored_nnconv_equals_per_edge_matrices(bonded):
  g = _graphs(2, 6, bonded=bonded, seed=1)
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 6, 8)).astype(np.float32)
  conv = qm9_model.NNConv(8, edge_hidden_size=5)

  def run(module, x, edges, adjacency):
    return module(x, module.edge_hidden(edges), adjacency)

  params = conv.init(KEY, x, g["edges"], g["edge_mask"], method=run)["params"]
  got = conv.apply({"params": params}, x, g["edges"], g["edge_mask"], method=run)
  want = _reference_nnconv(params, x.astype(np.float64), g["edges"].astype(np.float64),
                           g["edge_mask"])
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bonded", [True, False])
@pytest.mark.slow
def test_edge_list_layout_equals_dense(bonded):
  g = _graphs(3, 7, bonded=bonded, seed=3)
  net = models.QM9Net(dim=16, edge_hidden_size=8)
  variables = jax.jit(net.init)(KEY, g)
  dense = jax.jit(net.apply)(variables, g)
  sparse = jax.jit(net.apply)(variables, models.qm9_edge_list(g, 7 * 6))
  for t in net.tasks:
    np.testing.assert_allclose(sparse[t], dense[t], rtol=1e-5, atol=1e-5)


def test_edge_list_refuses_too_many_edges():
  g = _graphs(2, 7, bonded=False)
  with pytest.raises(ValueError, match="max_edges"):
    models.qm9_edge_list(g, 3)


@pytest.mark.slow
def test_padding_atoms_and_atom_order_do_not_change_the_outputs():
  g = _graphs(2, 6, seed=4)
  net = models.QM9Net(dim=16, edge_hidden_size=8)
  variables = jax.jit(net.init)(KEY, g)
  base = jax.jit(net.apply)(variables, g)
  # Garbage in the padding rows, and two more padding atoms.
  padded = {k: np.array(v) for k, v in g.items()}
  padded["nodes"][padded["node_mask"] == 0] = 1e3
  wide = {"nodes": np.pad(padded["nodes"], ((0, 0), (0, 2), (0, 0)), constant_values=7.0),
          "node_mask": np.pad(padded["node_mask"], ((0, 0), (0, 2))),
          "edges": np.pad(padded["edges"], ((0, 0), (0, 2), (0, 2), (0, 0))),
          "edge_mask": np.pad(padded["edge_mask"], ((0, 0), (0, 2), (0, 2)))}
  # The same molecules with their atoms in reverse order.
  perm = np.arange(6)[::-1]
  flipped = {"nodes": g["nodes"][:, perm], "node_mask": g["node_mask"][:, perm],
             "edges": g["edges"][:, perm][:, :, perm],
             "edge_mask": g["edge_mask"][:, perm][:, :, perm]}
  for other in (wide, flipped):
    out = jax.jit(net.apply)(variables, other)
    for t in net.tasks:
      np.testing.assert_allclose(out[t], base[t], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_molecules_do_not_see_each_other():
  g = _graphs(3, 6, seed=5)
  net = models.QM9Net(dim=16, edge_hidden_size=8)
  variables = jax.jit(net.init)(KEY, g)
  whole = jax.jit(net.apply)(variables, g)
  alone = jax.jit(net.apply)(variables, jax.tree.map(lambda a: a[1:2], g))
  np.testing.assert_allclose(alone["mu"], whole["mu"][1:2], rtol=1e-5, atol=1e-6)


def test_heads_are_the_task_parameters_and_the_features_are_marked():
  assert models.task_params(models.QM9Net()) == ("head_*",)
  g = _graphs(2, 5)
  net = models.QM9Net(dim=8, edge_hidden_size=4, tasks=("a", "b", "c"))
  variables = jax.jit(net.init)(KEY, g)
  heads = sorted(k for k in variables["params"] if k.startswith("head_"))
  assert heads == ["head_a", "head_b", "head_c"]
  _, state = jax.jit(functools.partial(net.apply, mutable=["perturbations"]))(variables, g)
  assert state["perturbations"]["features"].shape == (2, 8)


@pytest.mark.slow
def test_torch_initialisation_bounds():
  g = _graphs(1, 5)
  params = jax.jit(models.QM9Net().init)(KEY, g)["params"]
  lin0 = params["lin0"]["linear"]["kernel"]          # fan-in 11
  assert float(jnp.max(jnp.abs(lin0))) <= 1 / np.sqrt(11)
  assert float(jnp.max(jnp.abs(lin0))) > 0.8 / np.sqrt(11)
  gru = params["gru"]["hidden"]["bias"]               # torch: 1/sqrt(hidden)
  assert float(jnp.max(jnp.abs(gru))) <= 1 / 8
  np.testing.assert_array_equal(params["conv"]["bias"], 0.0)


def test_bad_graph_input_names_what_is_missing():
  g = _graphs(1, 5)
  del g["edge_mask"]
  with pytest.raises(ValueError, match="edge_mask"):
    models.QM9Net().init(KEY, g)


@pytest.mark.slow
def test_gradients_are_finite_with_an_atomless_row():
  g = _graphs(2, 5)
  g = {k: np.array(v) for k, v in g.items()}
  g["node_mask"][1] = 0
  g["edge_mask"][1] = 0
  net = models.QM9Net(dim=8, edge_hidden_size=4)
  variables = jax.jit(net.init)(KEY, g)
  loss = lambda v: sum(jnp.sum(o) for o in net.apply(v, g).values())
  grads = jax.jit(jax.grad(loss))(variables)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))
