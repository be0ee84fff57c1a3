"""Feature visualization for Keras 3 models (TensorFlow backend only: others raise).

* `filter_patterns`: the input pattern each filter of a layer responds to most
  (gradient ascent on the filter's mean activation, all filters in one batch).
* `projections`: a filter's strongest activation on real inputs, projected back to
  pixel space by guided backprop, deconvnet or the plain gradient.
* `log_patterns`: both, logged with a `tb_convfilters.Writer` for the Filters tab.

Models must have one image input ``(batch, height, width, channels)``; the layer
must output a 2-D feature map ``(batch, height, width, filters)``. A layer inside a
nested model (a backbone) is found as the Keras callback finds it, and visualized
through the inputs of the model that holds it.

Which filters: every ``filters`` / ``max_filters`` argument takes an int N (the
first N filters, all of them when the layer has fewer) or a list of filter indices;
``filters=None`` means all of them.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from tb_convfilters._record.record import warn_once

Method = Literal["guided_backprop", "deconvnet", "gradient"]
METHODS = ("guided_backprop", "deconvnet", "gradient")
# Positions this close to the border of a feature map (when it is at least
# _BORDER_MIN_SIZE wide) are left out of the pattern loss: padding makes them special.
_BORDER = 2
_BORDER_MIN_SIZE = 8
# Initial noise amplitude and step unit, as fractions of the input range.
_NOISE = 0.1
_STEP_UNIT = 0.02
_RELUS = (keras.activations.relu, keras.ops.relu, tf.nn.relu)
# Patterns cost a gradient ascent per filter: by default the first this many of a layer.
DEFAULT_PATTERN_FILTERS = 64


# ---- argument checks -------------------------------------------------------------------


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # never called, or called more than once
        return None


def _holders(model: keras.Model) -> list[tuple[keras.Model, keras.layers.Layer]]:
    """(model holding it, layer) for every layer, nested models' layers after their model."""
    out = []
    for layer in model.layers:
        out.append((model, layer))
        if isinstance(layer, keras.Model):
            out.extend(_holders(layer))
    return out


def _spatial_layer_names(model: keras.Model) -> list[str]:
    return [
        layer.name
        for _, layer in _holders(model)
        if not isinstance(layer, keras.layers.InputLayer | keras.Model)
        and (shape := _output_shape(layer)) is not None
        and len(shape) == 4
    ]


def _image_input(model: Any) -> tuple[int | None, int | None, int]:
    """(height, width, channels) of the model's single image input."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model={model!r} must be a built keras.Model")
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"model {model.name!r} has no defined inputs; build it with keras.Input(shape=...)"
        )
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] is None:
        raise ValueError(
            f"model {model.name!r} has inputs {[tuple(x.shape) for x in inputs]}; expected one "
            "image input (batch, height, width, channels) with a known channel count"
        )
    _, h, w, c = inputs[0].shape
    return h, w, c


def _check_backend() -> None:
    """Gradient ascent and guided backprop here are TensorFlow code: other backends refuse."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"tb_convfilters.vis (filter patterns, projections) needs Keras' TensorFlow "
            f"backend; this process runs Keras on {backend!r}. Set KERAS_BACKEND=tensorflow "
            "(the kernels and activations of FiltersCallback work on every backend)"
        )


def _resolve_layer(model: keras.Model, layer: Any) -> tuple[keras.Model, keras.layers.Layer]:
    """(the model holding it, the layer) for `layer` (a name or object) of `model` or of a
    model nested in it, checked to output a 2-D feature map."""
    _check_backend()
    _image_input(model)
    holders = _holders(model)
    if isinstance(layer, str):
        found = next(((m, lay) for m, lay in holders if lay.name == layer), None)
        if found is None:
            raise ValueError(
                f"layer={layer!r} is not a layer of model {model.name!r}; layers with a 2-D "
                f"feature map output: {', '.join(_spatial_layer_names(model)) or 'none'}"
            )
    else:
        found = next(((m, lay) for m, lay in holders if lay is layer), None)
        if found is None:
            raise ValueError(
                f"layer={layer!r} is not a layer of model {model.name!r}; pass one of its "
                f"layers or a name: {', '.join(_spatial_layer_names(model)) or 'none'}"
            )
    holder, layer = found
    if holder is not model:
        _image_input(holder)
    shape = _output_shape(layer)
    if isinstance(layer, keras.layers.InputLayer) or shape is None or len(shape) != 4:
        raise ValueError(
            f"layer {layer.name!r} has output shape {shape}; a (batch, height, width, filters) "
            f"feature map is needed; layers that have one: "
            f"{', '.join(_spatial_layer_names(model)) or 'none'}"
        )
    return holder, layer


def check_layers(
    model: keras.Model, layers: str | keras.layers.Layer | Sequence[str | keras.layers.Layer]
) -> list[str]:
    """Names of `layers` (names or objects); raises the errors `filter_patterns` would.

    Lets a callback reject bad layer names when training starts, not epochs later.
    """
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    return [_resolve_layer(model, layer)[1].name for layer in layers]


