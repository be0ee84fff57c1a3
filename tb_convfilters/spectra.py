"""Spectra of filters: the 2-D Fourier power of each kernel, its dominant orientation and
frequency, and what a layer covers (numpy only).

>>> from tb_convfilters import spectra
>>> orientation, frequency = spectra.dominant(model.get_layer("conv1").kernel.numpy(), "HWIO")
>>> spectra.coverage(kernel, "HWIO").counts         # frequency bands x orientation bins
>>> spectra.over_steps("logs", "train", "conv1/kernel").counts   # the same at every step

One value per filter, the rows of the dashboard's grid (``_record.layouts.filter_axes``:
the ``O`` axis; a depthwise kernel's ``I x M`` filters, each one slice). Each filter's
power is ``|DFT|^2`` of its ``H x W`` slices summed over its input channels.

**No zero-padding by default**: the DFT has the kernel's own size, so the frequencies
are the bins ``np.fft.fftfreq(n)`` of each spatial axis (resolution ``1/n`` cycles per
pixel, ``1/3`` for a 3x3 kernel) and a grating on that grid is found exactly.
``size=N`` zero-pads to ``N x N`` first: a finer grid that interpolates the same
spectrum (smoother, and a peak between bins moves towards its true place).

The dominant frequency is the strongest bin of the whole spectrum, the slices' means
(the zero-frequency bin) included: the spectrum of the mean-subtracted slices decides,
except where the means carry more power than its peak, as in a blob (a Gaussian, or a
colour blob whose channels differ in sign); then the frequency is 0 and the orientation
NaN (it has none). Orientation: ``atan2(fy, fx)`` of the peak's wave vector in degrees,
mod 180, in ``[0, 180)``: 0 when the kernel varies along its width only (vertical
stripes), 90 along its height only, 45 along the diagonal from top-left to
bottom-right. A checkerboard of an even size is the Nyquist bin ``(-1/2, -1/2)``:
45 degrees, frequency ``sqrt(2)/2``. A filter without power (all zeros) or with
non-finite values has NaN for both.

Only kernels with two spatial axes (``HW``): 1-D and 3-D kernels raise ``ValueError``.
A transposed layout (``HWOI``, ``IOHW``) reads its ``O`` axis as the filters, as the grid
does; a kernel's power does not change when it is flipped, so the orientation of a
transposed convolution's kernel is that of the pattern it paints.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from tb_convfilters import reader
from tb_convfilters._record.layouts import KERNEL_LAYOUTS, filter_axes

__all__ = [
    "FREQUENCY_EDGES",
    "ORIENTATION_BINS",
    "Coverage",
    "CoverageSeries",
    "coverage",
    "dominant",
    "frequencies",
    "orientation_edges",
    "over_steps",
    "power",
]

# Radial frequency bands of `coverage`, in cycles per pixel, each [low, high): the last one
# holds the diagonal frequencies above the Nyquist limit of one axis (up to sqrt(2)/2).
FREQUENCY_EDGES: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.75)
# Orientation bins of `coverage`: 180 / 8 = 22.5 degrees wide, centred on 0, 22.5, ..., 157.5.
ORIENTATION_BINS = 8
# Frequencies below this are 0: what rounding leaves of a zero bin.
_ZERO = 1e-9


def _check(kernel: Any, layout: str) -> np.ndarray:
    arr = np.asarray(kernel)
    if not isinstance(layout, str) or layout not in KERNEL_LAYOUTS:
        raise ValueError(
            f"layout={layout!r} is not a kernel layout; expected one of: "
            + ", ".join(KERNEL_LAYOUTS)
        )
    if "H" not in layout or "D" in layout:
        raise ValueError(
            f"layout={layout!r}: spectra need 2-D kernels (spatial axes H and W); "
            "for 1-D or 3-D kernels take a 2-D slice yourself (e.g. one depth of DHWIO as HWIO)"
        )
    if arr.ndim != len(layout):
        raise ValueError(f"layout={layout!r} does not match a kernel of shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        arr = arr.astype(np.float64)  # bfloat16 (ml_dtypes) and friends
    return arr.astype(np.float64)


def _slices(arr: np.ndarray, layout: str) -> np.ndarray:
    """(filters, channels, H, W): each filter's slices, in the grid's filter order."""
    if "M" in layout:  # depthwise: filter i*M + m reads input channel i only
        order = [layout.index(c) for c in "IMHW"]
        moved = arr.transpose(order)
        i, m, h, w = moved.shape
        return moved.reshape(i * m, 1, h, w)
    (f,) = filter_axes(layout)
    rest = [i for i, c in enumerate(layout) if c not in "OHW"]  # I, when there is one
    order = [f, *rest, layout.index("H"), layout.index("W")]
    moved = arr.transpose(order)
    return moved.reshape(moved.shape[0], -1, *moved.shape[-2:])


def _size(size: int | Sequence[int] | None, h: int, w: int) -> tuple[int, int]:
    if size is None:
        return h, w
    pair = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    if (
        len(pair) != 2
        or any(isinstance(n, bool) or not isinstance(n, int | np.integer) for n in pair)
        or pair[0] < h
        or pair[1] < w
    ):
        raise ValueError(
            f"size={size!r} must be None (the kernel's own {h}x{w}) or an int or (height, width) "
            f"at least {h}x{w} to zero-pad to"
        )
    return int(pair[0]), int(pair[1])


def frequencies(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(fy, fx): the frequencies in cycles per pixel of `power`'s rows and columns for a
    spectrum of `shape` (height, width), zero frequency in the middle (``fftshift``)."""
    h, w = (int(n) for n in shape[-2:])
    return np.fft.fftshift(np.fft.fftfreq(h)), np.fft.fftshift(np.fft.fftfreq(w))


