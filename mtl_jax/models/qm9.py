r"""The QM9 network of the gradient-balancing papers: NNConv + GRU + Set2Set.

Gilmer et al.'s message-passing network as PyTorch Geometric's QM9 example
builds it, which Nash-MTL, FAMO and FairGrad train on 11 targets:

.. math::
  x^{(0)}_i = \mathrm{ReLU}(W_0 a_i + b_0), \qquad
  m^{(t)}_i = \mathrm{ReLU}\Big(W_r x^{(t)}_i + \frac{1}{|N(i)|}
      \sum_{j \in N(i)} \Theta(e_{ij})^\top x^{(t)}_j + b\Big), \qquad
  x^{(t+1)}_i = \mathrm{GRU}(m^{(t)}_i, x^{(t)}_i),

three steps with shared weights, then :math:`q = \mathrm{Set2Set}(x^{(3)})`
(3 steps, output :math:`2d`), the shared representation
:math:`h = \mathrm{ReLU}(W_1 q + b_1)` and one head :math:`\hat y_k = v_k^\top
h + c_k` per target, where

* :math:`a_i` are atom i's 11 features and :math:`e_{ij}` the 5 features of
  the pair (bond type one-hot, distance);
* :math:`\Theta(e) = \mathrm{reshape}_{d \times d}(A\,\mathrm{ReLU}(B e +
  \beta) + \alpha)` is NNConv's edge network (5 -> 128 -> d*d), mean
  aggregation over the neighbours :math:`N(i)`;
* the GRU (one cell, d -> d) and Set2Set's LSTM (2d -> d) use PyTorch's
  parametrisation (two bias vectors each), so that the parameter count is
  the official model's: 617,675 at d = 64 (about 618k).

Layout: padded dense graphs, one molecule per row of the batch (``nodes``
(B, N, 11), ``node_mask`` (B, N), ``edges`` (B, N, N, 5), ``edge_mask``
(B, N, N); :mod:`mtl_jax.data.qm9` yields these). Every array keeps the batch
axis first, so data parallelism and batch splits work on molecules. The
per-edge matrices are never formed: with :math:`z_{ij} =
\mathrm{ReLU}(B e_{ij} + \beta)` (computed once per forward pass, as the
edges do not change between steps) and :math:`A_c` the d x d slices of A,

.. math::
  \sum_j \Theta(e_{ij})^\top x_j = \sum_c \sum_j z_{ijc} \, A_c^\top x_j
      + \alpha^\top \sum_j x_j,

a node-side product (N d^2 H per molecule) and a pair-side contraction
(N^2 H d), against N^2 H d^2 for the matrices themselves: the same sums in
another order (docs/benchmarks.md measures the layouts).

Parameters are initialised as PyTorch does (uniform in
:math:`\pm 1/\sqrt{\text{fan-in}}`, NNConv's bias at 0), so that the
optimiser starts where the official code starts.

Reference: J. Gilmer, S. Schoenholz, P. Riley, O. Vinyals, G. Dahl, "Neural
Message Passing for Quantum Chemistry", ICML 2017,
https://arxiv.org/abs/1704.01212; A. Navon et al., "Multi-Task Learning as a
Bargaining Game", ICML 2022 (the QM9 protocol and model),
https://arxiv.org/abs/2202.01017.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models import _layers

Dtype = Any
# The papers' targets, in their order (mtl_jax.data.qm9.TARGETS).
QM9_TARGETS = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u", "h", "g", "cv")


def torch_uniform(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's default for Linear, GRU and LSTM: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class TorchDense(nn.Module):
  """``nn.Dense`` initialised as ``torch.nn.Linear`` (weight and bias uniform)."""
  features: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = torch_uniform(x.shape[-1])
    return nn.Dense(self.features, use_bias=self.use_bias, kernel_init=init, bias_init=init,
                    dtype=self.dtype, param_dtype=jnp.float32, name="linear")(x)


class TorchGRUCell(nn.Module):
  r"""``torch.nn.GRU``'s cell: gates r, z, n with input and hidden biases.

  .. math::
    r = \sigma(W_{ir} x + b_{ir} + W_{hr} h + b_{hr}), \quad
    z = \sigma(W_{iz} x + b_{iz} + W_{hz} h + b_{hz}),

    n = \tanh(W_{in} x + b_{in} + r \odot (W_{hn} h + b_{hn})), \quad
    h' = (1 - z) \odot n + z \odot h.
  """
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, h: jax.Array) -> jax.Array:
    init = torch_uniform(self.features)
    gi = nn.Dense(3 * self.features, kernel_init=init, bias_init=init, dtype=self.dtype,
                  param_dtype=jnp.float32, name="input")(x)
    gh = nn.Dense(3 * self.features, kernel_init=init, bias_init=init, dtype=self.dtype,
                  param_dtype=jnp.float32, name="hidden")(h)
    ir, iz, i_n = jnp.split(gi, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r = nn.sigmoid(ir + hr)
    z = nn.sigmoid(iz + hz)
    n = jnp.tanh(i_n + r * hn)
    return (1.0 - z) * n + z * h


class TorchLSTMCell(nn.Module):
  """``torch.nn.LSTM``'s cell: gates i, f, g, o with input and hidden biases."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, carry: tuple[jax.Array, jax.Array]
               ) -> tuple[jax.Array, jax.Array]:
    h, c = carry
    init = torch_uniform(self.features)
    gates = (nn.Dense(4 * self.features, kernel_init=init, bias_init=init, dtype=self.dtype,
                      param_dtype=jnp.float32, name="input")(x)
             + nn.Dense(4 * self.features, kernel_init=init, bias_init=init, dtype=self.dtype,
                        param_dtype=jnp.float32, name="hidden")(h))
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = nn.sigmoid(f) * c + nn.sigmoid(i) * jnp.tanh(g)
    return nn.sigmoid(o) * jnp.tanh(c), c


