"""The per-filter statistics: one sweep over an array's cache-sized blocks computes every
statistic of ``encoding.STAT_NAMES``; arrays of at least ``parallel.PARALLEL_MIN_BYTES``
are split between the calling thread and the worker thread (``parallel``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import threading
from typing import Any

import numpy as np

from tb_convfilters._record import layouts, parallel
from tb_convfilters._record.encoding import STAT_NAMES, ZERO_EPS, crc


def _as_filter_matrix(a: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """A 2-D view (or copy) of `a` with one axis per filter, and that axis."""
    nf = math.prod(a.shape[ax] for ax in axes)
    k = len(axes)
    if axes == tuple(range(a.ndim - k, a.ndim)):
        return a.reshape(-1, nf), 0
    if axes == tuple(range(k)):
        return a.reshape(nf, -1), 1
    return np.moveaxis(a, axes, range(k)).reshape(nf, -1), 1


def filter_stats(data: np.ndarray, layout: str, kind: str) -> np.ndarray:
    """Per-filter statistics, float32 ``(n_filters, len(STAT_NAMES))``.

    Non-finite values are counted in ``nonfinite`` (a fraction) and left out of
    the other figures. ``zero_frac`` is, for kernels, the fraction of weights
    with ``|w| <= ZERO_EPS``; for activations, the fraction of positions that
    are ``<= 0`` for every sample (dead units).

    One sweep over cache-sized blocks does every reduction (float32 partial sums
    within a block, float64 across blocks); filters holding NaN/Inf, or whose
    spread is tiny against their mean (where float32 sums lose the std), are
    then recomputed exactly in float64.
    """
    sweep = _Sweep(np.asarray(data), layout, kind)
    if sweep.m.nbytes >= parallel.PARALLEL_MIN_BYTES:
        parallel.in_parallel(sweep.take, sweep.take)
    else:
        sweep.take()
    return sweep.result()


class Completion:
    """The work that completes a record: the CRC32C of C-contiguous `data` and, when
    `stats`, its `filter_stats`, in pieces two threads share.

    One thread runs `checksum` (the CRC, then stats blocks), the other does its own work
    (e.g. writing the payload out) and then `help` (stats blocks until none is left):
    ``parallel.both(c.checksum, ..., split=c.large)``; then `result`.
    """

    def __init__(self, data: np.ndarray, layout: str, kind: str, *, stats: bool = True):
        self.array = np.asarray(data)
        self.large = self.array.nbytes >= parallel.PARALLEL_MIN_BYTES
        self._sweep = _Sweep(self.array, layout, kind) if stats else None
        self._crc: int | None = None

    def checksum(self) -> None:
        self._crc = crc(self.array)
        self.help()

    def help(self) -> None:
        if self._sweep is not None:
            self._sweep.take()

    def result(self) -> tuple[np.ndarray, int]:
        """(stats, payload CRC) once `checksum` has run and no block is left."""
        if self._sweep is None:
            return np.zeros((0, 0), dtype=np.float32), self._crc
        return self._sweep.result(), self._crc


class _Sweep:
    """The per-filter reductions of one array, as row chunks any thread may take."""

    def __init__(self, a: np.ndarray, layout: str, kind: str):
        self.a, self.kind = a, kind
        self.axes = layouts.filter_axes(layout)
        self.m, self.red = _as_filter_matrix(a, self.axes)
        if self.red == 0 and self.m.shape[1] < 64:  # few filters: a contiguous row each is faster
            self.m, self.red = np.ascontiguousarray(self.m.T), 1
        rows = self.m.shape[0]
        n = max(1, min(_CHUNKS, rows, self.m.nbytes // _CHUNK_BYTES))
        self.bounds = [rows * i // n for i in range(n + 1)]
        self.parts: list[tuple | None] = [None] * n
        self._claim = itertools.count()  # next() on it is atomic under the GIL

    def take(self) -> None:
        """Reduces chunks until none is left unclaimed."""
        n = len(self.parts)
        while (i := next(self._claim)) < n:
            chunk = self.m[self.bounds[i] : self.bounds[i + 1]]
            with np.errstate(all="ignore"):  # per thread; NaN/Inf are counted, not warned about
                self.parts[i] = _block_reduce(chunk, self.red, zeros=self.kind != "activation")

    def result(self) -> np.ndarray:
        m, red = self.m, self.red
        n = m.shape[red]
        nf = m.shape[1 - red]
        out = np.zeros((nf, len(STAT_NAMES)), dtype=np.float64)
        if n == 0:
            return out.astype(np.float32)
        parts = [p for p in self.parts if p is not None]
        if len(parts) == 1:
            total, sq, lo, hi, zeros = parts[0]
        elif red == 1:  # rows are filters: chunks hold different filters
            total, sq, lo, hi, zeros = (np.concatenate(c) for c in zip(*parts, strict=True))
        else:
            total, sq, lo, hi, zeros = parts[0]
            for t2, s2, lo2, hi2, z2 in parts[1:]:
                total, sq, zeros = total + t2, sq + s2, zeros + z2
                lo, hi = np.minimum(lo, lo2), np.maximum(hi, hi2)
        with np.errstate(all="ignore"):
            count = np.full(nf, float(n))
            mean = total / n
            var = sq / n - mean * mean
            exact = ~(np.isfinite(total) & np.isfinite(sq)) | (var < 1e-3 * mean * mean)
            if exact.any():
                _exact_stats(m, red, np.flatnonzero(exact), total, sq, lo, hi, count)
            safe = np.maximum(count, 1)
            mean = total / safe
            out[:, 0] = np.sqrt(sq)
            out[:, 1] = mean
            out[:, 2] = np.sqrt(np.maximum(sq / safe - mean * mean, 0.0))
            out[:, 3] = np.where(count > 0, lo, np.nan)
            out[:, 4] = np.where(count > 0, hi, np.nan)
            out[:, 6] = 1.0 - count / n
            if self.kind == "activation":
                out[:, 5] = _dead_fraction(self.a, self.axes[0])
            else:
                out[:, 5] = zeros / n
        return out.astype(np.float32)


# Large arrays are reduced in this many row chunks (enough for the two threads to finish
# close together), of about this many bytes.
_CHUNKS = 8
_CHUNK_BYTES = 2 << 20

# Values per block: small enough that the block stays in L2 cache while several
# reductions read it. Float32 partial sums run over <= 255 rows (or pairwise
# along a row), which keeps them within ~1e-6 of float64; uint8 counts of <= 255
# rows cannot overflow.
_BLOCK = 1 << 18


@functools.cache
def _float16_table() -> np.ndarray:
    """float32 value of every float16 bit pattern (numpy's own conversion, so exact)."""
    return np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)


