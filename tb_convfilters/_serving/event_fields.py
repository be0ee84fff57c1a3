"""Our values in an event file's records, found without reading their payloads.

A record is read as ``reader`` reads it, but only the bytes around each payload:
the ``Event``/``Summary``/``Value``/``TensorProto`` fields are walked by hand and
the payload, like every value of another plugin, is skipped by its length. Small
records are read whole and parsed by protobuf instead (faster than by hand).
Which values are ours is the caller's to decide (`IsOurs`), from each value's tag
and metadata.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

from tensorboard.compat.proto import event_pb2, summary_pb2

from tb_convfilters._record import encoding, files
from tb_convfilters._record.events import _varint as _encode_varint

# Bytes read at a time while indexing: record heads and the blobs after a payload.
_WINDOW = 64 << 10
_URL_WINDOW = 1 << 20  # each read of an object store is one request
# Records up to this size are read whole and parsed by protobuf (faster than by hand).
_SMALL = 16 << 10
_KEY8 = bytes([8 << 3 | 2])  # field 8 (string_val), length-delimited

# Whether a value (its tag, and its metadata if it has any) is ours.
IsOurs = Callable[[str, summary_pb2.SummaryMetadata | None], bool]


class Malformed(Exception):
    """Bytes that are not the protobuf they should be."""


class Value(NamedTuple):
    """One of our values in a record: its blobs (the payload as b"") and where they lie."""

    tag: str
    step: int
    wall_time: float
    blobs: tuple[bytes, ...]
    spans: tuple[tuple[int, int], ...]  # (offset in the file, length) of each blob


class Window:
    """Reads of one file served from a cached window of it."""

    def __init__(self, path: str, size: int):
        self.path, self.size = path, size
        self._start, self._data = 0, b""
        self._step = _URL_WINDOW if files.is_url(path) else _WINDOW

    @classmethod
    def over(cls, path: str, size: int, data: bytes, start: int) -> Window:
        """A window of `path` already holding `data`, the bytes at offset `start`."""
        w = cls(path, size)
        w._start, w._data = start, data
        return w

    def data(self) -> tuple[bytes, int]:
        """The bytes held, and their offset in the file."""
        return self._data, self._start

    def read(self, pos: int, n: int) -> bytes:
        """`n` bytes at `pos` (fewer at the end of the file)."""
        i = pos - self._start
        if i < 0 or i + n > len(self._data):
            want = max(0, min(max(n, self._step), self.size - pos))
            self._data, self._start, i = files.read_at(self.path, pos, want), pos, 0
        return self._data[i : i + n]


def values(w: Window, start: int, end: int, ours: IsOurs) -> list[Value]:
    """Our values in the TFRecord ``[start, end)`` of `w`'s file.

    Raises Malformed, protobuf's DecodeError, UnicodeDecodeError or ValueError
    for a record that is no Event.
    """
    length = end - start - 16
    if length <= _SMALL:  # protobuf's C parser, then find the blobs
        found = _parse_small(w.read(start + 12, length), start, ours)
        if found is not None:
            return found
    return list(_parse_event(w, start, end, ours))


def _varint(w: Window, pos: int) -> tuple[int, int]:
    data, i = w._data, pos - w._start
    if 0 <= i < len(data) and data[i] < 0x80:  # most keys and lengths: one byte
        return data[i], pos + 1
    data = w.read(pos, 10)
    result = shift = 0
    for i, byte in enumerate(data):
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos + i + 1
        shift += 7
    raise Malformed("bad varint")


def _fields(w: Window, pos: int, end: int) -> list[tuple[int, int, int, int]]:
    """(field, wire type, start, stop or varint value) of each field in ``[pos, end)``."""
    out = []
    while pos < end:
        key, pos = _varint(w, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(w, pos)
            out.append((key >> 3, 0, pos, value))
            continue
        if wire == 2:
            length, pos = _varint(w, pos)
            stop = pos + length
        elif wire == 1 or wire == 5:
            stop = pos + (8 if wire == 1 else 4)
        else:
            raise Malformed(f"wire type {wire}")
        if stop > end:
            raise Malformed("field runs past its message")
        out.append((key >> 3, wire, pos, stop))
        pos = stop
    return out


def _parse_small(data: bytes, start: int, ours: IsOurs) -> list[Value] | None:
    """`_parse_event` of a record read whole (`data`: its Event), by protobuf's C parser.

    A value's blobs are a repeated field, serialized one after the other: they are
    found in `data` as one run of bytes, which gives their offsets. None when they
    are not found that way (then the record is walked field by field).
    """
    event = event_pb2.Event.FromString(data)
    out, search, base = [], 0, start + 12
    for value in event.summary.value:
        meta = value.metadata if value.HasField("metadata") else None
        strings = list(value.tensor.string_val)
        if not ours(value.tag, meta) or not strings:
            continue
        fields = [_KEY8 + _encode_varint(len(b)) + b for b in strings]
        at = data.find(b"".join(fields), search)
        if at < 0:
            return None
        spans = []
        for field, b in zip(fields, strings, strict=True):
            spans.append((base + at + len(field) - len(b), len(b)))
            at += len(field)
        search = at
        if len(strings) > encoding.PAYLOAD:
            strings[encoding.PAYLOAD] = b""
        out.append(Value(value.tag, event.step, event.wall_time, tuple(strings), tuple(spans)))
    return out


def _parse_event(w: Window, start: int, end: int, ours: IsOurs) -> Iterator[Value]:
    """Our values in the Event whose data is ``[start + 12, end - 4)``."""
    step, wall_time, summaries = 0, 0.0, []
    for field, wire, pos, stop in _fields(w, start + 12, end - 4):
        if field == 1 and wire == 1:
            (wall_time,) = struct.unpack("<d", w.read(pos, 8))
        elif field == 2 and wire == 0:
            step = stop - (1 << 64) if stop >= 1 << 63 else stop
        elif field == 5 and wire == 2:
            summaries.append((pos, stop))
    for pos, stop in summaries:
        for field, wire, vpos, vstop in _fields(w, pos, stop):
            if field == 1 and wire == 2:
                found = _parse_value(w, vpos, vstop, ours)
                if found is not None:
                    tag, blobs, spans = found
                    yield Value(tag, step, wall_time, blobs, spans)


def _parse_value(
    w: Window, pos: int, stop: int, ours: IsOurs
) -> tuple[str, tuple[bytes, ...], tuple[tuple[int, int], ...]] | None:
    tag, tensor, meta = None, None, None
    for field, wire, fpos, fstop in _fields(w, pos, stop):
        if wire != 2:
            continue
        if field == 1:
            tag = w.read(fpos, fstop - fpos).decode("utf-8")
        elif field == 8:
            tensor = (fpos, fstop)
        elif field == 9:
            meta = summary_pb2.SummaryMetadata.FromString(w.read(fpos, fstop - fpos))
    if tag is None or not ours(tag, meta) or tensor is None:
        return None
    blobs, spans = [], []
    for field, wire, fpos, fstop in _fields(w, *tensor):
        if field == 8 and wire == 2:
            spans.append((fpos, fstop - fpos))
            # The payload is skipped: read later, on demand.
            blobs.append(b"" if len(blobs) == encoding.PAYLOAD else w.read(fpos, fstop - fpos))
    if not blobs:
        return None
    return tag, tuple(blobs), tuple(spans)


# ---- many small records: by template ----

# Bytes after a record's wall time and step that pick its template (with its length).
_KEY = 48
_WALL = struct.Struct("<d")


class Template(NamedTuple):
    """A record of ours whose bytes, but for its wall time, step and blobs (the header
    excepted), are those of an earlier record: it has the same value, blobs at the same
    places. `segments` are (offset from the template's origin, bytes)."""

    segments: tuple[tuple[int, bytes], ...]
    shape: int
    checks_at: int  # offset of the 8-byte checks blob, -1 if none


# What a small record yields: (step, wall time, checks, shape id, shift) per value of ours.
Found = list[tuple[int, float, int, int, int]]
# (tag, blobs, spans, origin, end) -> (shape id, checks): the run's `index_store.Table.shape_id`.
ShapeOf = Callable[[str, tuple[bytes, ...], tuple[tuple[int, int], ...], int, int], tuple[int, int]]


def small_record(
    buf: bytes,
    i: int,
    length: int,
    base: int,
    templates: dict,
    ours: IsOurs,
    shape_of: ShapeOf,
    window: Callable[[bytes, int], Window],
) -> Found:
    """Our values in the TFRecord at ``buf[i:]`` (file offset ``base + i``) whose data
    is `length` bytes (``window(buf, base)``: a Window holding `buf`, made if needed).
    Most records match a template of an earlier one, checked with a few byte
    comparisons; the others are parsed (`_parse_small`) and may make a template.

    Raises like `values`.
    """
    d = i + 12
    pos, wall, step = d, 0.0, 0
    if buf[pos] == 0x09:  # Event.wall_time, then Event.step: their bytes vary
        (wall,) = _WALL.unpack_from(buf, pos + 1)
        pos += 9
    if buf[pos] == 0x10:
        pos += 1
        shift = 0
        while True:
            byte = buf[pos]
            pos += 1
            step |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
            if shift > 63:
                raise Malformed("bad varint")
        if step >= 1 << 63:
            step -= 1 << 64
    rest = d + length - pos
    key = (rest, buf[pos : pos + _KEY])
    t = templates.get(key)
    if t is not None:
        for at, segment in t.segments:
            if not buf.startswith(segment, pos + at):
                break
        else:
            checks = _CHECKS_Q.unpack_from(buf, pos + t.checks_at)[0] if t.checks_at >= 0 else 0
            return [(step, wall, checks, t.shape, pos - i)]
    start, end = base + i, base + i + length + 16
    found = _parse_small(buf[d : d + length], start, ours)
    if found is None:
        found = list(_parse_event(window(buf, base), start, end, ours))
    origin = base + pos
    out = []
    for v in found:
        shape, checks = shape_of(v.tag, v.blobs, v.spans, origin, end)
        out.append((v.step, v.wall_time, checks, shape, pos - i))
    if len(found) == 1 and found[0].step == step and found[0].wall_time == wall:
        made = _template(buf, pos, d + length, base, found[0], out[0][3])
        if made is not None:
            templates[key] = made
    return out


_CHECKS_Q = struct.Struct("<Q")


def _template(buf: bytes, pos: int, stop: int, base: int, v: Value, shape: int) -> Template | None:
    """The template of the record whose value `v` starts at ``buf[pos]`` (after its
    wall time and step): every byte but the blobs after the header is fixed."""
    if len(v.blobs) <= encoding.CHECKS or v.spans[encoding.CHECKS][1] != _CHECKS_Q.size:
        return None  # no checks blob: the checksums are in the header, which varies
    segments, cursor = [], pos
    for i, (at, n) in enumerate(v.spans):
        at -= base
        if i == encoding.HEADER:
            continue  # part of the fixed bytes
        if at < cursor:
            return None
        segments.append((cursor - pos, buf[cursor:at]))
        cursor = at + n
    segments.append((cursor - pos, buf[cursor:stop]))
    if segments[0][0] != 0 or len(segments[0][1]) < min(_KEY, stop - pos):
        return None  # the key must lie in fixed bytes
    checks_at = v.spans[encoding.CHECKS][0] - base - pos
    return Template(tuple(segments), shape, checks_at)