class Set2Set(nn.Module):
  """Set2Set readout (Vinyals et al., 2016) over the real atoms of each molecule.

  ``steps`` rounds of: ``q = LSTM(q*)``, attention ``a_i = softmax_i(<x_i,
  q>)`` over the atoms, ``r = sum_i a_i x_i``, ``q* = [q, r]``. Returns q*,
  (B, 2d).
  """
  steps: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    b, _, d = x.shape
    lstm = TorchLSTMCell(d, dtype=self.dtype, name="lstm")
    h = c = jnp.zeros((b, d), x.dtype)
    q_star = jnp.zeros((b, 2 * d), x.dtype)
    real = mask > 0
    for _ in range(self.steps):
      h, c = lstm(q_star, (h, c))
      e = jnp.einsum("bnd,bd->bn", x, h).astype(jnp.float32)
      # A large finite negative, not -inf: a row with no atom (a padded
      # batch) gets a uniform softmax, zeroed by the mask, instead of NaN.
      a = jax.nn.softmax(jnp.where(real, e, -1e9), axis=-1) * real
      a = a.astype(x.dtype)
      r = jnp.einsum("bn,bnd->bd", a, x)
      q_star = jnp.concatenate([h, r], axis=-1)
    return q_star


class NNConv(nn.Module):
  """Edge-conditioned convolution with mean aggregation, on padded dense graphs.

  ``__call__(x, z, adjacency)``: node states (B, N, d), the edge network's
  hidden activations ``z = ReLU(B e + beta)`` (B, N, N, H), computed once by
  :meth:`edge_hidden`, and the 0/1 adjacency (B, N, N) whose row i marks the
  neighbours j that send to i. The second layer of the edge network (H ->
  d*d) is applied in factored form (module docstring).
  """
  features: int
  edge_hidden_size: int = 128
  dtype: Dtype = jnp.float32

  def setup(self):
    h, d = self.edge_hidden_size, self.features
    self.edge_in = TorchDense(h, dtype=self.dtype)
    init = torch_uniform(h)
    # Theta's second layer: kernel (H, d_in * d_out), bias (d_in * d_out,),
    # flattened as torch's .view(-1, d_in, d_out) reads them.
    self.edge_out_kernel = self.param("edge_out_kernel", init, (h, d * d))
    self.edge_out_bias = self.param("edge_out_bias", init, (d * d,))
    self.root = TorchDense(d, use_bias=False, dtype=self.dtype)
    self.bias = self.param("bias", nn.initializers.zeros, (d,))

  def edge_hidden(self, edges: jax.Array) -> jax.Array:
    return nn.relu(self.edge_in(edges))

  def __call__(self, x: jax.Array, z: jax.Array, adjacency: jax.Array) -> jax.Array:
    """Dense layout: ``z`` (B, N, N, H), ``adjacency`` (B, N, N) (row i: i's senders)."""
    d = self.features
    dt = self.dtype
    kernel = self.edge_out_kernel.astype(dt).reshape(-1, d, d)   # (H, d_in, d_out)
    alpha = self.edge_out_bias.astype(dt).reshape(d, d)
    x = x.astype(dt)
    node_side = jnp.einsum("bjd,cde->bjce", x, kernel)           # (B, N, H, d)
    zw = z * adjacency[..., None].astype(dt)
    summed = (jnp.einsum("bijc,bjce->bie", zw, node_side)
              + jnp.einsum("bij,bjd,de->bie", adjacency.astype(dt), x, alpha))
    degree = jnp.sum(adjacency, axis=-1, keepdims=True).astype(dt)
    mean = summed / jnp.maximum(degree, 1.0)
    return self.root(x) + mean + self.bias.astype(dt)

  def edge_matrices(self, z: jax.Array) -> jax.Array:
    """Edge-list layout: each edge's matrix Theta(e), (B, E, d_in, d_out), from ``z`` (B, E, H)."""
    d = self.features
    dt = self.dtype
    theta = z @ self.edge_out_kernel.astype(dt) + self.edge_out_bias.astype(dt)
    return theta.reshape(*z.shape[:-1], d, d)

  def edge_list(self, x: jax.Array, theta: jax.Array, senders: jax.Array,
                receivers: jax.Array, valid: jax.Array) -> jax.Array:
    """Edge-list layout: ``theta`` (B, E, d, d) from :meth:`edge_matrices`,
    ``senders``/``receivers`` (B, E) atom indices within each molecule,
    ``valid`` (B, E) 0 on padding edges. Sums with segment sums over the
    flattened batch."""
    b, n, d = x.shape
    dt = self.dtype
    x = x.astype(dt)
    offsets = (jnp.arange(b, dtype=senders.dtype) * n)[:, None]
    src = (senders + offsets).reshape(-1)
    dst = (receivers + offsets).reshape(-1)
    w = valid.astype(dt).reshape(-1)
    messages = jnp.einsum("ed,edf->ef", x.reshape(b * n, d)[src],
                          theta.reshape(-1, d, d)) * w[:, None]
    summed = jax.ops.segment_sum(messages, dst, num_segments=b * n)
    degree = jax.ops.segment_sum(w, dst, num_segments=b * n)[:, None]
    mean = (summed / jnp.maximum(degree, 1.0)).reshape(b, n, d)
    return self.root(x) + mean + self.bias.astype(dt)


