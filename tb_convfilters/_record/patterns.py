"""A stack of pattern or projection images, checked (shape, dtype, values in [0, 1], one
filter index per image) and made into a record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tb_convfilters._record.record import Record, make_record

PATTERN_KINDS = ("pattern", "projection")


def _pattern_options(
    shape: Sequence[int | None],
    kind: str,
    filters: Sequence[int] | None,
    dtype: str | None,
    max_bytes: int | None,
) -> dict:
    """`make_record` options for an image stack of `shape`; checks what the shape shows."""
    if kind not in PATTERN_KINDS:
        raise ValueError(f"kind={kind!r} must be one of: {', '.join(PATTERN_KINDS)}")
    if len(shape) != 4 or shape[-1] not in (1, 3, None):
        raise ValueError(
            f"images has shape {tuple(shape)}; expected (n, height, width, channels) with "
            "1 (grey) or 3 (RGB) channels"
        )
    if dtype is not None and dtype not in ("float64", "float32", "float16", "bfloat16"):
        raise ValueError(
            f"dtype={dtype!r} cannot hold images in [0, 1]; use float32, float16 or bfloat16"
        )
    extra = None
    if filters is not None:
        try:
            indices = [int(i) for i in filters]
        except (TypeError, ValueError):
            raise TypeError(f"filters={filters!r} must be a list of filter indices") from None
        if shape[0] is not None and len(indices) != shape[0]:
            raise ValueError(
                f"filters has {len(indices)} entries but images has {shape[0]}; "
                "expected one filter index per image"
            )
        if min(indices, default=0) < 0:
            raise ValueError(f"filters={indices} has negative entries; expected indices >= 0")
        extra = {"filters": indices}
    return dict(
        kind=kind, layout="NHWC", dtype=dtype, max_bytes=max_bytes, stats=False, extra=extra
    )


def _check_pattern_values(images: np.ndarray) -> None:
    if images.dtype.kind != "f" and images.dtype.name != "bfloat16":
        raise TypeError(f"images has dtype {images.dtype.name!r}; expected floats in [0, 1]")
    if images.size == 0:
        return  # make_record says what is wrong
    lo, hi = float(np.min(images)), float(np.max(images))
    if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
        raise ValueError(f"images has values from {lo} to {hi}; expected floats in [0, 1]")


def pattern_record(
    images: Any,
    *,
    kind: str = "pattern",
    filters: Sequence[int] | None = None,
    dtype: str | None = None,
    max_bytes: int | None = None,
) -> Record:
    """The record of an image stack ``(n, h, w, c)`` in [0, 1] (see `patterns_pb`)."""
    a = np.asarray(images)
    options = _pattern_options(a.shape, kind, filters, dtype, max_bytes)
    _check_pattern_values(a)
    return make_record(a, **options)
