"""A TensorFlow-free event file writer for kernels and activations, writing in the background.

Records are framed by hand (``events``) so the tensor payload is written
straight from the array's buffer and checksummed by the C ``crc32c`` package:
TensorBoard's own Python writer serializes nested protos (several payload
copies) and computes CRC32C in pure Python (~5 MB/s). Files are ordinary event
files any TensorBoard reads. Calls copy their array into a ``copy_queue`` and
return; the Writer's thread converts, checksums and writes.

A URL logdir (``s3://``, ``gs://``, ...) goes through ``files``: object stores
cannot append, so records are buffered and each flush uploads them as a new,
complete event file.
"""

from __future__ import annotations

import atexit
import io
import itertools
import numbers
import os
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from tensorboard.compat.proto import event_pb2

from tb_convfilters._record import files, parallel
from tb_convfilters._record.arguments import check_step, check_tag
from tb_convfilters._record.events import (
    encode_event,
    encode_suffix,
    frame_event,
    record_head,
    record_tail,
)
from tb_convfilters._record.patterns import pattern_record
from tb_convfilters._record.record import Record, make_record
from tb_convfilters._writing.copy_queue import Spool

_file_counter = itertools.count()
# A URL logdir's buffered records are also uploaded once this many bytes wait.
PART_BYTES = 64 << 20
# Copies of logged arrays a background Writer keeps in flight, by default.
DEFAULT_MAX_QUEUE_MB = 256.0
_live: weakref.WeakSet = weakref.WeakSet()  # Writers to close at interpreter exit


@atexit.register
def _close_at_exit() -> None:
    for writer in list(_live):
        if writer._pid == os.getpid():  # a forked child leaves its parent's Writers alone
            try:
                writer.close()
            except Exception as e:  # exit goes on; say what was lost
                warnings.warn(f"{writer!r} at exit: {e}", RuntimeWarning, stacklevel=1)


def _write_all(f: Any, data: Any) -> None:
    """Writes all of `data` (an unbuffered file may take part of it per call)."""
    view = memoryview(data).cast("B")
    while view.nbytes:
        view = view[f.write(view) :]


class WriterError(RuntimeError):
    """A record the background writer could not write, raised on a later call.

    ``tag`` and ``step`` name the record (None for an upload of several);
    ``__cause__`` is the original error. Raised by a call that logs, it is about an
    earlier record: the call's own record was queued (or, on a URL logdir, buffered).
    """

    def __init__(self, message: str, tag: str | None = None, step: int | None = None):
        super().__init__(message)
        self.tag, self.step = tag, step


