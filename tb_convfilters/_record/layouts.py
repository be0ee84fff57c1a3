"""Axis layouts: what each axis of a logged tensor means, and argument checks.

Letters: O output filter, I input channel, M depthwise channel multiplier,
D/H/W spatial, N sample, C channel. The dashboard reads the same letters.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

KERNEL_LAYOUTS: dict[str, str] = {
    "WIO": "Conv1D (Keras)",
    "OIW": "Conv1d (PyTorch)",
    "HWIO": "Conv2D (Keras)",
    "OIHW": "Conv2d (PyTorch)",
    "DHWIO": "Conv3D (Keras)",
    "OIDHW": "Conv3d (PyTorch)",
    "WIM": "DepthwiseConv1D (Keras)",
    "HWIM": "DepthwiseConv2D (Keras)",
    "WOI": "Conv1DTranspose (Keras)",
    "HWOI": "Conv2DTranspose (Keras)",
    "DHWOI": "Conv3DTranspose (Keras)",
    "IOW": "ConvTranspose1d (PyTorch)",
    "IOHW": "ConvTranspose2d (PyTorch)",
    "IODHW": "ConvTranspose3d (PyTorch)",
    "IO": "Dense (Keras)",
    "OI": "Linear (PyTorch)",
}
ACTIVATION_LAYOUTS: dict[str, str] = {
    "NWC": "1D, channels last",
    "NCW": "1D, channels first",
    "NHWC": "2D, channels last",
    "NCHW": "2D, channels first",
    "NDHWC": "3D, channels last",
    "NCDHW": "3D, channels first",
}
PATTERN_LAYOUTS: dict[str, str] = {"NHWC": "images, channels last"}
# Dataset examples: named parts packed into bytes (see _record.examples).
EXAMPLES_LAYOUTS: dict[str, str] = {"B": "bytes of named parts"}

LAYOUTS_BY_KIND: dict[str, dict[str, str]] = {
    "kernel": KERNEL_LAYOUTS,
    "activation": ACTIVATION_LAYOUTS,
    "pattern": PATTERN_LAYOUTS,
    "projection": PATTERN_LAYOUTS,
    "examples": EXAMPLES_LAYOUTS,
    "inputs": ACTIVATION_LAYOUTS,  # the probe inputs of dataset examples
}


def check_layout(layout: object, kind: str) -> str:
    """Returns `layout` if it is a known layout for `kind`, else raises ValueError."""
    allowed = LAYOUTS_BY_KIND[kind]
    if not isinstance(layout, str) or layout not in allowed:
        raise ValueError(
            f"layout={layout!r} is not a {kind} layout; expected one of: " + ", ".join(allowed)
        )
    return layout


def filter_axes(layout: str) -> tuple[int, ...]:
    """Axes whose index together names one filter (the rows of the grid)."""
    if "M" in layout:  # depthwise: filter i*M+m reads input channel i
        return (layout.index("I"), layout.index("M"))
    for letter in "OC":
        if letter in layout:
            return (layout.index(letter),)
    raise ValueError(f"layout={layout!r} names no filter axis")


def axis_length(shape: Sequence[int], layout: str, letter: str) -> int:
    """Length of the axis named `letter`, or 1 when the layout has no such axis."""
    return int(shape[layout.index(letter)]) if letter in layout else 1


def _spatial(shape: Sequence[int], layout: str) -> list[int]:
    return [int(n) for letter, n in zip(layout, shape, strict=True) if letter in "DHW"]


def _misread(shape: Sequence[int], layout: str, kind: str, others: Sequence[str]) -> bool:
    """True when `shape` read as `layout` has unequal spatial axes that another layout of
    `others` reads as square, and (kernels) spatial axes larger than every other axis."""
    spatial = _spatial(shape, layout)
    if len(spatial) < 2 or len(set(spatial)) == 1:
        return False
    if kind == "kernel":
        rest = [int(n) for letter, n in zip(layout, shape, strict=True) if letter not in "DHW"]
        if max(spatial) <= max(rest):  # small kernels of wide layers: (16, 16, 3, 1) is fine
            return False
    return any(len(set(_spatial(shape, other))) == 1 for other in others)


@functools.lru_cache(maxsize=1024)  # called per logged tensor; a model's shapes repeat
def fitting_layouts(shape: tuple[int, ...], layout: str, kind: str) -> tuple[str, ...]:
    """Layouts that fit `shape` when it cannot be right as `layout`, else [].

    A shape cannot be right when its "spatial" axes differ (e.g. ``H x W`` of 64 x 3)
    while another layout of the same rank reads them as square, and, for kernels,
    the spatial axes are larger than the channel axes: a PyTorch ``OIHW`` weight
    ``(64, 3, 7, 7)`` read as ``HWIO``, or an ``NCHW`` map read as ``NHWC``.
    """
    here = [i for i, letter in enumerate(layout) if letter in "DHW"]
    others = [
        other
        for other in LAYOUTS_BY_KIND[kind]
        if len(other) == len(layout)
        and [i for i, letter in enumerate(other) if letter in "DHW"] != here
    ]
    if not _misread(shape, layout, kind, others):
        return ()
    return tuple(other for other in others if len(set(_spatial(shape, other))) == 1)
