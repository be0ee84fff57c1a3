"""Where the plugin's routes get their data: the plugin's own index, or TensorBoard.

Two sources behind one small interface (`Source`):

* `IndexSource` (the default): the plugin's index of its records (``index``),
  built from the event files under TensorBoard's ``--logdir`` / ``--logdir_spec``.
  TensorBoard keeps almost nothing of ours; every step is read from disk on demand.
* `ProviderSource`: TensorBoard's data provider (``list_blob_sequences``,
  ``read_blob``), used when there is no logdir to read, e.g. with
  ``--grpc_data_provider``. It serves the steps TensorBoard kept.

`make_source` picks one. A step is an opaque object with ``step`` and ``wall_time``.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from tensorboard import errors
from tensorboard.data import provider
from tensorboard.plugins import base_plugin

from tb_convfilters._record import encoding, metadata
from tb_convfilters._serving import findings, index

logger = logging.getLogger(__name__)

# Effectively "every step that TensorBoard kept" for read_blob_sequences.
_ALL_STEPS = 1_000_000_000
# Headers and stats blobs kept in memory (the Rust loader answers each read by RPC).
_SMALL_BLOB_CACHE_BYTES = 64 << 20
_SERIES_CACHE_SIZE = 512


class HttpError(Exception):
    """An error answered as JSON ``{"error": message, **details}`` with `status`."""

    def __init__(self, status: int, message: str, **details: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def quoted(value: str) -> str:
    """`value` quoted for an error message, cut short if huge."""
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


# A series as listed: (content of its metadata, description, max_step).
SeriesListing = index.SeriesInfo


class Source(Protocol):
    """What the routes need; every method may raise HttpError."""

    mode: str  # "index" or "provider", for the logs and the docs

    def listing(self, ctx: Any, experiment: str) -> dict[str, dict[str, SeriesListing]]:
        """``{run: {tag: SeriesListing}}`` of every series."""

    def series(self, ctx: Any, experiment: str, run: str, tag: str) -> list:
        """Every step of a series, ascending; 404 for an unknown run or tag."""

    def count(self, step: Any) -> int:
        """How many blobs the step's record has."""

    def read(self, ctx: Any, step: Any, index: int, run: str, tag: str) -> bytes:
        """Blob `index` (not the payload) of a step."""

    def payload(
        self,
        ctx: Any,
        step: Any,
        header: dict,
        run: str,
        tag: str,
        chunks: bool = False,
        view: dict | None = None,
    ) -> Any:
        """The payload of a step whose stored header is `header` (bytes-like; with
        `chunks`, possibly ``encoding.Chunks`` already checked). With a `view` smaller than
        the payload (``encoding.view_header``), possibly only that view, as a checked array."""

    def findings(self, ctx: Any, experiment: str, run: str | None) -> dict:
        """The filter doctor's report (``doctor.report``); kernels' dynamics from
        ``dynamics_of(ctx, experiment, run, tag)`` when the plugin set it (its cache)."""


def _not_ours(step: Any, run: str, tag: str) -> HttpError:
    return HttpError(
        422, f"step {step.step} of run {quoted(run)}, tag {quoted(tag)} is not a convfilters record"
    )


def step_at(source: Source, ctx: Any, experiment: str, run: str, tag: str, step: int | None) -> Any:
    """Step `step` of a series (its latest if None); 404 if there is no such step."""
    series = source.series(ctx, experiment, run, tag)
    if not series:
        raise HttpError(404, f"no steps in run {quoted(run)}, tag {quoted(tag)}")
    if step is None:
        return series[-1]
    for datum in series:
        if datum.step == step:
            return datum
    raise HttpError(
        404,
        f"step {step} not found in run {quoted(run)}, tag {quoted(tag)}; "
        f"it has {len(series)} steps from {series[0].step} to {series[-1].step}",
    )


def header_of(source: Source, ctx: Any, step: Any, run: str, tag: str) -> dict:
    """The decoded header of a step's record; 422 if it is unreadable."""
    try:
        return encoding.read_header(
            lambda i: source.read(ctx, step, i, run, tag), source.count(step)
        )
    except encoding.RecordError as e:
        raise HttpError(
            422, f"step {step.step} of run {quoted(run)}, tag {quoted(tag)} is unreadable: {e}"
        ) from None


def array_of(
    source: Source, ctx: Any, step: Any, header: dict, run: str, tag: str, max_bytes: int
) -> np.ndarray:
    """A step's whole array (`header` from `header_of`): 413 over `max_bytes` (the
    ``--convfilters_max_tensor_mb`` limit), 422 if the record is unreadable."""
    where = f"run {quoted(run)}, tag {quoted(tag)}, step {step.step}"
    size = encoding.payload_nbytes(header)
    if size > max_bytes:
        raise HttpError(
            413,
            f"tensor of {where} is {size} bytes, over the limit of {max_bytes} "
            "(TensorBoard flag --convfilters_max_tensor_mb)",
            nbytes=size,
            limit_bytes=max_bytes,
        )
    try:
        return encoding.decode_array(header, bytes(source.payload(ctx, step, header, run, tag)))
    except encoding.RecordError as e:
        raise HttpError(422, f"{where} is unreadable: {e}") from None


