"""Casting an array to its stored dtype, with a warning when values do not fit, and a
fast test for NaN/Inf on the bits."""

from __future__ import annotations

import warnings

import numpy as np

from tb_convfilters._record import parallel


def _convert(a: np.ndarray, want: np.dtype, target: str) -> np.ndarray:
    """`a` as `want`; warns once per tensor when values overflow to inf or do not fit."""
    out, message = _converted(a, want, target)
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=4)
    return out


def _converted(a: np.ndarray, want: np.dtype, target: str) -> tuple[np.ndarray, str | None]:
    """`a` as `want`, and a message when values overflow to inf or do not fit."""
    bad, what = 0, ""
    with np.errstate(all="ignore"):
        if want.kind in "iu" and a.dtype.kind != "b":
            info = np.iinfo(want)
            bad = int((~np.isfinite(a) | (a < info.min) | (a > info.max)).sum())
            what = f"values are NaN, inf or outside {info.min}..{info.max} for dtype={target!r}"
        out = _cast(a, want)
        if want.kind not in "iu" and a.dtype.kind in "fiuV" and not _all_finite(out, target):
            bad = int((np.isinf(out) & np.isfinite(a)).sum())
            what = f"finite values overflowed to inf when converted to {target}"
    return out, f"data: {bad} {what}" if bad else None


def _cast(a: np.ndarray, want: np.dtype) -> np.ndarray:
    """``a.astype(want)``; large contiguous arrays are cast in two halves at once."""
    if a.nbytes < parallel.PARALLEL_MIN_BYTES or not a.flags.c_contiguous:
        return a.astype(want)
    out = np.empty(a.shape, want)
    parallel.copyto(out, a, casting="unsafe")
    return out


# Exponent bits all ones (NaN or Inf) once the sign bit is shifted out.
_EXPONENT_ONES = {
    "float16": 0xF800,
    "bfloat16": 0xFF00,
    "float32": 0xFF000000,
    "float64": 0xFFE0000000000000,
}


def _all_finite(x: np.ndarray, dtype: str) -> bool:
    """True when `x` has no NaN/Inf, tested on the bits (fast for float16), block by block."""
    limit = _EXPONENT_ONES.get(dtype)
    if limit is None or not x.flags.c_contiguous:
        return False  # unknown: the caller checks exactly
    bits = x.reshape(-1).view(f"u{x.dtype.itemsize}")
    scratch = np.empty(min(bits.size, 1 << 16), bits.dtype)
    for start in range(0, bits.size, scratch.size):
        block = bits[start : start + scratch.size]
        if np.left_shift(block, 1, out=scratch[: block.size]).max() >= limit:
            return False
    return True
