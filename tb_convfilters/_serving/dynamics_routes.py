"""The plugin's ``dynamics`` and ``rotation`` routes: training dynamics of kernels.

`DynamicsRoutes` is held by ``plugin.ConvFiltersPlugin`` and reads through its data
source (the index or TensorBoard's data provider, see ``data_sources``). A series is
fed to a ``dynamics.Tracker`` one step at a time (memory: three steps as float64) and
the tracker is cached per (run, tag) with the identity of every step read (file,
offset and length, or wall time and blob key): a repeated request reads nothing, and
when steps were appended only the new ones are read. One request reads at most
`max_read_bytes` of payloads (TensorBoard flag ``--convfilters_max_dynamics_mb``;
over it: 413). The doctor's ``stalled`` and ``exploding_updates`` use the same cache.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tb_convfilters._record import encoding, metadata
from tb_convfilters._serving import index
from tb_convfilters._serving.data_sources import HttpError, Source, array_of, header_of
from tb_convfilters._serving.data_sources import quoted as _name
from tb_convfilters._serving.example_routes import binary
from tb_convfilters.dynamics import Dynamics, Tracker
from tb_convfilters.dynamics.streaming import grad_column, updates_of

# Payload bytes one request may read (a cached series costs nothing).
DEFAULT_MAX_DYNAMICS_MB = 4096
# Memory the cached trackers may hold (three float64 copies of a layer each).
_CACHE_BYTES = 512 << 20
_FLAG = "TensorBoard flag --convfilters_max_dynamics_mb"


def _identity(datum: Any) -> tuple:
    """What tells a step's record apart from another record of the same step."""
    if isinstance(datum, index.Loc):
        return (datum.step, datum.path, datum.start, datum.end)
    values = getattr(datum, "values", ())
    key = values[encoding.PAYLOAD].blob_key if len(values) > encoding.PAYLOAD else None
    return (datum.step, datum.wall_time, key)


@dataclass
class _Entry:
    tracker: Tracker
    keys: list[tuple] = field(default_factory=list)
    wall_times: list[float] = field(default_factory=list)
    nbytes: int = 0


class _Budget:
    """Payload bytes a request may still read."""

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def take(self, nbytes: int, what: str) -> None:
        if self.used + nbytes > self.limit:
            raise HttpError(
                413,
                f"{what} needs {self.used + nbytes} bytes of kernels read, over the limit of "
                f"{self.limit} ({_FLAG})",
                nbytes=self.used + nbytes,
                limit_bytes=self.limit,
            )
        self.used += nbytes