class Writer:
    """Writes kernels and activations to a new event file in `logdir`.

    >>> with tb_convfilters.Writer("logs/run1") as w:
    ...     w.kernel("conv1/kernel", weights, step=0, layout="OIHW")

    Writing happens in the background, as in TensorBoard's own writers: a call
    checks its arguments, takes one copy of the array and returns; conversion
    (`dtype`), statistics, checksums and the file write happen on the Writer's
    thread. At most `max_queue_mb` MiB of copies wait; a call beyond that waits
    for room. A record that cannot be written (disk full, directory removed)
    raises a ``WriterError`` naming its tag and step on the next call (which
    queues its own record first), `flush` or `close`; conversion warnings come
    out the same way. Each record is in the file, whole, once written:
    TensorBoard sees it without a `flush`, which waits for everything queued.
    `close`, the context manager and interpreter exit flush; a Writer dropped
    without `close` is closed when it is collected. In a forked child the
    parent's Writer is ``closed``: the child never writes its parent's queue or
    file. ``blocking=True`` does all of the writing in the calling thread instead.

    `dtype` (e.g. ``"float16"``) applies to every tensor unless a call says
    otherwise. Thread-safe.

    `logdir` may be a URL TensorBoard reads (``s3://bucket/logs/run1``, see
    ``files``). There, records wait in memory and `flush`, `close` (and every
    ``PART_BYTES`` of records) upload them as a new event file; `path` is
    then the last file uploaded (None before the first).
    """

    def __init__(
        self,
        logdir: str | os.PathLike,
        *,
        dtype: str | None = None,
        filename_suffix: str = "",
        blocking: bool = False,
        max_queue_mb: float = DEFAULT_MAX_QUEUE_MB,
    ):
        if (
            isinstance(max_queue_mb, bool)
            or not isinstance(max_queue_mb, numbers.Real)
            or not max_queue_mb > 0
        ):
            raise ValueError(f"max_queue_mb={max_queue_mb!r} must be a positive number of MiB")
        self.logdir = os.fspath(logdir)
        self._dtype = dtype
        self._lock = threading.Lock()
        self._remote = files.is_url(self.logdir)
        self._suffix = filename_suffix
        self._parts = 0
        self._pid = os.getpid()
        self._closed = False
        self._spool = None if blocking else Spool(int(max_queue_mb * (1 << 20)))
        self._last: tuple[str, int] | None = None  # the last record buffered for upload
        self.path: str | None = None
        self._file: Any = None
        self._done = False  # closed, its file closed or its buffer uploaded
        self._open()
        _live.add(self)
        self._started = True  # `__del__` closes it from here on

    def __repr__(self) -> str:
        return f"Writer({self.logdir!r})"

    def _file_name(self, part: str) -> str:
        return f"events.out.tfevents.{int(time.time()):010d}.{self._id}{part}{self._suffix}"

    def _open(self) -> None:
        """Starts a new event file (for a URL, a new buffer)."""
        files.makedirs(self.logdir)
        self._id = f"{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}"
        if self._remote:
            self._file = io.BytesIO()
        else:
            self.path = files.join(self.logdir, self._file_name(""))
            # Unbuffered: each record reaches the file whole as it is written, and a
            # forked child holds no buffered bytes of ours to write when it exits.
            self._file = open(self.path, "wb", buffering=0)
        self._start_file()

    def _start_file(self) -> None:
        event = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        head, tail = frame_event(event.SerializeToString(), memoryview(b""), b"")
        _write_all(self._file, head + tail)
        self._header_end = self._file.tell()

    def _upload(self) -> None:
        """Uploads the buffered records as the next event file (lock held)."""
        if self._file.tell() <= self._header_end:
            return
        # Parts sort in upload order (time, then number): TensorBoard reads files in name order.
        path = files.join(self.logdir, self._file_name(f".{self._parts:06d}"))
        try:
            files.upload(path, self._file.getvalue())
        except Exception as e:  # the records stay buffered for the next try
            last = "" if self._last is None else f" (the last: tag {self._last[0]!r} step "
            last += "" if self._last is None else f"{self._last[1]})"
            raise WriterError(
                f"{self!r} could not upload its records{last} to {path}: {type(e).__name__}: {e}"
            ) from e
        self.path = path
        self._parts += 1
        self._last = None
        self._file = io.BytesIO()
        self._start_file()

    def _ready_file(self) -> None:
        """Opens a new file if the last one was lost; raises if the open one was deleted.

        A deleted event file (its run directory removed) takes writes without error on
        POSIX: they would vanish. Like TensorFlow's writer, the next record starts a new file.
        """
        if self._file is None:
            self._open()
        elif not self._remote and os.fstat(self._file.fileno()).st_nlink == 0:
            self._file.close()
            self._file = None
            raise FileNotFoundError(
                f"the event file {self.path} was deleted while open (was {self.logdir} "
                "removed?); the next record starts a new file"
            )

    def _write_now(
        self, tag: str, rec: Record, step: int, wall_time: float, description: str | None
    ) -> str | None:
        """Converts, completes and writes `rec`; returns the conversion's warning, if any.

        Stats are computed while the payload is written; a failure leaves no half record.
        """
        rec, message = rec.converted()
        out: dict = {}  # what `send` did: the lock taken, where the record starts, its framing

        def send() -> None:
            prefix, payload, suffix_len = encode_event(
                tag, rec.header, rec.array, step, wall_time, description
            )
            self._lock.acquire()
            out["locked"] = True
            if self._closed:
                raise ValueError(f"Writer for {self.logdir!r} is closed")
            self._ready_file()
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
            if self._remote:
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
        return message

    def _write_record(self, tag: str, rec: Record, step: Any, description: str | None) -> None:
        check_tag(tag)
        step = check_step(step)
        self._check_open()
        wall_time = time.time()
        if self._spool is None:
            message = self._write_now(tag, rec, step, wall_time, description)
            if message:
                warnings.warn(message, RuntimeWarning, stacklevel=3)
            return

        def work(array: np.ndarray) -> str | None:
            return self._write_now(tag, rec._replace(array=array), step, wall_time, description)

        self._spool.put(work, rec.array, (tag, step), owned=rec.owned)
        # This record is queued first: an earlier record's failure raised here loses nothing more.
        self._report(stacklevel=4)

    def _check_open(self) -> None:
        """Raises for a closed Writer, or one of another process."""
        if self._pid != os.getpid():
            raise ValueError(
                f"{self!r} belongs to process {self._pid}: a forked child cannot write to it; "
                "open a Writer of its own"
            )
        if self._closed:
            raise ValueError(f"Writer for {self.logdir!r} is closed")

    def _report(self, stacklevel: int) -> None:
        """Issues the background thread's warnings and raises its first failure."""
        if self._spool is None:
            return
        for message in self._spool.take_messages():
            warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)
        failures = self._spool.take_failures()
        if not failures:
            return
        (tag, step), error = failures[0]
        more = ""
        if len(failures) > 1:
            later = [
                f"{t!r} step {n}" if n is not None else "an upload" for (t, n), _ in failures[1:]
            ]
            shown = ", ".join(later[:5]) + (f" and {len(later) - 5} more" if len(later) > 5 else "")
            more = f"; later ones failed too: {shown}"
        if isinstance(error, WriterError):  # an upload: it says what
            raise WriterError(f"{error}{more}") from error.__cause__
        raise WriterError(
            f"{self!r} could not write tag {tag!r} step {step}: "
            f"{type(error).__name__}: {error}{more}",
            tag,
            step,
        ) from error

    def write_record(
        self, tag: str, rec: Record, step: Any, description: str | None = None
    ) -> None:
        """Writes a record made by ``record.make_record`` (lets callers build before opening).

        Pass one made with ``complete=False, convert=False``: its conversion and
        stats happen as it is written. Its array is copied unless the record owns it.
        """
        self._write_record(tag, rec, step, description)

    @property
    def closed(self) -> bool:
        """True after `close`, and in a forked child (the Writer is its parent's)."""
        return self._closed or self._pid != os.getpid()

    def kernel(
        self,
        tag: str,
        data: Any,
        step: int,
        *,
        layout: str = "HWIO",
        description: str | None = None,
        dtype: str | None = None,
        max_filters: int | Sequence[int] | None = None,
        max_channels: int | Sequence[int] | None = None,
        image_shape: Sequence[int] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Logs one kernel at `step`; arguments as in ``summary.kernel_pb``."""
        rec = make_record(
            data,
            kind="kernel",
            layout=layout,
            dtype=dtype or self._dtype,
            max_filters=max_filters,
            max_channels=max_channels,
            image_shape=image_shape,
            max_bytes=max_bytes,
            complete=False,
            tag=tag,
            convert=self._spool is None,
        )
        self._write_record(tag, rec, step, description)

    def activation(
        self,
        tag: str,
        data: Any,
        step: int,
        *,
        layout: str = "NHWC",
        max_samples: int | None = None,
        description: str | None = None,
        dtype: str | None = None,
        max_filters: int | Sequence[int] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Logs the feature maps of every sample in `data` at `step` (`max_samples`: the
        first N only); arguments as in ``summary.activation_pb``."""
        rec = make_record(
            data,
            kind="activation",
            layout=layout,
            dtype=dtype or self._dtype,
            max_filters=max_filters,
            max_samples=max_samples,
            max_bytes=max_bytes,
            complete=False,
            tag=tag,
            convert=self._spool is None,
        )
        self._write_record(tag, rec, step, description)

    def patterns(
        self,
        tag: str,
        images: Any,
        step: int,
        *,
        filters: Sequence[int] | None = None,
        kind: str = "pattern",
        description: str | None = None,
        dtype: str | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Logs images of filters ``(n, h, w, c)`` in [0, 1]; as in ``summary.patterns_pb``."""
        rec = pattern_record(
            images, kind=kind, filters=filters, dtype=dtype or self._dtype, max_bytes=max_bytes
        )
        self._write_record(tag, rec, step, description)

    def flush(self, wait: bool = True) -> None:
        """Writes out everything logged so far (on a URL logdir: uploads it as a new event file).

        Returns once that is done; ``wait=False`` returns at once (the background
        thread flushes after the records queued before). Raises what failed meanwhile.
        After a `close` whose upload failed, retries that upload.
        """
        if self._closed:
            self.close()
            return
        if self.closed:
            return
        if self._spool is not None:
            self._spool.put(self._flush_now, None, ("flush", None))
            if wait:
                self._spool.wait()
            self._report(stacklevel=3)
        else:
            self._flush_now()

    def _flush_now(self, _: Any = None) -> None:
        with self._lock:
            if self._remote and not self._closed:
                self._upload()

    def close(self) -> None:
        """Flushes and closes; raises what failed in the background meanwhile.

        On a URL logdir an upload that fails keeps the records buffered: `close` or
        `flush` again (or interpreter exit) retries it.
        """
        if self._pid != os.getpid() or self._done:
            return
        try:
            if self._spool is not None:
                self._spool.close()
            with self._lock:
                self._closed = True  # no more records; the file or buffer is still ours
                if self._file is not None:
                    if self._remote:
                        self._upload()
                    else:
                        self._file.close()
                self._file = None
                self._done = True
                _live.discard(self)
        finally:
            self._report(stacklevel=3)  # earlier failures first; an upload's is chained

    def __del__(self) -> None:
        # Like a file object, a Writer dropped without `close` closes when collected: a URL
        # logdir's buffered records are uploaded, and what failed is warned, not lost.
        if not self.__dict__.get("_started") or self._done or self._pid != os.getpid():
            return
        try:
            self.close()
        except Exception as e:
            warnings.warn(f"{self!r} dropped without close(): {e}", RuntimeWarning, stacklevel=1)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared_lock = threading.Lock()
_shared: dict[str, Writer] = {}


def shared(logdir: str | os.PathLike, *, create: bool = True) -> Writer | None:
    """The one open Writer of `logdir` for the helpers that are given a path.

    Local paths are made absolute, so ``logs`` and ``./logs`` share a Writer; a closed
    one is replaced. With ``create=False``, None where there is none yet.
    """
    path = os.fspath(logdir)
    if not files.is_url(path):
        path = os.path.abspath(path)
    with _shared_lock:
        writer = _shared.get(path)
        if create and (writer is None or writer.closed):
            writer = _shared[path] = Writer(path)
        return writer
