"""Matplotlib grids of logged kernels and activations, coloured as the Filters tab colours them.

>>> from tb_convfilters import plot
>>> fig = plot.grid(model.get_layer("conv1").kernel.numpy(), "HWIO")
>>> fig.savefig("conv1.png")
>>> plot.grid_from_logs("logs", "train", "conv1/kernel")     # the latest step
>>> plot.examples("logs", "train", "conv2/activation")       # dataset examples per filter
>>> plot.animate("logs", "train", "conv1/kernel")             # over the steps (plot.animation)
>>> plot.spectra(kernel, "HWIO")                 # filters per frequency band x orientation

Kernels draw one row per filter and one tile per input channel (depthwise: one row
per input channel, one tile per multiplier); rows of at most three tiles are laid out
as the dashboard lays them out, a near-square grid of labelled blocks; activations
one tile per channel in a near-square grid; 3D tiles put their D slices side by side.
Colour tables, the NaN/Inf colour and the percentile limits come from the dashboard's
own settings (``tb_convfilters._dashboard.colormaps``). Dataset examples (`examples`,
`example_pixels`, `example_overlay`) live in ``plot.dataset_examples``, the spectra
(`spectra`, `spectra_from_logs`, `coverage_pixels`) in ``plot.spectra``.
Needs ``pip install "tb-convfilters[plot]"``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

try:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure
except ImportError as e:  # pragma: no cover - exercised by hand without matplotlib
    raise ImportError(
        "tb_convfilters.plot needs matplotlib: pip install 'tb-convfilters[plot]' "
        f"(or pip install matplotlib). Import failed with: {e}"
    ) from e

from tb_convfilters import reader
from tb_convfilters._dashboard import colormaps
from tb_convfilters._record.layouts import ACTIVATION_LAYOUTS, KERNEL_LAYOUTS
from tb_convfilters.plot.animation import animate
from tb_convfilters.plot.dataset_examples import example_overlay, example_pixels, examples
from tb_convfilters.plot.spectra import coverage_pixels, spectra, spectra_from_logs

__all__ = [
    "BLOCK_CHANNELS",
    "Tiles",
    "animate",
    "block_columns",
    "cell_limits",
    "coverage_pixels",
    "example_overlay",
    "example_pixels",
    "examples",
    "grid",
    "grid_from_logs",
    "image",
    "spectra",
    "spectra_from_logs",
    "tiles",
]

_SCALES = ("tile", "filter", "layer")
# As the dashboard (layout.js BLOCK_CHANNELS): kernels with at most this many tiles per
# filter draw as a near-square grid of filter blocks instead of a strip.
BLOCK_CHANNELS = 3
_BLOCK_GAP = 3  # px between blocks (tiles are 1 px apart): room for the block labels


class Tiles(NamedTuple):
    """A tensor as a grid: values[row, col, y, x] where valid (separators and empty cells not)."""

    values: np.ndarray  # float64 (rows, cols, th, tw)
    valid: np.ndarray  # bool, same shape
    row_filters: bool  # a filter is a whole row (kernels that are not depthwise)
    kind: str


def _to_axes(array: np.ndarray, layout: str, letters: str) -> np.ndarray:
    """`array` with its axes in the order of `letters` (missing ones of length 1)."""
    missing = [letter for letter in letters if letter not in layout]
    arr = array.reshape(array.shape + (1,) * len(missing))
    have = layout + "".join(missing)
    return arr.transpose([have.index(letter) for letter in letters])


def _spatial_tiles(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., D, H, W) -> values and valid (..., H, D*(W+1)-1): D slices with 1-px separators."""
    *lead, d, h, w = arr.shape
    moved = np.moveaxis(arr, -3, -2)  # (..., H, D, W)
    pad = [(0, 0)] * (moved.ndim - 1) + [(0, 1)]
    values = np.pad(moved, pad, constant_values=np.nan).reshape(*lead, h, d * (w + 1))
    valid = np.pad(np.ones(moved.shape, bool), pad).reshape(*lead, h, d * (w + 1))
    return values[..., :-1], valid[..., :-1]


def _square_columns(count: int, th: int, tw: int) -> int:
    ideal = math.sqrt(count * th / max(tw, 1))
    return min(count, max(1, int(colormaps._js_round(np.float64(ideal)))))