class QM9Net(nn.Module):
  """The papers' QM9 model: NNConv + GRU (3 steps), Set2Set, 11 linear heads.

  Attributes:
    tasks: target names; head ``head_<task>`` gives output ``<task>``
      (default: the papers' 11 targets).
    dim: node state width d (64 in the papers).
    edge_hidden_size: the edge network's hidden width (128).
    message_steps: message-passing steps sharing their weights (3).
    set2set_steps: Set2Set rounds (3).
    dtype: compute dtype; params and outputs are float32.

  ``__call__(graph, train)`` takes a mapping with ``nodes`` (B, N, 11) and
  ``node_mask`` (B, N), and the edges in one of two layouts: padded dense,
  ``edges`` (B, N, N, 5) and ``edge_mask`` (B, N, N); or an edge list,
  ``edges`` (B, E, 5), ``senders`` and ``receivers`` (B, E) int32 and
  ``edge_mask`` (B, E) (:func:`edge_list`). Other keys are ignored. It
  returns ``{task: (B,)}``. The ``head_*``
  layers are task-specific for the gradient-space methods
  (:attr:`TASK_PARAMS`, as the official ``task_specific_parameters``); the
  representation h is marked as the shared features.
  """
  TASK_PARAMS: ClassVar[tuple[str, ...]] = ("head_*",)
  tasks: Sequence[str] = QM9_TARGETS
  dim: int = 64
  edge_hidden_size: int = 128
  message_steps: int = 3
  set2set_steps: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, graph: Mapping[str, jax.Array], train: bool = False
               ) -> dict[str, jax.Array]:
    del train  # no dropout or batch statistics
    missing = [k for k in ("nodes", "node_mask", "edges", "edge_mask") if k not in graph]
    if missing:
      raise ValueError(f"QM9Net needs a graph mapping with nodes, node_mask, edges and "
                       f"edge_mask (mtl_jax.data.qm9.load); missing {missing}.")
    if not self.tasks or min(self.dim, self.edge_hidden_size, self.message_steps,
                             self.set2set_steps) < 1:
      raise ValueError(f"QM9Net needs tasks and positive sizes, got tasks={tuple(self.tasks)}, "
                       f"dim={self.dim}, edge_hidden_size={self.edge_hidden_size}, "
                       f"message_steps={self.message_steps}, "
                       f"set2set_steps={self.set2set_steps}.")
    dt = self.dtype
    node_mask = graph["node_mask"].astype(dt)
    x = nn.relu(TorchDense(self.dim, dtype=dt, name="lin0")(graph["nodes"].astype(dt)))
    conv = NNConv(self.dim, self.edge_hidden_size, dtype=dt, name="conv")
    gru = TorchGRUCell(self.dim, dtype=dt, name="gru")
    z = conv.edge_hidden(graph["edges"].astype(dt))       # once: the edges never change
    if "senders" in graph:                                  # edge-list layout
      theta = conv.edge_matrices(z)
      message = lambda x: conv.edge_list(x, theta, graph["senders"], graph["receivers"],
                                         graph["edge_mask"])
    else:                                                   # padded dense layout
      message = lambda x: conv(x, z, graph["edge_mask"].astype(dt))
    for _ in range(self.message_steps):
      x = gru(nn.relu(message(x)), x)
    q = Set2Set(self.set2set_steps, dtype=dt, name="set2set")(x, node_mask)
    h = nn.relu(TorchDense(self.dim, dtype=dt, name="lin1")(q))
    h = _layers.mark_features(self, "features", h)
    return {t: TorchDense(1, dtype=dt, name=f"head_{t}")(h)[:, 0].astype(jnp.float32)
            for t in self.tasks}


