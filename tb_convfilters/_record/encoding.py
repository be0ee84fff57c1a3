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

import io
import json
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any

import crc32c
import numpy as np

from tb_convfilters._record import layouts

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


_CRC32C_POLY = 0x82F63B78  # reflected


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC32C polynomial (reflected bit order), as in zlib."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC32C_POLY if b & 1 else b >> 1


_X2N = [1 << 30]  # x^(2^k) modulo the polynomial
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def crc_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of ``a + b`` from ``crc(a)``, ``crc(b)`` and ``len(b)`` (zlib's crc32_combine)."""
    p, k = 1 << 31, 3
    while len2:
        if len2 & 1:
            p = _multmodp(_X2N[k & 31], p)
        len2 >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


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
    if stored is not None:
        check_crc(stored, crc(data), what)


def check_crc(stored: int, computed: int, what: str) -> None:
    """Raises RecordError naming `what` unless the two CRC32Cs are equal."""
    if computed != stored:
        raise RecordError(
            f"{what} checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): "
            "the record is corrupt"
        )


class Chunks(tuple):
    """A payload as bytes objects to send in turn, its checksum already verified."""


def check_payload(header: dict, payload: bytes) -> None:
    """Raises RecordError unless `payload` has the header's size (and checksum, if stored)."""
    _check_size(header, len(payload))
    _check_crc(header, "payload_crc32c", payload, "payload")


def _check_size(header: dict, nbytes: int) -> None:
    expected = payload_nbytes(header)
    if nbytes != expected:
        raise RecordError(
            f"payload has {nbytes} bytes but header {header['shape']} "
            f"{header['dtype']} needs {expected}"
        )


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


def view_npy_parts(
    header: dict, view: dict, payload: bytes | Chunks | np.ndarray
) -> tuple[Any, ...]:
    """`npy_parts` of `view` (from `view_header`) cut out of the stored `payload`.

    The stored payload is checked, once: `Chunks` were checksummed when read, and
    are sent as they are when the whole payload is served as stored; an array is
    the view already cut out of a checked payload (`cut_view`). The data part may
    be an array (bytes-like), not bytes.
    """
    if isinstance(payload, np.ndarray):
        if list(payload.shape) != view["shape"]:
            raise RecordError(f"view of shape {list(payload.shape)}; expected {view['shape']}")
        return _npy_parts(view, payload)
    if isinstance(payload, Chunks):
        _check_size(header, sum(len(chunk) for chunk in payload))
        if view["shape"] == header["shape"] and header["dtype"] != "bfloat16":
            return (_npy_parts(view, b"")[0], *payload)
        payload = b"".join(payload)
    else:
        check_payload(header, payload)
    if view["shape"] != header["shape"]:
        itemsize = 2 if header["dtype"] == "bfloat16" else np.dtype(header["dtype"]).itemsize
        a = np.frombuffer(payload, dtype=f"<u{itemsize}").reshape(header["shape"])
        payload = np.ascontiguousarray(a[tuple(slice(0, n) for n in view["shape"])])
    return _npy_parts(view, payload)


def cut_view(
    read: Callable[[int, int], bytes], header: dict, view: dict, window: int
) -> np.ndarray:
    """The elements of `view` (from `view_header`) of a stored payload, read in order.

    ``read(offset, size)`` returns bytes of the payload; every byte is read once and
    in order (the caller checksums them), about `window` bytes at a time, so memory
    holds the view and one read. Elements come as unsigned integers of their size.
    """
    dtype = np.dtype(f"<u{numpy_dtype(header['dtype']).itemsize}")
    out = np.empty(tuple(view["shape"]), dtype)
    _cut(read, 0, tuple(header["shape"]), tuple(view["shape"]), out, dtype, max(window, 1))
    return out


def _cut(
    read: Callable,
    pos: int,
    shape: tuple,
    want: tuple,
    out: np.ndarray,
    dtype: np.dtype,
    window: int,
) -> None:
    """`cut_view` of the C-order array of `shape` at byte `pos`: its leading `want` block."""
    row = math.prod(shape[1:]) * dtype.itemsize  # bytes of one index of the first axis
    if row == 0 or shape[0] == 0:
        return
    if row <= window:  # whole rows per read
        per = max(1, window // row)
        for r in range(0, shape[0], per):
            n = min(per, shape[0] - r)
            data = read(pos + r * row, n * row)
            keep = min(n, want[0] - r)
            if keep > 0:
                rows = np.frombuffer(data, dtype).reshape((n, *shape[1:]))
                out[r : r + keep] = rows[(slice(0, keep), *(slice(0, k) for k in want[1:]))]
                del rows
            del data  # before the next read: one window held at a time
        return
    for r in range(shape[0]):  # a row bigger than a read: each row on its own
        if r < want[0]:
            _cut(read, pos + r * row, shape[1:], want[1:], out[r], dtype, window)
        else:  # read only to be checksummed
            for offset in range(0, row, window):
                read(pos + r * row + offset, min(window, row - offset))


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
