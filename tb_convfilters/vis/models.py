"""Which layer of a Keras model, which filters, what input: argument checks shared by
the patterns and the projections, and their traced functions kept per model."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf


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


# Traced functions per model, so repeated calls (e.g. every epoch) do not retrace. The
# functions hold the model's layers but not the model, so the entry goes with the model.
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(model: keras.Model, key: tuple, build: Callable[[], Any]) -> Any:
    functions = _cache.setdefault(model, {})
    if key not in functions:
        functions[key] = build()
    return functions[key]


def _traced(function: Callable, *args: Any) -> Any:
    # A partial is its own key in TensorFlow's retracing statistics: traced functions of
    # several layers do not add up to a "frequent retracing" warning.
    return tf.function(functools.partial(function, *args), reduce_retracing=True)