# ---- the plugin's index ----


def logdir_roots(context: base_plugin.TBContext) -> dict[str, str | None]:
    """TensorBoard's log directories and their run-name prefixes; {} when there are none.

    Empty when TensorBoard reads through another process (``--grpc_data_provider``).
    """
    flags = context.flags
    if flags is not None and getattr(flags, "grpc_data_provider", ""):
        return {}
    logdir = context.logdir or (getattr(flags, "logdir", "") if flags is not None else "")
    if logdir:
        return {os.path.expanduser(logdir): None}
    spec = getattr(flags, "logdir_spec", "") if flags is not None else ""
    if spec:
        from tensorboard.backend.event_processing import data_ingester

        return dict(data_ingester._parse_event_files_spec(spec))
    return {}


class IndexSource:
    """Serves from the plugin's own index of the event files, built in the background
    from `start` (the plugin's load) on: a listing meanwhile has the runs indexed so far."""

    mode = "index"
    dynamics_of: Callable | None = None

    def __init__(self, roots: dict[str, str | None], reload_interval: float | None):
        self.index = index.Index(roots, reload_interval)
        self._findings = findings.IndexFindings(self.index)

    def start(self) -> None:
        self.index.start()

    def indexing(self) -> bool:
        """Whether the first build is still running (a listing may lack runs)."""
        return self.index.building()

    def listing(self, ctx: Any, experiment: str) -> dict[str, dict[str, SeriesListing]]:
        self.index.maybe_refresh(partial=True)
        return self.index.runs()

    def series(self, ctx: Any, experiment: str, run: str, tag: str) -> list[index.Loc]:
        self.index.maybe_refresh(run=run)
        found = self.index.series(run, tag)
        if found is None:
            if not self.index.has_run(run):
                raise HttpError(404, f"run {quoted(run)} not found")
            raise HttpError(404, f"tag {quoted(tag)} not found in run {quoted(run)}")
        return found

    def count(self, step: index.Loc) -> int:
        return step.count

    def read(self, ctx: Any, step: index.Loc, i: int, run: str, tag: str) -> bytes:
        if step.count <= i:
            raise _not_ours(step, run, tag)
        return self._again(step, run, tag, lambda loc: loc.blobs[i])

    def payload(
        self,
        ctx: Any,
        step: index.Loc,
        header: dict,
        run: str,
        tag: str,
        chunks: bool = False,
        view: dict | None = None,
    ) -> Any:
        if step.count <= encoding.PAYLOAD:
            raise _not_ours(step, run, tag)

        def read(loc: index.Loc) -> Any:
            if view is not None and view["shape"] != header["shape"]:
                return self.index.view(loc, header, view)  # holds the view, not the record
            return self.index.payload(loc, header, chunks)

        return self._again(step, run, tag, read)

    def _again(self, step: index.Loc, run: str, tag: str, read: Callable) -> Any:
        """``read(step)``; when its file changed, read again once the index has read the
        file again: 404 if the step is gone, 409 if its record changed meanwhile."""
        try:
            return read(step)
        except index.Stale as e:
            logger.info("convfilters: %s; reading the file again", e)
        self.index.refresh()
        again = self.index.find(run, tag, step.step)
        where = f"step {step.step} of run {quoted(run)}, tag {quoted(tag)}"
        if again is None:
            raise HttpError(404, f"{where} is gone: its event file changed")
        if not again.same_record(step):
            raise HttpError(409, f"{where} changed on disk while it was read; ask again")
        try:
            return read(again)
        except index.Stale:
            raise HttpError(409, f"{where} is changing on disk; ask again") from None

    def findings(self, ctx: Any, experiment: str, run: str | None) -> dict:
        self.index.maybe_refresh(run=run)
        return self._findings.report(run, _bound(self.dynamics_of, ctx, experiment))


# ---- TensorBoard's data provider ----


