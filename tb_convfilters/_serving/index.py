"""The plugin's own index of its records in a logdir's event files.

For every (run, tag, step) it keeps where the record and its blobs lie and the
small blobs the routes read most (header, checks), as numpy columns per event file
(``index_store``: ~50 bytes per record, headers kept once per distinct header).
Payloads and statistics are read only when asked for, with positioned reads
(`Index.payload`, ``payloads.read_blob``; statistics through a bounded cache).

Event files are read as ``reader`` reads them (TFRecord framing, files in name
order, the last record of a step wins), but only the bytes around each payload
(``event_fields``: the payload, like every value of another plugin, is skipped by
its length; small records mostly by template). Each file is read on from where the
last refresh stopped; new files and new runs are picked up; a file that shrank or
whose first bytes changed is read again from its start. A read checks that the
record still holds the indexed blobs (else `Stale`: the file changed), a payload
then its own and the record's CRC32C.

`Index.start` builds the index in a background thread (the plugin does at load):
runs are published one at a time as their files are read, so a listing during that
first build answers with the runs indexed so far (`Index.building`).
"""

from __future__ import annotations

import functools
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
from tb_convfilters._serving.index_store import BlobCache, Cols, Rows, Table, View
from tb_convfilters._serving.payloads import Loc, Stale

logger = logging.getLogger(__name__)

# Payloads of at least this many bytes are read and checksummed in two halves at once.
SPLIT_BYTES = 4 << 20
# Bytes read at a time for a capped view of a payload (four times that on object stores).
VIEW_WINDOW = 4 << 20
# Bytes of a file's start compared on each refresh to notice a replaced file.
_FINGERPRINT = 64
# Bytes of small records read at a time while indexing (one request each on object stores).
_CHUNK = 1 << 20
_URL_CHUNK = 8 << 20
# Statistics blobs kept in memory once read (the stats route reads them on every poll).
BLOB_CACHE_BYTES = 32 << 20
# While the first build runs: how long a listing waits for it before answering with the
# runs indexed so far, and how long a request for a run not indexed yet waits for it.
READY_WAIT_S = 0.01
RUN_WAIT_S = 60.0
_HEAD = struct.Struct("<QI")


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
        self.cols = Cols()
        self.warned = -1  # offset of a corrupt record already reported