def _nan_to_none(values: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


class DynamicsRoutes:
    """``dynamics_impl`` and ``rotation_impl`` (see ``frontend/http_api.md``)."""

    def __init__(self, source: Source, max_tensor_bytes: int, max_read_bytes: int):
        self.source = source
        self.max_tensor_bytes = max_tensor_bytes
        self.max_read_bytes = max_read_bytes
        self._cache: OrderedDict[tuple, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._computing = threading.Lock()  # one series computed at a time: bounds memory

    # ---- the computation, cached ----

    def compute(
        self, ctx: Any, experiment: str, run: str, tag: str, budget: _Budget | None = None
    ) -> tuple[Dynamics, list[float]]:
        """(the dynamics of kernel `tag`, the wall time of each step); 404/400/413/422."""
        budget = budget or _Budget(self.max_read_bytes)
        series = self.source.series(ctx, experiment, run, tag)
        if not series:
            raise HttpError(404, f"no steps in run {_name(run)}, tag {_name(tag)}")
        keys = [_identity(d) for d in series]
        with self._computing:
            key = (experiment, run, tag)
            with self._lock:
                entry = self._cache.pop(key, None)
            if entry is None or entry.keys != keys[: len(entry.keys)]:
                entry = _Entry(Tracker())
            todo = series[len(entry.keys) :]
            if todo:
                first = header_of(self.source, ctx, todo[0], run, tag)
                self._check_kernel(first, run, tag)
                budget.take(
                    encoding.payload_nbytes(first) * len(todo),
                    f"run {_name(run)}, tag {_name(tag)}",
                )
                # the next step is read (pread, CRC: no GIL) while this one is computed
                with ThreadPoolExecutor(1) as pool:
                    ahead = pool.submit(self._fetch, ctx, todo[0], run, tag)
                    for i, datum in enumerate(todo):
                        fetched = ahead.result()
                        if i + 1 < len(todo):
                            ahead = pool.submit(self._fetch, ctx, todo[i + 1], run, tag)
                        self._feed(entry, datum, fetched, run, tag)
            with self._lock:
                self._cache[key] = entry
                self._trim()
            return entry.tracker.result(), list(entry.wall_times)

    def _check_kernel(self, header: dict, run: str, tag: str) -> None:
        if header.get("kind") != "kernel":
            raise HttpError(
                400,
                f"tag {_name(tag)} in run {_name(run)} holds {header.get('kind')}s; "
                "training dynamics are computed from kernels",
            )

    def _fetch(self, ctx: Any, datum: Any, run: str, tag: str) -> tuple:
        """(header, array, grad norms or None) of one step; 413/422 as HttpError."""
        where = f"run {_name(run)}, tag {_name(tag)}, step {datum.step}"
        header = header_of(self.source, ctx, datum, run, tag)
        self._check_kernel(header, run, tag)
        array = array_of(self.source, ctx, datum, header, run, tag, self.max_tensor_bytes)
        grads = None
        if self.source.count(datum) > encoding.STATS:
            try:
                stats = self.source.read(ctx, datum, encoding.STATS, run, tag)
                grads = grad_column(header, stats)
            except encoding.RecordError as e:
                raise HttpError(422, f"{where} is unreadable: {e}") from None
        return header, array, grads

    def _feed(self, entry: _Entry, datum: Any, fetched: tuple, run: str, tag: str) -> None:
        header, array, grads = fetched
        try:
            entry.tracker.add(datum.step, array, header, grads, updates_of(header))
        except ValueError as e:
            where = f"run {_name(run)}, tag {_name(tag)}, step {datum.step}"
            raise HttpError(422, f"{where}: {e}") from None
        entry.keys.append(_identity(datum))
        entry.wall_times.append(float(datum.wall_time))
        entry.nbytes = 3 * 8 * math.prod(header["shape"])

    def _trim(self) -> None:
        total = sum(e.nbytes for e in self._cache.values())
        while total > _CACHE_BYTES and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            total -= old.nbytes

    def doctor_dynamics(self, ctx: Any, experiment: str, run: str, tag: str) -> Dynamics:
        """For the doctor (``findings``): the cached dynamics; errors as ValueError, which
        the doctor warns and skips."""
        try:
            return self.compute(ctx, experiment, run, tag)[0]
        except HttpError as e:
            raise ValueError(e.message) from None

    # ---- the routes ----

    def dynamics_impl(self, ctx: Any, experiment: str, run: str, tag: str) -> dict:
        """Update ratios, rotations and gradient norms of kernel `tag` in `run`."""
        d, wall_times = self.compute(ctx, experiment, run, tag)
        return {
            "run": run,
            "tag": tag,
            "layout": d.layout,
            "shape": list(d.shape),
            "steps": [int(s) for s in d.steps],
            "wall_times": _nan_to_none(wall_times),
            "updates": d.updates,
            "intervals": d.intervals,
            "filters": d.filters,
            "update_ratio": binary(d.ratios.astype(np.float32)),
            "grad_norm": binary(d.grad_norms.astype(np.float32)) if d.has_grads else None,
            "rotation": binary(d.rotation.astype(np.float32)),
            "rotation_filters": binary(d.rotation_filters.astype(np.float32)),
        }

    def rotation_impl(self, ctx: Any, experiment: str, run: str) -> dict:
        """Each kernel's rotation from its first logged step over the union of their steps."""
        listing = self.source.listing(ctx, experiment)
        if run not in listing:
            raise HttpError(404, f"run {_name(run)} not found")
        tags = []
        for tag, series in listing[run].items():
            info = metadata.parse_plugin_metadata(series.content)
            if info is not None and info.get("kind") == "kernel":
                tags.append(tag)
        budget = _Budget(self.max_read_bytes)
        found = {tag: self.compute(ctx, experiment, run, tag, budget)[0] for tag in sorted(tags)}
        steps = sorted({int(s) for d in found.values() for s in d.steps})
        column = {s: i for i, s in enumerate(steps)}
        matrix = np.full((len(found), len(steps)), np.nan, np.float32)
        for row, d in enumerate(found.values()):
            matrix[row, [column[int(s)] for s in d.steps]] = d.rotation
        return {
            "run": run,
            "tags": list(found),
            "steps": steps,
            "filters": [len(d.filters) for d in found.values()],
            "rotation": binary(matrix),
        }
