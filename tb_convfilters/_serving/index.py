"""The plugin's own index of its records in a logdir's event files.

For every (run, tag, step) it keeps where the record and its payload lie (file,
offsets, length) and the small blobs (header, stats, checks). Payloads are read
only when asked for, with one positioned read (`Index.payload`), so memory holds
record heads only, whatever the size of the logs.

Event files are read as ``reader`` reads them (TFRecord framing, files in name
order, the last record of a step wins), but only the bytes around each payload
(``event_fields``: the payload, like every value of another plugin, is skipped by
its length). Each file is read on from where the last refresh stopped; new files and new runs are
picked up; a file that shrank or whose first bytes changed is read again from
its start. A payload read checks that the record still holds the indexed blobs
(else `Stale`: the file changed), then the payload's and the record's CRC32C.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from typing import NamedTuple

import crc32c
import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import summary_pb2

from tb_convfilters import reader
from tb_convfilters._record import encoding, files, metadata
from tb_convfilters._record.events import _masked_crc
from tb_convfilters._serving import event_fields, payloads
from tb_convfilters._serving.payloads import Loc, Stale

logger = logging.getLogger(__name__)

# Payloads of at least this many bytes are read and checksummed in two halves at once.
SPLIT_BYTES = 4 << 20
# Bytes read at a time for a capped view of a payload (four times that on object stores).
VIEW_WINDOW = 4 << 20
# Bytes of a file's start compared on each refresh to notice a replaced file.
_FINGERPRINT = 64


class SeriesInfo(NamedTuple):
    content: bytes  # plugin_data.content of the first metadata seen
    description: str
    max_step: int


class _File:
    """One event file: how far it was read, and the records found in it."""

    def __init__(self) -> None:
        self.offset = 0  # where the next record starts
        self.size = -1
        self.fingerprint = b""
        self.locs: list[tuple[str, Loc]] = []  # (tag, loc) in file order
        self.warned = -1  # offset of a corrupt record already reported


class _Run:
    def __init__(self) -> None:
        self.files: dict[str, _File] = {}
        self.ours: dict[str, bool] = {}  # tag -> its first metadata names our plugin
        self.meta: dict[str, tuple[bytes, str]] = {}  # tag -> (content, description)
        self.view: dict[str, dict[int, Loc]] = {}  # tag -> step -> the last record written

    def rebuild(self) -> None:
        self.view = {}
        for path in sorted(self.files):
            self._apply(self.files[path].locs)

    def _apply(self, locs: list[tuple[str, Loc]]) -> None:
        for tag, loc in locs:
            self.view.setdefault(tag, {})[loc.step] = loc

    def is_ours(self, tag: str, meta: summary_pb2.SummaryMetadata | None) -> bool:
        """Whether `tag` is ours (decided by its first metadata naming a plugin)."""
        if meta is not None and meta.plugin_data.plugin_name:
            ours = self.ours.setdefault(tag, meta.plugin_data.plugin_name == metadata.PLUGIN_NAME)
            if ours and tag not in self.meta:
                self.meta[tag] = (meta.plugin_data.content, meta.summary_description)
        return self.ours.get(tag, False)


class Index:
    """Every convfilters record under one or more logdirs, followed as they grow.

    `roots` maps each directory to its run-name prefix (None: runs named as
    below the logdir), like TensorBoard's ``--logdir`` / ``--logdir_spec``.
    `refresh` reads what is new; `maybe_refresh` does so at most once per
    `reload_interval` seconds (0: on every call; None: only the first time).
    """

    def __init__(self, roots: dict[str, str | None], reload_interval: float | None = 5.0):
        self._roots = dict(roots)
        self._interval = reload_interval
        self._runs: dict[str, _Run] = {}
        self._lock = threading.RLock()  # what is indexed
        self._refreshing = threading.RLock()  # one refresh at a time
        self._root_of: dict[str, str] = {}  # run -> the root it was found under
        self._failing: set[str] = set()  # files and roots warned about until they work again
        self._refreshed: float | None = None
        self._dirty: set[str] = set()  # files to read again from their start
        self._version = 0  # changes whenever what is indexed changes
        self._listing: tuple[int, dict] = (-1, {})

    # ---- following the files ----

    def maybe_refresh(self) -> None:
        if self._due():
            with self._refreshing:
                if self._due():  # not done meanwhile by another request
                    self.refresh()

    def _due(self) -> bool:
        with self._lock:
            last = self._refreshed
            return (
                last is None
                or bool(self._dirty)
                or (self._interval is not None and time.monotonic() - last >= self._interval)
            )

    def refresh(self) -> None:
        """Reads every new record; notices new runs and files, shrunk and replaced files.

        Listing and sizes are fetched outside the index lock (requests are served
        meanwhile); a file that vanishes or cannot be read is skipped until it can.
        """
        with self._refreshing:
            found, failed_roots = self._list()
            with self._lock:
                for name in set(self._runs) - set(found):
                    if self._root_of.get(name) not in failed_roots:
                        del self._runs[name]
                        self._version += 1
                for name, listing in found.items():
                    self._refresh_run(self._runs.setdefault(name, _Run()), listing)
                self._dirty.clear()
                self._refreshed = time.monotonic()

    def _list(self) -> tuple[dict[str, list[tuple[str, int | None]]], set[str]]:
        """({run: [(event file, its size or None if unknown)]}, roots that failed to list)."""
        found: dict[str, list[tuple[str, int | None]]] = {}
        failed: set[str] = set()
        errors = files.read_errors()
        for root, prefix in self._roots.items():
            sizes: dict[str, int] = {}
            try:
                runs = reader._runs(root, sizes=sizes)
            except reader.NotFoundError as e:
                logger.debug("convfilters index: %s", e)
                continue
            except errors as e:  # keep what was indexed until it lists again
                failed.add(root)
                self._failed_once(root, f"cannot list {root}: {e!r}")
                continue
            self._failing.discard(root)
            for name, listing in runs.items():
                run = os.path.join(prefix, name) if prefix else name
                self._root_of[run] = root
                found[run] = [(path, self._size(path, sizes, errors)) for path in listing]
        return found, failed

    def _size(self, path: str, listed: dict[str, int], errors: tuple) -> int | None:
        if path in listed:
            return listed[path]
        try:
            return files.size(path)  # one HEAD per object where the listing has no sizes
        except errors as e:
            self._failed_once(path, f"cannot read {path}: {e!r}")
            return None

    def _failed_once(self, key: str, message: str) -> None:
        """Warns about a failing file or root once, until it works again."""
        if key not in self._failing:
            self._failing.add(key)
            logger.warning("convfilters index: %s; skipped until it can be read", message)

    def _refresh_run(self, run: _Run, listing: list[tuple[str, int | None]]) -> None:
        paths = [path for path, _ in listing]
        rebuild = bool(set(run.files) - set(paths))
        for path in set(run.files) - set(paths):
            del run.files[path]
        last = paths[-1] if paths else None
        errors = files.read_errors()
        for path, size in listing:
            state = run.files.setdefault(path, _File())
            if size is None:
                continue  # its size could not be read: what was indexed of it stays
            try:
                if size == state.size and path not in self._dirty:
                    continue
                if (
                    path in self._dirty
                    or size < state.offset
                    or not self._same_start(path, state, size)
                ):
                    if state.locs:
                        rebuild = True
                    state = run.files[path] = _File()
                    state.fingerprint = files.read_at(path, 0, min(size, _FINGERPRINT))
                new = self._read_on(path, state, size, run)
            except errors as e:
                self._failed_once(path, f"cannot read {path}: {e!r}")
                continue
            self._failing.discard(path)
            if new and path == last and not rebuild:
                run._apply(new)
                self._version += 1
            elif new:
                rebuild = True
        if rebuild:
            run.rebuild()
            self._version += 1

    @staticmethod
    def _same_start(path: str, state: _File, size: int) -> bool:
        if state.size < 0:
            return False
        return files.read_at(path, 0, min(size, _FINGERPRINT)).startswith(state.fingerprint)

    def _read_on(self, path: str, state: _File, size: int, run: _Run) -> list[tuple[str, Loc]]:
        """Indexes the complete records of `path` from ``state.offset``; returns them."""
        w = event_fields.Window(path, size)
        new: list[tuple[str, Loc]] = []
        offset = state.offset
        while offset + 12 <= size:
            head = w.read(offset, 12)
            if _masked_crc(crc32c.crc32c(head[:8])) != struct.unpack("<I", head[8:])[0]:
                if state.warned != offset:
                    state.warned = offset
                    logger.warning(
                        "%s: corrupt record length at offset %d; ignoring the rest of the file",
                        path,
                        offset,
                    )
                break
            (length,) = struct.unpack("<Q", head[:8])
            end = offset + 12 + length + 4
            if end > size:
                break  # still being written
            try:
                new += [
                    (v.tag, Loc(path, offset, end, v.step, v.wall_time, v.blobs, v.spans))
                    for v in event_fields.values(w, offset, end, run.is_ours)
                ]
            except (event_fields.Malformed, DecodeError, UnicodeDecodeError, ValueError) as e:
                # TensorBoard's loaders stop at a record that is no Event, too.
                if state.warned != offset:
                    state.warned = offset
                    logger.warning(
                        "%s: undecodable event at offset %d (%s); ignoring the rest of the file",
                        path,
                        offset,
                        e,
                    )
                break
            offset = end
        state.offset, state.size = offset, size
        state.locs += new
        return new

    # ---- what is indexed ----

    def runs(self) -> dict[str, dict[str, SeriesInfo]]:
        """``{run: {tag: SeriesInfo}}`` of every series with at least one step (do not modify)."""
        with self._lock:
            if self._listing[0] == self._version:
                return self._listing[1]
            out: dict[str, dict[str, SeriesInfo]] = {}
            for name, run in self._runs.items():
                for tag, steps in run.view.items():
                    if steps and tag in run.meta:
                        content, description = run.meta[tag]
                        info = SeriesInfo(content, description, max(steps))
                        out.setdefault(name, {})[tag] = info
            self._listing = (self._version, out)
            return out

    def has_run(self, run: str) -> bool:
        with self._lock:
            return run in self._runs

    def series(self, run: str, tag: str) -> list[Loc] | None:
        """Every step of a series, ascending; None if the run has no such series."""
        with self._lock:
            r = self._runs.get(run)
            steps = r.view.get(tag) if r is not None and tag in r.meta else None
            return None if not steps else [steps[s] for s in sorted(steps)]

    def find(self, run: str, tag: str, step: int) -> Loc | None:
        with self._lock:
            r = self._runs.get(run)
            return None if r is None else r.view.get(tag, {}).get(step)

    # ---- reading a payload (see ``payloads``) ----

    def payload(self, loc: Loc, header: dict, chunks: bool = False) -> bytes | encoding.Chunks:
        """The payload of `loc` (whose decoded header is `header`), read with one
        positioned read and checked against the record's CRC32C (and, as `Chunks`,
        against the payload's).

        With `chunks`, a large payload (`SPLIT_BYTES`) of a local file whose header
        stores its CRC32C comes as `Chunks`: two halves read and checksummed on two
        threads. Raises `Stale` (and reads the file again at the next refresh) when
        the record is no longer the one indexed, RecordError when it is corrupt.
        """
        try:
            return payloads.read(loc, header, SPLIT_BYTES if chunks else None)
        except Stale:
            self._stale(loc.path)
            raise

    def view(self, loc: Loc, header: dict, view: dict) -> np.ndarray:
        """`view` (from ``encoding.view_header``) cut out of the payload of `loc`, which is
        read and checksummed `VIEW_WINDOW` bytes at a time: memory holds the view and
        one window, never the record. Raises `Stale` and RecordError like `payload`."""
        try:
            return payloads.read_view(loc, header, view, VIEW_WINDOW)
        except Stale:
            self._stale(loc.path)
            raise

    def _stale(self, path: str) -> None:
        with self._lock:
            self._dirty.add(path)
