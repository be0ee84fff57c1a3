"""The findings route's series: the doctor fed from the plugin's index of the event
files (`IndexFindings`: kept per series, read again only where the records changed), or
from TensorBoard's data provider (when the plugin has no logdir)."""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from tb_convfilters import doctor
from tb_convfilters._record import encoding, layouts, metadata
from tb_convfilters._serving import index
from tb_convfilters.doctor.rules import Thresholds
from tb_convfilters.doctor.series import Series, _stats_matrix, make_series

logger = logging.getLogger(__name__)


# "Every step TensorBoard kept" for read_blob_sequences.
_ALL_STEPS = 1_000_000_000
# Statistics of the doctor's series kept between findings requests (IndexFindings).
SERIES_CACHE_BYTES = 256 << 20


# (run, tag) -> a kernel's dynamics.Dynamics (the dynamics routes' cache), or None.
DynamicsOf = Callable[[str, str], Any] | None


def _hook(dynamics: DynamicsOf, run: str, tag: str, info: dict) -> Callable[[], Any] | None:
    if dynamics is None or info.get("kind") != "kernel":
        return None
    return partial(dynamics, run, tag)


def provider_series(
    data_provider: provider.DataProvider,
    ctx: Any,
    experiment_id: str,
    run: str | None = None,
    dynamics: DynamicsOf = None,
) -> list[Series]:
    """Every kernel and activation series of one run (or all) through a data provider.

    Reads the stats blob of every step, one header per series, and tensors
    only when a diagnosis asks (`dynamics`: where kernels' dynamics come from).
    Raises ``errors.NotFoundError`` for an unknown run.
    """
    run_filter = provider.RunTagFilter(runs=[run]) if run is not None else None
    common = dict(experiment_id=experiment_id, plugin_name=metadata.PLUGIN_NAME)
    listing = data_provider.list_blob_sequences(ctx, run_tag_filter=run_filter, **common)
    if run is not None and run not in listing:
        raise errors.NotFoundError(f"run {run!r} has no convfilters data")
    data = data_provider.read_blob_sequences(
        ctx, downsample=_ALL_STEPS, run_tag_filter=run_filter, **common
    )
    out = []
    for run_name, tags in sorted(listing.items()):
        for tag, time_series in sorted(tags.items()):
            info = metadata.parse_plugin_metadata(time_series.plugin_content)
            datums = {d.step: d for d in data.get(run_name, {}).get(tag, []) if len(d.values) >= 3}
            if info is None or not datums:
                continue

            def read(step: int, index: int, datums: dict = datums) -> bytes:
                return data_provider.read_blob(ctx, blob_key=datums[step].values[index].blob_key)

            def load(step: int, read: Callable = read, datums: dict = datums) -> np.ndarray:
                header = encoding.read_header(partial(read, step), len(datums[step].values))
                return encoding.decode_array(header, read(step, encoding.PAYLOAD))

            try:
                header = encoding.decode_header(read(max(datums), encoding.HEADER))
                names = header.get("stats") or []
            except encoding.RecordError as e:
                logger.warning("doctor: %s/%s: %s", run_name, tag, e)
                continue
            n = _n_filters(header)
            records = ((step, _provider_stats(read, step, names, n)) for step in datums)
            hook = _hook(dynamics, run_name, tag, info)
            series = make_series(run_name, tag, info, records, load, hook)
            if series is not None:
                out.append(series)
    return out


def findings_report(
    data_provider: provider.DataProvider,
    ctx: Any,
    experiment_id: str,
    run: str | None = None,
    thresholds: Thresholds | None = None,
    dynamics: DynamicsOf = None,
) -> dict:
    """The ``findings`` route's JSON over a data provider (`report`)."""
    found = provider_series(data_provider, ctx, experiment_id, run, dynamics)
    return doctor.report(found, run, thresholds)


def _provider_stats(
    read: Callable, step: int, names: list[str], n_filters: int | None
) -> np.ndarray | None:
    """The stats of `step` read with the latest step's column `names`, or, when they do not
    fit its `n_filters` rows (columns added later, e.g. ``grad_norm``), with its own header's."""
    try:
        found = _stats_matrix(names, read(step, encoding.STATS))
        if found is not None and (n_filters is None or len(found) == n_filters):
            return found
    except encoding.RecordError:
        pass
    try:
        own = encoding.decode_header(read(step, encoding.HEADER)).get("stats") or []
        return _stats_matrix(own, read(step, encoding.STATS)) if own != names else None
    except encoding.RecordError:
        return None


