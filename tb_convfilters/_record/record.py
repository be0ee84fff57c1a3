"""Checking a user's tensor and turning it into one step's record (numpy only)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from tb_convfilters._record import encoding, layouts, parallel
from tb_convfilters._record.arguments import _as_array, check_cap, warn_once
from tb_convfilters._record.dtypes import _convert, _converted
from tb_convfilters._record.firing import FIRING_STATS, Firing
from tb_convfilters._record.gradients import GRAD_STATS, grad_norm_column
from tb_convfilters._record.stats import Completion

# Refuse single tensors above this many stored bytes unless the caller raises it.
DEFAULT_MAX_BYTES = 1 << 30


class Record(NamedTuple):
    """One step ready to write: a C-contiguous little-endian array and its header.

    ``stats`` and the two checksums are None until `complete` computes them (the
    ``Writer`` does that while it writes the payload out). `firing` holds the extra
    columns appended to its stats: an activation's firing columns
    (``firing.FIRING_STATS``), a kernel's gradient norms (``gradients.GRAD_STATS``).
    A record made with ``make_record(convert=False)`` holds the array in its source
    dtype until `converted`; ``owned`` says the array is a copy no caller can change.
    """

    array: np.ndarray
    header: dict
    stats: np.ndarray | None = None
    payload_crc: int | None = None
    stats_crc: int | None = None
    firing: np.ndarray | None = None
    owned: bool = False

    def converted(self) -> tuple[Record, str | None]:
        """This record with its array in the stored dtype and C order, and the warning
        the conversion gives (None when values fit), for the caller to issue."""
        want = encoding.numpy_dtype(self.header["dtype"])
        a, message = self.array, None
        if a.dtype != want:
            a, message = _converted(a, want, self.header["dtype"])
        elif not a.flags.c_contiguous:
            a = np.ascontiguousarray(a)
        return self._replace(array=a, owned=self.owned or a is not self.array), message

    @property
    def completed(self) -> bool:
        return self.stats is not None

    def completion(self) -> Completion:
        """The stats and checksum work of this (not yet completed) record, for `finished`."""
        header = self.header
        return Completion(self.array, header["layout"], header["kind"], stats=bool(header["stats"]))

    def finished(self, work: Completion) -> Record:
        """This record with the stats and checksums `work` computed."""
        stats, payload_crc = work.result()
        if self.firing is not None:
            stats = np.hstack([stats, self.firing])
        return self._replace(
            stats=stats,
            payload_crc=payload_crc,
            stats_crc=encoding.crc(encoding.encode_stats(stats)),
        )

    def complete(self) -> Record:
        """This record with stats and checksums (computed on two threads when large)."""
        if self.completed:
            return self
        work = self.completion()
        parallel.both(work.checksum, work.help, split=work.large)
        return self.finished(work)

    def trailing_blobs(self) -> tuple[bytes, bytes]:
        """The stats and checks blobs (of a completed record)."""
        checks = encoding.encode_checks(self.payload_crc, self.stats_crc)
        return encoding.encode_stats(self.stats), checks

    def blobs(self) -> list[bytes]:
        rec = self.complete()
        return [encoding.encode_header(rec.header), rec.array.tobytes(), *rec.trailing_blobs()]


def _pick(a: np.ndarray, axis: int, cap: int | Sequence[int] | None, name: str) -> list[int] | None:
    """Indices kept along `axis` for a cap (first N, or an explicit list)."""
    cap = check_cap(cap, name)
    if cap is None:
        return None
    length = a.shape[axis]
    if isinstance(cap, int):
        return None if cap >= length else list(range(cap))
    bad = [i for i in cap if i >= length]
    if bad:
        raise ValueError(f"{name}={cap!r} has indices outside 0..{length - 1}")
    return cap


def _check_layout_fits(shape: tuple[int, ...], layout: str, kind: str, tag: str) -> None:
    """Warns once per tag when `shape` cannot be right as `layout`, naming the layouts that fit."""
    fits = layouts.fitting_layouts(shape, layout, kind)
    if not fits:
        return
    names = " or ".join(f"{f!r} ({layouts.LAYOUTS_BY_KIND[kind][f]})" for f in fits)
    spatial = "x".join(str(n) for n, c in zip(shape, layout, strict=True) if c in "DHW")
    warn_once(
        ("layout", tag, layout, shape),
        f"{tag!r}: shape {shape} cannot be right as layout={layout!r} (its spatial axes "
        f"{spatial} look like channels); it fits layout={names}. Pass the layout the "
        "tensor has",
        stacklevel=4,  # the caller of Writer.kernel / summary.kernel_pb
    )


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
    complete: bool = True,
    tag: str | None = None,
    firing: Firing | None = None,
    convert: bool = True,
    owned: bool = False,
    grad: Any = None,
) -> Record:
    """Checks `data` against `layout` and builds its record; errors name the bad value.

    With ``complete=False`` the stats and checksums are left to ``Record.complete``;
    with ``convert=False`` (implies ``complete=False``) the dtype conversion is left
    to ``Record.converted`` and the array may still be the caller's memory, unless
    `owned` says `data` is an array nothing else holds or changes (a copy the caller
    made): a background Writer then queues it without copying it again.
    With a `tag` (a layout the user chose), a shape that cannot be right for `layout`
    warns once per tag. Depthwise kernels (``M`` layouts) have one axis ``I`` for their
    filters and input channels: `max_filters` caps it, else `max_channels` does.
    Float data is never stored as an integer dtype (it would be truncated).
    Activations get firing statistics (``firing.FIRING_STATS``) over every sample of
    `data`, before `max_samples` keeps some; or `firing`, counted by the caller over
    more inputs than `data` holds (same channels as `data`). A kernel's `grad` (an
    array of `data`'s shape) adds each kept filter's gradient norm (``grad_norm``)
    over the weights kept.
    """
    layouts.check_layout(layout, kind)
    a = _as_array(data)
    if a.ndim != len(layout):
        raise ValueError(
            f"data has shape {a.shape} (rank {a.ndim}) but layout {layout!r} "
            f"needs rank {len(layout)}"
        )
    if a.size == 0:
        raise ValueError(f"data has shape {a.shape} with no elements; expected at least one")
    if tag is not None:
        _check_layout_fits(a.shape, layout, kind, tag)
    source_dtype = a.dtype.name
    if dtype is None and source_dtype not in encoding.STORABLE_DTYPES:
        raise TypeError(
            f"data has dtype {source_dtype!r}, which is not stored as is; pass dtype= one of: "
            + ", ".join(encoding.STORABLE_DTYPES)
        )
    try:
        target = source_dtype if dtype is None else encoding.dtype_name(encoding.numpy_dtype(dtype))
    except (TypeError, ValueError):
        raise TypeError(
            f"dtype={dtype!r} cannot be stored; expected None or one of: "
            + ", ".join(encoding.STORABLE_DTYPES)
        ) from None
    if target in ("int8", "uint8") and a.dtype.kind not in "iub":
        raise TypeError(
            f"dtype={dtype!r} would truncate {source_dtype} data to integers (weights in (-1, 1) "
            "would all store 0); integer dtypes store integer data only. Store float16 or "
            "bfloat16 to save space, or quantize yourself and log the integers"
        )
    if max_bytes is not None and (
        isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) or max_bytes < 1
    ):
        raise ValueError(f"max_bytes={max_bytes!r} must be a positive integer (bytes) or None")
    header_extra: dict[str, Any] = dict(extra or {})
    if kind == "activation" and stats:
        firing = _check_firing(firing, a, layout)
    elif firing is not None:
        raise ValueError("firing applies to activations with stats only")
    if grad is not None:
        grad = _check_grad(grad, a, kind, stats)

    owned = bool(owned)  # True once `a` is an array made here (or the caller's own copy)
    if max_samples is not None:
        if (
            isinstance(max_samples, bool)
            or not isinstance(max_samples, numbers.Integral)
            or max_samples < 1
        ):
            raise ValueError(f"max_samples={max_samples!r} must be a positive integer or None")
        a = a[: int(max_samples)]

    filter_letter, channel_letter = encoding.cap_letters(layout)
    if "M" in layout:  # depthwise: I is both the filters and the input channels
        max_filters = max_channels if max_filters is None else max_filters
        max_channels = None
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
            if grad is not None:
                grad = np.take(grad, kept, axis=axis)
            owned = True
            header_extra[key] = kept
            if firing is not None and key == "filters":
                firing = firing.take(kept)

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

    limit = DEFAULT_MAX_BYTES if max_bytes is None else max_bytes
    if kind == "activation":
        a = _samples_that_fit(a, encoding.numpy_dtype(target).itemsize, limit, target)
    want = encoding.numpy_dtype(target)
    if convert:
        if a.dtype != want:
            a, owned = _convert(a, want, target), True
        a = np.ascontiguousarray(a)
    if target != source_dtype:
        header_extra["source_dtype"] = source_dtype

    nbytes = a.size * want.itemsize
    if nbytes > limit:
        raise ValueError(
            f"data of shape {a.shape} is {nbytes} bytes as {target}, over max_bytes={limit}; "
            "raise max_bytes, log fewer filters (max_filters/max_channels) or use dtype='float16'"
        )
    header = encoding.make_header(kind, layout, a.shape, target, stats=stats, **header_extra)
    rec = Record(a, header, owned=owned)
    if firing is not None:
        header["stats"] += FIRING_STATS
        rec = rec._replace(firing=firing.columns())
    if grad is not None:
        header["stats"] += GRAD_STATS
        rec = rec._replace(firing=grad_norm_column(grad, layout))
    return rec.complete() if complete and convert else rec


def _check_grad(grad: Any, a: np.ndarray, kind: str, stats: bool) -> np.ndarray:
    """`grad` as an array of `a`'s shape; raises for other kinds and shapes."""
    if kind != "kernel" or not stats:
        raise ValueError("grad applies to kernels with stats only")
    g = _as_array(grad)
    if g.shape != a.shape:
        raise ValueError(f"grad has shape {g.shape}; the kernel has shape {a.shape}")
    if g.dtype.kind != "f":
        g = g.astype(np.float32)
    return g


