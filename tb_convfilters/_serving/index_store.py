"""How the index holds its records: columns per event file, a sorted view per run.

A record costs a few numpy cells, not a Python object: each file's records are
`Cols` (offset, step, wall time, the 8-byte checks blob, a `Shape` id and a shift),
and what records of one series share (tag, header, where each blob lies relative
to the record's start) is one `Shape`, kept once per run (`Table`). Statistics
and payloads stay in the file and are read on demand (``payloads``).

A run's `View` is an immutable snapshot: its files' columns in name order and,
per tag, the rows of the last record of each step, sorted by step. The refresher
builds a new view and swaps it in; readers never take a lock to read one.
"""

from __future__ import annotations

import itertools
import struct
import threading
import zlib
from array import array
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from tb_convfilters._record import encoding
from tb_convfilters._serving.payloads import Loc

_gens = itertools.count(1)  # a unique id per generation of a file's columns
_CHECKS = struct.Struct("<Q")


class Shape(NamedTuple):
    """What records of one structure share. Offsets are from the record's start plus its
    shift (the bytes of its wall time and step, whose length varies)."""

    tag: int  # the run's tag id
    spans: tuple[tuple[int, int], ...]  # (offset, length) of each blob
    end: int  # offset just after the record (footer included)
    header: bytes
    checks: bool  # blob CHECKS is 8 bytes, held in the record's checks column


class Table:
    """A run's tags and shapes, interned (appended to only: views index them)."""

    def __init__(self) -> None:
        self.tags: list[str] = []
        self.tag_ids: dict[str, int] = {}
        self.shapes: list[Shape] = []
        self._shape_ids: dict[Shape, int] = {}
        self._headers: dict[bytes, bytes] = {}
        self.templates: dict = {}  # event_fields' record templates, per run

    def tag_id(self, tag: str) -> int:
        found = self.tag_ids.get(tag)
        if found is None:
            found = self.tag_ids[tag] = len(self.tags)
            self.tags.append(tag)
        return found

    def shape_id(
        self,
        tag: str,
        blobs: tuple[bytes, ...],
        spans: tuple[tuple[int, int], ...],
        origin: int,
        end: int,
    ) -> tuple[int, int]:
        """(shape id, checks column value) of a value whose spans are file offsets and
        whose shape starts at file offset `origin` (its record ending at `end`)."""
        checks = len(blobs) > encoding.CHECKS and spans[encoding.CHECKS][1] == _CHECKS.size
        header = blobs[encoding.HEADER]
        header = self._headers.setdefault(header, header)
        shape = Shape(
            self.tag_id(tag),
            tuple((at - origin, n) for at, n in spans),
            end - origin,
            header,
            checks,
        )
        found = self._shape_ids.get(shape)
        if found is None:
            found = self._shape_ids[shape] = len(self.shapes)
            self.shapes.append(shape)
        value = _CHECKS.unpack(blobs[encoding.CHECKS])[0] if checks else 0
        return found, value


class Rows:
    """Records found by one read of a file, as growing columns."""

    def __init__(self) -> None:
        self.start = array("q")
        self.step = array("q")
        self.wall = array("d")
        self.checks = array("Q")
        self.shape = array("I")
        self.shift = array("B")

    def add(self, start: int, step: int, wall: float, checks: int, shape: int, shift: int) -> None:
        self.start.append(start)
        self.step.append(step)
        self.wall.append(wall)
        self.checks.append(checks)
        self.shape.append(shape)
        self.shift.append(shift)

    def __len__(self) -> int:
        return len(self.start)


_FIELDS = ("start", "step", "wall", "checks", "shape", "shift")
_DTYPES = (np.int64, np.int64, np.float64, np.uint64, np.uint32, np.uint8)


class Cols:
    """The records of one file (one generation of it: a file read again from its start
    gets new columns), immutable: `extended` returns new columns."""

    __slots__ = ("gen", *_FIELDS)

    def __init__(self, gen: int | None = None, arrays: tuple | None = None):
        self.gen = next(_gens) if gen is None else gen
        arrays = arrays or tuple(np.empty(0, dtype) for dtype in _DTYPES)
        for name, a in zip(_FIELDS, arrays, strict=True):
            setattr(self, name, a)

    def __len__(self) -> int:
        return len(self.start)

    def extended(self, rows: Rows) -> Cols:
        if not len(rows):
            return self
        new = tuple(
            np.concatenate([getattr(self, name), np.frombuffer(getattr(rows, name), dtype)])
            for name, dtype in zip(_FIELDS, _DTYPES, strict=True)
        )
        return Cols(self.gen, new)

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in _FIELDS)


