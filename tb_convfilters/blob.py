"""The per-step record: four blobs ``[header, payload, stats, checks]``.

* header: compact UTF-8 JSON (version, kind, layout, shape, dtype, optional
  ``filters``/``channels`` kept indices and ``image_shape``).
* payload: the tensor's raw bytes, little-endian, C order, exactly as logged.
* stats: float32 little-endian array ``(n_filters, len(STAT_NAMES))``.
* checks: CRC32C of the payload and of the stats, two little-endian uint32.
  TensorBoard's Rust data server loads records whose TFRecord checksum is
  wrong, so readers check these themselves. They come last so a writer can
  send the payload out while the stats and checksums are still being computed.
  Records of format 1 without this blob hold the two CRCs in the header
  (``payload_crc32c``, ``stats_crc32c``); both forms are read.

Everything here is numpy only; TensorFlow is never imported.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import math
import os
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import crc32c
import numpy as np

from tb_convfilters import layouts

FORMAT_VERSION = 1
HEADER, PAYLOAD, STATS, CHECKS = 0, 1, 2, 3
STAT_NAMES = ("norm", "mean", "std", "min", "max", "zero_frac", "nonfinite")
# |w| at or below this counts as a zero weight in a kernel's ``zero_frac``.
ZERO_EPS = 1e-6

# More axes than any layout has; also below numpy's limit on every version.
MAX_RANK = 32

# numpy dtype name -> dtype of the payload as served in .npy files.
STORABLE_DTYPES = ("float64", "float32", "float16", "bfloat16", "int8", "uint8")


def dtype_name(dtype: Any) -> str:
    """Canonical name of a numpy (or ml_dtypes) dtype, or TypeError if not storable."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in STORABLE_DTYPES:
        raise TypeError(
            f"dtype {name!r} cannot be stored; expected one of: " + ", ".join(STORABLE_DTYPES)
        )
    return name


def numpy_dtype(name: str) -> np.dtype:
    """The little-endian numpy dtype for a stored dtype name (bfloat16 needs ml_dtypes)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name).newbyteorder("<")


def make_header(
    kind: str,
    layout: str,
    shape: Sequence[int],
    dtype: str,
    *,
    stats: bool = True,
    **extra: Any,
) -> dict:
    """The header dict of one step; ``extra`` keys with value None are left out."""
    header = {
        "version": FORMAT_VERSION,
        "kind": kind,
        "layout": layout,
        "shape": [int(n) for n in shape],
        "dtype": dtype,
        "stats": list(STAT_NAMES) if stats else [],
    }
    header.update({k: v for k, v in extra.items() if v is not None})
    return header


def encode_header(header: dict) -> bytes:
    return json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")


class RecordError(ValueError):
    """A stored record that cannot be decoded (truncated, corrupt or foreign)."""


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:100] + "..."


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def crc(data: Any) -> int:
    """CRC32C of a bytes-like object (bytes, memoryview, contiguous array)."""
    return crc32c.crc32c(data)


def decode_header(data: bytes) -> dict:
    """Parses and checks a header blob; raises RecordError when it is malformed."""
    try:
        header = json.loads(bytes(data).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RecordError(f"header is not JSON: {str(e)[:100]}") from None
    if not isinstance(header, dict):
        raise RecordError("header is not a JSON object")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise RecordError(f"unsupported record version {_short(version)}")
    shape = header.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_RANK
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise RecordError(f"bad shape {_short(shape)}")
    if header.get("dtype") not in STORABLE_DTYPES:
        raise RecordError(f"bad dtype {_short(header.get('dtype'))}")
    if not isinstance(header.get("layout"), str) or len(header["layout"]) != len(shape):
        raise RecordError(f"layout {_short(header.get('layout'))} does not match shape {shape}")
    names = header.get("stats", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RecordError(f"bad stats names {_short(names)}")
    for key in ("payload_crc32c", "stats_crc32c"):
        value = header.get(key)
        if value is not None and (not isinstance(value, int) or not 0 <= value < 1 << 32):
            raise RecordError(f"bad {key} {_short(value)}")
    return header


_CHECKS = struct.Struct("<II")
CHECKS_NBYTES = _CHECKS.size


def encode_checks(payload_crc: int, stats_crc: int) -> bytes:
    return _CHECKS.pack(payload_crc, stats_crc)


def with_checks(header: dict, data: bytes) -> dict:
    """`header` plus the checksums of a checks blob (``payload_crc32c``, ``stats_crc32c``)."""
    if len(data) != CHECKS_NBYTES:
        raise RecordError(f"checks blob has {len(data)} bytes; expected {CHECKS_NBYTES}")
    payload_crc, stats_crc = _CHECKS.unpack(data)
    return {**header, "payload_crc32c": payload_crc, "stats_crc32c": stats_crc}


def read_header(read: Callable[[int], bytes], count: int) -> dict:
    """The header of a record of `count` blobs, with its checksums; `read(i)` gives blob i."""
    header = decode_header(read(HEADER))
    return with_checks(header, read(CHECKS)) if count > CHECKS else header


def decode_blobs_header(blobs: Sequence[bytes]) -> dict:
    """`read_header` of a record given as its blobs."""
    if len(blobs) <= STATS:
        raise RecordError(f"not a convfilters record ({len(blobs)} blobs, expected 3 or 4)")
    return read_header(blobs.__getitem__, len(blobs))


def stats_nbytes(header: dict) -> int:
    """Size of the stats blob of a record with `header` (known before the stats are)."""
    names = header.get("stats") or []
    if not names:
        return 0
    shape = header["shape"]
    return math.prod(shape[ax] for ax in layouts.filter_axes(header["layout"])) * len(names) * 4


def payload_nbytes(header: dict) -> int:
    return (
        math.prod(header["shape"])
        * np.dtype("uint16" if header["dtype"] == "bfloat16" else header["dtype"]).itemsize
    )


def _check_crc(header: dict, key: str, data: Any, what: str) -> None:
    stored = header.get(key)
    if stored is not None and crc(data) != stored:
        raise RecordError(
            f"{what} checksum mismatch (stored {stored:#010x}, computed {crc(data):#010x}): "
            "the record is corrupt"
        )


def check_payload(header: dict, payload: bytes) -> None:
    """Raises RecordError unless `payload` has the header's size (and checksum, if stored)."""
    expected = payload_nbytes(header)
    if len(payload) != expected:
        raise RecordError(
            f"payload has {len(payload)} bytes but header {header['shape']} "
            f"{header['dtype']} needs {expected}"
        )
    _check_crc(header, "payload_crc32c", payload, "payload")


