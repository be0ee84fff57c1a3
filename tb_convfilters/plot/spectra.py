"""Matplotlib figures of a layer's spectra (``tb_convfilters.spectra``), coloured as the
Filters tab's Spectra view colours them: a count ``c`` of a histogram's most ``m`` is the
``sequential`` table's colour of ``c`` within ``[0, m]`` (``colormap.js colorOf``).

>>> plot.spectra(kernel, "HWIO")                          # frequency band x orientation
>>> plot.spectra_from_logs("logs", "train", "conv1/kernel")   # and the coverage over steps
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tb_convfilters import spectra as _spectra
from tb_convfilters._dashboard import colormaps

COLORMAP = "sequential"


def coverage_pixels(counts: Any, *, dark: bool = False) -> np.ndarray:
    """RGB uint8 (shape + (3,)) of a histogram's counts: 0 .. its most, the sequential table."""
    c = np.asarray(counts, dtype=np.float64)
    top = float(c.max()) if c.size else 0.0
    return colormaps.colors(c, 0.0, top, colormaps.lut(COLORMAP, dark=dark))


def _band_labels(edges: np.ndarray) -> list[str]:
    return [f"{a:g}–{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _orientation_labels(edges: np.ndarray) -> list[str]:
    return [f"{(a + b) / 2:g}°" for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _histogram(ax: Any, cov: _spectra.Coverage, dark: bool) -> None:
    counts = cov.counts
    ax.imshow(coverage_pixels(counts, dark=dark), interpolation="nearest", origin="lower")
    for (band, b), c in np.ndenumerate(counts):
        if c:
            ax.text(b, band, str(c), ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(counts.shape[1]), _orientation_labels(cov.orientation_edges), fontsize=7)
    ax.set_yticks(range(counts.shape[0]), _band_labels(cov.frequency_edges), fontsize=7)
    ax.set_xlabel("orientation (0: varies along the width)")
    ax.set_ylabel("frequency (cycles / pixel)")


def _note(cov: Any) -> str:
    return f"flat (frequency 0): {cov.flat}; no power or non-finite: {cov.undefined}"


def spectra(
    kernel: Any,
    layout: str = "HWIO",
    size: int | Sequence[int] | None = None,
    *,
    ax: Any = None,
    title: str | None = None,
    dark: bool = False,
) -> Figure:
    """A Figure of the layer's coverage: filters per frequency band (rows, low at the
    bottom) and orientation bin (columns), as ``tb_convfilters.spectra.coverage``."""
    cov = _spectra.coverage(kernel, layout, size)
    if ax is None:
        fig = Figure(figsize=(6, 3.6), dpi=100)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    _histogram(ax, cov, dark)
    ax.set_title(title or f"dominant frequency x orientation; {_note(cov)}", fontsize=8)
    return fig


def spectra_from_logs(
    logdir: str | os.PathLike,
    run: str,
    tag: str,
    step: int | None = None,
    size: int | Sequence[int] | None = None,
    *,
    dark: bool = False,
) -> Figure:
    """The coverage of `tag` at `step` (default the latest) and, beside it, over every
    logged step: a row per step, a column per (frequency band, orientation bin), the
    bands from low to high, one colour scale over all steps."""
    series = _spectra.over_steps(logdir, run, tag, size)
    if step is not None and step not in series.steps:
        raise ValueError(f"step={step!r} is not logged for {run!r}, {tag!r}; steps: {series.steps}")
    at = len(series.steps) - 1 if step is None else series.steps.index(step)
    fig = Figure(figsize=(11, 3.8), dpi=100)
    left, right = fig.subplots(1, 2, width_ratios=(1, 1.6))
    cov = _spectra.Coverage(
        series.counts[at],
        int(series.flat[at]),
        int(series.undefined[at]),
        series.orientation_edges,
        series.frequency_edges,
    )
    _histogram(left, cov, dark)
    left.set_title(f"{run} · {tag} · step {series.steps[at]}\n{_note(cov)}", fontsize=8)
    steps, bands, bins = series.counts.shape
    raster = series.counts.reshape(steps, bands * bins)
    right.imshow(coverage_pixels(raster, dark=dark), interpolation="nearest", aspect="auto")
    right.set_xticks(
        [b * bins + (bins - 1) / 2 for b in range(bands)],
        _band_labels(series.frequency_edges),
        fontsize=7,
    )
    for b in range(1, bands):
        right.axvline(b * bins - 0.5, color="white", linewidth=1)
    ticks = np.unique(np.linspace(0, steps - 1, min(steps, 8)).round().astype(int))
    right.set_yticks(ticks, [str(series.steps[i]) for i in ticks], fontsize=7)
    right.set_xlabel(f"frequency band (cycles / pixel), {bins} orientations each")
    right.set_ylabel("step")
    right.set_title("coverage over steps", fontsize=8)
    return fig
