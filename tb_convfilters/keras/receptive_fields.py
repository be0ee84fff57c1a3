"""The receptive field of a Keras layer's output over the model's input.

>>> field = receptive_field(model, model.get_layer("conv2"))
>>> writer.activation("conv2/activation", maps, step, inputs=x, receptive_field=field)

Walks the Keras 3 functional graph (a built Sequential has one too) from the layer's
output back to the model's input. Layers of known geometry: Conv1D/2D/3D,
DepthwiseConv*, SeparableConv* (a depthwise window, then 1x1), Max/AveragePooling*,
ZeroPadding* and Cropping* (shifts), the pointwise layers (activations, batch
normalization, dropout and noise, rescaling, ...), the merges (Add, Multiply,
Concatenate on the channel axis, ...: the union of their branches' fields) and
nested functional models with one input. Anything else (Flatten, Dense, UpSampling,
Conv*Transpose, Reshape, Resizing, Lambda, custom layers) makes the field unknown:
None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from tb_convfilters._record.receptive_field import ReceptiveField, same_padding

__all__ = ["receptive_field"]

_L = keras.layers
_WINDOWED = (
    _L.Conv1D,
    _L.Conv2D,
    _L.Conv3D,
    _L.DepthwiseConv1D,
    _L.DepthwiseConv2D,
    _L.SeparableConv1D,
    _L.SeparableConv2D,
)
_POOLING = (
    _L.MaxPooling1D,
    _L.MaxPooling2D,
    _L.MaxPooling3D,
    _L.AveragePooling1D,
    _L.AveragePooling2D,
    _L.AveragePooling3D,
)
_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_SHIFTS = (_L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D)
_CROPS = (_L.Cropping1D, _L.Cropping2D, _L.Cropping3D)
# each output element depends on the input element at the same place (at inference)
_POINTWISE = (
    _L.Activation,
    _L.ReLU,
    _L.LeakyReLU,
    _L.PReLU,
    _L.ELU,
    _L.BatchNormalization,
    _L.Dropout,  # SpatialDropout* too
    _L.GaussianNoise,
    _L.GaussianDropout,
    _L.AlphaDropout,
    _L.ActivityRegularization,
    _L.Rescaling,
    _L.Normalization,
    _L.Identity,
)
# pointwise in space when their `axis` holds no spatial axis
_CHANNEL_AXIS = (_L.LayerNormalization, _L.UnitNormalization, _L.Softmax)
_MERGES = (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum)

# A tensor's field: (id of the model input it reaches, its field over that input), or None.
_Result = tuple[int, ReceptiveField] | None


def receptive_field(model: keras.Model, layer: keras.layers.Layer) -> ReceptiveField | None:
    """The receptive field of `layer`'s output over `model`'s input (per spatial axis
    of that output: map position p sees input ``[start + p*jump, start + p*jump + size)``),
    or None when some layer on the way has no known geometry, a ``padding="same"``
    stride depends on an unknown input size, or branches step differently.

    `layer` must be called once in `model`'s graph (a layer inside a nested model, or
    one shared between calls, gives None). Works for channels_first and channels_last.
    """
    try:
        out = layer.output
        inputs = list(model.inputs)
    except Exception:  # never called, called more than once, or a subclassed model
        return None
    if not hasattr(out, "_keras_history"):  # several outputs
        return None
    result = _Walk({id(t) for t in inputs}).field(out)
    return None if result is None else result[1]


def _compose(local: ReceptiveField, inner: ReceptiveField) -> ReceptiveField:
    """`local` (a layer's output over its input) through `inner` (that input over the
    model's input): a window of `inner.size` input elements at step `inner.jump`."""
    return local.through(inner.size, inner.jump, (1,) * inner.axes, [-s for s in inner.start])


def _spatial_shape(tensor: Any, data_format: str | None) -> tuple | None:
    shape = tuple(tensor.shape)
    if len(shape) < 3:
        return None
    channels_first = (data_format or keras.config.image_data_format()) == "channels_first"
    return shape[2:] if channels_first else shape[1:-1]


def _channel_axis(rank: int) -> int:
    return 1 if keras.config.image_data_format() == "channels_first" else rank - 1


class _Walk:
    """Fields of the tensors of one graph over its inputs (`inputs`: their ids), memoized."""

    def __init__(self, inputs: set[int]):
        self.inputs = inputs
        self.memo: dict[int, _Result] = {}

    def field(self, tensor: Any) -> _Result:
        stack = [tensor]
        while stack:  # depth first, without recursion: graphs can be hundreds deep
            t = stack[-1]
            if id(t) in self.memo:
                stack.pop()
                continue
            deps = self._inputs_of(t)
            missing = [d for d in deps if id(d) not in self.memo]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            try:
                self.memo[id(t)] = self._compute(t, [self.memo[id(d)] for d in deps])
            except Exception:  # a layer whose attributes are not what we expect
                self.memo[id(t)] = None
        return self.memo[id(tensor)]

    def _inputs_of(self, tensor: Any) -> list[Any]:
        if id(tensor) in self.inputs:
            return []
        try:
            op, node_index, _ = tensor._keras_history
            return list(op._inbound_nodes[node_index].input_tensors)
        except Exception:
            return []

    def _compute(self, tensor: Any, deps: list[_Result]) -> _Result:
        rank = len(tensor.shape)
        if id(tensor) in self.inputs:
            return id(tensor), ReceptiveField.identity(max(rank - 2, 0))
        if not deps or any(d is None for d in deps):
            return None  # an input of another graph, or an unknown branch
        op, node_index, tensor_index = tensor._keras_history
        ins = op._inbound_nodes[node_index].input_tensors
        if isinstance(op, _MERGES) or (isinstance(op, _L.Concatenate) and _on_channels(op, rank)):
            spatial = {_spatial_shape(t, None) for t in (tensor, *ins)}
            return _union(deps) if len(spatial) == 1 else None  # no broadcast across space
        if len(deps) != 1:
            return None
        source, inner = deps[0]  # type: ignore[misc]
        local = self._local(op, ins[0], tensor, tensor_index, inner.axes)
        return None if local is None else (source, _compose(local, inner))

    def _local(
        self, op: Any, before: Any, after: Any, tensor_index: int, axes: int
    ) -> ReceptiveField | None:
        """The field of `op`'s output `after` over its input `before` (None: unknown)."""
        identity = ReceptiveField.identity(axes)
        data_format = getattr(op, "data_format", None)
        n_in = _spatial_shape(before, data_format)
        n_out = _spatial_shape(after, data_format)
        if n_in is None or n_out is None or len(n_in) != axes or len(n_out) != axes:
            return None
        if isinstance(op, _TRANSPOSE):
            return None
        if isinstance(op, _WINDOWED + _POOLING):
            pooling = isinstance(op, _POOLING)
            kernel = op.pool_size if pooling else op.kernel_size
            stride = op.strides
            dilation = (1,) * axes if pooling else op.dilation_rate
            pads = _pad_before(op.padding, n_in, kernel, stride, dilation)
            if pads is None:
                return None
            return identity.through(kernel, stride, dilation, pads)
        if isinstance(op, _SHIFTS):
            return identity.shifted([-before_ for before_, _ in _pairs(op.padding, axes)])
        if isinstance(op, _CROPS):
            return identity.shifted([before_ for before_, _ in _pairs(op.cropping, axes)])
        pointwise = isinstance(op, _POINTWISE) or (
            isinstance(op, _CHANNEL_AXIS) and _on_channels(op, len(before.shape))
        )
        if pointwise and n_in == n_out:
            return identity
        if isinstance(op, keras.Model):
            return self._nested(op, tensor_index, axes)
        return None

    def _nested(self, model: keras.Model, tensor_index: int, axes: int) -> ReceptiveField | None:
        """The field of a nested model's output over its single input, from its own graph."""
        try:
            inputs, outputs = list(model.inputs), list(model.outputs)
        except Exception:  # a subclassed model: no graph to walk
            return None
        if len(inputs) != 1 or tensor_index >= len(outputs):
            return None
        result = _Walk({id(inputs[0])}).field(outputs[tensor_index])
        if result is None or result[1].axes != axes:
            return None
        return result[1]


def _pad_before(
    padding: str,
    n: Sequence[int | None],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> list[int] | None:
    if padding == "valid":
        return [0] * len(kernel)
    if padding == "causal":
        return [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    if padding == "same":
        if any(size is None for size in n):
            if any(s != 1 for s in stride):  # depends on the input size, unknown here
                return None
            return [d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True)]
        return [
            same_padding(size, k, s, d)
            for size, k, s, d in zip(n, kernel, stride, dilation, strict=True)
        ]
    return None


def _pairs(value: Any, axes: int) -> list[tuple[int, int]]:
    """ZeroPadding's `padding` / Cropping's `cropping` as (before, after) per axis."""
    if axes == 1:  # the 1-D layers hold one pair
        before, after = value
        return [(int(before), int(after))]
    pairs = [(int(a), int(b)) for a, b in value]
    if len(pairs) != axes:
        raise ValueError(f"{value!r} is not {axes} (before, after) pairs")
    return pairs


def _on_channels(op: Any, rank: int) -> bool:
    """True when `op.axis` names only the channel axis (so no spatial axis is mixed)."""
    axis = op.axis
    axes = [axis] if isinstance(axis, int) else list(axis)
    return len(axes) > 0 and all(a % rank == _channel_axis(rank) for a in axes)


def _union(deps: list[_Result]) -> _Result:
    """Branches merged position by position: the union of their fields (same input)."""
    source, field = deps[0]  # type: ignore[misc]
    for other_source, other in deps[1:]:  # type: ignore[misc]
        if other_source != source or other.axes != field.axes:
            return None
        field = field.union(other)
        if field is None:
            return None
    return source, field