class _Run:
    """A run's files (touched by the refresher only) and its published `view`."""

    def __init__(self) -> None:
        self.files: dict[str, _File] = {}
        self.table = Table()
        self.ours: dict[str, bool] = {}  # tag -> its first metadata names our plugin
        self.meta: dict[str, tuple[bytes, str]] = {}  # tag -> (content, description)
        self.view = View([], self.table)

    def is_ours(self, tag: str, meta: summary_pb2.SummaryMetadata | None) -> bool:
        """Whether `tag` is ours (decided by its first metadata naming a plugin)."""
        if meta is not None and meta.plugin_data.plugin_name:
            ours = self.ours.setdefault(tag, meta.plugin_data.plugin_name == metadata.PLUGIN_NAME)
            if ours and tag not in self.meta:
                self.meta[tag] = (meta.plugin_data.content, meta.summary_description)
        return self.ours.get(tag, False)

    def make_view(self) -> View:
        return View([(path, self.files[path].cols) for path in sorted(self.files)], self.table)


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
        self._runs: dict[str, _Run] = {}  # published runs
        self._lock = threading.RLock()  # what is indexed
        self._published = threading.Condition(self._lock)  # a run was published
        self._refreshing = threading.RLock()  # one refresh at a time
        self._root_of: dict[str, str] = {}  # run -> the root it was found under
        self._failing: set[str] = set()  # files and roots warned about until they work again
        self._refreshed: float | None = None
        self._dirty: set[str] = set()  # files to read again from their start
        self._version = 0  # changes whenever what is indexed changes
        self._listing: tuple[int, dict] = (-1, {})
        self._built: threading.Event | None = None  # set once the first build is done
        self._blobs = BlobCache(BLOB_CACHE_BYTES)
        self._reader = self._read_blob

    # ---- the first build, in the background ----

    def start(self) -> None:
        """Builds the index in a background thread (once); requests meanwhile are
        answered from what is ready (`maybe_refresh`)."""
        with self._lock:
            if self._built is not None:
                return
            self._built = threading.Event()
        threading.Thread(target=self._first_build, name="convfilters-index", daemon=True).start()

    def _first_build(self) -> None:
        try:
            self.refresh()
        except Exception:  # a request's refresh reports it again
            logger.exception("convfilters index: the first build failed")
        finally:
            with self._published:
                self._built.set()
                self._published.notify_all()

    def building(self) -> bool:
        """Whether the first build (`start`) is still running."""
        return self._built is not None and not self._built.is_set()

    def wait_built(self, timeout: float | None = None) -> bool:
        """Waits for the first build; whether it is done."""
        return self._built is None or self._built.wait(timeout)

    # ---- following the files ----

    def maybe_refresh(self, partial: bool = False, run: str | None = None) -> None:
        """Reads what is new if a refresh is due.

        While the first build runs: with `partial` (a listing) it waits at most
        `READY_WAIT_S` and answers from the runs indexed so far; else it waits (at
        most `RUN_WAIT_S`) until `run` is indexed, or the build is done. With a
        reload interval of 0 (follow every request) it waits for the whole build.
        """
        if self.building():
            if self._interval == 0:
                self.wait_built()
            elif partial:
                self.wait_built(READY_WAIT_S)
            else:
                with self._published:
                    self._published.wait_for(
                        lambda: not self.building() or (run is not None and run in self._runs),
                        RUN_WAIT_S,
                    )
            if self.building():
                return
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

        Files are listed and read outside the index lock (requests are served
        meanwhile); each run is published as soon as its files are read. A file
        that vanishes or cannot be read is skipped until it can.
        """
        with self._refreshing:
            with self._lock:
                dirty = set(self._dirty)
            found, failed_roots = self._list()
            with self._lock:
                for name in set(self._runs) - set(found):
                    if self._root_of.get(name) not in failed_roots:
                        del self._runs[name]
                        self._version += 1
            for name, listing in found.items():
                run = self._runs.get(name) or _Run()
                changed = self._refresh_run(run, listing, dirty)
                if changed or name not in self._runs:
                    view = run.make_view() if changed else run.view
                    with self._published:
                        run.view = view
                        self._runs[name] = run
                        self._version += 1
                        self._published.notify_all()
            with self._lock:
                self._dirty -= dirty
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

    def _refresh_run(self, run: _Run, listing: list[tuple[str, int | None]], dirty: set) -> bool:
        """Reads the new records of a run's files; whether its series changed."""
        paths = [path for path, _ in listing]
        changed = False
        for path in set(run.files) - set(paths):
            changed = changed or bool(len(run.files[path].cols))
            del run.files[path]
        errors = files.read_errors()
        for path, size in listing:
            state = run.files.setdefault(path, _File())
            if size is None:
                continue  # its size could not be read: what was indexed of it stays
            try:
                if size == state.size and path not in dirty:
                    continue
                if path in dirty or size < state.offset or not self._same_start(path, state, size):
                    changed = changed or bool(len(state.cols))
                    state = run.files[path] = _File()
                    state.fingerprint = files.read_at(path, 0, min(size, _FINGERPRINT))
                rows = _read_on(path, state, size, run)
            except errors as e:
                self._failed_once(path, f"cannot read {path}: {e!r}")
                continue
            self._failing.discard(path)
            if len(rows):
                state.cols = state.cols.extended(rows)
                changed = True
        return changed

    @staticmethod
    def _same_start(path: str, state: _File, size: int) -> bool:
        if state.size < 0:
            return False
        return files.read_at(path, 0, min(size, _FINGERPRINT)).startswith(state.fingerprint)

    # ---- what is indexed ----

    def runs(self) -> dict[str, dict[str, SeriesInfo]]:
        """``{run: {tag: SeriesInfo}}`` of every series with at least one step (do not modify)."""
        with self._lock:
            if self._listing[0] == self._version:
                return self._listing[1]
            out: dict[str, dict[str, SeriesInfo]] = {}
            for name, run in self._runs.items():
                view = run.view
                for tag, (_, hi) in view.bounds.items():
                    if tag in run.meta:
                        content, description = run.meta[tag]
                        info = SeriesInfo(content, description, int(view.steps[hi - 1]))
                        out.setdefault(name, {})[tag] = info
            self._listing = (self._version, out)
            return out

    def has_run(self, run: str) -> bool:
        return run in self._runs

    def series(self, run: str, tag: str) -> list[Loc] | None:
        """Every step of a series, ascending; None if the run has no such series."""
        r = self._runs.get(run)
        if r is None or tag not in r.meta:
            return None
        return r.view.locs(tag, self._reader) or None

    def series_key(self, run: str, tag: str) -> int | None:
        """A number that changes whenever the records of a series change."""
        r = self._runs.get(run)
        return None if r is None else r.view.keys.get(tag)

    def find(self, run: str, tag: str, step: int) -> Loc | None:
        r = self._runs.get(run)
        return None if r is None else r.view.find(tag, step, self._reader)

    def nbytes(self) -> int:
        """Bytes of the numpy columns and views (not counting Python's objects)."""
        with self._lock:
            runs = list(self._runs.values())
        total = 0
        for run in runs:
            total += run.view.nbytes() + sum(c.nbytes() for _, c in run.view.files)
        return total

    # ---- reading blobs on demand (statistics) ----

    def _read_blob(self, loc: Loc, i: int) -> bytes:
        key = (loc.path, loc.start, loc.end, i, loc.held)
        found = self._blobs.get(key)
        if found is None:
            try:
                found = payloads.read_blob(loc, i)
            except Stale:
                self._stale(loc.path)
                raise
            self._blobs.put(key, found)
        return found

    def read_blobs(self, locs: list[Loc], i: int) -> list[bytes]:
        """Blob `i` of every one of `locs`, each file opened once (not cached: for scans
        of many steps, like the doctor's). Raises `Stale` like `payload`."""
        try:
            return payloads.read_blobs(locs, i)
        except Stale:
            for loc in locs:
                self._stale(loc.path)
            raise

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