def _n_filters(header: dict) -> int | None:
    try:
        return math.prod(header["shape"][a] for a in layouts.filter_axes(header["layout"]))
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def index_series(
    idx: index.Index, run: str | None = None, dynamics: DynamicsOf = None
) -> list[Series]:
    """Every kernel and activation series of one run (or all) in the plugin's index.

    Statistics are read from the files (one open per file); tensors when a diagnosis
    asks. Raises ``errors.NotFoundError`` for an unknown run.
    """
    listing = idx.runs()
    if run is not None and run not in listing:
        raise errors.NotFoundError(f"run {run!r} has no convfilters data")
    out = []
    for run_name in sorted(listing) if run is None else [run]:
        for tag, info in sorted(listing[run_name].items()):
            try:
                series = _index_one(idx, run_name, tag, info, dynamics)
            except index.Stale as e:  # read again at the next refresh
                logger.info("doctor: %s/%s: %s", run_name, tag, e)
                continue
            if series is not None:
                out.append(series)
    return out


def _index_one(
    idx: index.Index, run: str, tag: str, info: index.SeriesInfo, dynamics: DynamicsOf = None
) -> Series | None:
    described = metadata.parse_plugin_metadata(info.content)
    locs = [loc for loc in idx.series(run, tag) or () if loc.count > 2]
    if described is None or not locs:
        return None

    def load(step: int) -> np.ndarray:  # looked up when asked: a kept Series holds no locs
        loc = idx.find(run, tag, step)
        if loc is None:
            raise encoding.RecordError(f"step {step} is no longer in the logs")
        header = encoding.read_header(loc.blobs.__getitem__, loc.count)
        try:
            return encoding.decode_array(header, idx.payload(loc, header))
        except index.Stale as e:
            raise encoding.RecordError(str(e)) from None

    try:
        header = encoding.decode_header(locs[-1].blobs[encoding.HEADER])
        names = header.get("stats") or []
    except encoding.RecordError as e:
        logger.warning("doctor: %s/%s: %s", run, tag, e)
        return None
    stats = idx.read_blobs(locs, encoding.STATS)

    def read(i: int, blob: int) -> bytes:  # record i's stats (read above) or another blob
        return stats[i] if blob == encoding.STATS else locs[i].blobs[blob]

    n = _n_filters(header)
    records = ((loc.step, _provider_stats(read, i, names, n)) for i, loc in enumerate(locs))
    hook = _hook(dynamics, run, tag, described)
    return make_series(run, tag, described, records, load, hook)


class IndexFindings:
    """The findings route over the index, incremental: each series' doctor `Series`
    (its statistics) is kept, keyed by ``Index.series_key`` (which changes with its
    records), and read again only when that changes; a report is kept until one of
    its series changes, so a tab opened again gets it at once."""

    def __init__(self, idx: index.Index, max_bytes: int = SERIES_CACHE_BYTES):
        self.idx = idx
        self.max_bytes = max_bytes
        self._series: OrderedDict[tuple[str, str], tuple[int | None, Series | None]] = OrderedDict()
        self._bytes = 0
        self._reports: dict[str | None, tuple[tuple, dict]] = {}
        self._lock = threading.Lock()

    def report(self, run: str | None, dynamics: DynamicsOf = None) -> dict:
        listing = self.idx.runs()
        if run is not None and run not in listing:
            raise errors.NotFoundError(f"run {run!r} has no convfilters data")
        names = sorted(listing) if run is None else [run]
        keys = tuple(
            (r, tag, self.idx.series_key(r, tag)) for r in names for tag in sorted(listing[r])
        )
        with self._lock:
            cached = self._reports.get(run)
        if cached is not None and cached[0] == keys:
            return cached[1]
        series, complete = [], True
        for r, tag, key in keys:
            try:
                found = self._one(r, tag, key, listing[r][tag], dynamics)
            except index.Stale as e:  # read again at the next refresh
                logger.info("doctor: %s/%s: %s", r, tag, e)
                complete = False
                continue
            if found is not None:
                series.append(found)
        answer = doctor.report(series, run)
        if complete:
            with self._lock:
                self._reports[run] = (keys, answer)
        return answer

    def _one(
        self,
        run: str,
        tag: str,
        key: int | None,
        info: index.SeriesInfo,
        dynamics: DynamicsOf = None,
    ) -> Series | None:
        with self._lock:
            cached = self._series.get((run, tag))
            if cached is not None and cached[0] == key and key is not None:
                self._series.move_to_end((run, tag))
                return cached[1]
        series = _index_one(self.idx, run, tag, info, dynamics)
        size = 0 if series is None else series.stats.nbytes
        with self._lock:
            old = self._series.pop((run, tag), None)
            if old is not None and old[1] is not None:
                self._bytes -= old[1].stats.nbytes
            if size <= self.max_bytes:
                self._series[(run, tag)] = (key, series)
                self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._series.popitem(last=False)
                self._bytes -= 0 if dropped is None else dropped.stats.nbytes
        return series
