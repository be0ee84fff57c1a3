"""Reading logged kernels and activations back to numpy, and ``tb-convfilters export``.

>>> from tb_convfilters import reader
>>> reader.list("logs")                      # {run: {tag: [steps]}}
>>> w = reader.read("logs", "train", "conv1/kernel", step=3)

Event files are streamed one record at a time, from any path TensorBoard can
read (local, ``gs://``, ``s3://``, ...: see ``fs``), and read like TensorBoard
reads them: files in name order, each up to a record still being written or a
corrupt one. Runs are named like TensorBoard names them: the directory relative
to the logdir, ``.`` for the logdir itself. When a step was logged twice in a
run, the last one written wins.
"""

from __future__ import annotations

import argparse
import builtins
import json
import logging
import os
import struct
import sys
import urllib.parse
from collections.abc import Container, Iterator
from typing import BinaryIO, NamedTuple

import crc32c
import numpy as np
from google.protobuf.message import DecodeError
from tensorboard.compat.proto import event_pb2, summary_pb2

from tb_convfilters._record import encoding as blob
from tb_convfilters._record import files as fs
from tb_convfilters._record import metadata
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
            raise blob.RecordError(f"{self._where()} is not a convfilters record")
        return blobs[index]

    def header(self) -> dict:
        """The record header (kind, layout, shape, dtype, kept filters, ...)."""
        try:
            return blob.decode_blobs_header(self.value.tensor.string_val)
        except blob.RecordError as e:
            raise blob.RecordError(f"{self._where()} is unreadable: {e}") from None

    def npy_bytes(self) -> bytes:
        """The array as a .npy file (bfloat16 widened to float32, exact)."""
        try:
            return blob.npy_bytes(self.header(), self._blob(blob.PAYLOAD))
        except blob.RecordError as e:
            raise blob.RecordError(f"{self._where()} is unreadable: {e}") from None

    def array(self) -> np.ndarray:
        """The logged array, bit-exact and writable (bfloat16 as ml_dtypes.bfloat16)."""
        try:
            return blob.decode_array(self.header(), self._blob(blob.PAYLOAD)).copy()
        except blob.RecordError as e:
            raise blob.RecordError(f"{self._where()} is unreadable: {e}") from None


def _is_events_file(name: str) -> bool:
    """TensorBoard's test (io_wrapper.IsSummaryEventsFile) on a file name."""
    return "tfevents" in name and not name.endswith(".profile-empty")


def _run_name(directory: str, logdir: str) -> str:
    if not fs.is_url(logdir):
        return os.path.relpath(directory, logdir)
    return directory[len(logdir.rstrip("/")) :].strip("/") or "."


def _runs(
    logdir: str | os.PathLike, sizes: dict[str, int] | None = None
) -> dict[str, tuple[str, ...]]:
    """{run: its event files in the order TensorBoard reads them}; `sizes` as in `fs.walk`."""
    path = os.fspath(logdir)
    if not fs.isdir(path):
        raise NotFoundError(f"logdir {path!r} is not a directory")
    runs = {}
    for directory, names in fs.walk(path, sizes):
        files = sorted(fs.join(directory, name) for name in names if _is_events_file(name))
        if files:
            runs[_run_name(directory, path)] = tuple(files)
    return dict(sorted(runs.items()))


def _read_record(f: BinaryIO, path: str, offset: int) -> bytes | None:
    """The data of the TFRecord at `offset`; None if it is incomplete (still being written)."""
    head = f.read(12)
    if len(head) < 12:
        return None
    if _masked_crc(crc32c.crc32c(head[:8])) != struct.unpack("<I", head[8:])[0]:
        raise blob.RecordError(f"{path}: corrupt record length at offset {offset}")
    (length,) = struct.unpack("<Q", head[:8])
    data = f.read(length)
    footer = f.read(4)
    if len(data) < length or len(footer) < 4:
        return None
    if _masked_crc(crc32c.crc32c(data)) != struct.unpack("<I", footer)[0]:
        raise blob.RecordError(f"{path}: corrupt record at offset {offset}")
    return data


def _records(path: str) -> Iterator[tuple[int, bytes]]:
    """(offset, data) of each complete record of an event file; stops at a corrupt one."""
    with fs.open_read(path) as f:
        offset = 0
        while True:
            try:
                data = _read_record(f, path, offset)
            except blob.RecordError as e:
                logger.warning("%s; ignoring the rest of the file", e)
                return
            if data is None:
                return
            yield offset, data
            offset += len(data) + 16


def _scan(
    run: str, files: tuple[str, ...], tags: Container[str] | None
) -> Iterator[tuple[Entry, str, int]]:
    """Every convfilters value of a run in file order, with its file and record offset."""
    ours: dict[str, bool] = {}  # tag -> carries our plugin's data (from its first metadata)
    for path in files:
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


def _values(run: str, files: tuple[str, ...], tags: Container[str] | None) -> Iterator[Entry]:
    """Every convfilters value of a run, streamed in file order."""
    for entry, _, _ in _scan(run, files, tags):
        yield entry


def _entry_at(run: str, tag: str, path: str, offset: int) -> Entry:
    """`tag`'s entry in the record at `offset` of `path` (as found by `_scan`)."""
    with fs.open_read(path, offset) as f:
        data = _read_record(f, path, offset)
    if data is None:
        raise blob.RecordError(f"{path}: the record at offset {offset} is incomplete")
    event = event_pb2.Event.FromString(data)
    for value in event.summary.value:
        if value.tag == tag:
            return Entry(run, tag, event.step, event.wall_time, value)
    raise blob.RecordError(f"{path}: no tag {tag!r} in the record at offset {offset}")


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
    for run, files in _runs(logdir).items():
        for entry in _values(run, files, None):
            out.setdefault(run, {}).setdefault(entry.tag, set()).add(entry.step)
    return {run: {t: sorted(s) for t, s in sorted(tags.items())} for run, tags in out.items()}


