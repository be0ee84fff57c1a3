"""What a reader yields (`Kernel`), the layout rules shared by the formats, and the checks
every kernel passes before anything is written."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from tb_convfilters._record import layouts

_SPATIAL = {3: "W", 4: "HW", 5: "DHW"}  # kernel rank -> spatial letters
FLOAT_KINDS = ("float16", "bfloat16", "float32", "float64")


class ImportFailure(ValueError):
    """A checkpoint that cannot be imported; the message names the file and the tensor."""


class Kernel(NamedTuple):
    """One conv kernel found in a checkpoint."""

    name: str  # the tensor's name in the file
    tag: str  # as the callbacks name it
    layout: str
    array: np.ndarray


def keras_layout(rank: int, kind: str) -> str | None:
    """Keras/TensorFlow layout of a kernel of `rank` for `kind` conv / transpose / depthwise."""
    spatial = _SPATIAL.get(rank)
    if spatial is None:
        return None
    return spatial + {"conv": "IO", "transpose": "OI", "depthwise": "IM"}[kind]


def torch_layout(rank: int, transposed: bool = False) -> str | None:
    """PyTorch/ONNX layout of a conv weight of `rank` (``IO...`` when `transposed`)."""
    spatial = _SPATIAL.get(rank)
    if spatial is None:
        return None
    return ("IO" if transposed else "OI") + spatial


# Keras class names (and their snake_case, the default layer names) -> kernel kind.
_KERAS_KINDS = {
    **{f"Conv{n}D": "conv" for n in (1, 2, 3)},
    **{f"Conv{n}DTranspose": "transpose" for n in (1, 2, 3)},
    **{f"DepthwiseConv{n}D": "depthwise" for n in (1, 2)},
    **{f"SeparableConv{n}D": "separable" for n in (1, 2)},
}
_KERAS_SNAKE = {  # conv2d, conv2d_transpose, depthwise_conv2d, separable_conv2d, ...
    cls.lower().replace("transpose", "_transpose").replace("conv", "_conv").lstrip("_"): kind
    for cls, kind in _KERAS_KINDS.items()
}


def keras_kind(class_name: str | None, layer_name: str) -> str | None:
    """`conv`, `transpose`, `depthwise` or `separable` for a Keras class, else for a default
    layer name (``conv2d_transpose_3``), else None."""
    if class_name is not None and class_name in _KERAS_KINDS:
        return _KERAS_KINDS[class_name]
    return _KERAS_SNAKE.get(re.sub(r"_\d+$", "", layer_name))


def keras_kernel(
    layer: str, attribute: str, shape: Sequence[int], kind: str | None
) -> tuple[str, str] | None:
    """(tag, layout) of a Keras layer's variable as FiltersCallback logs it, else None.

    `kind` is `keras_kind` of the layer; None (a layer we cannot place) takes a ``kernel``
    as a plain convolution. Separable layers log ``<layer>/depthwise`` and ``/pointwise``.
    """
    rank = len(shape)
    if attribute == "depthwise_kernel":
        layout = keras_layout(rank, "depthwise")
        return (f"{layer}/depthwise", layout) if layout else None
    if attribute == "pointwise_kernel":
        layout = keras_layout(rank, "conv")
        return (f"{layer}/pointwise", layout) if layout else None
    if attribute != "kernel" or kind == "separable":
        return None
    layout = keras_layout(rank, kind if kind in ("transpose", "depthwise") else "conv")
    return (f"{layer}/kernel", layout) if layout else None


def parse_layout_overrides(items: Mapping[str, str] | Iterable[str] | None) -> dict[str, str]:
    """``{pattern: layout}`` from a mapping or ``PATTERN=LAYOUT`` strings, layouts checked."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for item in [items] if isinstance(items, str) else items:
            pattern, sep, layout = str(item).rpartition("=")
            if not sep or not pattern:
                raise ValueError(
                    f"layout override {item!r} must be PATTERN=LAYOUT, e.g. 'up*=IOHW'"
                )
            pairs.append((pattern, layout))
    out = {}
    for pattern, layout in pairs:
        if len(layout) < 3:
            raise ValueError(
                f"layout override {pattern}={layout!r}: expected a conv kernel layout, one of: "
                + ", ".join(k for k in layouts.KERNEL_LAYOUTS if len(k) >= 3)
            )
        out[str(pattern)] = layouts.check_layout(layout, "kernel")
    return out


def _matches(tag: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(tag, p) for p in patterns)


def selected(tag: str, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """Whether `tag` matches an `include` pattern (any, if none) and no `exclude` pattern."""
    return (not include or _matches(tag, include)) and not _matches(tag, exclude)


def select(
    kernels: Iterable[Kernel],
    source: str,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    overrides: Mapping[str, str] | None = None,
) -> list[Kernel]:
    """The kernels of one checkpoint that are imported, checked; raises ImportFailure.

    A tag is kept when it matches an `include` pattern (all if none) and no `exclude`
    pattern; the first `overrides` pattern it matches sets its layout. Raises when
    nothing is left, or when a kernel's shape cannot be right as its layout.
    """
    out, seen, skipped = [], set(), []
    for k in kernels:
        if k.tag in seen:  # a SavedModel lists its variables twice
            continue
        seen.add(k.tag)
        if not selected(k.tag, include, exclude):
            skipped.append(k.tag)
            continue
        for pattern, layout in (overrides or {}).items():
            if fnmatch.fnmatchcase(k.tag, pattern):
                k = k._replace(layout=layout)
                break
        out.append(_checked(k, source))
    if not out:
        what = f"; the filters left out: {', '.join(skipped)}" if skipped else ""
        raise ImportFailure(
            f"{source}: no conv kernels to import (rank 3-5 float weights of conv layers){what}"
        )
    return out


def _checked(k: Kernel, source: str) -> Kernel:
    where = f"{source}: tensor {k.name!r} (tag {k.tag!r}, shape {tuple(k.array.shape)})"
    if k.array.dtype.name not in FLOAT_KINDS:
        raise ImportFailure(f"{where} has dtype {k.array.dtype.name}; expected a float kernel")
    if len(k.layout) != k.array.ndim:
        raise ImportFailure(f"{where} cannot be laid out as {k.layout!r} (rank {len(k.layout)})")
    fits = layouts.fitting_layouts(tuple(k.array.shape), k.layout, "kernel")
    if fits:
        raise ImportFailure(
            f"{where} cannot be right as layout {k.layout!r}: its spatial axes look like "
            f"channels; it fits {' or '.join(fits)}. Give its layout with "
            f"--layout '{k.tag}={fits[0]}' (layouts= in Python)"
        )
    return k