class ProviderSource:
    """Serves the steps TensorBoard kept, through its data provider."""

    mode = "provider"
    dynamics_of: Callable | None = None

    def __init__(self, data_provider: provider.DataProvider):
        self.provider = data_provider
        self._small_blobs: OrderedDict[tuple, bytes] = OrderedDict()
        self._small_bytes = 0
        self._series_cache: OrderedDict[tuple, tuple] = OrderedDict()
        self._cache_lock = threading.Lock()

    def listing(self, ctx: Any, experiment: str) -> dict[str, dict[str, SeriesListing]]:
        found = self.provider.list_blob_sequences(
            ctx, experiment_id=experiment, plugin_name=metadata.PLUGIN_NAME
        )
        return {
            run: {
                tag: SeriesListing(s.plugin_content, s.description or "", s.max_step)
                for tag, s in tags.items()
            }
            for run, tags in found.items()
        }

    def series(self, ctx: Any, experiment: str, run: str, tag: str) -> list:
        """Every kept datum of a series (blob keys only, no payloads), ascending."""
        listing = self.provider.list_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=metadata.PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        )
        summary = listing.get(run, {}).get(tag)
        if summary is None:
            # The provider drops runs with no matching tag: say which one is unknown.
            known = self.provider.list_blob_sequences(
                ctx,
                experiment_id=experiment,
                plugin_name=metadata.PLUGIN_NAME,
                run_tag_filter=provider.RunTagFilter(runs=[run]),
            )
            if run not in known:
                raise HttpError(404, f"run {quoted(run)} not found")
            raise HttpError(404, f"tag {quoted(tag)} not found in run {quoted(run)}")
        # Reading a series costs ~45 ms per call on the Rust data server whatever
        # its size, while listing is cheap: reuse the last read until it changes.
        key = (experiment, run, tag)
        version = (summary.max_step, summary.max_wall_time, summary.max_length)
        with self._cache_lock:
            cached = self._series_cache.get(key)
            if cached is not None and cached[0] == version:
                self._series_cache.move_to_end(key)
                return cached[1]
        data = self.provider.read_blob_sequences(
            ctx,
            experiment_id=experiment,
            plugin_name=metadata.PLUGIN_NAME,
            downsample=_ALL_STEPS,
            run_tag_filter=provider.RunTagFilter(runs=[run], tags=[tag]),
        )
        series = sorted(data.get(run, {}).get(tag, []), key=lambda d: d.step)
        with self._cache_lock:
            self._series_cache[key] = (version, series)
            self._series_cache.move_to_end(key)
            while len(self._series_cache) > _SERIES_CACHE_SIZE:
                self._series_cache.popitem(last=False)
        return series

    def count(self, step: Any) -> int:
        return len(step.values)

    def read(self, ctx: Any, step: Any, i: int, run: str, tag: str) -> bytes:
        if len(step.values) <= i:
            raise _not_ours(step, run, tag)
        key = (step.values[i].blob_key, step.wall_time)
        if i != encoding.PAYLOAD:
            with self._cache_lock:
                cached = self._small_blobs.get(key)
                if cached is not None:
                    self._small_blobs.move_to_end(key)
                    return cached
        try:
            data = self.provider.read_blob(ctx, blob_key=key[0])
        except errors.InvalidArgumentError as e:
            hint = ""
            if re.search(r'["\\\x00-\x1f]', run + tag):
                hint = (
                    "; TensorBoard's Rust data server (--load_fast=true) cannot read runs or "
                    "tags whose names hold '\"', '\\' or control characters: rename them or "
                    "use --load_fast=false"
                )
            raise HttpError(
                422,
                f"step {step.step} of run {quoted(run)}, tag {quoted(tag)} "
                f"could not be read: {e}{hint}",
            ) from None
        if i != encoding.PAYLOAD:
            self._cache_small_blob(key, data)
        return data

    def _cache_small_blob(self, key: tuple, data: bytes) -> None:
        """Keeps headers and stats (read once per step by every stats poll) in an LRU."""
        with self._cache_lock:
            self._small_blobs[key] = data
            self._small_bytes += len(data)
            while self._small_bytes > _SMALL_BLOB_CACHE_BYTES:
                _, old = self._small_blobs.popitem(last=False)
                self._small_bytes -= len(old)

    def payload(
        self,
        ctx: Any,
        step: Any,
        header: dict,
        run: str,
        tag: str,
        chunks: bool = False,
        view: dict | None = None,
    ) -> bytes:
        # the provider hands out whole blobs
        return self.read(ctx, step, encoding.PAYLOAD, run, tag)

    def findings(self, ctx: Any, experiment: str, run: str | None) -> dict:
        hook = _bound(self.dynamics_of, ctx, experiment)
        return findings.findings_report(self.provider, ctx, experiment, run, dynamics=hook)


def _bound(dynamics_of: Callable | None, ctx: Any, experiment: str) -> Callable | None:
    """``dynamics_of`` with the request's context: ``(run, tag) -> Dynamics``."""
    if dynamics_of is None:
        return None
    return functools.partial(dynamics_of, ctx, experiment)


def make_source(context: base_plugin.TBContext) -> Source:
    """The index over TensorBoard's logdir when there is one, else its data provider."""
    roots = logdir_roots(context)
    if not roots:
        return ProviderSource(context.data_provider)
    # TensorBoard reloads every --reload_interval seconds, once if it is 0; without
    # TensorBoard's flags (a plugin built in-process) the index follows every request.
    flags = context.flags
    interval = float(getattr(flags, "reload_interval", 5.0)) if flags is not None else 0.0
    source = IndexSource(roots, interval if interval > 0 or flags is None else None)
    source.start()  # the index is built before the first request asks
    return source