def decode_array(header: dict, payload: bytes) -> np.ndarray:
    """The logged array, bit-exact (bfloat16 comes back as ml_dtypes.bfloat16)."""
    check_payload(header, payload)
    return np.frombuffer(payload, dtype=numpy_dtype(header["dtype"])).reshape(header["shape"])


def npy_parts(header: dict, payload: bytes) -> tuple[bytes, bytes]:
    """A .npy file of the payload as (its .npy header, its data), the payload not copied.

    bfloat16 has no .npy type, so it is widened to float32, which is exact.
    """
    check_payload(header, payload)
    return _npy_parts(header, payload)


def _npy_parts(header: dict, payload: bytes) -> tuple[bytes, bytes]:
    dtype = header["dtype"]
    if dtype == "bfloat16":
        wide = np.frombuffer(payload, dtype="<u2").astype("<u4") << 16
        payload, dtype = wide.tobytes(), "float32"
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out,
        {
            "descr": np.dtype(dtype).newbyteorder("<").str,
            "fortran_order": False,
            "shape": tuple(header["shape"]),
        },
    )
    return out.getvalue(), payload


def npy_bytes(header: dict, payload: bytes) -> bytes:
    """`npy_parts` as one bytes object."""
    return b"".join(npy_parts(header, payload))


def cap_letters(layout: str) -> tuple[str | None, str | None]:
    """Axis letters capped by ``max_filters`` and ``max_channels`` in `layout` (or None)."""
    filter_letter = next((c for c in "OC" if c in layout), "I" if "M" in layout else None)
    channel_letter = "I" if "O" in layout else None
    return filter_letter, channel_letter


def view_header(header: dict, max_filters: int | None, max_channels: int | None) -> dict:
    """The header of the first `max_filters` filters / `max_channels` channels of a record.

    Kept indices compose with those capped at write time (``filters``/``channels``);
    ``full_shape`` holds the stored shape when the view is smaller. Filters are the
    images (axis N) of ``pattern``/``projection`` records. Raises ValueError when a
    cap does not apply to the layout, RecordError when stored indices are corrupt.
    """
    out = dict(header)
    layout, shape = header["layout"], list(header["shape"])
    caps = (max_filters, max_channels)
    names, keys = ("max_filters", "max_channels"), ("filters", "channels")
    images = header.get("kind") in ("pattern", "projection") and "N" in layout
    letters = ("N", None) if images else cap_letters(layout)
    for cap, name, key, letter in zip(caps, names, keys, letters, strict=True):
        if cap is None:
            continue
        if letter is None:
            raise ValueError(f"{name} does not apply to layout {layout!r}")
        axis = layout.index(letter)
        kept = header.get(key, list(range(shape[axis])))
        if not isinstance(kept, list) or len(kept) != shape[axis]:
            raise RecordError(f"{key} {_short(kept)} does not match shape {header['shape']}")
        if cap < shape[axis]:
            shape[axis] = cap
            out[key] = kept[:cap]
    if shape != header["shape"]:
        out["shape"] = shape
        out["full_shape"] = header["shape"]
        out.pop("payload_crc32c", None)  # it describes the stored payload, not the view
    return out