def _filter_indices(filters: Any, layer: keras.layers.Layer, name: str = "filters") -> list[int]:
    """The indices `filters` picks: an int N is the first N (all when fewer), None all."""
    n = int(layer.output.shape[-1])
    if filters is None:
        return list(range(n))
    if isinstance(filters, (int, np.integer)) and not isinstance(filters, bool):
        return list(range(min(_positive_int(filters, name), n)))
    try:
        picked = [int(i) for i in filters]
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}={filters!r} must be a number of filters or a list of filter indices"
        ) from None
    if not picked or not all(0 <= i < n for i in picked):
        raise ValueError(
            f"{name}={filters!r} must be a non-empty list of indices in 0..{n - 1} "
            f"(layer {layer.name!r} has {n} filters)"
        )
    return picked


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
    return int(value)


def _pattern_size(model: keras.Model, size: Sequence[int] | None) -> tuple[int, int, int]:
    h, w, c = _image_input(model)
    if size is None:
        return (h or 128, w or 128, c)
    try:
        sh, sw = (int(n) for n in size)
    except (TypeError, ValueError):
        raise TypeError(f"size={size!r} must be (height, width)") from None
    if sh < 1 or sw < 1 or (h is not None and h != sh) or (w is not None and w != sw):
        raise ValueError(
            f"size={tuple(size)!r} does not fit model {model.name!r}, whose input is "
            f"{h} x {w}; pass size=None to use it"
        )
    return sh, sw, c


# ---- activation maximization --------------------------------------------------------------


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


# Traced functions per model, so repeated calls (e.g. every epoch) do not retrace. The
# functions hold the model's layers but not the model, so the entry goes with the model.
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(model: keras.Model, key: tuple, build: Callable[[], Any]) -> Any:
    functions = _cache.setdefault(model, {})
    if key not in functions:
        functions[key] = build()
    return functions[key]


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


def _traced(function: Callable, *args: Any) -> Any:
    # A partial is its own key in TensorFlow's retracing statistics: traced functions of
    # several layers do not add up to a "frequent retracing" warning.
    return tf.function(functools.partial(function, *args), reduce_retracing=True)


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


# ---- projections --------------------------------------------------------------------------


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


# ---- logging ------------------------------------------------------------------------------


def log_patterns(
    writer: Any,
    model: keras.Model,
    layers: str | keras.layers.Layer | Sequence[str | keras.layers.Layer],
    step: int,
    *,
    max_filters: int | Sequence[int] | None = None,
    projection_inputs: Any = None,
    method: Method = "guided_backprop",
    dtype: str | None = None,
    **pattern_options: Any,
) -> dict[str, np.ndarray]:
    """Logs ``<layer>/pattern`` (and ``<layer>/projection``) for each of `layers` at `step`.

    Args:
      writer: a `tb_convfilters.Writer` (anything with its ``patterns`` method).
      model, layers: the model and the layers (names or objects, nested models' too).
      max_filters: the first N filters of each layer, or a list of filter indices.
        Default: the first ``DEFAULT_PATTERN_FILTERS`` (64), with a warning (once per
        layer) when a layer has more.
      projection_inputs: images ``(n, h, w, c)``; if given, their projections are
        logged too, input-major: image ``i * n_filters + j`` is input i, filter j.
      method: projection method, see `projections`.
      dtype: stored dtype, e.g. ``"float16"`` (halves storage); default the writer's.
      pattern_options: passed to `filter_patterns` (size, steps, jitter, blur, ...).

    Returns:
      ``{tag: images}`` as computed (float32, before any dtype conversion).
    """
    logged: dict[str, np.ndarray] = {}
    if isinstance(layers, (str, keras.layers.Layer)):
        layers = [layers]
    for _, target in [_resolve_layer(model, layer) for layer in layers]:
        n = int(target.output.shape[-1])
        if max_filters is None:
            indices = list(range(min(DEFAULT_PATTERN_FILTERS, n)))
            if n > DEFAULT_PATTERN_FILTERS:
                warn_once(
                    ("patterns", target.name, n),
                    f"log_patterns: layer {target.name!r} has {n} filters; logged the patterns "
                    f"of the first {DEFAULT_PATTERN_FILTERS}. Pass max_filters={n} (or a list "
                    "of indices) to choose",
                )
        else:
            indices = _filter_indices(max_filters, target, "max_filters")
        tag = f"{target.name}/pattern"
        logged[tag] = filter_patterns(model, target, indices, **pattern_options)
        writer.patterns(
            tag,
            logged[tag],
            step,
            filters=indices,
            dtype=dtype,
            description=f"Activation-maximization patterns of layer `{target.name}`.",
        )
        if projection_inputs is not None:
            proj = projections(model, target, projection_inputs, indices, method=method)
            tag = f"{target.name}/projection"
            logged[tag] = proj.reshape(-1, *proj.shape[2:])
            writer.patterns(
                tag,
                logged[tag],
                step,
                filters=indices * proj.shape[0],
                kind="projection",
                dtype=dtype,
                description=(
                    f"{method} projections of layer `{target.name}` for {proj.shape[0]} inputs: "
                    f"image i * {len(indices)} + j is input i, filter `filters[j]`."
                ),
            )
    return logged
