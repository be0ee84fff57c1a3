"""Activation maximization: the input pattern each filter responds to most."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tb_convfilters.vis.models import (
    _compiled,
    _filter_indices,
    _pattern_size,
    _positive_int,
    _resolve_layer,
    _traced,
)

# Positions this close to the border of a feature map (when it is at least
# _BORDER_MIN_SIZE wide) are left out of the pattern loss: padding makes them special.
_BORDER = 2
_BORDER_MIN_SIZE = 8
# Initial noise amplitude and step unit, as fractions of the input range.
_NOISE = 0.1
_STEP_UNIT = 0.02


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(2 * sigma))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return (np.outer(g, g) / g.sum() ** 2)[:, :, None, None].astype(np.float32)


def _deprocess(images: np.ndarray) -> np.ndarray:
    """Per image: centre, scale to std 0.1 around 0.5 grey, clip to [0, 1] (float32)."""
    x = np.asarray(images, dtype=np.float64)
    axes = tuple(range(1, x.ndim))
    x = x - x.mean(axis=axes, keepdims=True)
    x = x / (x.std(axis=axes, keepdims=True) + 1e-5)
    return np.clip(0.5 + 0.1 * x, 0.0, 1.0).astype(np.float32)


def _ascend(
    extractor: keras.Model,
    x: tf.Tensor,
    onehot: tf.Tensor,
    shifts: tf.Tensor,
    step: tf.Tensor,
    kernel: tf.Tensor | None,
) -> tf.Tensor:
    """Gradient ascent of image k on the mean of filter k (``onehot[k]``), one step per shift."""
    for i in tf.range(tf.shape(shifts)[0]):
        with tf.GradientTape() as tape:
            tape.watch(x)
            act = extractor(tf.roll(x, shifts[i], axis=[1, 2]), training=False)
            fh, fw = tf.shape(act)[1], tf.shape(act)[2]
            b = tf.where(tf.minimum(fh, fw) >= _BORDER_MIN_SIZE, _BORDER, 0)
            act = act[:, b : fh - b, b : fw - b, :]
            loss = tf.reduce_sum(tf.reduce_mean(act, axis=[1, 2]) * onehot)
        grad = tape.gradient(loss, x)
        if kernel is not None:
            grad = _blur(grad, kernel)
        rms = tf.sqrt(tf.reduce_mean(tf.square(grad), axis=[1, 2, 3], keepdims=True))
        x = x + step * grad / (rms + 1e-12)
    return x


def _blur(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """Each channel of `x` (NHWC) convolved with the one-channel `kernel` (k, k, 1, 1).

    Channels are folded into the batch for a plain convolution: TensorFlow's oneDNN
    depthwise convolution fails on some CPUs ("could not create a primitive descriptor
    for the reorder primitive").
    """
    n, h, w, c = tf.unstack(tf.shape(x))
    planes = tf.reshape(tf.transpose(x, [0, 3, 1, 2]), tf.stack([n * c, h, w, 1]))
    out = tf.nn.conv2d(planes, kernel, 1, "SAME")
    return tf.transpose(tf.reshape(out, tf.stack([n, c, h, w])), [0, 2, 3, 1])


def filter_patterns(
    model: keras.Model,
    layer: str | keras.layers.Layer,
    filters: int | Sequence[int] | None = None,
    *,
    size: Sequence[int] | None = None,
    steps: int = 30,
    step_size: float = 1.0,
    seed: int = 0,
    jitter: int = 0,
    blur: float = 0.0,
    input_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 64,
) -> np.ndarray:
    """The input pattern each filter of `layer` responds to most, ``(n, h, w, c)`` in [0, 1].

    Gradient ascent on each filter's mean activation (positions within 2 pixels of
    the border of maps at least 8 wide are left out), starting from low-contrast
    noise (uniform, 10% of `input_range` wide, around its middle). Each step's
    gradient is normalized to unit root-mean-square per image, so one step changes
    the image by ``step_size`` x 2% of the input range (RMS over its pixels).
    All filters run as one batch of up to `batch_size` images per graph run.

    Args:
      model: a built Keras 3 model with one image input ``(batch, h, w, c)``.
      layer: a layer name or object of `model` whose output is ``(batch, h, w, filters)``.
      filters: the first N filters, or a list of filter indices; all by default.
      size: ``(h, w)`` of the patterns; default the model's input size, or 128 x 128
        when the model accepts any size.
      steps, step_size: number and size of the ascent steps.
      seed: seeds the initial noise and the jitter.
      jitter: shift the image by up to this many pixels (random, per step) before
        each gradient; makes patterns less noisy and less tied to the pixel grid.
      blur: if > 0, smooth each step's gradient with a Gaussian of this sigma (pixels),
        which suppresses high-frequency noise.
      input_range: the value range the model expects (e.g. ``(0, 255)``); sets the
        scale of the initial noise and of the steps.
      batch_size: images per graph run (lower it if memory runs short).

    The optimized images are made displayable per image: centred, scaled to unit
    std, x 0.1, + 0.5, clipped to [0, 1].
    """
    model, target = _resolve_layer(model, layer)  # a nested layer: the model holding it
    indices = _filter_indices(filters, target)
    h, w, c = _pattern_size(model, size)
    steps = _positive_int(steps, "steps")
    jitter = _positive_int(jitter, "jitter", minimum=0)
    batch_size = _positive_int(batch_size, "batch_size")
    if not step_size > 0:
        raise ValueError(f"step_size={step_size!r} must be > 0")
    if not blur >= 0:
        raise ValueError(f"blur={blur!r} must be >= 0")
    lo, hi = (float(v) for v in input_range)
    if not hi > lo:
        raise ValueError(f"input_range={input_range!r} must be (low, high) with low < high")
    span = hi - lo

    rng = np.random.default_rng(seed)
    noise = rng.uniform(-0.5, 0.5, (len(indices), h, w, c)) * (_NOISE * span) + (lo + hi) / 2
    shifts = tf.constant(rng.integers(-jitter, jitter + 1, (steps, 2)), dtype=tf.int32)
    kernel = tf.constant(_gaussian_kernel(blur)) if blur > 0 else None
    step = tf.constant(step_size * _STEP_UNIT * span, dtype=tf.float32)
    ascend = _compiled(
        model,
        ("pattern", target.name),
        lambda: _traced(_ascend, keras.Model(model.inputs, target.output)),
    )
    n_filters = int(target.output.shape[-1])
    out = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        x = tf.constant(noise[start : start + len(chunk)], dtype=tf.float32)
        out.append(ascend(x, tf.one_hot(chunk, n_filters), shifts, step, kernel).numpy())
    return _deprocess(np.concatenate(out))