def _spectra(kernel: Any, layout: str, size: Any, subtract_mean: bool) -> np.ndarray:
    """Per filter and channel |DFT|^2, unshifted: (filters, channels, h, w)."""
    slices = _slices(_check(kernel, layout), layout)
    h, w = _size(size, *slices.shape[-2:])
    if subtract_mean:
        slices = slices - slices.mean(axis=(-2, -1), keepdims=True)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.abs(np.fft.fft2(slices, s=(h, w))) ** 2


def power(
    kernel: Any,
    layout: str = "HWIO",
    size: int | Sequence[int] | None = None,
    *,
    per_channel: bool = False,
    subtract_mean: bool = True,
) -> np.ndarray:
    """Each filter's 2-D Fourier power ``|DFT|^2`` of its mean-subtracted slices.

    Returns (filters, h, w) summed over input channels, or (filters, channels, h, w) with
    `per_channel`; zero frequency in the middle, frequencies from `frequencies`. `size`
    zero-pads to ``size x size`` (or (height, width)); None keeps the kernel's size.
    """
    p = _spectra(kernel, layout, size, subtract_mean)
    if not per_channel:
        p = p.sum(axis=1)
    return np.fft.fftshift(p, axes=(-2, -1))


def dominant(
    kernel: Any, layout: str = "HWIO", size: int | Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(orientation, frequency) of each filter's strongest spatial frequency.

    Orientation in degrees in [0, 180) (0: the kernel varies along its width only, 90:
    along its height only; NaN at frequency 0), radial frequency in cycles per pixel
    (0 to sqrt(2)/2). See the module's text for the rules (ties, blobs, padding).
    """
    full = _spectra(kernel, layout, size, subtract_mean=False).sum(axis=1)
    n, h, w = full.shape
    flat = full.reshape(n, h * w)
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    fy, fx = fy.ravel(), fx.ravel()
    # Ties (a real kernel's spectrum is symmetric: f and -f alike) go to the first bin in
    # fftfreq order, the lowest frequencies first: the blob's zero bin, then +1/n, ...
    ok = np.isfinite(flat).all(axis=1) & (flat.max(axis=1, initial=0.0) > 0)
    peak = np.argmax(np.where(ok[:, None], flat, 0.0), axis=1)
    py, px = fy[peak], fx[peak]
    frequency = np.hypot(py, px)
    orientation = np.degrees(np.arctan2(py, px)) % 180.0
    orientation = np.where(orientation >= 180.0, 0.0, orientation)  # -0.0 % 180 rounds to 180
    orientation = np.where(frequency > _ZERO, orientation, np.nan)
    frequency = np.where(ok, frequency, np.nan)
    orientation = np.where(ok, orientation, np.nan)
    return orientation, frequency


def orientation_edges(bins: int = ORIENTATION_BINS) -> np.ndarray:
    """Edges in degrees of `bins` orientation bins centred on 0, 180/bins, ...: the first bin
    wraps around, ``[180 - w/2, 180) + [0, w/2)`` with ``w = 180 / bins``."""
    width = 180.0 / bins
    return np.arange(bins + 1) * width - width / 2


class Coverage(NamedTuple):
    """What a layer's filters cover: ``counts[band, bin]`` filters with their dominant
    frequency in band ``band`` (`frequency_edges`, each [low, high)) and orientation in bin
    ``bin`` (`orientation_edges`); `flat` filters of frequency 0 (blobs, no orientation);
    `undefined` filters without power (all zeros) or with non-finite values."""

    counts: np.ndarray  # int64 (bands, bins)
    flat: int
    undefined: int
    orientation_edges: np.ndarray
    frequency_edges: np.ndarray


def _bins(
    orientation: np.ndarray,
    frequency: np.ndarray,
    bins: int,
    edges: np.ndarray,
) -> tuple[np.ndarray, int, int]:
    undefined = ~np.isfinite(frequency)
    flat = ~undefined & (frequency <= _ZERO)
    keep = ~undefined & ~flat
    width = 180.0 / bins
    o = np.floor((orientation[keep] + width / 2) / width).astype(np.int64) % bins
    band = np.searchsorted(edges, frequency[keep], side="right") - 1
    band = np.clip(band, 0, len(edges) - 2)
    counts = np.zeros((len(edges) - 1, bins), np.int64)
    np.add.at(counts, (band, o), 1)
    return counts, int(flat.sum()), int(undefined.sum())


def _check_bins(orientation_bins: Any, frequency_edges: Any) -> np.ndarray:
    if (
        isinstance(orientation_bins, bool)
        or not isinstance(orientation_bins, int | np.integer)
        or not 1 <= orientation_bins <= 180
    ):
        raise ValueError(f"orientation_bins={orientation_bins!r} must be an int in [1, 180]")
    edges = np.asarray(frequency_edges, dtype=np.float64)
    if (
        edges.ndim != 1
        or len(edges) < 2
        or not np.all(np.diff(edges) > 0)
        or edges[0] != 0
        or edges[-1] <= math.sqrt(0.5)
    ):
        raise ValueError(
            f"frequency_edges={frequency_edges!r} must rise from 0 to above sqrt(2)/2 "
            f"(the highest radial frequency); the default is {FREQUENCY_EDGES}"
        )
    return edges


def coverage(
    kernel: Any,
    layout: str = "HWIO",
    size: int | Sequence[int] | None = None,
    *,
    orientation_bins: int = ORIENTATION_BINS,
    frequency_edges: Sequence[float] = FREQUENCY_EDGES,
) -> Coverage:
    """The layer's histogram of dominant (frequency band x orientation bin), see `Coverage`."""
    edges = _check_bins(orientation_bins, frequency_edges)
    counts, flat, undefined = _bins(*dominant(kernel, layout, size), orientation_bins, edges)
    return Coverage(counts, flat, undefined, orientation_edges(orientation_bins), edges)


class CoverageSeries(NamedTuple):
    """`coverage` at every logged step: ``counts[step, band, bin]``, ``flat[step]``, ...;
    `filters` the number of filters at each step (a layer may be logged with other caps)."""

    steps: list[int]
    counts: np.ndarray  # int64 (steps, bands, bins)
    flat: np.ndarray
    undefined: np.ndarray
    filters: np.ndarray
    orientation_edges: np.ndarray
    frequency_edges: np.ndarray


def over_steps(
    logdir: str | os.PathLike,
    run: str,
    tag: str,
    size: int | Sequence[int] | None = None,
    *,
    orientation_bins: int = ORIENTATION_BINS,
    frequency_edges: Sequence[float] = FREQUENCY_EDGES,
) -> CoverageSeries:
    """`coverage` of kernel `tag` of `run` at each logged step, ascending (records read one
    at a time). Raises ``reader.NotFoundError`` for an unknown run or tag."""
    edges = _check_bins(orientation_bins, frequency_edges)
    latest: dict[int, reader.Entry] = {}
    for entry in reader.entries(logdir, run=run, tag=tag):
        latest[entry.step] = entry  # a step logged twice: the last one written wins
    if not latest:
        reader.read(logdir, run, tag)  # raises NotFoundError naming what exists
    steps = sorted(latest)
    counts, flat, undefined, filters = [], [], [], []
    for step in steps:
        entry = latest[step]
        header = entry.header()
        if header.get("kind") != "kernel":
            raise ValueError(f"run {run!r}, tag {tag!r} holds {header.get('kind')}s, not kernels")
        o, f = dominant(entry.array(), header["layout"], size)
        c, fl, un = _bins(o, f, orientation_bins, edges)
        counts.append(c)
        flat.append(fl)
        undefined.append(un)
        filters.append(len(f))
    return CoverageSeries(
        steps,
        np.stack(counts),
        np.array(flat),
        np.array(undefined),
        np.array(filters),
        orientation_edges(orientation_bins),
        edges,
    )