def _check_firing(firing: Firing | None, a: np.ndarray, layout: str) -> Firing:
    """`firing`, or the counts of `a`; raises when `firing` is for other channels."""
    if firing is None:
        return Firing().add(a, layout)
    if not isinstance(firing, Firing):
        raise TypeError(f"firing of type {type(firing).__name__} is not a firing.Firing")
    channels = a.shape[layouts.filter_axes(layout)[0]]
    if firing.channels != channels or firing.inputs < 1:
        raise ValueError(
            f"firing counts {firing.channels} channels over {firing.inputs} inputs; "
            f"data of shape {a.shape} ({layout}) has {channels} channels"
        )
    return firing


def _samples_that_fit(a: np.ndarray, itemsize: int, limit: int, target: str) -> np.ndarray:
    """The first samples (axis 0) of activations `a` that fit in `limit` bytes; warns once
    when that drops samples. All of `a` if it fits; `a` itself if not even one sample does
    (the caller's size check then says why)."""
    per_sample = math.prod(a.shape[1:]) * itemsize
    n = len(a)
    if n * per_sample <= limit or per_sample > limit:
        return a
    kept = limit // per_sample
    warn_once(
        ("max_samples", a.shape, target, limit),
        f"activation data of shape {a.shape} is {n * per_sample} bytes as {target}, over "
        f"max_bytes={limit}: stored the first {kept} of its {n} samples. To store them all, "
        "raise max_bytes or use dtype='float16'; max_samples=N stores N on purpose",
        stacklevel=4,
    )
    return a[:kept]


def samples_digest(*arrays: Any) -> str:
    """A short digest of sample inputs (dtype, shape and bytes of each array), recorded as
    ``samples_digest`` with the activations computed on them."""
    import hashlib

    h = hashlib.sha256()
    for x in arrays:
        a = np.ascontiguousarray(np.asarray(x))
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]