_local = threading.local()


def _scratch(name: str, n: int, dtype: Any) -> np.ndarray:
    """A per-thread scratch array of `n` items, reused: fresh memory costs page faults."""
    buffers = _local.__dict__.setdefault("buffers", {})
    key = (name, np.dtype(dtype))
    buffer = buffers.get(key)
    if buffer is None or buffer.size < n:
        buffer = buffers[key] = np.empty(max(n, _BLOCK), dtype)
    return buffer[:n]


@functools.cache
def _fused() -> Any:
    """The compiled one-pass reductions (``stats_compiled``), or None without numba, when numba
    fails to load (logged at debug level, once) or when ``TB_CONVFILTERS_NUMBA=0``."""
    if os.environ.get("TB_CONVFILTERS_NUMBA", "1") == "0":
        return None
    try:
        from tb_convfilters._record import stats_compiled
    except ImportError:
        return None
    except Exception as e:  # numba installed but broken: numpy does the same work
        logging.getLogger(__name__).debug("tb_convfilters: numba unusable, using numpy: %r", e)
        return None
    return stats_compiled


def _block_reduce(
    m: np.ndarray, red: int, zeros: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per filter: sum, sum of squares, min, max and count of ``|v| <= ZERO_EPS`` (float64)."""
    if m.dtype in (np.float32, np.float64) and (compiled := _fused()) is not None:
        return compiled.reduce(m, red, zeros, ZERO_EPS)
    nf, width = m.shape[1 - red], m.shape[1]
    work = np.float64 if m.dtype == np.float64 else np.float32
    if red == 0:
        rows = max(1, min(255, _BLOCK // max(width, 1)))
        total, sq, small = np.zeros(nf), np.zeros(nf), np.zeros(nf, np.int64)
        lo, hi = np.full(nf, np.inf, work), np.full(nf, -np.inf, work)
    else:
        rows = max(1, _BLOCK // max(width, 1))
        total, sq = np.empty(nf), np.empty(nf)
        lo, hi, small = np.empty(nf, work), np.empty(nf, work), np.empty(nf, work)
    n = min(rows, m.shape[0]) * width
    cast = _scratch("cast", n, work) if m.dtype != work else None
    scratch = _scratch("abs", n, work)
    flags = _scratch("flags", n, bool)
    for start in range(0, m.shape[0], rows):
        b = m[start : start + rows]
        if cast is not None:  # float16, bfloat16, int8, uint8: widen one block at a time
            wide = cast[: b.size].reshape(b.shape)
            if b.dtype == np.float16 and work == np.float32:  # a table look-up is 1.6x faster
                np.take(_float16_table(), b.view(np.uint16), out=wide)
            else:
                np.copyto(wide, b, casting="unsafe")
            b = wide
        if zeros:
            ab = np.abs(b, out=scratch[: b.size].reshape(b.shape))
        if red == 0:
            total += np.add.reduce(b, axis=0)
            sq += np.einsum("ij,ij->j", b, b)
            np.minimum(lo, np.minimum.reduce(b, axis=0), out=lo)
            np.maximum(hi, np.maximum.reduce(b, axis=0), out=hi)
            if zeros:
                near = np.less_equal(ab, ZERO_EPS, out=flags[: b.size].reshape(b.shape))
                small += np.add.reduce(near.view(np.uint8), axis=0, dtype=np.uint8)
        else:
            sl = slice(start, start + b.shape[0])
            total[sl] = np.add.reduce(b, axis=1)
            sq[sl] = np.einsum("ij,ij->i", b, b)
            lo[sl] = np.minimum.reduce(b, axis=1)
            hi[sl] = np.maximum.reduce(b, axis=1)
            if zeros:
                small[sl] = np.minimum.reduce(ab, axis=1)
    if red == 1 and zeros:  # count only in rows whose smallest |v| is that small (or NaN)
        idx = np.flatnonzero(~(small > ZERO_EPS))
        small = np.zeros(nf)
        if len(idx):
            small[idx] = np.count_nonzero(np.abs(m[idx]) <= ZERO_EPS, axis=1)
    return total, sq, lo.astype(np.float64), hi.astype(np.float64), small.astype(np.float64)


def _exact_stats(
    m: np.ndarray,
    red: int,
    idx: np.ndarray,
    total: np.ndarray,
    sq: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    count: np.ndarray,
) -> None:
    """Recomputes filters `idx` in float64 over their finite values only (in place)."""
    sub = np.take(m, idx, axis=1 - red).astype(np.float64)
    ok = np.isfinite(sub)
    clean = np.where(ok, sub, 0.0)
    total[idx] = clean.sum(axis=red)
    sq[idx] = (clean * clean).sum(axis=red)
    lo[idx] = np.where(ok, sub, np.inf).min(axis=red)
    hi[idx] = np.where(ok, sub, -np.inf).max(axis=red)
    count[idx] = ok.sum(axis=red)


def _dead_fraction(a: np.ndarray, channel_axis: int) -> np.ndarray:
    """Per channel: fraction of positions that are <= 0 for every sample (axis 0)."""
    per_pos = np.moveaxis(a, channel_axis, -1)
    per_pos = per_pos.reshape(per_pos.shape[0], -1, per_pos.shape[-1])
    return np.all(~(per_pos > 0), axis=0).mean(axis=0)
