"""A kernel's steps streamed from event files in step order into a `Tracker`."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from tb_convfilters import reader
from tb_convfilters._record import encoding
from tb_convfilters._record.gradients import GRAD_STATS
from tb_convfilters.dynamics.tracker import Dynamics, Tracker


def grad_column(header: dict, stats: bytes) -> np.ndarray | None:
    """The ``grad_norm`` column of a step's stats blob, or None when it was not logged."""
    names = header.get("stats") or []
    if GRAD_STATS[0] not in names:
        return None
    return encoding.decode_stats(header, stats)[:, names.index(GRAD_STATS[0])]


def updates_of(header: dict) -> int | None:
    value = header.get("updates")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Disordered(Exception):
    """Steps not ascending in file order (or logged twice): read them by location."""


def _in_file_order(run: str, paths: tuple[str, ...], tag: str) -> Iterator[reader.Entry]:
    last = None
    for entry, _, _ in reader._scan(run, paths, {tag}):
        if last is not None and entry.step <= last:
            raise _Disordered
        last = entry.step
        yield entry


def _by_location(run: str, paths: tuple[str, ...], tag: str) -> Iterator[reader.Entry]:
    where = {}  # step -> (path, offset); the last one written wins, as in reader
    for entry, path, offset in reader._scan(run, paths, {tag}):
        where[entry.step] = (path, offset)
    for step in sorted(where):
        yield reader._entry_at(run, tag, *where[step])


def _feed(tracker: Tracker, entries: Iterator[reader.Entry], arrays: bool) -> None:
    for entry in entries:
        header = entry.header()
        if header.get("kind") != "kernel":
            raise ValueError(
                f"tag {entry.tag!r} in run {entry.run!r} holds {header.get('kind')}s; "
                "training dynamics are computed from kernels"
            )
        blobs = entry.value.tensor.string_val
        grads = grad_column(header, blobs[encoding.STATS]) if len(blobs) > encoding.STATS else None
        array = entry.array() if arrays else np.zeros(header["shape"], np.float32)
        tracker.add(entry.step, array, header, grads, updates_of(header))


def read(logdir: str | os.PathLike, run: str, tag: str, *, arrays: bool = True) -> Dynamics:
    """The `Dynamics` of kernel `tag` in `run`, streamed from its event files.

    Raises ``reader.NotFoundError`` naming the runs or tags that exist, ValueError
    for a tag that is not a kernel. With ``arrays=False`` only headers and stats are
    decoded (the gradient norms and updates are right; ratios and rotations are not).
    """
    paths = reader._pick_runs(logdir, run)[run]
    tracker = Tracker()
    try:
        _feed(tracker, _in_file_order(run, paths, tag), arrays)
    except _Disordered:
        tracker = Tracker()
        _feed(tracker, _by_location(run, paths, tag), arrays)
    if not len(tracker):
        reader._find(logdir, run, tag, None)  # raises NotFoundError naming the tags
    return tracker.result()
