"""The dashboard's colour tables and colour limits, for drawing outside the browser.

The settings (tables, their size, the NaN/Inf colour, signed colormaps, scales, the
default percentile) are read from ``frontend/static/display.json``, the same file
the dashboard's ``colormap.js`` and ``normalize.js`` import; this module repeats
their arithmetic (a table entry per value, percentile limits) in numpy, and a test
runs both on the same arrays and compares every colour.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from tb_convfilters._dashboard.files import frontend_dir


@functools.cache
def settings() -> dict[str, Any]:
    """The parsed ``frontend/static/display.json``."""
    return json.loads((frontend_dir() / "static" / "display.json").read_text(encoding="utf-8"))


def colormaps() -> list[str]:
    return list(settings()["colormaps"])


def scales() -> list[str]:
    """Colour-limit scales: ``tile``, ``filter``, ``layer`` (and the fixed ones)."""
    return list(settings()["scales"])


def default_percentile() -> float:
    return float(settings()["default_percentile"])


def nonfinite_color() -> np.ndarray:
    """The RGB colour of NaN / +-Inf values."""
    return np.array(settings()["nonfinite"], dtype=np.uint8)


def is_signed(colormap: str) -> bool:
    """True for colormaps of signed data around 0 (symmetric limits)."""
    return colormap in settings()["signed"]


def check_colormap(colormap: object) -> str:
    if colormap not in colormaps():
        raise ValueError(
            f"colormap={colormap!r} is unknown; expected one of: " + ", ".join(colormaps())
        )
    return colormap  # type: ignore[return-value]


@functools.cache
def _table(key: str) -> np.ndarray:
    stops = np.array(settings()["stops"][key], dtype=np.float64)
    size = int(settings()["lut_size"])
    segments = len(stops) - 1
    t = np.arange(size, dtype=np.float64) / (size - 1) * segments
    k = np.minimum(np.floor(t), segments - 1).astype(int)
    f = (t - k)[:, None]
    table = _js_round(stops[k] * (1 - f) + stops[k + 1] * f).astype(np.uint8)
    table.setflags(write=False)
    return table


def lut(colormap: str, *, dark: bool = False) -> np.ndarray:
    """The (lut_size, 3) uint8 RGB table of `colormap` (dark mode's where it has one)."""
    check_colormap(colormap)
    return _table((dark and settings()["dark"].get(colormap)) or colormap)


def _js_round(x: np.ndarray) -> np.ndarray:
    """JavaScript's Math.round: halves round up (numpy rounds them to even)."""
    r = np.floor(x)
    return r + (x - r >= 0.5)


def _percentile(sorted_values: np.ndarray, p: float) -> float:
    """numpy's "linear" percentile of sorted values, computed as normalize.js does."""
    n = len(sorted_values)
    h = (n - 1) * min(max(p, 0.0), 100.0) / 100
    k = int(np.floor(h))
    a = float(sorted_values[k])
    if k + 1 >= n or h == k:
        return a
    return a + (h - k) * (float(sorted_values[k + 1]) - a)


def limits(values: np.ndarray, percentile: float, signed: bool) -> tuple[float, float]:
    """[lo, hi] of the finite `values` as the dashboard computes them (float32, as it keeps them).

    Signed: [-L, L] with L the percentile of |v|; else [P(100 - p), P(p)]; (0, 0) if none.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 0.0
    if signed:
        high = float(np.float32(_percentile(np.sort(np.abs(v)), percentile)))
        return -high, high
    s = np.sort(v)
    lo = _percentile(s, 100 - percentile)
    hi = _percentile(s, percentile)
    return float(np.float32(lo)), float(np.float32(hi))


def colors(values: np.ndarray, lo: Any, hi: Any, table: np.ndarray) -> np.ndarray:
    """RGB uint8 of every value (shape + (3,)) for limits lo, hi (scalars or broadcastable)."""
    v = np.asarray(values, dtype=np.float64)
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    size = len(table)
    span = hi > lo
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(span & np.isfinite(v), (v - lo) / np.where(span, hi - lo, 1), 0.5)
    index = np.where(
        span,
        np.where(t <= 0, 0, np.where(t >= 1, size - 1, _js_round(np.clip(t, 0, 1) * (size - 1)))),
        (size - 1) // 2,
    ).astype(np.intp)
    out = table[index]
    out[~np.isfinite(v)] = nonfinite_color()
    return out