def tiles(array: Any, layout: str, *, sample: int = 0) -> Tiles:
    """The dashboard's grid of a kernel (layouts.KERNEL_LAYOUTS) or activation (NHWC ...)."""
    arr = np.asarray(array)
    if not isinstance(layout, str) or arr.ndim != len(layout):
        raise ValueError(f"layout={layout!r} does not match an array of shape {arr.shape}")
    arr = arr.astype(np.float64)
    if layout in KERNEL_LAYOUTS:
        rows, cols = ("I", "M") if "M" in layout else ("O", "I")
        values, valid = _spatial_tiles(_to_axes(arr, layout, rows + cols + "DHW"))
        return Tiles(values, valid, "M" not in layout, "kernel")
    if layout in ACTIVATION_LAYOUTS:
        n = arr.shape[layout.index("N")]
        if not isinstance(sample, int) or not 0 <= sample < n:
            raise ValueError(f"sample={sample!r} must be an index below the {n} samples")
        one = _to_axes(arr, layout, "NCDHW")[sample]
        flat, ok = _spatial_tiles(one)  # (C, th, tw)
        count, th, tw = flat.shape
        cols = _square_columns(count, th, tw)
        rows = math.ceil(count / cols)
        extra = rows * cols - count
        values = np.concatenate([flat, np.full((extra, th, tw), np.nan)])
        valid = np.concatenate([ok, np.zeros((extra, th, tw), bool)])
        return Tiles(
            values.reshape(rows, cols, th, tw),
            valid.reshape(rows, cols, th, tw),
            False,
            "activation",
        )
    raise ValueError(
        f"layout={layout!r} is not a kernel or activation layout; expected one of: "
        + ", ".join([*KERNEL_LAYOUTS, *ACTIVATION_LAYOUTS])
    )


