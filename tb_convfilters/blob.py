"""The per-step record: three blobs ``[header, payload, stats]``.

* header: compact UTF-8 JSON (version, kind, layout, shape, dtype, optional
  ``filters``/``channels`` kept indices and ``image_shape``).
* payload: the tensor's raw bytes, little-endian, C order, exactly as logged.
* stats: float32 little-endian array ``(n_filters, len(STAT_NAMES))``.

Everything here is numpy only; TensorFlow is never imported.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tb_convfilters import layouts

FORMAT_VERSION = 1
HEADER, PAYLOAD, STATS = 0, 1, 2
STAT_NAMES = ("norm", "mean", "std", "min", "max", "zero_frac", "nonfinite")
# |w| at or below this counts as a zero weight in a kernel's ``zero_frac``.
ZERO_EPS = 1e-6

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


def decode_header(data: bytes) -> dict:
    """Parses and checks a header blob; raises RecordError when it is malformed."""
    try:
        header = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise RecordError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise RecordError("header is not a JSON object")
    version = header.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RecordError(f"unsupported record version {version!r}")
    shape = header.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise RecordError(f"bad shape {shape!r}")
    if header.get("dtype") not in STORABLE_DTYPES:
        raise RecordError(f"bad dtype {header.get('dtype')!r}")
    if not isinstance(header.get("layout"), str) or len(header["layout"]) != len(shape):
        raise RecordError(f"layout {header.get('layout')!r} does not match shape {shape}")
    return header


def payload_nbytes(header: dict) -> int:
    return (
        math.prod(header["shape"])
        * np.dtype("uint16" if header["dtype"] == "bfloat16" else header["dtype"]).itemsize
    )


def check_payload(header: dict, payload: bytes) -> None:
    expected = payload_nbytes(header)
    if len(payload) != expected:
        raise RecordError(
            f"payload has {len(payload)} bytes but header {header['shape']} "
            f"{header['dtype']} needs {expected}"
        )


def decode_array(header: dict, payload: bytes) -> np.ndarray:
    """The logged array, bit-exact (bfloat16 comes back as ml_dtypes.bfloat16)."""
    check_payload(header, payload)
    return np.frombuffer(payload, dtype=numpy_dtype(header["dtype"])).reshape(header["shape"])


def npy_bytes(header: dict, payload: bytes) -> bytes:
    """A .npy file of the payload without decoding it.

    bfloat16 has no .npy type, so it is widened to float32, which is exact.
    """
    check_payload(header, payload)
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
    out.write(payload)
    return out.getvalue()


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
    """
    a = np.asarray(data)
    if a.dtype != np.float64:
        a = a.astype(np.float32, copy=False)
    axes = layouts.filter_axes(layout)
    m, red = _as_filter_matrix(a, axes)
    n = m.shape[red]
    nf = m.shape[1 - red]
    out = np.zeros((nf, len(STAT_NAMES)), dtype=np.float64)
    if n == 0:
        return out.astype(np.float32)
    with np.errstate(all="ignore"):
        total = m.sum(axis=red, dtype=np.float64)
        sq = np.einsum("ij,ij->j" if red == 0 else "ij,ij->i", m, m, dtype=np.float64)
        finite = np.isfinite(total) & np.isfinite(sq)
        count = np.full(nf, n, dtype=np.float64)
        if finite.all():
            lo, hi = m.min(axis=red), m.max(axis=red)
        else:  # mask non-finite values out (slow path, only when they exist)
            ok = np.isfinite(m)
            count = ok.sum(axis=red).astype(np.float64)
            clean = np.where(ok, m, 0)
            total = clean.sum(axis=red, dtype=np.float64)
            sq = (clean.astype(np.float64) ** 2).sum(axis=red)
            lo = np.where(ok, m, np.inf).min(axis=red)
            hi = np.where(ok, m, -np.inf).max(axis=red)
            out[:, 6] = 1.0 - count / n
        safe = np.maximum(count, 1)
        mean = total / safe
        out[:, 0] = np.sqrt(sq)
        out[:, 1] = mean
        out[:, 2] = np.sqrt(np.maximum(sq / safe - mean * mean, 0.0))
        out[:, 3] = np.where(count > 0, lo, np.nan)
        out[:, 4] = np.where(count > 0, hi, np.nan)
        if kind == "activation":
            out[:, 5] = _dead_fraction(a, axes[0])
        else:
            out[:, 5] = (np.abs(m) <= ZERO_EPS).mean(axis=red)
    return out.astype(np.float32)


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
    if len(data) % (4 * len(names)):
        raise RecordError(f"stats blob of {len(data)} bytes does not fit {len(names)} columns")
    return np.frombuffer(data, dtype="<f4").reshape(-1, len(names))