def view_npy_parts(header: dict, view: dict, payload: bytes) -> tuple[bytes, bytes]:
    """`npy_parts` of `view` (from `view_header`) cut out of the stored `payload`.

    The stored payload is checked, once.
    """
    check_payload(header, payload)
    if view["shape"] != header["shape"]:
        itemsize = 2 if header["dtype"] == "bfloat16" else np.dtype(header["dtype"]).itemsize
        a = np.frombuffer(payload, dtype=f"<u{itemsize}").reshape(header["shape"])
        payload = np.ascontiguousarray(a[tuple(slice(0, n) for n in view["shape"])]).tobytes()
    return _npy_parts(view, payload)


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
    if sweep.m.nbytes >= PARALLEL_MIN_BYTES:
        in_parallel(sweep.take, sweep.take)
    else:
        sweep.take()
    return sweep.result()


def stats_and_crc(
    data: np.ndarray,
    layout: str,
    kind: str,
    *,
    stats: bool = True,
    meanwhile: Callable[[], Any] | None = None,
) -> tuple[np.ndarray, int]:
    """`filter_stats` (empty when not `stats`) and the CRC32C of C-contiguous `data`.

    `meanwhile` (e.g. writing the payload out) runs on this thread while a worker
    thread checksums; then both take blocks of the stats until none is left.
    """
    a = np.asarray(data)
    sweep = _Sweep(a, layout, kind) if stats else None

    def there() -> int:
        value = crc(a)
        if sweep is not None:
            sweep.take()
        return value

    def here() -> None:
        if meanwhile is not None:
            meanwhile()
        if sweep is not None:
            sweep.take()

    if a.nbytes < PARALLEL_MIN_BYTES:  # small: both on this thread, in turn
        crc_value = there()
        here()
    else:
        crc_value, _ = in_parallel(there, here)
    if sweep is None:
        return np.zeros((0, 0), dtype=np.float32), crc_value
    return sweep.result(), crc_value


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


# Arrays of at least this many bytes are reduced, cast and checksummed on two threads,
# in this many row chunks (enough for the two threads to finish close together).
PARALLEL_MIN_BYTES = 1 << 20
_CHUNKS = 8
_CHUNK_BYTES = 2 << 20
_WORKER = "tb_convfilters"
_pools: dict[int, ThreadPoolExecutor] = {}  # by the nice value of the threads they serve
_pools_lock = threading.Lock()
_pool_pid = 0


def _nice() -> int:
    """This thread's nice value (Linux sets it per thread; elsewhere 0)."""
    if not sys.platform.startswith("linux"):  # there, a thread id is no process id
        return 0
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def set_nice(nice: int) -> None:
    """Raises this thread's nice value to `nice` (Linux; never lowers it, elsewhere a no-op)."""
    if nice > _nice():
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:  # not allowed here: run at the priority we have
            pass


def _worker() -> ThreadPoolExecutor:
    """The worker for this thread: a background writer's low-priority thread gets a
    low-priority worker, so training threads come first on both."""
    global _pools, _pool_pid
    nice = _nice()
    with _pools_lock:
        if _pool_pid != os.getpid():  # a forked child has no worker thread
            _pools, _pool_pid = {}, os.getpid()
        pool = _pools.get(nice)
        if pool is None:
            pool = _pools[nice] = ThreadPoolExecutor(
                1, thread_name_prefix=_WORKER, initializer=set_nice, initargs=(nice,)
            )
    return pool


def in_parallel(first: Callable[[], Any], second: Callable[[], Any]) -> tuple[Any, Any]:
    """Runs `first` on a worker thread and `second` here (numpy releases the GIL).

    `first` must not call this itself; on the worker thread both run in turn.
    """
    if threading.current_thread().name.startswith(_WORKER):
        return first(), second()
    future = _worker().submit(first)
    try:
        second_result = second()
    finally:
        first_result = future.result()
    return first_result, second_result


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


def _block_reduce(
    m: np.ndarray, red: int, zeros: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per filter: sum, sum of squares, min, max and count of ``|v| <= ZERO_EPS`` (float64)."""
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


def encode_stats(stats: np.ndarray) -> bytes:
    return np.ascontiguousarray(stats, dtype="<f4").tobytes()


def decode_stats(header: dict, data: bytes) -> np.ndarray:
    """The stats matrix of one step; shape ``(n_filters, len(header['stats']))``."""
    names = header.get("stats") or []
    if not names:
        return np.zeros((0, 0), dtype=np.float32)
    if not isinstance(names, list):
        raise RecordError(f"bad stats names {_short(names)}")
    if len(data) % (4 * len(names)):
        raise RecordError(f"stats blob of {len(data)} bytes does not fit {len(names)} columns")
    _check_crc(header, "stats_crc32c", data, "stats")
    return np.frombuffer(data, dtype="<f4").reshape(-1, len(names))
