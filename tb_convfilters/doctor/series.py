"""What the doctor reads: a layer's per-step statistics as a Series, and how to get them
from event files through reader (any path TensorBoard reads, s3:// too), keeping
only headers, statistics and record offsets; tensors are loaded only when a rule asks."""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tb_convfilters import reader
from tb_convfilters._record import encoding, layouts
from tb_convfilters._record.firing import FIRING_STATS

logger = logging.getLogger(__name__)


# Stats columns of a Series: STAT_NAMES, then FIRING_STATS (NaN in records without them).
COLUMNS = encoding.STAT_NAMES + FIRING_STATS


@dataclass
class Series:
    """One logged series as the doctor sees it: statistics of every step, tensors on demand."""

    run: str
    tag: str
    kind: str
    layout: str
    shape: tuple[int, ...]
    filters: list[int] | None  # original indices of the logged filters (max_filters)
    steps: np.ndarray  # (T,) ascending
    stats: np.ndarray  # (T, n_filters, len(STAT_NAMES)) float64
    load: Callable[[int], np.ndarray]  # step -> the array logged at that step
    nbytes: int = 0  # bytes of one step as stored (what `load` reads)
    # the kernel's dynamics.Dynamics when the caller has them (cached); else read with `load`
    dynamics: Callable[[], Any] | None = None

    @property
    def n_filters(self) -> int:
        return self.stats.shape[1]

    @property
    def filter_size(self) -> int:
        return math.prod(self.shape) // max(self.n_filters, 1)

    def original(self, index: int) -> int:
        """The filter's index in the model (before ``max_filters`` picked some)."""
        if not self.filters:
            return int(index)
        if "M" in self.layout:  # depthwise: filters lists kept input channels i of i*M + m
            m = self.shape[self.layout.index("M")]
            return int(self.filters[index // m]) * m + int(index % m)
        return int(self.filters[index])


def make_series(
    run: str,
    tag: str,
    info: dict,
    records: Iterable[tuple[int, np.ndarray | None]],
    load: Callable[[int], np.ndarray],
    dynamics: Callable[[], Any] | None = None,
) -> Series | None:
    """A Series from its description (kind, layout, shape, filters) and ``(step, stats)`` pairs.

    Stats columns are ``encoding.STAT_NAMES``; steps without usable stats are left
    out. None when the series is not a kernel or activation, or has no stats.
    """
    kind, layout, shape = info.get("kind"), info.get("layout"), info.get("shape")
    if kind not in ("kernel", "activation") or not isinstance(shape, list):
        return None
    try:
        n_filters = math.prod(shape[axis] for axis in layouts.filter_axes(layout))
    except (ValueError, TypeError, IndexError):
        return None
    by_step = {}
    for step, m in records:  # STAT_NAMES, optionally followed by FIRING_STATS
        if m is not None and m.shape[0] == n_filters and m.ndim == 2:
            if m.shape[1] == len(encoding.STAT_NAMES):
                m = np.hstack([m, np.full((n_filters, len(FIRING_STATS)), np.nan, m.dtype)])
            if m.shape[1] == len(COLUMNS):
                by_step[int(step)] = m
    if not by_step:
        return None
    steps = np.array(sorted(by_step), dtype=np.int64)
    filters = info.get("filters")
    return Series(
        run=run,
        tag=tag,
        kind=kind,
        layout=layout,
        shape=tuple(int(n) for n in shape),
        filters=list(filters) if isinstance(filters, list) else None,
        steps=steps,
        stats=np.stack([by_step[int(s)] for s in steps]).astype(np.float64),
        load=load,
        nbytes=math.prod(shape) * _ITEMSIZE.get(info.get("dtype"), 8),
        dynamics=dynamics,
    )


_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1}


def _stats_matrix(names: list[str], data: bytes) -> np.ndarray | None:
    """Stats of one step with columns reordered to ``COLUMNS``; None if it lacks some of
    ``STAT_NAMES`` (the firing columns are NaN when absent)."""
    if not all(name in names for name in encoding.STAT_NAMES):
        return None
    matrix = encoding.decode_stats({"stats": names}, data)
    out = matrix[:, [names.index(name) for name in encoding.STAT_NAMES]]
    if all(name in names for name in FIRING_STATS):
        return np.hstack([out, matrix[:, [names.index(name) for name in FIRING_STATS]]])
    return out


def _entry_loader(
    run: str, tag: str, where: dict[int, tuple[str, int]]
) -> Callable[[int], np.ndarray]:
    def load(step: int) -> np.ndarray:
        return reader._entry_at(run, tag, *where[step]).array()

    return load


def _streamed(info: dict, where: dict, load: Callable) -> Callable[[], Any]:
    """The kernel's dynamics, its steps read one at a time in step order."""

    def dynamics() -> Any:
        from tb_convfilters.dynamics import Tracker

        tracker = Tracker()
        for step in sorted(where):
            tracker.add(step, load(step), info)
        return tracker.result()

    return dynamics


def _scan_run(run: str, files: tuple[str, ...]) -> list[Series]:
    steps: dict[str, dict[int, tuple]] = defaultdict(dict)
    for entry, path, offset in reader._scan(run, files, None):
        blobs = entry.value.tensor.string_val
        try:
            header = encoding.decode_blobs_header(blobs)
            stats = _stats_matrix(header.get("stats") or [], blobs[encoding.STATS])
        except encoding.RecordError as e:
            logger.warning("doctor: %s/%s step %d: %s", run, entry.tag, entry.step, e)
            continue
        steps[entry.tag][entry.step] = (header, stats, path, offset)
    out = []
    for tag, by_step in sorted(steps.items()):
        info = by_step[max(by_step)][0]
        where = {step: (path, offset) for step, (_, _, path, offset) in by_step.items()}
        records = ((step, stats) for step, (_, stats, _, _) in by_step.items())
        load = _entry_loader(run, tag, where)
        series = make_series(run, tag, info, records, load, _streamed(info, where, load))
        if series is not None:
            out.append(series)
    return out


def logdir_series(logdir: str | os.PathLike, run: str | None = None) -> list[Series]:
    """Every kernel and activation series under `logdir` (or of one run), read from its files."""
    root = os.fspath(logdir)
    try:
        runs = reader._runs(root)
    except reader.NotFoundError:
        raise FileNotFoundError(f"logdir={root!r} is not a directory") from None
    if run is not None:
        if run not in runs:
            raise ValueError(
                f"run={run!r} has no event files under {root!r}; runs: "
                + (", ".join(sorted(runs)) or "none")
            )
        runs = {run: runs[run]}
    return [s for name, paths in sorted(runs.items()) for s in _scan_run(name, paths)]
