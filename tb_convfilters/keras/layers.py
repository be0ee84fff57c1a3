"""Which layers of a Keras model the callback logs, and how their tensors are laid out.

The selection functions take the model and the user's spec (layer names and/or
classes, checked by `check_layer_spec`) and raise a ValueError naming the layers
that could have been meant.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import keras
import numpy as np

_L = keras.layers
_SPATIAL = {3: "W", 4: "HW", 5: "DHW"}  # kernel / activation rank -> spatial letters
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
# Logged when `layers` is None; Dense only when selected (it is not a filter bank).
DEFAULT_LAYER_TYPES = _CONV + _TRANSPOSE + _DEPTHWISE + _SEPARABLE


class _Kernel(NamedTuple):
    tag: str
    layout: str
    variable_name: str  # attribute of the layer holding the kernel


def kernel_parts(layer: keras.layers.Layer) -> list[_Kernel]:
    """The kernels a layer logs (tag, layout, attribute); empty if it has none we know."""
    name = layer.name
    if isinstance(layer, _SEPARABLE):
        spatial = "W" if isinstance(layer, _L.SeparableConv1D) else "HW"
        return [
            _Kernel(f"{name}/depthwise", spatial + "IM", "depthwise_kernel"),
            _Kernel(f"{name}/pointwise", spatial + "IO", "pointwise_kernel"),
        ]
    if isinstance(layer, _DEPTHWISE):
        spatial = "W" if isinstance(layer, _L.DepthwiseConv1D) else "HW"
        return [_Kernel(f"{name}/kernel", spatial + "IM", "kernel")]
    for types, suffix in ((_TRANSPOSE, "OI"), (_CONV, "IO")):
        for rank, cls in enumerate(types, start=3):
            if isinstance(layer, cls):
                return [_Kernel(f"{name}/kernel", _SPATIAL[rank] + suffix, "kernel")]
    if isinstance(layer, _L.Dense):
        return [_Kernel(f"{name}/kernel", "IO", "kernel")]
    return []


def variable_numpy(variable: Any) -> tuple[np.ndarray, bool]:
    """A Keras variable's value, and whether it is a snapshot no later update changes.

    On TensorFlow a read shares the variable's buffer and is such a snapshot: an
    update of a variable whose buffer is still read copies it first (copy on write,
    what lets ``tf.summary.write`` queue a variable without copying it). Elsewhere
    the value may be the live buffer (torch), so the Writer copies it.
    """
    value = getattr(variable, "value", None)
    if hasattr(value, "read_value"):  # a tf.Variable: value() is the cheapest read
        return np.asarray(value.value()), True
    return variable.numpy(), False


def activation_layout(rank: int, data_format: str | None) -> str | None:
    """Layout of a layer output of `rank` (None if it is not a 1-3D feature map)."""
    spatial = _SPATIAL.get(rank)
    if spatial is None:
        return None
    return "NC" + spatial if data_format == "channels_first" else "N" + spatial + "C"


def walk(layers: Iterable[keras.layers.Layer]) -> Iterator[keras.layers.Layer]:
    """Every layer, descending into nested models (a backbone inside a Sequential)."""
    for layer in layers:
        yield layer
        inner = getattr(layer, "layers", None)
        if isinstance(layer, keras.Model) and inner:
            yield from walk(inner)


def is_chief(model: keras.Model) -> bool:
    """False on the workers of a multi-worker ``tf.distribute`` strategy that are not the chief."""
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow backend only
    return bool(getattr(getattr(strategy, "extended", None), "should_save_summary", True))


def check_layer_spec(layers: Any, name: str) -> tuple | None:
    """The argument `name` (layer names and/or classes, one or several) as a tuple, or None."""
    if layers is None:
        return None
    if isinstance(layers, str | type):
        layers = [layers]
    try:
        entries = tuple(layers)
    except TypeError:
        raise TypeError(f"{name}={layers!r} must be layer names and/or layer classes") from None
    bad = [e for e in entries if not isinstance(e, str | type)]
    if bad or not entries:
        raise ValueError(
            f"{name}={layers!r} must be a non-empty list of layer names (str) "
            "and/or layer classes, or None for every conv layer"
        )
    return entries


def select_layers(model: keras.Model, spec: tuple | None) -> list[keras.layers.Layer]:
    """The layers whose kernels are logged, in model order (`spec` None: the conv layers)."""
    every = list(walk(model.layers))
    loggable = [layer for layer in every if kernel_parts(layer)]
    if spec is None:
        return [layer for layer in loggable if isinstance(layer, DEFAULT_LAYER_TYPES)]
    names = ", ".join(layer.name for layer in loggable) or "(none)"
    chosen: dict[int, keras.layers.Layer] = {}
    for entry in spec:
        if isinstance(entry, str):
            match = [layer for layer in every if layer.name == entry]
            if not match:
                raise ValueError(
                    f"layers entry {entry!r} is not a layer of the model; "
                    f"layers with kernels: {names}"
                )
            if not kernel_parts(match[0]):
                raise ValueError(
                    f"layers entry {entry!r} is a {type(match[0]).__name__}, which has no "
                    f"kernel to log; layers with kernels: {names}"
                )
        else:
            match = [layer for layer in loggable if isinstance(layer, entry)]
            if not match:
                raise ValueError(
                    f"layers entry {entry.__name__} matches no layer with a kernel; "
                    f"layers with kernels: {names}"
                )
        chosen.update((id(layer), layer) for layer in match)
    return [layer for layer in loggable if id(layer) in chosen]


def select_activation_layers(model: keras.Model, spec: tuple) -> list[keras.layers.Layer]:
    """The layers named or typed in `spec` (outputs of rank 3-5), in model order."""
    every = [la for la in walk(model.layers) if not isinstance(la, _L.InputLayer)]

    def rank(layer: keras.layers.Layer) -> int | None:
        try:
            return len(layer.output.shape)
        except Exception:  # never called, or called more than once
            return None

    maps = [layer for layer in every if rank(layer) in _SPATIAL]
    names = ", ".join(layer.name for layer in maps) or "(none)"
    chosen: dict[int, keras.layers.Layer] = {}
    for entry in spec:
        if isinstance(entry, str):
            match = [layer for layer in every if layer.name == entry]
            if not match or rank(match[0]) not in _SPATIAL:
                what = f"has output rank {rank(match[0])}" if match else "is not a layer"
                raise ValueError(
                    f"activation_layers entry {entry!r} {what}; layers with a 3-5-D output: {names}"
                )
        else:
            match = [layer for layer in maps if isinstance(layer, entry)]
            if not match:
                raise ValueError(
                    f"activation_layers entry {entry.__name__} matches no layer with a "
                    f"3-5-D output; those layers: {names}"
                )
        chosen.update((id(layer), layer) for layer in match)
    return [layer for layer in every if id(layer) in chosen]