def _chunk(path: str, offset: int, size: int, chunk: int) -> tuple[bytes, int, int]:
    return files.read_at(path, offset, min(chunk, size - offset)), offset, 0


def _read_on(path: str, state: _File, size: int, run: _Run) -> Rows:
    """Indexes the complete records of `path` from ``state.offset``; returns them.

    Small records are read a chunk at a time and matched against templates
    (``event_fields.small_record``); a large one is read around its payload.
    """
    rows = Rows()
    add = rows.add
    chunk = _URL_CHUNK if files.is_url(path) else _CHUNK
    templates, ours, shape_of = run.table.templates, run.is_ours, run.table.shape_id
    small = event_fields._SMALL
    head = event_fields._URL_WINDOW if files.is_url(path) else event_fields._WINDOW
    smalls = 0  # small records in a row
    window = functools.partial(event_fields.Window.over, path, size)
    offset = state.offset
    buf, base = b"", offset
    while offset + 12 <= size:
        i = offset - base
        if i + 12 > len(buf):  # a chunk after small records, a window after a large one
            buf, base, i = _chunk(path, offset, size, chunk if smalls > 8 else head)
            if len(buf) < 12:
                break  # the file shrank meanwhile: the next refresh sees it
        length, masked = _HEAD.unpack_from(buf, i)
        if _masked_crc(crc32c.crc32c(buf[i : i + 8])) != masked:
            if state.warned != offset:
                state.warned = offset
                logger.warning(
                    "%s: corrupt record length at offset %d; ignoring the rest of the file",
                    path,
                    offset,
                )
            break
        end = offset + 12 + length + 4
        if end > size:
            break  # still being written
        try:
            smalls = smalls + 1 if length <= small else 0
            if smalls:
                if i + 16 + length > len(buf):
                    buf, base, i = _chunk(path, offset, size, chunk)
                    if len(buf) < 16 + length:
                        break
                found = event_fields.small_record(
                    buf,
                    i,
                    length,
                    base,
                    templates,
                    ours,
                    shape_of,
                    window,
                )
            else:
                found = []
                w = window(buf, base)  # reads around the payload; its last window is kept
                for v in event_fields.values(w, offset, end, ours):
                    shape, checks = shape_of(v.tag, v.blobs, v.spans, offset, end)
                    found.append((v.step, v.wall_time, checks, shape, 0))
                buf, base = w.data()
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
        for step, wall, checks, shape, shift in found:
            add(offset, step, wall, checks, shape, shift)
        offset = end
    state.offset, state.size = offset, size
    return rows
