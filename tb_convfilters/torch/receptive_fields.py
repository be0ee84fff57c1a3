"""The receptive field of a submodule's output over the root module's input, from its
``torch.fx`` graph.

The graph of the root module (``torch.fx`` symbolic tracing; a module that does not
trace has no fields) is walked forward from its first input: each value's field says
which box of that input each of its map positions sees (``_record.receptive_field``).
Convolutions and pooling windows widen it, padding shifts it, elementwise layers keep
it, and branches joined by an add or a concatenation along channels take the union;
any other operation on the path (a reshape, a linear layer, upsampling, adaptive
pooling, indexing...) leaves it unknown. Values that do not depend on the input
(parameters, constants) do not count.

Fields are kept aligned to the trailing axes (the spatial ones, which convolutions,
pooling and padding act on) until the target's number of spatial axes is known.
"""

from __future__ import annotations

import operator
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from tb_convfilters._record.receptive_field import ReceptiveField
from tb_convfilters.torch.common import _unwrap

_CONST = object()  # a value that does not depend on the input

_CONVS = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}
_MAX_POOLS = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}
_AVG_POOLS = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}
# Padding modules: like a conv's padding_mode, what fills the border does not move the box.
_PADS = tuple(
    getattr(nn, f"{kind}Pad{n}d")
    for kind in ("Zero", "Constant", "Reflection", "Replication", "Circular")
    for n in (1, 2, 3)
    if hasattr(nn, f"{kind}Pad{n}d")  # (older PyTorch lacks some)
)
# Each map position from the same position of its inputs (normalizations count as such).
_ELEMENTWISE_MODULES = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
)
_ELEMENTWISE_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.neg,
    operator.iadd,
    operator.imul,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.neg,
    torch.abs,
    torch.clamp,
    torch.relu,
    torch.relu_,
    torch.sigmoid,
    torch.tanh,
    F.relu,
    F.relu_,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.selu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.sigmoid,
    F.tanh,
    F.softplus,
    F.dropout,
    F.dropout1d,
    F.dropout2d,
    F.dropout3d,
    F.batch_norm,
    F.group_norm,
    F.instance_norm,
}
_ELEMENTWISE_METHODS = {
    "relu",
    "relu_",
    "sigmoid",
    "tanh",
    "abs",
    "neg",
    "clamp",
    "add",
    "add_",
    "sub",
    "mul",
    "mul_",
    "div",
    "contiguous",
    "clone",
    "float",
    "half",
    "double",
    "to",
}
_CATS = {torch.cat, torch.concat, torch.concatenate}

# root module -> {submodule name ("" for the root): field over trailing axes, or None}
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def receptive_field(
    module: nn.Module, name: str, example_input: torch.Tensor | None = None
) -> ReceptiveField | None:
    """The box of `module`'s first input that each position of submodule `name`'s
    output sees (``""``: the module's own output), or None where it is unknown: the
    module does not trace with ``torch.fx``, or an operation on the path is not a
    convolution, pooling window, padding, elementwise layer, add of maps or
    concatenation along channels.

    `example_input` (one input batch) gives the number of spatial axes when no
    convolution, pooling or padding on the path does. Computed once per module.
    """
    root = _unwrap(module)
    names = {n for n, _ in root.named_modules()}
    if name not in names:
        raise ValueError(
            f"name={name!r} is not a submodule of {type(root).__name__}; names: "
            + ", ".join(repr(n) for n in sorted(names))
        )
    field = trailing_fields(root).get(name)
    if field is None:
        return None
    if example_input is not None:
        if not isinstance(example_input, torch.Tensor) or not 3 <= example_input.dim() <= 5:
            raise ValueError(
                "example_input must be a (N, C, ...) tensor with 1-3 spatial axes, not "
                + (
                    f"shape {tuple(example_input.shape)}"
                    if isinstance(example_input, torch.Tensor)
                    else type(example_input).__name__
                )
            )
        return with_axes(field, example_input.dim() - 2)
    return with_axes(field, field.axes) if field.axes else None


def with_axes(field: ReceptiveField | None, axes: int) -> ReceptiveField | None:
    """A trailing-aligned field over `axes` spatial axes (leading ones: identity)."""
    if field is None or field.axes > axes:
        return None
    return _extend(field, axes)


def trailing_fields(root: nn.Module) -> dict[str, ReceptiveField | None]:
    """Each submodule's (and the root's, at ``""``) output field, aligned to the trailing
    axes; traced once per root module."""
    fields = _cache.get(root)
    if fields is None:
        fields = _cache[root] = _trace_fields(root)
    return fields


