"""Task losses and the per-dataset loss vectors fed to the methods of either family.

Pixel-wise losses are means over the *valid* pixels of the whole batch (not
per-image means averaged), as in LibMTL and MTAN:

.. math::
  L = \\frac{\\sum_p m_p \\, \\ell_p}{\\max(1, \\sum_p m_p)},

where :math:`m_p \\in \\{0, 1\\}` marks valid pixels and :math:`\\ell_p` is the
per-pixel loss. A batch with no valid pixel gives 0 (and zero gradients).
Every loss returns float32 whatever the input dtype.

The dataset loss functions ``*_losses(outputs, batch) -> (K,)`` take a model's
output dict and a batch dict (formats of :mod:`mtl_jax.data`) and return one
loss per task, in the order of the ``*_TASKS`` tuples below.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

Batch = Mapping[str, jax.Array]
Outputs = Mapping[str, jax.Array]

NYUV2_TASKS = ("segmentation", "depth", "normal")
CITYSCAPES_TASKS = ("segmentation", "depth")
DIGIT_SCENE_TASKS = ("segmentation", "depth", "normal", "count")
# mtl_jax.data.digit_attributes.TASKS, repeated here to keep this module light.
DIGIT_ATTRIBUTE_TASKS = ("centre_even", "centre_ge7", "centre_prime",
                         "centre_loop", "left_even", "right_ge5",
                         "left_smaller", "centre_max", "sum_ge16",
                         "left_right_odd")
# The digit-strip tasks that are not binary (mtl_jax.data.digit_attributes.KINDS):
# a 10-way class and a real-valued target on the same strips.
DIGIT_CLASS_TASKS = ("centre",)
DIGIT_REGRESSION_TASKS = ("sum", "number", "product")
DIGIT_STRIP_TASKS = ("centre", "number", "right_ge5", "left_smaller")


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """``sum(values * mask) / max(1, sum(mask))`` in float32."""
  mask = jnp.broadcast_to(mask, values.shape).astype(jnp.float32)
  total = jnp.sum(values.astype(jnp.float32) * mask)
  return total / jnp.maximum(jnp.sum(mask), 1.0)


def segmentation_cross_entropy(logits: jax.Array, labels: jax.Array,
                               ignore_index: int = -1) -> jax.Array:
  """Pixel-wise softmax cross-entropy, averaged over non-ignored pixels.

  .. math::
    L = \\frac{1}{|V|} \\sum_{p \\in V} -\\log \\mathrm{softmax}(z_p)_{y_p},
    \\quad V = \\{p : y_p \\neq \\text{ignore\\_index}\\}

  Args:
    logits: (..., C) class logits.
    labels: (...) integer labels; ``ignore_index`` marks pixels to skip.
    ignore_index: label value excluded from the loss (-1 in NYUv2).

  Returns:
    Scalar float32 loss (0 if no pixel is valid).
  """
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), safe)
  return _masked_mean(ce, valid)


def masked_l1(pred: jax.Array, target: jax.Array,
              mask: jax.Array | None = None) -> jax.Array:
  """Mean absolute error over valid entries (depth loss).

  .. math:: L = \\frac{\\sum_p m_p |\\hat d_p - d_p|}{\\sum_p m_p}

  Args:
    pred: predictions, e.g. (B, H, W, 1).
    target: targets of the same shape; 0 marks missing depth.
    mask: boolean mask broadcastable to ``pred``; defaults to
      ``target != 0``. Pass ``jnp.ones_like(target, bool)`` for a plain L1.

  Returns:
    Scalar float32 loss.
  """
  if mask is None:
    mask = target != 0
  err = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))
  return _masked_mean(err, mask)


def normal_cosine_loss(pred: jax.Array, target: jax.Array,
                       eps: float = 1e-12) -> jax.Array:
  """``1 - cos`` between predicted and true normals, over valid pixels.

  .. math::
    L = \\frac{1}{|V|} \\sum_{p \\in V} \\Bigl(1 - \\frac{\\hat n_p \\cdot
    n_p}{\\|\\hat n_p\\| \\|n_p\\|}\\Bigr), \\quad V = \\{p : n_p \\neq 0\\}

  For unit vectors (the models normalise their normal output) this is
  LibMTL's ``1 - masked dot product``. LibMTL marks a pixel invalid when its
  channels *sum* to zero; here a pixel is invalid when all channels are zero.

  Args:
    pred: (..., 3) predicted normals.
    target: (..., 3) true normals; the zero vector marks invalid pixels.
    eps: floor on the norms.

  Returns:
    Scalar float32 loss.
  """
  pred = pred.astype(jnp.float32)
  target = target.astype(jnp.float32)
  valid = jnp.any(target != 0, axis=-1)
  cos = jnp.sum(pred * target, axis=-1) * jax.lax.rsqrt(
      jnp.maximum(jnp.sum(pred * pred, -1), eps * eps)) * jax.lax.rsqrt(
          jnp.maximum(jnp.sum(target * target, -1), eps * eps))
  return _masked_mean(1.0 - cos, valid)


def binary_cross_entropy_with_logits(logits: jax.Array,
                                     labels: jax.Array) -> jax.Array:
  """Sigmoid BCE averaged over the batch, one value per attribute.

  .. math::
    L_k = -\\frac{1}{B} \\sum_b y_{bk} \\log \\sigma(z_{bk}) + (1 - y_{bk})
    \\log (1 - \\sigma(z_{bk}))

  Args:
    logits: (B, K) logits.
    labels: (B, K) labels in {0, 1} (bool or numeric).

  Returns:
    (K,) float32 per-attribute losses.
  """
  bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32),
                                           labels.astype(jnp.float32))
  return jnp.mean(bce, axis=tuple(range(bce.ndim - 1)))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Softmax cross-entropy with integer labels, averaged over the batch.

  .. math:: L = \\frac{1}{B} \\sum_b -\\log \\mathrm{softmax}(z_b)_{y_b}

  Args:
    logits: (..., C) logits.
    labels: (...) integer class labels.

  Returns:
    Scalar float32 loss.
  """
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels.astype(jnp.int32)))


