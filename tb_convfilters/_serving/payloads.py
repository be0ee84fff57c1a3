"""Reading an indexed record's payload back from its event file, checked.

`read` reads a whole payload (one positioned read, or two halves at once);
`read_view` cuts a view out of it while reading it in windows. Both check that
the bytes around the payload are still the indexed ones (else `Stale`: the file
changed), then the payload's CRC32C and the record's (else ``encoding.RecordError``).
`read_blob` / `read_blobs` read the blobs the index does not hold (the statistics),
with a held blob beside them (the checks) to tell that the record is still the one indexed.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable, Sequence

import crc32c
import numpy as np

from tb_convfilters._record import encoding, files, parallel
from tb_convfilters._record.events import _masked_crc


class Loc:
    """One indexed step: where its record lies, and the blobs held in memory.

    `held` has the header and the 8-byte checks blob (None for the payload and the
    statistics, which stay in the file); ``blobs[i]`` reads a blob that is not held
    through `reader` (``reader(loc, i)``, see `read_blob`), the payload as b"".
    """

    __slots__ = ("path", "start", "end", "step", "wall_time", "spans", "held", "reader")

    def __init__(
        self,
        path: str,
        start: int,
        end: int,
        step: int,
        wall_time: float,
        spans: tuple[tuple[int, int], ...],
        held: tuple[bytes | None, ...],
        reader: Callable[[Loc, int], bytes] | None = None,
    ):
        self.path, self.start, self.end = path, start, end
        self.step, self.wall_time = step, wall_time
        self.spans, self.held = spans, held  # spans: (offset in the file, length) of each blob
        self.reader = reader or read_blob

    @property
    def count(self) -> int:
        return len(self.spans)

    @property
    def blobs(self) -> Blobs:
        return Blobs(self)

    def same_record(self, other: Loc) -> bool:
        """Whether `other` is the same record (same place, same held blobs)."""
        return (self.path, self.start, self.end, self.spans, self.held) == (
            other.path,
            other.start,
            other.end,
            other.spans,
            other.held,
        )

    def __repr__(self) -> str:
        return f"Loc({self.path!r}, start={self.start}, end={self.end}, step={self.step})"


class Blobs(Sequence):
    """A record's blobs: held ones from memory, the others read when asked for (the
    payload is b"": it is read with `read` or `read_view`)."""

    __slots__ = ("loc",)

    def __init__(self, loc: Loc):
        self.loc = loc

    def __len__(self) -> int:
        return len(self.loc.spans)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        held = self.loc.held[i]
        if held is not None:
            return held
        if i in (encoding.PAYLOAD, encoding.PAYLOAD - len(self)):
            return b""
        return self.loc.reader(self.loc, i % len(self))


class Stale(Exception):
    """The record is no longer where the index saw it: its file changed."""


def read(loc: Loc, header: dict, split_bytes: int | None = None) -> bytes | encoding.Chunks:
    """The payload of `loc` (`Index.payload`); as `Chunks` when at least `split_bytes`
    long, local and with a stored CRC32C."""
    if loc.count <= encoding.PAYLOAD:
        raise encoding.RecordError("not a convfilters record (no payload blob)")
    at, n = loc.spans[encoding.PAYLOAD]
    head_range, tail_range = (loc.start, at - loc.start), (at + n, loc.end - at - n)
    stored = header.get("payload_crc32c")
    split = (
        split_bytes is not None
        and stored is not None
        and n >= split_bytes
        and not files.is_url(loc.path)
    )
    try:  # the record before, at and after the payload (locally: no copy of it)
        if split:
            half = n // 2

            def first() -> tuple[bytes, bytes, int]:
                head, a = files.read_ranges(loc.path, [head_range, (at, half)])
                return head, a, crc32c.crc32c(a)

            def second() -> tuple[bytes, bytes, int]:
                b, tail = files.read_ranges(loc.path, [(at + half, n - half), tail_range])
                return b, tail, crc32c.crc32c(b)

            (head, a, crc_a), (b, tail, crc_b) = parallel.in_parallel(first, second)
            parts = [a, b]
        else:
            head, payload, tail = files.read_ranges(loc.path, [head_range, (at, n), tail_range])
            parts = [payload]
    except OSError as e:
        raise Stale(f"{loc.path}: {e}") from None
    if sum(len(p) for p in parts) != n or not _intact(loc, head, tail):
        raise Stale(f"{loc.path}: the record at offset {loc.start} changed")
    if split:  # names a corrupt payload
        encoding.check_crc(stored, encoding.crc_combine(crc_a, crc_b, len(parts[1])), "payload")
    # without a stored CRC of the payload, the record's CRC is extended over it
    payload_crc = crc32c.crc32c(parts[0]) if stored is None else stored
    if not _record_crc_ok(head, payload_crc, n, tail):
        if not split:
            encoding.check_payload(header, parts[0])  # names a corrupt payload, if it is
        raise encoding.RecordError("the event record is corrupt (TFRecord checksum mismatch)")
    return encoding.Chunks(parts) if split else parts[0]


def read_view(loc: Loc, header: dict, view: dict, window: int) -> np.ndarray:
    """`view` (from ``encoding.view_header``) cut out of the payload of `loc`.

    The payload is read in order, `window` bytes at a time (four times that on
    object stores, one request each), checksummed as it goes, and only the view's
    elements are kept: memory holds the view and one window, never the record.
    """
    if loc.count <= encoding.PAYLOAD:
        raise encoding.RecordError("not a convfilters record (no payload blob)")
    at, n = loc.spans[encoding.PAYLOAD]
    crc = 0

    def read_part(offset: int, size: int) -> bytes:
        nonlocal crc
        data = files.read_at(loc.path, at + offset, size)
        if len(data) != size:
            raise Stale(f"{loc.path}: the record at offset {loc.start} was cut short")
        crc = crc32c.crc32c(data, value=crc)
        return data

    try:
        head = files.read_at(loc.path, loc.start, at - loc.start)
        tail = files.read_at(loc.path, at + n, loc.end - at - n)
        if not _intact(loc, head, tail):
            raise Stale(f"{loc.path}: the record at offset {loc.start} changed")
        scale = 4 if files.is_url(loc.path) else 1
        out = encoding.cut_view(read_part, header, view, window * scale)
    except OSError as e:
        raise Stale(f"{loc.path}: {e}") from None
    stored = header.get("payload_crc32c")
    if stored is not None:
        encoding.check_crc(stored, crc, "payload")
    if not _record_crc_ok(head, crc, n, tail):
        raise encoding.RecordError("the event record is corrupt (TFRecord checksum mismatch)")
    return out


def _intact(loc: Loc, head: bytes, tail: bytes) -> bool:
    """Whether the bytes before and after the payload are still those indexed."""
    at, n = loc.spans[encoding.PAYLOAD]
    if (
        len(head) != at - loc.start
        or len(tail) != loc.end - at - n
        or head[:8] != struct.pack("<Q", loc.end - loc.start - 16)
    ):
        return False
    for b, (where, size) in zip(loc.held, loc.spans, strict=True):
        if b is not None:
            part, offset = (head, where - loc.start) if where < at else (tail, where - at - n)
            if part[offset : offset + size] != b:
                return False
    return True


def _record_crc_ok(head: bytes, payload_crc: int, n: int, tail: bytes) -> bool:
    """The record's CRC32C from its bytes around the payload and the payload's CRC."""
    crc = encoding.crc_combine(crc32c.crc32c(head[12:]), payload_crc, n)
    crc = crc32c.crc32c(tail[:-4], value=crc)
    return _masked_crc(crc) == struct.unpack("<I", tail[-4:])[0]


def _witness(loc: Loc, i: int) -> int:
    """The held blob read beside blob `i` to tell that the record is still the indexed
    one: its checks (they hold the payload's and the statistics' CRC32C), else its header."""
    checks = encoding.CHECKS
    if loc.count > checks and loc.held[checks] is not None and i != checks:
        return checks
    return encoding.HEADER


def read_blob(loc: Loc, i: int) -> bytes:
    """Blob `i` of `loc` (not the payload) read from its file; `Stale` when the record
    there is no longer the indexed one."""
    return read_blobs([loc], i)[0]


def read_blobs(locs: list[Loc], i: int) -> list[bytes]:
    """Blob `i` of each of `locs`, each file opened once (`read_blob`)."""
    out = []
    for path, group in itertools.groupby(locs, key=lambda loc: loc.path):
        group = list(group)
        wanted = []
        for loc in group:
            w = _witness(loc, i)
            wanted.append((loc.spans[i], loc.spans[w], loc.held[w]))
        try:
            if files.is_url(path):
                parts = [_url_pair(path, blob, seen) for blob, seen, _ in wanted]
            else:
                parts = _local_pairs(path, [(blob, seen) for blob, seen, _ in wanted])
        except OSError as e:
            raise Stale(f"{path}: {e}") from None
        for loc, (blob, _, held), (data, witness) in zip(group, wanted, parts, strict=True):
            if len(data) != blob[1] or witness != held:
                raise Stale(f"{path}: the record at offset {loc.start} changed")
            out.append(data)
    return out


def _local_pairs(path: str, pairs: list) -> list[tuple[bytes, bytes]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        return [(os.pread(fd, b[1], b[0]), os.pread(fd, w[1], w[0])) for b, w in pairs]
    finally:
        os.close(fd)


def _url_pair(path: str, blob: tuple[int, int], seen: tuple[int, int]) -> tuple[bytes, bytes]:
    """Both ranges in one request when they are near (statistics and checks are)."""
    lo, hi = min(blob[0], seen[0]), max(blob[0] + blob[1], seen[0] + seen[1])
    if hi - lo > blob[1] + seen[1] + (64 << 10):
        return files.read_at(path, *blob), files.read_at(path, *seen)
    data = files.read_at(path, lo, hi - lo)
    return data[blob[0] - lo : blob[0] - lo + blob[1]], data[seen[0] - lo : seen[0] - lo + seen[1]]
