"""Reading logged kernels and activations back to numpy (``tb-convfilters export`` writes
them as ``.npy`` files).

>>> from tb_convfilters import reader
>>> reader.list("logs")                      # {run: {tag: [steps]}}
>>> w = reader.read("logs", "train", "conv1/kernel", step=3)

Event files are streamed one record at a time, from any path TensorBoard can
read (local, ``gs://``, ``s3://``, ...: see ``_record.files``), and read like TensorBoard
reads them: files in name order, each up to a record still being written or a
corrupt one. Runs are named like TensorBoard names them: the directory relative
to the logdir, ``.`` for the logdir itself. When a step was logged twice in a
run, the last one written wins.
"""

from __future__ import annotations

import builtins
import logging
import os
import struct
from collections.abc import Callable, Container, Iterator
from typing import BinaryIO, NamedTuple

import crc32c
import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, summary_pb2

from tb_convfilters._record import encoding, files, metadata
from tb_convfilters._record import examples as _examples
from tb_convfilters._record.events import _masked_crc

logger = logging.getLogger(__name__)


class NotFoundError(LookupError):
    """An unknown run, tag or step; the message lists what exists."""


class Entry(NamedTuple):
    """One logged step; its record is decoded only when asked for."""

    run: str
    tag: str
    step: int
    wall_time: float
    value: summary_pb2.Summary.Value

    def _where(self) -> str:
        return f"run {self.run!r}, tag {self.tag!r}, step {self.step}"

    def _blob(self, index: int) -> bytes:
        blobs = self.value.tensor.string_val
        if len(blobs) <= index:
            raise encoding.RecordError(f"{self._where()} is not a convfilters record")
        return blobs[index]

    def header(self) -> dict:
        """The record header (kind, layout, shape, dtype, kept filters, ...)."""
        try:
            return encoding.decode_blobs_header(self.value.tensor.string_val)
        except encoding.RecordError as e:
            raise encoding.RecordError(f"{self._where()} is unreadable: {e}") from None

    def npy_bytes(self) -> bytes:
        """The array as a .npy file (bfloat16 widened to float32, exact)."""
        try:
            return encoding.npy_bytes(self.header(), self._blob(encoding.PAYLOAD))
        except encoding.RecordError as e:
            raise encoding.RecordError(f"{self._where()} is unreadable: {e}") from None

    def array(self) -> np.ndarray:
        """The logged array, bit-exact and writable (bfloat16 as ml_dtypes.bfloat16)."""
        try:
            return encoding.decode_array(self.header(), self._blob(encoding.PAYLOAD)).copy()
        except encoding.RecordError as e:
            raise encoding.RecordError(f"{self._where()} is unreadable: {e}") from None


def _is_events_file(name: str) -> bool:
    """TensorBoard's test (io_wrapper.IsSummaryEventsFile) on a file name."""
    return "tfevents" in name and not name.endswith(".profile-empty")


def _run_name(directory: str, logdir: str) -> str:
    if not files.is_url(logdir):
        return os.path.relpath(directory, logdir)
    return directory[len(logdir.rstrip("/")) :].strip("/") or "."


def _runs(
    logdir: str | os.PathLike, sizes: dict[str, int] | None = None
) -> dict[str, tuple[str, ...]]:
    """{run: its event files in the order TensorBoard reads them}; `sizes` as in `files.walk`."""
    path = os.fspath(logdir)
    if not files.isdir(path):
        raise NotFoundError(f"logdir {path!r} is not a directory")
    runs = {}
    for directory, names in files.walk(path, sizes):
        paths = sorted(files.join(directory, name) for name in names if _is_events_file(name))
        if paths:
            runs[_run_name(directory, path)] = tuple(paths)
    return dict(sorted(runs.items()))


def _read_record(f: BinaryIO, path: str, offset: int) -> bytes | None:
    """The data of the TFRecord at `offset`; None if it is incomplete (still being written)."""
    head = f.read(12)
    if len(head) < 12:
        return None
    if _masked_crc(crc32c.crc32c(head[:8])) != struct.unpack("<I", head[8:])[0]:
        raise encoding.RecordError(f"{path}: corrupt record length at offset {offset}")
    (length,) = struct.unpack("<Q", head[:8])
    data = f.read(length)
    footer = f.read(4)
    if len(data) < length or len(footer) < 4:
        return None
    if _masked_crc(crc32c.crc32c(data)) != struct.unpack("<I", footer)[0]:
        raise encoding.RecordError(f"{path}: corrupt record at offset {offset}")
    return data


def _records(path: str) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of each complete record of an event file; stops at a corrupt one."""
    with files.open_read(path) as f:
        offset = 0
        while True:
            try:
                data = _read_record(f, path, offset)
            except encoding.RecordError as e:
                logger.warning("%s; ignoring the rest of the file", e)
                return
            if data is None:
                return
            yield offset, data
            offset += len(data) + 16


def _scan(
    run: str, paths: tuple[str, ...], tags: Container[str] | None
) -> Iterator[tuple[Entry, str, int]]:
    """Every convfilters value of a run in file order, with its file and record offset."""
    ours: dict[str, bool] = {}  # tag -> carries our plugin's data (from its first metadata)
    for path in paths:
        for offset, data in _records(path):
            try:
                event = event_pb2.Event.FromString(data)
            except DecodeError:
                logger.warning("%s: undecodable event at offset %d", path, offset)
                continue
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name:
                    ours.setdefault(
                        value.tag, value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME
                    )
                if not ours.get(value.tag) or (tags is not None and value.tag not in tags):
                    continue
                yield Entry(run, value.tag, event.step, event.wall_time, value), path, offset


def _values(run: str, paths: tuple[str, ...], tags: Container[str] | None) -> Iterator[Entry]:
    """Every convfilters value of a run, streamed in file order."""
    for entry, _, _ in _scan(run, paths, tags):
        yield entry


def _entry_at(run: str, tag: str, path: str, offset: int) -> Entry:
    """`tag`'s entry in the record at `offset` of `path` (as found by `_scan`)."""
    with files.open_read(path, offset) as f:
        data = _read_record(f, path, offset)
    if data is None:
        raise encoding.RecordError(f"{path}: the record at offset {offset} is incomplete")
    event = event_pb2.Event.FromString(data)
    for value in event.summary.value:
        if value.tag == tag:
            return Entry(run, tag, event.step, event.wall_time, value)
    raise encoding.RecordError(f"{path}: no tag {tag!r} in the record at offset {offset}")