def official_parameter_count(num_tasks: int = 11, num_features: int = 11, dim: int = 64,
                             edge_features: int = 5, edge_hidden: int = 128) -> int:
  """Parameters of the official PyTorch model (Nash-MTL's ``Net``), layer by layer.

  lin0 (Linear), NNConv (edge network Linear + Linear, root weight, bias),
  GRU (torch: W_ih, W_hh, b_ih, b_hh), Set2Set's LSTM (2d -> d, same four),
  lin1 and one Linear(d, 1) head per task.
  """
  lin0 = num_features * dim + dim
  edge_net = (edge_features * edge_hidden + edge_hidden) + (edge_hidden * dim * dim + dim * dim)
  conv = edge_net + dim * dim + dim
  gru = 3 * (dim * dim + dim * dim + 2 * dim)
  lstm = 4 * (2 * dim * dim + dim * dim + 2 * dim)
  lin1 = 2 * dim * dim + dim
  heads = num_tasks * (dim + 1)
  return lin0 + conv + gru + lstm + lin1 + heads


def edge_list(graph: Mapping[str, Any], max_edges: int) -> dict[str, Any]:
  """Converts a padded dense batch (numpy, on the host) to the edge-list layout.

  Each molecule's edges (``edge_mask`` > 0, row i = receiver, column j =
  sender) in row-major order, padded to ``max_edges`` with ``edge_mask`` 0.
  Keeps ``nodes`` and ``node_mask``; other keys pass through unchanged.

  Raises:
    ValueError: a molecule has more than ``max_edges`` edges.
  """
  import numpy as np
  mask = np.asarray(graph["edge_mask"]) > 0
  b, n, _ = mask.shape
  counts = mask.reshape(b, -1).sum(axis=1)
  if counts.max(initial=0) > max_edges:
    raise ValueError(f"a molecule has {int(counts.max())} edges, more than max_edges="
                     f"{max_edges}; raise it (the complete graph of {n} atoms has "
                     f"{n * (n - 1)}).")
  mol, recv, send = np.nonzero(mask)
  slot = np.arange(len(mol)) - np.repeat(np.cumsum(counts) - counts, counts)
  edges = np.zeros((b, max_edges, np.shape(graph["edges"])[-1]), np.float32)
  senders = np.zeros((b, max_edges), np.int32)
  receivers = np.zeros((b, max_edges), np.int32)
  valid = np.zeros((b, max_edges), np.float32)
  edges[mol, slot] = np.asarray(graph["edges"])[mol, recv, send]
  senders[mol, slot], receivers[mol, slot], valid[mol, slot] = send, recv, 1.0
  return {**graph, "edges": edges, "senders": senders, "receivers": receivers,
          "edge_mask": valid}