class View:
    """A run's series as of one refresh: ``bounds[tag] = (lo, hi)`` into `rows` (global row
    numbers over `files` in name order) and `steps`, ascending by step."""

    def __init__(self, files: list[tuple[str, Cols]], table: Table):
        self.files = tuple(files)
        self.table = table
        self.shapes = table.shapes
        counts = [len(c) for _, c in self.files]
        self.bases = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=self.bases[1:])
        n = int(self.bases[-1])
        self.bounds: dict[str, tuple[int, int]] = {}
        self.keys: dict[str, int] = {}
        if not n:
            self.rows, self.steps = np.empty(0, np.uint32), np.empty(0, np.int64)
            return
        shape_tag = np.fromiter((s.tag for s in self.shapes), np.int64, len(self.shapes))
        tag = np.concatenate([shape_tag[c.shape] for _, c in self.files])
        step = np.concatenate([c.step for _, c in self.files])
        order = np.lexsort((step, tag))  # stable: among equal (tag, step), file order
        tag, step = tag[order], step[order]
        last = np.ones(n, dtype=bool)  # the last record of each (tag, step) wins
        last[:-1] = (tag[1:] != tag[:-1]) | (step[1:] != step[:-1])
        self.rows = order[last].astype(np.uint32 if n < 1 << 32 else np.int64)
        self.steps = step[last]
        tag = tag[last]
        ids, lo = np.unique(tag, return_index=True)
        hi = np.append(lo[1:], len(tag))
        gens = np.array([c.gen for _, c in self.files], dtype=np.int64)
        for t, a, b in zip(ids.tolist(), lo.tolist(), hi.tolist(), strict=True):
            name = table.tags[t]
            self.bounds[name] = (a, b)
            rows = self.rows[a:b]
            owner = np.searchsorted(self.bases, rows, side="right") - 1
            # identity of the series' records: which file generation, which row
            ident = np.stack([gens[owner], rows.astype(np.int64) - self.bases[owner]])
            self.keys[name] = zlib.crc32(ident.tobytes()) ^ (b - a) << 32

    def __len__(self) -> int:
        return len(self.rows)

    def nbytes(self) -> int:
        return self.rows.nbytes + self.steps.nbytes + self.bases.nbytes

    def max_step(self, tag: str) -> int | None:
        b = self.bounds.get(tag)
        return None if b is None else int(self.steps[b[1] - 1])

    def locs(self, tag: str, reader) -> list[Loc] | None:
        """Every step of `tag`, ascending (None if the run has no such series)."""
        b = self.bounds.get(tag)
        if b is None:
            return None
        return self._locs(self.rows[b[0] : b[1]], reader)

    def find(self, tag: str, step: int, reader) -> Loc | None:
        b = self.bounds.get(tag)
        if b is None:
            return None
        i = b[0] + int(np.searchsorted(self.steps[b[0] : b[1]], step))
        if i >= b[1] or self.steps[i] != step:
            return None
        return self._locs(self.rows[i : i + 1], reader)[0]

    def _locs(self, rows: np.ndarray, reader) -> list[Loc]:
        owner = (np.searchsorted(self.bases, rows, side="right") - 1).tolist()
        out = []
        for g, f in zip(rows.tolist(), owner, strict=True):
            path, c = self.files[f]
            r = g - int(self.bases[f])
            shape = self.shapes[int(c.shape[r])]
            start = int(c.start[r])
            origin = start + int(c.shift[r])
            held: list[bytes | None] = [None] * len(shape.spans)
            held[encoding.HEADER] = shape.header
            if shape.checks:
                held[encoding.CHECKS] = _CHECKS.pack(int(c.checks[r]))
            out.append(
                Loc(
                    path,
                    start,
                    origin + shape.end,
                    int(c.step[r]),
                    float(c.wall[r]),
                    tuple((origin + at, n) for at, n in shape.spans),
                    tuple(held),
                    reader,
                )
            )
        return out


class BlobCache:
    """Blobs read on demand, least recently used first out, within a byte bound."""

    def __init__(self, limit: int):
        self.limit, self.size = limit, 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple, data: bytes) -> None:
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self.size += len(data)
            while self.size > self.limit:
                _, old = self._items.popitem(last=False)
                self.size -= len(old)