def cell_limits(
    grid: Tiles,
    *,
    colormap: str = "diverging",
    scale: str = "layer",
    percentile: float | None = None,
    limits: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell (lo, hi) arrays of shape (rows, cols), as the dashboard's ``cellLimits``."""
    p = colormaps.default_percentile() if percentile is None else float(percentile)
    rows, cols = grid.values.shape[:2]
    lo = np.zeros((rows, cols))
    hi = np.zeros((rows, cols))
    if limits is not None:
        a, b = (float(x) for x in limits)
        if not a < b:
            raise ValueError(f"limits={limits!r} must be (low, high) with low < high")
        lo[:], hi[:] = a, b
        return lo, hi
    if scale not in _SCALES:
        raise ValueError(f"scale={scale!r} is unknown; expected one of: {', '.join(_SCALES)}")
    signed = colormaps.is_signed(colormap)
    if scale == "layer":
        groups = [(slice(None), slice(None))]
    elif scale == "filter" and grid.row_filters:
        groups = [(r, slice(None)) for r in range(rows)]
    else:
        groups = [(r, c) for r in range(rows) for c in range(cols)]
    for where in groups:
        lo[where], hi[where] = colormaps.limits(grid.values[where][grid.valid[where]], p, signed)
    return lo, hi


def image(
    array: Any,
    layout: str = "HWIO",
    *,
    colormap: str = "diverging",
    scale: str = "layer",
    percentile: float | None = None,
    limits: Sequence[float] | None = None,
    filters: int | Sequence[int] | None = None,
    sample: int = 0,
    dark: bool = False,
) -> np.ndarray:
    """The grid as an RGBA uint8 image: tiles 1 px apart, gaps and empty cells transparent.

    Arguments as for `grid`.
    """
    colormaps.check_colormap(colormap)
    g = tiles(array, layout, sample=sample)
    lo, hi = cell_limits(g, colormap=colormap, scale=scale, percentile=percentile, limits=limits)
    return _compose(g, lo, hi, colormaps.lut(colormap, dark=dark), filters)


def _compose(
    g: Tiles,
    lo: np.ndarray,
    hi: np.ndarray,
    table: np.ndarray,
    filters: int | Sequence[int] | None = None,
) -> np.ndarray:
    """`image` of grid `g` with per-cell limits `lo`, `hi` (rows, cols) and colour `table`."""
    rgb = colormaps.colors(g.values, lo[:, :, None, None], hi[:, :, None, None], table)
    alpha = np.where(g.valid, 255, 0).astype(np.uint8)[..., None]
    cells = np.concatenate([rgb, alpha], axis=-1)  # (rows, cols, th, tw, 4)
    if filters is not None:
        cells = cells[_rows(filters, cells.shape[0], g.kind)]
    rows, cols, th, tw, _ = cells.shape
    places = _places(g.kind, rows, cols, th, tw)
    out = np.zeros((max(y for y, _ in places) + th, max(x for _, x in places) + tw, 4), np.uint8)
    for (y, x), cell in zip(places, cells.reshape(rows * cols, th, tw, 4), strict=True):
        out[y : y + th, x : x + tw] = cell
    return out


def block_columns(kind: str, rows: int, cols: int, th: int, tw: int) -> int:
    """Blocks per line where the dashboard draws filter blocks (rows of few tiles), else 0."""
    if kind != "kernel" or cols > BLOCK_CHANNELS or rows < 2:
        return 0
    return _square_columns(rows, th, cols * tw)


def _places(kind: str, rows: int, cols: int, th: int, tw: int) -> list[tuple[int, int]]:
    """(top, left) pixel of each tile, row by row: a strip of rows, or filter blocks."""
    per_line = block_columns(kind, rows, cols, th, tw)
    if not per_line:
        return [(r * (th + 1), c * (tw + 1)) for r in range(rows) for c in range(cols)]
    pitch_y, pitch_x = th + _BLOCK_GAP, cols * (tw + 1) - 1 + _BLOCK_GAP
    return [
        ((r // per_line) * pitch_y, (r % per_line) * pitch_x + c * (tw + 1))
        for r in range(rows)
        for c in range(cols)
    ]


def _rows(filters: int | Sequence[int], rows: int, kind: str) -> list[int]:
    what = "filters (grid rows)" if kind == "kernel" else "grid rows"
    if isinstance(filters, int) and not isinstance(filters, bool):
        if filters < 1:
            raise ValueError(f"filters={filters!r} must be a positive count or a list of indices")
        return list(range(min(filters, rows)))
    picked = list(filters)
    bad = [f for f in picked if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < rows]
    if bad or not picked:
        raise ValueError(f"filters entries {bad or picked} must be indices below the {rows} {what}")
    return picked


def grid(
    array: Any,
    layout: str = "HWIO",
    *,
    colormap: str = "diverging",
    scale: str = "layer",
    percentile: float | None = None,
    filters: int | Sequence[int] | None = None,
    ax: Any = None,
    limits: Sequence[float] | None = None,
    sample: int = 0,
    dark: bool = False,
    title: str | None = None,
    pixels: int = 8,
) -> Figure:
    """A matplotlib Figure of `array` drawn as the Filters tab draws it.

    Args:
      array: a kernel (e.g. ``HWIO`` from Keras, ``OIHW`` from PyTorch) or activation.
      layout: its axis letters (``tb_convfilters._record.layouts``).
      colormap: ``diverging`` (symmetric limits), ``sequential`` or ``grey``.
      scale: colour limits per ``tile``, ``filter`` or ``layer``.
      percentile: limits at this percentile (default the dashboard's, 99.5).
      filters: draw only the first N filters, or these filter indices (limits still
        come from the whole tensor).
      ax: draw into these Axes (else a new Figure, ``pixels`` screen pixels per value).
      limits: fixed (low, high) colour limits instead of percentiles.
      sample: the sample of an activation to draw; dark: dark-mode table.

    The last expression of a notebook cell shows it; ``fig.savefig(path)`` saves it.
    """
    img = image(
        array,
        layout,
        colormap=colormap,
        scale=scale,
        percentile=percentile,
        limits=limits,
        filters=filters,
        sample=sample,
        dark=dark,
    )
    if ax is None:
        h, w = img.shape[:2]
        dpi = 100
        fig = Figure(
            figsize=(max(w * pixels / dpi, 1.5) + 1.2, max(h * pixels / dpi, 1.0) + 0.8), dpi=dpi
        )
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.imshow(img, interpolation="nearest", resample=False)
    ax.set_xticks([])
    ax.set_yticks([])
    g = tiles(array, layout, sample=sample)
    rows, cols, th, tw = g.values.shape
    picked = list(range(rows)) if filters is None else _rows(filters, rows, g.kind)
    blocks = block_columns(g.kind, len(picked), cols, th, tw)
    kernel = layout in KERNEL_LAYOUTS
    if blocks:  # each block labelled with its filter (depthwise: input channel) index
        places = _places(g.kind, len(picked), cols, th, tw)
        for i, index in enumerate(picked):
            y, x = places[i * cols]
            ax.text(x - 0.5, y - 0.6, str(index), fontsize=6, va="bottom", ha="left")
    else:
        ax.set_xlabel("input channel" if kernel and "M" not in layout else "")
        ax.set_ylabel("filter" if kernel and "M" not in layout else "")
    if title:
        ax.set_title(title)
    if scale == "layer" or limits is not None:
        lo, hi = cell_limits(
            g, colormap=colormap, scale=scale, percentile=percentile, limits=limits
        )
        if hi[0, 0] > lo[0, 0]:
            table = colormaps.lut(colormap, dark=dark) / 255.0
            bar = ScalarMappable(Normalize(lo[0, 0], hi[0, 0]), ListedColormap(table))
            fig.colorbar(bar, ax=ax, fraction=0.05, pad=0.02)
    return fig


def grid_from_logs(
    logdir: str, run: str, tag: str, step: int | None = None, **options: Any
) -> Figure:
    """`grid` of the tensor logged as `tag` in `run` at `step` (default the latest).

    The layout comes from the logged header; `options` are `grid`'s.
    """
    found = None
    for entry in reader.entries(logdir, run=run, tag=tag):
        if (step is None and (found is None or entry.step >= found.step)) or entry.step == step:
            found = entry
    if found is None:
        reader.read(logdir, run, tag, step)  # raises NotFoundError naming what exists
    header = found.header()
    options.setdefault("title", f"{run} · {tag} · step {found.step}")
    return grid(found.array(), header["layout"], **options)
