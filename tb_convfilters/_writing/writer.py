"""A TensorFlow-free event file writer for kernels and activations, writing in the background.

Records are framed by hand (``events``) so the tensor payload is written
straight from the array's buffer and checksummed by the C ``crc32c`` package:
TensorBoard's own Python writer serializes nested protos (several payload
copies) and computes CRC32C in pure Python (~5 MB/s). Files are ordinary event
files any TensorBoard reads. Calls copy their array into a ``copy_queue`` and
return; the Writer's thread converts, checksums and writes to its ``event_file``
(for a URL logdir, a buffer uploaded in parts). What fails there is raised by a
later call (``failures``).
"""

from __future__ import annotations

import atexit
import numbers
import os
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from tb_convfilters._record import files
from tb_convfilters._record.arguments import check_step, check_tag
from tb_convfilters._record.examples import Found, rank
from tb_convfilters._record.patterns import pattern_record
from tb_convfilters._record.receptive_field import ReceptiveField
from tb_convfilters._record.record import Record, make_record
from tb_convfilters._writing.copy_queue import CopyQueue
from tb_convfilters._writing.event_file import EventFile
from tb_convfilters._writing.examples import examples_arguments, write_examples
from tb_convfilters._writing.failures import WriterError, report

__all__ = ["Writer", "WriterError", "shared"]

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
    64 MiB of records, ``event_file.PART_BYTES``) upload them as a new event file;
    `path` is then the last file uploaded (None before the first).
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
        self._probe_inputs: dict[str, dict | None] = {}  # digest -> as the examples name it
        self._pid = os.getpid()
        self._queue = None if blocking else CopyQueue(int(max_queue_mb * (1 << 20)))
        self._done = False  # closed, its file closed or its buffer uploaded
        self._event_file = EventFile(self.logdir, filename_suffix, repr(self))
        _live.add(self)
        self._started = True  # `__del__` closes it from here on

    def __repr__(self) -> str:
        return f"Writer({self.logdir!r})"

    @property
    def path(self) -> str | None:
        """The event file written (on a URL logdir, the last one uploaded; None before)."""
        return self._event_file.path

    def _write_now(
        self, tag: str, rec: Record, step: int, wall_time: float, description: str | None
    ) -> str | None:
        """Converts and writes `rec`; returns the conversion's warning, if any."""
        rec, message = rec.converted()
        self._event_file.append(tag, rec, step, wall_time, description)
        return message

    def _write_record(self, tag: str, rec: Record, step: Any, description: str | None) -> None:
        check_tag(tag)
        step = check_step(step)
        self._check_open()
        wall_time = time.time()
        if self._queue is None:
            message = self._write_now(tag, rec, step, wall_time, description)
            if message:
                warnings.warn(message, RuntimeWarning, stacklevel=3)
            return

        def work(array: np.ndarray) -> str | None:
            return self._write_now(tag, rec._replace(array=array), step, wall_time, description)

        self._queue.put(work, rec.array, (tag, step), owned=rec.owned)
        # This record is queued first: an earlier record's failure raised here loses nothing more.
        report(self, self._queue, stacklevel=4)

    def _check_open(self) -> None:
        """Raises for a closed Writer, or one of another process."""
        if self._pid != os.getpid():
            raise ValueError(
                f"{self!r} belongs to process {self._pid}: a forked child cannot write to it; "
                "open a Writer of its own"
            )
        self._event_file.check_open()

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
        return self._event_file.closed or self._pid != os.getpid()

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
            convert=self._queue is None,
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
        inputs: Any = None,
        examples: int | None = None,
        receptive_field: ReceptiveField | dict | None = None,
        input_layout: str | None = None,
    ) -> None:
        """Logs the feature maps of every sample in `data` at `step` (`max_samples`: the
        first N only); arguments as in ``summary.activation_pb``.

        With `inputs` (the network inputs that gave `data`, one per sample) the
        top `examples` inputs of each channel (default 9; 0: none) are logged as
        its dataset examples (``reader.examples``), ranked over every sample of
        `data`; `receptive_field` (a ``ReceptiveField``) lets each example's crop
        be cut from its input, else the examples keep their maps to lay over the
        whole input. `examples=N` without `inputs` logs indices, values and
        positions only. The inputs are stored once per Writer.
        """
        k, field, inputs, input_layout = examples_arguments(
            data, layout, inputs, examples, receptive_field, input_layout
        )
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
            convert=self._queue is None,
        )
        if k:
            filters = rec.header.get("filters")
            found = rank(np.asarray(data), layout, k, keep_maps=field is None)
            if filters is not None:
                found = found.take(filters)

        def log_examples() -> None:
            if k:
                self.write_examples(
                    tag,
                    found,
                    step,
                    layout=layout,
                    field=field,
                    inputs=inputs,
                    input_layout=input_layout,
                    dtype=dtype or self._dtype,
                    filters=filters,
                )

        try:
            self._write_record(tag, rec, step, description)
        except WriterError:  # an earlier record's failure: this one is queued, and its examples
            log_examples()
            raise
        log_examples()

    def write_examples(
        self, tag: str, found: Found, step: int, *, layout: str, **options: Any
    ) -> int:
        """Writes dataset examples ranked by the caller (``examples.write_examples``);
        the probe inputs once per digest. Returns the bytes queued."""
        return write_examples(
            self._write_record, self._probe_inputs, tag, found, step, layout=layout, **options
        )

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
        if self._event_file.closed:
            self.close()
            return
        if self.closed:
            return
        if self._queue is not None:
            self._queue.put(self._flush_now, None, ("flush", None))
            if wait:
                self._queue.wait()
            report(self, self._queue, stacklevel=3)
        else:
            self._flush_now()

    def _flush_now(self, _: Any = None) -> None:
        self._event_file.flush()

    def close(self) -> None:
        """Flushes and closes; raises what failed in the background meanwhile.

        On a URL logdir an upload that fails keeps the records buffered: `close` or
        `flush` again (or interpreter exit) retries it.
        """
        if self._pid != os.getpid() or self._done:
            return
        try:
            if self._queue is not None:
                self._queue.close()
            self._event_file.close()
            self._done = True
            _live.discard(self)
        finally:  # earlier failures first; an upload's is chained
            report(self, self._queue, stacklevel=3)

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
