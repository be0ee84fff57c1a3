"""Checking a user's tensor and turning it into one step's record (numpy only)."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from tb_convfilters import blob, layouts

# Refuse single tensors above this many stored bytes unless the caller raises it.
DEFAULT_MAX_BYTES = 1 << 30


class Record(NamedTuple):
    """One step ready to write: a C-contiguous little-endian array, its header and stats."""

    array: np.ndarray
    header: dict
    stats: np.ndarray

    def blobs_without_payload(self) -> tuple[bytes, bytes]:
        return blob.encode_header(self.header), blob.encode_stats(self.stats)

    def blobs(self) -> list[bytes]:
        header, stats = self.blobs_without_payload()
        return [header, self.array.tobytes(), stats]


def check_step(step: Any) -> int:
    """Returns `step` as an int, or raises for negative and non-integer steps."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        if hasattr(step, "numpy"):  # a scalar tf.Tensor / tf.Variable
            return check_step(step.numpy().item())
        raise TypeError(f"step={step!r} must be a non-negative integer")
    if step < 0:
        raise ValueError(f"step={step!r} must be a non-negative integer")
    return int(step)


def _as_array(data: Any) -> np.ndarray:
    try:
        a = np.asarray(data)
    except (TypeError, ValueError) as e:
        raise TypeError(f"data of type {type(data).__name__} is not an array: {e}") from None
    if a.dtype.kind in "OSUVMmb" or np.iscomplexobj(a):
        if a.dtype.name != "bfloat16":
            raise TypeError(
                f"data has dtype {a.dtype.name!r}; expected a real numeric array of "
                + ", ".join(blob.STORABLE_DTYPES)
            )
    return a


def _pick(a: np.ndarray, axis: int, cap: int | Sequence[int] | None, name: str) -> list[int] | None:
    """Indices kept along `axis` for a cap (first N, or an explicit list)."""
    if cap is None:
        return None
    length = a.shape[axis]
    if isinstance(cap, numbers.Integral) and not isinstance(cap, bool):
        if cap < 1:
            raise ValueError(f"{name}={cap!r} must be a positive integer or a list of indices")
        return None if cap >= length else list(range(int(cap)))
    try:
        picked = [int(i) for i in cap]
    except (TypeError, ValueError):
        raise TypeError(f"{name}={cap!r} must be a positive integer or a list of indices") from None
    bad = [i for i in picked if not 0 <= i < length]
    if bad or not picked:
        raise ValueError(f"{name}={cap!r} has indices outside 0..{length - 1}")
    return picked


def make_record(
    data: Any,
    *,
    kind: str,
    layout: str,
    dtype: str | None = None,
    max_filters: int | Sequence[int] | None = None,
    max_channels: int | Sequence[int] | None = None,
    max_samples: int | None = None,
    image_shape: Sequence[int] | None = None,
    max_bytes: int | None = None,
    stats: bool = True,
    extra: dict | None = None,
) -> Record:
    """Checks `data` against `layout` and builds its record; errors name the bad value."""
    layouts.check_layout(layout, kind)
    a = _as_array(data)
    if a.ndim != len(layout):
        raise ValueError(
            f"data has shape {a.shape} (rank {a.ndim}) but layout {layout!r} "
            f"needs rank {len(layout)}"
        )
    if a.size == 0:
        raise ValueError(f"data has shape {a.shape} with no elements")
    source_dtype = blob.dtype_name(a.dtype) if a.dtype.name != "bfloat16" else "bfloat16"
    header_extra: dict[str, Any] = dict(extra or {})

    if max_samples is not None:
        if not isinstance(max_samples, numbers.Integral) or max_samples < 1:
            raise ValueError(f"max_samples={max_samples!r} must be a positive integer")
        a = a[: int(max_samples)]

    filter_letter = next((c for c in "OC" if c in layout), "I" if "M" in layout else None)
    channel_letter = "I" if "O" in layout else None
    for letter, cap, name, key in (
        (filter_letter, max_filters, "max_filters", "filters"),
        (channel_letter, max_channels, "max_channels", "channels"),
    ):
        if cap is None:
            continue
        if letter is None:
            raise ValueError(f"{name} does not apply to layout {layout!r}")
        axis = layout.index(letter)
        kept = _pick(a, axis, cap, name)
        if kept is not None:
            a = np.take(a, kept, axis=axis)
            header_extra[key] = kept

    if image_shape is not None:
        if layout not in ("IO", "OI"):
            raise ValueError(f"image_shape applies to Dense layouts 'IO' and 'OI', not {layout!r}")
        try:
            dims = [int(n) for n in image_shape]
        except (TypeError, ValueError):
            raise TypeError(
                f"image_shape={image_shape!r} must be (height, width, channels)"
            ) from None
        n_in = a.shape[layout.index("I")]
        if len(dims) != 3 or min(dims) < 1 or math.prod(dims) != n_in:
            raise ValueError(
                f"image_shape={tuple(image_shape)!r} must be 3 positive sizes whose product is "
                f"the {n_in} inputs of data with shape {a.shape}"
            )
        header_extra["image_shape"] = dims

    target = source_dtype if dtype is None else blob.dtype_name(blob.numpy_dtype(dtype))
    want = blob.numpy_dtype(target)
    if a.dtype != want:
        converted = a.astype(want)
        if target in ("float16", "bfloat16"):
            _warn_overflow(a, converted, target)
        a = converted
    a = np.ascontiguousarray(a)
    if target != source_dtype:
        header_extra["source_dtype"] = source_dtype

    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    if a.nbytes > limit:
        raise ValueError(
            f"data of shape {a.shape} is {a.nbytes} bytes as {target}, over max_bytes={limit}; "
            "raise max_bytes, log fewer filters (max_filters/max_channels) or use dtype='float16'"
        )
    header = blob.make_header(kind, layout, a.shape, target, stats=stats, **header_extra)
    st = blob.filter_stats(a, layout, kind) if stats else np.zeros((0, 0), dtype=np.float32)
    return Record(a, header, st)


def _warn_overflow(before: np.ndarray, after: np.ndarray, target: str) -> None:
    if before.dtype.kind != "f":
        return
    with np.errstate(all="ignore"):
        overflowed = np.isinf(after) & np.isfinite(before)
    if overflowed.any():
        warnings.warn(
            f"{int(overflowed.sum())} finite values overflowed to inf when converted to {target}",
            RuntimeWarning,
            stacklevel=4,
        )