def _pick_runs(logdir: str | os.PathLike, run: str | None) -> dict[str, tuple[str, ...]]:
    runs = _runs(logdir)
    if run is None:
        return runs
    if run not in runs:
        raise NotFoundError(
            f"run {run!r} not found in {os.fspath(logdir)!r}; runs: {', '.join(runs) or '(none)'}"
        )
    return {run: runs[run]}


def list(logdir: str | os.PathLike) -> dict[str, dict[str, builtins.list[int]]]:
    """``{run: {tag: [steps ascending]}}`` of every convfilters series under `logdir`."""
    out: dict[str, dict[str, set[int]]] = {}
    for run, paths in _runs(logdir).items():
        for entry in _values(run, paths, None):
            out.setdefault(run, {}).setdefault(entry.tag, set()).add(entry.step)
    return {run: {t: sorted(s) for t, s in sorted(tags.items())} for run, tags in out.items()}


def entries(
    logdir: str | os.PathLike, *, run: str | None = None, tag: str | None = None
) -> Iterator[Entry]:
    """Streams every logged step (of one `run` / `tag` if given) in file order."""
    for name, paths in _pick_runs(logdir, run).items():
        yield from _values(name, paths, None if tag is None else {tag})


def read(logdir: str | os.PathLike, run: str, tag: str, step: int | None = None) -> np.ndarray:
    """The array logged at `step` (the latest step if None), bit-exact.

    Raises NotFoundError naming the runs, tags or steps that exist.
    """
    return _find(logdir, run, tag, step).array()


def examples(
    logdir: str | os.PathLike, run: str, tag: str, step: int | None = None
) -> _examples.Examples:
    """The dataset examples of activation `tag` at `step` (the latest if None).

    >>> ex = reader.examples("logs", "train", "conv2/activation")
    >>> ex.indices[17]   # the probe inputs filter 17 responds to most, best first
    >>> ex.crops[17, 0]  # the part of the best one that its maximum sees

    See ``Examples`` for the fields. Raises NotFoundError when the activation has no
    examples at that step (they are logged with ``examples=`` and probe inputs).
    """
    if tag.endswith(_examples.EXAMPLES_SUFFIX):
        tag = tag[: -len(_examples.EXAMPLES_SUFFIX)]
    inputs_entries: dict[str, Entry] = {}  # the latest of each probe inputs record

    def keep_inputs(entry: Entry) -> None:  # found in the same pass over the files
        if entry.tag.startswith(_examples.INPUTS_PREFIX):
            kept = inputs_entries.get(entry.tag)
            if kept is None or entry.step >= kept.step:
                inputs_entries[entry.tag] = entry

    entry = _find(logdir, run, _examples.examples_tag(tag), step, also=keep_inputs)
    header = entry.header()
    if header.get("kind") != "examples":
        raise NotFoundError(f"tag {entry.tag!r} in run {run!r} holds no dataset examples")
    found = _examples.decode(header, entry.array(), tag=tag, step=entry.step)
    ref = header.get("inputs")
    inputs = inputs_entries.get(ref["tag"]) if ref else None
    if ref and inputs is None:
        raise NotFoundError(
            f"the probe inputs {ref['tag']!r} of tag {entry.tag!r} are not in run {run!r}"
        )
    if inputs is not None:
        inputs_header = inputs.header()
        found.inputs, found.input_layout = inputs.array(), inputs_header["layout"]
        value_range = inputs_header.get("range")
        if value_range is not None:
            found.input_range = (float(value_range[0]), float(value_range[1]))
    return found


def _find(
    logdir: str | os.PathLike,
    run: str,
    tag: str,
    step: int | None,
    also: Callable[[Entry], None] | None = None,
) -> Entry:
    """The entry of `tag` at `step` (the latest if None), or NotFoundError; `also` sees
    every entry of the run on the way."""
    paths = _pick_runs(logdir, run)[run]
    found: Entry | None = None
    steps: set[int] = set()
    tags: set[str] = set()
    for entry in _values(run, paths, None):
        if also is not None:
            also(entry)
        tags.add(entry.tag)
        if entry.tag != tag:
            continue
        steps.add(entry.step)
        if (step is None and (found is None or entry.step >= found.step)) or entry.step == step:
            found = entry
    if not steps:
        raise NotFoundError(
            f"tag {tag!r} not found in run {run!r}; tags: {', '.join(sorted(tags)) or '(none)'}"
        )
    if found is None:
        raise NotFoundError(
            f"step {step!r} not found in run {run!r}, tag {tag!r}; it has {_steps_text(steps)}"
        )
    return found


def _steps_text(steps: set[int]) -> str:
    ordered = sorted(steps)
    if len(ordered) <= 12:
        return "steps " + ", ".join(map(str, ordered))
    return f"{len(ordered)} steps from {ordered[0]} to {ordered[-1]}"
