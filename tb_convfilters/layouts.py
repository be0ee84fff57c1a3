"""Axis layouts: what each axis of a logged tensor means, and argument checks.

Letters: O output filter, I input channel, M depthwise channel multiplier,
D/H/W spatial, N sample, C channel. The dashboard reads the same letters.
"""

from __future__ import annotations

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

LAYOUTS_BY_KIND: dict[str, dict[str, str]] = {
    "kernel": KERNEL_LAYOUTS,
    "activation": ACTIVATION_LAYOUTS,
    "pattern": PATTERN_LAYOUTS,
    "projection": PATTERN_LAYOUTS,
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