def entries(
    logdir: str | os.PathLike, *, run: str | None = None, tag: str | None = None
) -> Iterator[Entry]:
    """Streams every logged step (of one `run` / `tag` if given) in file order."""
    for name, files in _pick_runs(logdir, run).items():
        yield from _values(name, files, None if tag is None else {tag})


def read(logdir: str | os.PathLike, run: str, tag: str, step: int | None = None) -> np.ndarray:
    """The array logged at `step` (the latest step if None), bit-exact.

    Raises NotFoundError naming the runs, tags or steps that exist.
    """
    files = _pick_runs(logdir, run)[run]
    found: Entry | None = None
    steps: set[int] = set()
    tags: set[str] = set()
    for entry in _values(run, files, None):
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
    return found.array()


# Header keys about the record format, left out of the export's index.json.
_NOT_INDEXED = {"version", "stats", "payload_crc32c", "stats_crc32c"}


def _steps_text(steps: set[int]) -> str:
    ordered = sorted(steps)
    if len(ordered) <= 12:
        return "steps " + ", ".join(map(str, ordered))
    return f"{len(ordered)} steps from {ordered[0]} to {ordered[-1]}"


# ---- tb-convfilters export ----


def safe_path(name: str) -> str:
    """A relative path for a run or tag: ``/`` splits folders, anything else unusual
    is percent-encoded (``.`` and ``..`` too), so names never leave the output folder."""
    parts = []
    for part in name.split("/"):
        quoted = urllib.parse.quote(part, safe="-_.=+,@")
        if quoted.strip(".") == "":  # "", ".", "..": not usable as a folder name
            quoted = "%2E" * len(part) or "%2F"
        parts.append(quoted)
    return "/".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logdir", metavar="LOGDIR", help="TensorBoard log directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the .npy files")
    parser.add_argument("--run", action="append", metavar="R", help="only this run (repeatable)")
    parser.add_argument("--tag", action="append", metavar="T", help="only this tag (repeatable)")
    parser.add_argument(
        "--step", action="append", type=int, metavar="S", help="only this step (repeatable)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    parser.epilog = (
        "Writes DIR/<run>/<tag>/<step>.npy (bfloat16 widened to float32, exact) and "
        "DIR/index.json describing every file (layout, stored dtype, kept filters)."
    )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if fs.is_url(args.out):
        print(f"tb-convfilters export: --out {args.out!r} must be a local folder", file=sys.stderr)
        return 1
    try:
        runs = _runs(args.logdir)
    except NotFoundError as e:
        print(f"tb-convfilters export: {e}", file=sys.stderr)
        return 1
    missing = [r for r in args.run or () if r not in runs]
    if missing:
        print(
            f"tb-convfilters export: runs {missing} not found; runs: {', '.join(runs) or '(none)'}",
            file=sys.stderr,
        )
        return 1
    tags, steps = set(args.tag or ()), set(args.step or ())
    seen: dict[str, set[int]] = {}  # tag -> steps, of the selected runs, for error messages
    index: dict[str, dict] = {}
    failed = 0
    bar = tqdm(unit="B", unit_scale=True, desc="export", disable=True if args.quiet else None)
    try:
        for name in args.run or runs:
            for entry in _values(name, runs[name], None):
                seen.setdefault(entry.tag, set()).add(entry.step)
                if (tags and entry.tag not in tags) or (steps and entry.step not in steps):
                    continue
                rel = f"{safe_path(entry.run)}/{safe_path(entry.tag)}/{entry.step}.npy"
                try:
                    header, data = entry.header(), entry.npy_bytes()
                except blob.RecordError as e:
                    print(f"tb-convfilters export: skipped: {e}", file=sys.stderr)
                    failed += 1
                    continue
                path = os.path.join(args.out, *rel.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
                index[rel] = {
                    "file": rel,
                    "run": entry.run,
                    "tag": entry.tag,
                    "step": entry.step,
                    "wall_time": entry.wall_time,
                    **{k: v for k, v in header.items() if k not in _NOT_INDEXED},
                }
                bar.update(len(data))
                bar.set_postfix(arrays=len(index), refresh=False)
    finally:
        bar.close()
    if index:
        with open(os.path.join(args.out, "index.json"), "w", encoding="utf-8") as f:
            json.dump({"logdir": os.fspath(args.logdir), "arrays": [*index.values()]}, f, indent=1)
        if not args.quiet:
            print(f"wrote {len(index)} arrays to {args.out}", file=sys.stderr)
    all_steps = set().union(*seen.values())
    unmatched = [f"tag {t!r}" for t in sorted(tags - seen.keys())]
    unmatched += [f"step {s}" for s in sorted(steps - all_steps)]
    if failed:
        print(f"tb-convfilters export: {failed} unreadable steps skipped", file=sys.stderr)
    if unmatched or not index:
        have = "; ".join(f"{tag} ({_steps_text(s)})" for tag, s in sorted(seen.items()))
        print(
            f"tb-convfilters export: {', '.join(unmatched) or 'nothing'} not found; "
            f"the selected runs have: {have or 'no convfilters data'}",
            file=sys.stderr,
        )
        return 1
    return 1 if failed else 0
