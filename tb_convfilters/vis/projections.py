"""Projections: a filter's strongest activation on real inputs, taken back to pixel
space by guided backprop, deconvnet or the plain gradient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from tb_convfilters.vis.models import (
    _compiled,
    _filter_indices,
    _image_input,
    _positive_int,
    _resolve_layer,
    _traced,
)

Method = Literal["guided_backprop", "deconvnet", "gradient"]
METHODS = ("guided_backprop", "deconvnet", "gradient")

_RELUS = (keras.activations.relu, keras.ops.relu, tf.nn.relu)


def _rule_relu(method: str) -> Any:
    """A ReLU whose gradient follows the guided-backprop or deconvnet rule."""

    @tf.custom_gradient
    def relu(x: tf.Tensor) -> Any:
        def grad(g: tf.Tensor) -> tf.Tensor:
            if method == "deconvnet":  # backward ReLU on the gradient only
                return tf.nn.relu(g)
            return tf.where((x > 0) & (g > 0), g, tf.zeros_like(g))  # guided backprop

        return tf.nn.relu(x), grad

    return relu


def _is_plain_relu_layer(op: Any) -> bool:
    return (
        isinstance(op, keras.layers.ReLU)
        and op.max_value is None
        and not op.negative_slope
        and not op.threshold
    )


class _OverriddenReLU(keras.layers.Layer):
    """Calls `wrapped` with its ReLU activation swapped for `relu`, or applies `relu` alone.

    The swap lasts only while the wrapped layer runs (once, when the graph is traced).
    """

    def __init__(self, wrapped: Any, relu: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.wrapped = wrapped
        self.relu = relu

    def call(self, *args: Any, **kwargs: Any) -> Any:
        if self.wrapped is None:
            return self.relu(args[0])
        saved = self.wrapped.activation
        self.wrapped.activation = self.relu
        try:
            return self.wrapped(*args, **kwargs)
        finally:
            self.wrapped.activation = saved


def _with_relu_rule(extractor: keras.Model, method: str) -> keras.Model:
    """`extractor` rebuilt on the same layers, its ReLUs back-propagating by `method`."""
    for op in extractor.layers:
        if isinstance(op, keras.Model):
            raise ValueError(
                f"method={method!r} cannot reach the ReLUs inside nested model {op.name!r}; "
                "pass that model itself as `model`, or use method='gradient'"
            )
    relu = _rule_relu(method)

    def call(op: Any, *args: Any, **kwargs: Any) -> Any:
        if _is_plain_relu_layer(op) or (
            not isinstance(op, keras.layers.Layer) and type(op).__name__ == "Relu"
        ):
            return _OverriddenReLU(None, relu)(args[0])
        if any(getattr(op, "activation", None) is f for f in _RELUS):
            return _OverriddenReLU(op, relu)(*args, **kwargs)
        return op(*args, **kwargs)

    return keras.models.clone_model(extractor, clone_function=lambda op: op, call_function=call)


def _project(net: keras.Model, images: tf.Tensor, filter_index: tf.Tensor) -> tf.Tensor:
    """Gradient of each image's largest activation of filter ``filter_index[k]`` (if > 0)."""
    with tf.GradientTape() as tape:
        tape.watch(images)
        act = net(images, training=False)
        per_image = tf.gather(act, filter_index, axis=3, batch_dims=1)
        flat = tf.reshape(per_image, [tf.shape(per_image)[0], -1])
        at_max = tf.stop_gradient(tf.one_hot(tf.argmax(flat, axis=1), tf.shape(flat)[1]))
        top = tf.reduce_sum(flat * at_max, axis=1)
        loss = tf.reduce_sum(top * tf.cast(top > 0, top.dtype))
    return tape.gradient(loss, images)


def _projection_net(model: keras.Model, target: keras.layers.Layer, method: str) -> keras.Model:
    extractor = keras.Model(model.inputs, target.output)
    return extractor if method == "gradient" else _with_relu_rule(extractor, method)


def projections(
    model: keras.Model,
    layer: str | keras.layers.Layer,
    inputs: Any,
    filters: int | Sequence[int] | None = None,
    *,
    method: Method = "guided_backprop",
    normalize: bool = True,
    batch_size: int = 64,
) -> np.ndarray:
    """Each filter's strongest activation on each input, projected to pixel space.

    For every input and chosen filter, the single largest activation of that filter
    (first one on ties) is back-propagated to the input with the ReLU rule of
    `method`: ``"guided_backprop"`` passes gradient where both the forward input and
    the gradient are positive, ``"deconvnet"`` where the gradient is positive, and
    ``"gradient"`` is the plain gradient. A filter whose strongest activation on an
    input is not positive gets an all-zero projection.

    ReLUs are overridden in layers with ``activation="relu"`` (Conv, Dense,
    ``Activation``), in ``keras.layers.ReLU()`` with default arguments and in
    ``keras.ops.relu`` calls of a functional model. Other activations (ReLU6,
    LeakyReLU, ...) keep their gradient. Sequential and functional models are
    supported (branches and merges too); ReLUs inside a nested model are not
    reachable, so guided backprop / deconvnet refuse models that nest one.

    Args:
      model: a built Keras 3 model with one image input.
      layer: a layer name or object of `model` with a ``(batch, h, w, filters)`` output.
      inputs: images ``(n, h, w, c)`` as the model takes them.
      filters: the first N filters, or a list of filter indices; all by default.
      method: ``"guided_backprop"``, ``"deconvnet"`` or ``"gradient"``.
      normalize: map each projection ``p`` to [0, 1] for display as
        ``clip(0.5 + 0.1 * p / rms(p), 0, 1)``: zero is mid grey and +-5 RMS span
        black to white (all-zero projections stay 0.5). False returns raw gradients.
      batch_size: (input, filter) pairs per graph run.

    Returns:
      float32 ``(n_inputs, n_filters, h, w, c)``.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of: {', '.join(METHODS)}")
    model, target = _resolve_layer(model, layer)  # a nested layer: the model holding it
    indices = _filter_indices(filters, target)
    batch_size = _positive_int(batch_size, "batch_size")
    h, w, c = _image_input(model)
    x = np.asarray(inputs, dtype=np.float32)
    # None in the model's input shape accepts any size.
    if x.ndim != 4 or x.shape[1:] != (h or x.shape[1], w or x.shape[2], c):
        raise ValueError(
            f"inputs has shape {x.shape}; model {model.name!r} takes (n, {h}, {w}, {c})"
        )
    project = _compiled(
        model,
        ("projection", target.name, method),
        lambda: _traced(_project, _projection_net(model, target, method)),
    )
    pairs = [(i, f) for i in range(len(x)) for f in indices]
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        images = tf.constant(x[[i for i, _ in chunk]])
        out.append(project(images, tf.constant([f for _, f in chunk], tf.int32)).numpy())
    result = np.concatenate(out).reshape(len(x), len(indices), *x.shape[1:])
    return normalize_projections(result) if normalize else result


def normalize_projections(p: np.ndarray) -> np.ndarray:
    """``clip(0.5 + 0.1 * p / rms(p), 0, 1)`` per projection (last three axes)."""
    p = np.asarray(p, dtype=np.float64)
    rms = np.sqrt(np.mean(np.square(p), axis=(-3, -2, -1), keepdims=True))
    scaled = np.divide(p, rms, out=np.zeros_like(p), where=rms > 0)
    return np.clip(0.5 + 0.1 * scaled, 0.0, 1.0).astype(np.float32)
