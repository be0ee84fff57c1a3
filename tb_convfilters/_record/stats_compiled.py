"""The per-filter reductions of ``stats`` as one compiled pass (numba, optional).

numpy needs five passes per block for sum, sum of squares, min, max and the
near-zero count, and holds the GIL between them, so two threads barely beat
one. These loops read each value once, accumulate in float64 and release the
GIL: ~2x faster on one thread, and two threads really run at once. Installed
with ``pip install "tb-convfilters[fast]"``; without numba ``stats`` uses numpy.
The results match numpy's within float32 rounding (checked in the tests).

The compiled code is cached beside this file or in the user's cache directory.
Where neither is writable (a read-only install without ``HOME`` or
``NUMBA_CACHE_DIR``), numba refuses ``cache=True`` with a RuntimeError at import
(numba issues #4908, #5566): the loops are then compiled without a cache, once
per process (a debug-level log line says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

logger = logging.getLogger(__name__)


def _compiled(fn: Callable) -> Any:
    """`fn` compiled without the GIL, cached on disk where numba can write a cache."""
    try:
        return njit(nogil=True, cache=True)(fn)
    except RuntimeError as e:  # no writable cache directory
        logger.debug("tb_convfilters._record.stats_compiled: compiling without a cache: %s", e)
        return njit(nogil=True)(fn)


@_compiled
def _columns(m, eps, zeros, total, sq, lo, hi, small):  # pragma: no cover - compiled
    """Adds rows of `m` into per-column figures (filters are columns)."""
    rows, nf = m.shape
    for i in range(rows):
        for j in range(nf):
            v = m[i, j]
            total[j] += v
            sq[j] += v * v
            lo[j] = min(lo[j], v)
            hi[j] = max(hi[j], v)
            if zeros:
                small[j] += abs(v) <= eps


@_compiled
def _rows(m, eps, zeros, total, sq, lo, hi, small):  # pragma: no cover - compiled
    """Per-row figures of `m` (filters are rows)."""
    rows, width = m.shape
    for i in range(rows):
        t = 0.0
        s = 0.0
        a = np.inf
        b = -np.inf
        n = 0
        for j in range(width):
            v = m[i, j]
            t += v
            s += v * v
            a = min(a, v)
            b = max(b, v)
            if zeros:
                n += abs(v) <= eps
        total[i], sq[i], lo[i], hi[i], small[i] = t, s, a, b, n


def reduce(
    m: np.ndarray, red: int, zeros: bool, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per filter of float32/float64 `m`: sum, sum of squares, min, max and count of
    ``|v| <= eps`` (float64; the count 0 unless `zeros`). Filters are `m`'s columns
    when `red` is 0, its rows when 1. NaN is skipped by min and max, and makes the
    sums NaN (as numpy's do; ``stats`` recomputes such filters exactly)."""
    nf = m.shape[1 - red]
    total, sq, small = np.zeros(nf), np.zeros(nf), np.zeros(nf)
    lo, hi = np.full(nf, np.inf), np.full(nf, -np.inf)
    (_columns if red == 0 else _rows)(m, m.dtype.type(eps), zeros, total, sq, lo, hi, small)
    return total, sq, lo, hi, small