def mse(pred: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error over all entries: ``mean((pred - target)**2)``."""
  return jnp.mean(jnp.square(pred.astype(jnp.float32)
                             - target.astype(jnp.float32)))


def nyuv2_losses(outputs: Outputs, batch: Batch) -> jax.Array:
  """NYUv2 losses ``[seg CE, depth L1, normal 1-cos]`` (NYUV2_TASKS order).

  Labels -1 are ignored, depth 0 is missing, the zero normal is invalid.
  """
  return jnp.stack([
      segmentation_cross_entropy(outputs["segmentation"],
                                 batch["segmentation"]),
      masked_l1(outputs["depth"], batch["depth"]),
      normal_cosine_loss(outputs["normal"], batch["normal"]),
  ])


def cityscapes_losses(outputs: Outputs, batch: Batch) -> jax.Array:
  """Cityscapes losses ``[seg CE, depth L1]`` (CITYSCAPES_TASKS order).

  Labels -1 are ignored; depth (disparity) 0 is missing, as in LibMTL.
  """
  return jnp.stack([
      segmentation_cross_entropy(outputs["segmentation"],
                                 batch["segmentation"]),
      masked_l1(outputs["depth"], batch["depth"]),
  ])


def celeba_losses(outputs: Outputs, batch: Batch) -> jax.Array:
  """CelebA losses: one BCE per attribute, (40,) for the 40 attributes.

  Reads ``outputs["attributes"]`` (B, 40) logits and ``batch["attributes"]``
  (B, 40); the order is the dataset's attribute order.
  """
  return binary_cross_entropy_with_logits(outputs["attributes"],
                                          batch["attributes"])


def digit_scene_losses(outputs: Outputs, batch: Batch) -> jax.Array:
  """Digit-scene losses ``[seg CE, depth L1, normal 1-cos, count CE]``.

  The synthetic scenes have depth everywhere (the background included, even
  where it is 0), so depth is a plain L1 over all pixels, unlike NYUv2's
  masked L1.
  """
  depth = batch["depth"]
  return jnp.stack([
      segmentation_cross_entropy(outputs["segmentation"],
                                 batch["segmentation"]),
      masked_l1(outputs["depth"], depth, jnp.ones(depth.shape, bool)),
      normal_cosine_loss(outputs["normal"], batch["normal"]),
      softmax_cross_entropy(outputs["count"], batch["count"]),
  ])


def binary_task_losses(outputs: Outputs, batch: Batch,
                       tasks: Sequence[str]) -> jax.Array:
  """One sigmoid BCE per binary task, each task in its own output key, (K,).

  .. math::
    L_k = -\\frac{1}{B} \\sum_b y_{bk} \\log \\sigma(z_{bk}) + (1 - y_{bk})
    \\log (1 - \\sigma(z_{bk}))

  Reads ``outputs[task]`` (B,) logits and ``batch[task]`` (B,) 0/1 labels for
  every task, in the order of ``tasks`` (optax's
  ``sigmoid_binary_cross_entropy`` through
  :func:`binary_cross_entropy_with_logits`).
  """
  if not tasks:
    raise ValueError("binary_task_losses needs at least one task, got ().")
  logits = jnp.stack([outputs[t] for t in tasks], axis=-1)
  labels = jnp.stack([batch[t] for t in tasks], axis=-1)
  return binary_cross_entropy_with_logits(logits, labels)


def digit_attribute_losses(outputs: Outputs, batch: Batch,
                           tasks: Sequence[str] = DIGIT_ATTRIBUTE_TASKS
                           ) -> jax.Array:
  r"""Digit-attribute and digit-strip losses, (K,), in ``tasks`` order.

  A binary attribute's loss is a sigmoid BCE (:func:`binary_task_losses`),
  the centre digit's class (``centre``, (B, 10) logits) a softmax CE and the
  sum of the three digits (``sum``, (B,) predictions) an MSE:

  .. math::
    L_{\text{centre}} = \frac{1}{B} \sum_b -\log
    \mathrm{softmax}(z_b)_{c_b}, \qquad
    L_{\text{sum}} = \frac{1}{B} \sum_b (\hat s_b - s_b)^2

  ``tasks`` is :data:`DIGIT_ATTRIBUTE_TASKS` (all ten binary tasks), or the
  subset the data was loaded with (:mod:`mtl_jax.data.digit_attributes`),
  e.g. :data:`DIGIT_STRIP_TASKS`.
  """
  if not tasks:
    raise ValueError("digit_attribute_losses needs at least one task, got ().")
  out = []
  for t in tasks:
    if t in DIGIT_CLASS_TASKS:
      out.append(softmax_cross_entropy(outputs[t], batch[t]))
    elif t in DIGIT_REGRESSION_TASKS:
      out.append(mse(outputs[t], batch[t]))
    else:
      out.append(binary_cross_entropy_with_logits(outputs[t][:, None],
                                                  batch[t][:, None])[0])
  return jnp.stack(out)


def synthetic_losses(outputs: Outputs, batch: Batch) -> jax.Array:
  """GradNorm synthetic regression: per-task MSE, (K,).

  .. math:: L_k = \\frac{1}{B D} \\sum_{b, d} (\\hat y_{bkd} - y_{bkd})^2

  Reads ``outputs["y"]`` and ``batch["y"]``, both (B, K, D).
  """
  err = jnp.square(outputs["y"].astype(jnp.float32)
                   - batch["y"].astype(jnp.float32))
  return jnp.mean(err, axis=(0, 2))


# QM9's 11 targets, in the papers' order (mtl_jax.data.qm9.TARGETS).
QM9_TASKS = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u", "h", "g", "cv")


def qm9_losses(outputs: Outputs, batch: Batch,
               tasks: Sequence[str] = QM9_TASKS) -> jax.Array:
  r"""QM9: per-target MSE on standardised targets, (K,), as the papers train.

  .. math:: L_k = \frac{1}{B} \sum_b (\hat y_{bk} - y_{bk})^2

  Reads ``outputs[task]`` (B,) and column k of ``batch["targets"]`` (B, K),
  standardised by :func:`mtl_jax.data.qm9.statistics`.
  """
  y = batch["targets"].astype(jnp.float32)
  return jnp.stack([mse(outputs[t], y[:, k]) for k, t in enumerate(tasks)])