class _Tracer(fx.Tracer):
    """A tracer that notes the value each module call returns, leaf or not."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: dict[str, list[Any]] = {}

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        out = super().call_module(m, forward, args, kwargs)
        name = self.path_of_module(m)
        self.outputs.setdefault(name, []).append(out.node if isinstance(out, fx.Proxy) else None)
        return out


def _trace_fields(root: nn.Module) -> dict[str, ReceptiveField | None]:
    try:
        return _walk(root)
    except Exception:  # control flow on values, calls fx cannot trace...: no fields
        return {}


def _walk(root: nn.Module) -> dict[str, ReceptiveField | None]:
    tracer = _Tracer()
    graph = tracer.trace(root)
    modules = dict(root.named_modules())
    values: dict[fx.Node, Any] = {}
    first_input = True
    result: dict[str, ReceptiveField | None] = {}
    for node in graph.nodes:
        if node.op == "placeholder":
            values[node] = ReceptiveField.identity(0) if first_input else _CONST
            first_input = False
        elif node.op == "get_attr":
            values[node] = _CONST
        elif node.op == "output":
            out = node.args[0]
            result[""] = _field(values[out]) if isinstance(out, fx.Node) else None
        else:
            values[node] = _step(node, values, modules)
    for name, nodes in tracer.outputs.items():
        fields = {_field(values[n]) if n is not None else None for n in nodes}
        result[name] = fields.pop() if len(fields) == 1 else None
    return result


def _field(value: Any) -> ReceptiveField | None:
    return None if value is _CONST else value


def _operands(node: fx.Node, values: dict) -> list[Any]:
    """The values of the nodes among `node`'s arguments (lists included)."""
    found: list[Any] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(values[n]))
    return found


def _step(node: fx.Node, values: dict, modules: dict[str, nn.Module]) -> Any:
    """The field of `node`'s value from those of its arguments."""
    operands = _operands(node, values)
    inputs = [v for v in operands if v is not _CONST]
    if not inputs:
        return _CONST
    if any(v is None for v in inputs):
        return None
    if node.op == "call_module":
        return _through_module(modules.get(node.target), inputs)
    if node.op == "call_method" and node.target in _ELEMENTWISE_METHODS:
        return _union(inputs)
    if node.op != "call_function":
        return None
    if node.target in _ELEMENTWISE_FUNCTIONS:
        return _union(inputs)
    if node.target in _CATS:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        return _union(inputs) if dim == 1 else None
    if node.target is F.pad and len(inputs) == 1:
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        return _padded(inputs[0], pad)
    return None


def _through_module(m: nn.Module | None, inputs: list[ReceptiveField]) -> Any:
    if isinstance(m, _ELEMENTWISE_MODULES):
        return _union(inputs)
    if len(inputs) != 1:
        return None
    (field,) = inputs
    for types, has_dilation in ((_CONVS, True), (_MAX_POOLS, True), (_AVG_POOLS, False)):
        axes = next((n for t, n in types.items() if isinstance(m, t)), None)
        if axes is None:
            continue
        kernel = _per_axis(m.kernel_size, axes)
        stride = _per_axis(m.stride or m.kernel_size, axes)
        dilation = _per_axis(m.dilation, axes) if has_dilation else (1,) * axes
        if m.padding == "valid":
            pad = (0,) * axes
        elif m.padding == "same":  # PyTorch: d * (k - 1) in all, the smaller half before
            pad = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
        else:
            pad = _per_axis(m.padding, axes)
        return _window(field, axes, kernel, stride, dilation, pad)
    if isinstance(m, _PADS):
        return _padded(field, m.padding)
    return None


def _per_axis(value: Any, axes: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, tuple | list) else (int(value),) * axes


def _extend(field: ReceptiveField, axes: int) -> ReceptiveField:
    """`field` with identity axes added before it, to `axes` axes."""
    more = axes - field.axes
    return ReceptiveField(
        (0,) * more + field.start, (1,) * more + field.jump, (1,) * more + field.size
    )


def _window(
    field: ReceptiveField,
    axes: int,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    pad: tuple[int, ...],
) -> ReceptiveField | None:
    """The field after a window (kernel, stride, dilation, padding before) on the last
    `axes` axes: output position q reads positions ``q * stride - pad + [0, d * (k - 1)]``."""
    if field.axes > axes:  # the window would mix axes the field keeps apart
        return None
    f = _extend(field, axes)
    return ReceptiveField(
        tuple(st - p * j for st, j, p in zip(f.start, f.jump, pad, strict=True)),
        tuple(j * s for j, s in zip(f.jump, stride, strict=True)),
        tuple(
            n + d * (k - 1) * j for n, j, k, d in zip(f.size, f.jump, kernel, dilation, strict=True)
        ),
    )


def _padded(field: ReceptiveField, pad: Any) -> ReceptiveField | None:
    """The field after padding the last axes by ``(before last, after last, before the
    one before, ...)``, as ``F.pad`` reads it (negative: cropping)."""
    ints = isinstance(pad, tuple | list) and all(isinstance(p, int) for p in pad)
    if not ints or len(pad) % 2:
        return None
    before = tuple(reversed(pad[0::2]))  # leading axis first
    axes = max(len(before), field.axes)
    f = _extend(field, axes)
    before = (0,) * (axes - len(before)) + before
    return ReceptiveField(
        tuple(st - p * j for st, j, p in zip(f.start, f.jump, before, strict=True)), f.jump, f.size
    )


def _union(fields: list[ReceptiveField]) -> ReceptiveField | None:
    axes = max(f.axes for f in fields)
    out: ReceptiveField | None = _extend(fields[0], axes)
    for f in fields[1:]:
        out = out and out.union(_extend(f, axes))
    return out
