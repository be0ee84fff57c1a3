"""The event file a Writer appends its records to, framed as TFRecords.

A local logdir gets an unbuffered file (a new one after it is deleted). A URL
logdir (``s3://``, ``gs://``, ...) goes through ``files``: object stores cannot
append, so records are buffered in memory and each upload sends them as a new,
complete event file.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import threading
import time
from typing import Any

from tensorboard.compat.proto import event_pb2

from tb_convfilters._record import files, parallel
from tb_convfilters._record.events import (
    encode_event,
    encode_suffix,
    frame_event,
    record_head,
    record_tail,
)
from tb_convfilters._record.record import Record
from tb_convfilters._writing.failures import WriterError

_file_counter = itertools.count()
# A URL logdir's buffered records are also uploaded once this many bytes wait.
PART_BYTES = 64 << 20


def _write_all(f: Any, data: Any) -> None:
    """Writes all of `data` (an unbuffered file may take part of it per call)."""
    view = memoryview(data).cast("B")
    while view.nbytes:
        view = view[f.write(view) :]


class EventFile:
    """A Writer's event file in `logdir`, or for a URL its buffer and the parts uploaded.

    Thread-safe: one lock covers the file, from a record's first byte to its last.
    `path` is the file written (for a URL, the last part uploaded; None before the first).
    """

    def __init__(self, logdir: str, suffix: str, name: str):
        self.logdir = logdir
        self.remote = files.is_url(logdir)
        self.closed = False
        self._suffix = suffix
        self._name = name  # the Writer's, for its errors
        self._lock = threading.Lock()
        self._parts = 0
        self._last: tuple[str, int] | None = None  # the last record buffered for upload
        self.path: str | None = None
        self._file: Any = None
        self._open()

    def _file_name(self, part: str) -> str:
        return f"events.out.tfevents.{int(time.time()):010d}.{self._id}{part}{self._suffix}"

    def _open(self) -> None:
        """Starts a new event file (for a URL, a new buffer)."""
        files.makedirs(self.logdir)
        while True:
            self._id = f"{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}"
            if self.remote:
                self._file = io.BytesIO()
                break
            self.path = files.join(self.logdir, self._file_name(""))
            # Unbuffered: each record reaches the file whole as it is written, and a
            # forked child holds no buffered bytes of ours to write when it exits.
            # Exclusive: a SummaryWriter of this process names its file the same way
            # (time, host, pid, its own counter); the same second must not truncate it.
            try:
                self._file = open(self.path, "xb", buffering=0)
                break
            except FileExistsError:
                continue
        self._start_file()

    def _start_file(self) -> None:
        event = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        head, tail = frame_event(event.SerializeToString(), memoryview(b""), b"")
        _write_all(self._file, head + tail)
        self._header_end = self._file.tell()

    def _ready(self) -> None:
        """Opens a new file if the last one was lost; raises if the open one was deleted.

        A deleted event file (its run directory removed) takes writes without error on
        POSIX: they would vanish. Like TensorFlow's writer, the next record starts a new file.
        """
        if self._file is None:
            self._open()
        elif not self.remote and os.fstat(self._file.fileno()).st_nlink == 0:
            self._file.close()
            self._file = None
            raise FileNotFoundError(
                f"the event file {self.path} was deleted while open (was {self.logdir} "
                "removed?); the next record starts a new file"
            )

    def check_open(self) -> None:
        """Raises once `close` was called."""
        if self.closed:
            raise ValueError(f"Writer for {self.logdir!r} is closed")

    def append(
        self, tag: str, rec: Record, step: int, wall_time: float, description: str | None
    ) -> None:
        """Frames `rec` (converted) and appends it; a failure leaves no half record.

        An incomplete `rec` has its stats and CRC computed while its payload is written.
        """
        out: dict = {}  # what `send` did: the lock taken, where the record starts, its framing

        def send() -> None:
            prefix, payload, suffix_len = encode_event(
                tag, rec.header, rec.array, step, wall_time, description
            )
            self._lock.acquire()
            out["locked"] = True
            self.check_open()
            self._ready()
            out["start"] = self._file.tell()
            _write_all(self._file, record_head(len(prefix) + payload.nbytes + suffix_len, prefix))
            _write_all(self._file, payload)  # a URL logdir's buffer copies it, as it must
            out["framing"] = prefix, payload, suffix_len

        try:
            if rec.completed:
                send()
                done = rec
            else:  # the worker thread checksums while this one writes the payload out
                work = rec.completion()
                parallel.both(work.checksum, lambda: (send(), work.help()), split=work.large)
                done = rec.finished(work)
            prefix, payload, suffix_len = out["framing"]
            suffix = encode_suffix(done)
            if len(suffix) != suffix_len:
                raise AssertionError(f"stats of {len(suffix)} bytes, expected {suffix_len}")
            tail = record_tail(prefix, payload, done.payload_crc, suffix)
            _write_all(self._file, tail)
            del out["start"]  # the record is whole: an upload failing now keeps it buffered
            if self.remote:
                self._last = tag, step
                if self._file.tell() >= PART_BYTES:
                    self._upload()
        except BaseException:
            if "start" in out and self._file is not None:  # no half record stays in the file
                self._file.seek(out["start"])
                self._file.truncate()
            raise
        finally:
            if out.get("locked"):
                self._lock.release()

    def _upload(self) -> None:
        """Uploads the buffered records as the next event file (lock held)."""
        if self._file.tell() <= self._header_end:
            return
        # Parts sort in upload order (time, then number): TensorBoard reads files in name order.
        path = files.join(self.logdir, self._file_name(f".{self._parts:06d}"))
        try:
            files.upload(path, self._file.getvalue())
        except Exception as e:  # the records stay buffered for the next try
            last = "" if self._last is None else " (the last: tag {!r} step {})".format(*self._last)
            raise WriterError(
                f"{self._name} could not upload its records{last} to {path}: "
                f"{type(e).__name__}: {e}"
            ) from e
        self.path = path
        self._parts += 1
        self._last = None
        self._file = io.BytesIO()
        self._start_file()

    def flush(self) -> None:
        """Uploads the records buffered for a URL logdir as a new event file."""
        with self._lock:
            if self.remote and not self.closed:
                self._upload()

    def close(self) -> None:
        """Takes no more records and closes the file; a URL's buffer is uploaded first.

        An upload that fails keeps the buffer: `close` again retries it.
        """
        with self._lock:
            self.closed = True  # no more records; the file or buffer is still ours
            if self._file is not None:
                if self.remote:
                    self._upload()
                else:
                    self._file.close()
            self._file = None
