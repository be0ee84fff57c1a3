"""A TensorFlow-free event file writer for kernels and activations.

Records are framed by hand (TFRecord: length, masked CRC32C, data, masked
CRC32C) so the tensor payload is written straight from the array's buffer and
checksummed by the C ``crc32c`` package: TensorBoard's own Python writer
serializes nested protos (several payload copies) and computes CRC32C in pure
Python (~5 MB/s). Files are ordinary event files any TensorBoard reads.

A URL logdir (``s3://``, ``gs://``, ...) goes through ``fs``: object stores
cannot append, so records are buffered and each flush uploads them as a new,
complete event file.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import struct
import threading
import time
from collections.abc import Sequence
from typing import Any

import crc32c
import numpy as np
from tensorboard.compat.proto import (
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)

from tb_convfilters import blob, fs, metadata
from tb_convfilters.record import Record, check_step, check_tag, make_record
from tb_convfilters.summary import pattern_record

_file_counter = itertools.count()
# A URL logdir's buffered records are also uploaded once this many bytes wait.
PART_BYTES = 64 << 20


_BYTES = [bytes((i,)) for i in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:  # field keys and small lengths: most calls
        return _BYTES[n]
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _len_field(field: int, length: int) -> bytes:
    """Key and length prefix of a length-delimited protobuf field."""
    return _varint(field << 3 | 2) + _varint(length)


def _masked_crc(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_event(prefix: bytes, payload: memoryview, suffix: bytes) -> tuple[bytes, bytes]:
    """TFRecord framing of ``prefix + payload + suffix`` without joining them.

    Returns (head, tail): write ``head, payload, tail`` in that order.
    """
    head = _record_head(len(prefix) + payload.nbytes + len(suffix), prefix)
    return head, _record_tail(prefix, payload, None, suffix)


def _record_head(data_len: int, prefix: bytes) -> bytes:
    """Length, its masked CRC32C, and the first bytes of a TFRecord's data."""
    length = struct.pack("<Q", data_len)
    return length + struct.pack("<I", _masked_crc(crc32c.crc32c(length))) + prefix


def _record_tail(
    prefix: bytes, payload: memoryview, payload_crc: int | None, suffix: bytes
) -> bytes:
    """The last bytes of a TFRecord's data and its masked CRC32C.

    A known CRC32C of `payload` spares reading it again.
    """
    crc = crc32c.crc32c(prefix)
    if payload_crc is None or payload.nbytes < 1 << 20:
        crc = crc32c.crc32c(payload, value=crc)
    else:
        crc = _crc_combine(crc, payload_crc, payload.nbytes)
    crc = crc32c.crc32c(suffix, value=crc)
    return suffix + struct.pack("<I", _masked_crc(crc))


_CRC32C_POLY = 0x82F63B78  # reflected


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC32C polynomial (reflected bit order), as in zlib."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC32C_POLY if b & 1 else b >> 1


_X2N = [1 << 30]  # x^(2^k) modulo the polynomial
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def _crc_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32C of ``a + b`` from ``crc(a)``, ``crc(b)`` and ``len(b)`` (zlib's crc32_combine)."""
    p, k = 1 << 31, 3
    while len2:
        if len2 & 1:
            p = _multmodp(_X2N[k & 31], p)
        len2 >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


def encode_event(
    tag: str, header: dict, array: np.ndarray, step: int, wall_time: float, description: str | None
) -> tuple[bytes, memoryview, int]:
    """The serialized Event of one record, split as (prefix, payload view, suffix length).

    Equivalent to serializing ``Event(step, wall_time, summary=Summary(value=[
    Value(tag, metadata, tensor=TensorProto(string_val=[header, payload, stats,
    checks]))]))``. Field order inside a message is free in protobuf, so the
    payload can sit near the end and be written from the array's own memory; the
    suffix (`encode_suffix`) is only known once stats and checksums are.
    """
    payload = memoryview(array.reshape(-1).view(np.uint8))
    tensor_head = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=4)]
        ),
        string_val=[blob.encode_header(header)],
    ).SerializeToString() + _len_field(8, payload.nbytes)
    stats_len = blob.stats_nbytes(header)
    suffix_len = len(_len_field(8, stats_len)) + stats_len
    suffix_len += len(_len_field(8, blob.CHECKS_NBYTES)) + blob.CHECKS_NBYTES
    tensor_len = len(tensor_head) + payload.nbytes + suffix_len
    value_head = summary_pb2.Summary.Value(
        tag=tag, metadata=metadata.create_summary_metadata(header, description)
    ).SerializeToString() + _len_field(8, tensor_len)
    value_len = len(value_head) + tensor_len
    summary_head = _len_field(1, value_len)
    event_head = event_pb2.Event(step=step, wall_time=wall_time).SerializeToString()
    event_head += _len_field(5, len(summary_head) + value_len)
    return event_head + summary_head + value_head + tensor_head, payload, suffix_len


def encode_suffix(rec: Record) -> bytes:
    """The bytes after the payload: the stats and checks blobs of completed `rec`."""
    stats, checks = rec.trailing_blobs()
    return _len_field(8, len(stats)) + stats + _len_field(8, len(checks)) + checks


class Writer:
    """Writes kernels and activations to a new event file in `logdir`.

    >>> with tb_convfilters.Writer("logs/run1") as w:
    ...     w.kernel("conv1/kernel", weights, step=0, layout="OIHW")

    `dtype` (e.g. ``"float16"``) applies to every tensor unless a call says
    otherwise. Thread-safe; the file is flushed on `flush`, `close` and exit.

    `logdir` may be a URL TensorBoard reads (``s3://bucket/logs/run1``, see
    ``fs``). There, records wait in memory and `flush`, `close` (and every
    ``PART_BYTES`` of records) upload them as a new event file; `path` is
    then the last file uploaded (None before the first).
    """

    def __init__(
        self, logdir: str | os.PathLike, *, dtype: str | None = None, filename_suffix: str = ""
    ):
        self.logdir = os.fspath(logdir)
        self._dtype = dtype
        self._lock = threading.Lock()
        self._remote = fs.is_url(self.logdir)
        fs.makedirs(self.logdir)
        self._id = f"{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}"
        self._suffix = filename_suffix
        self._parts = 0
        self.path: str | None = None
        if self._remote:
            self._file: Any = io.BytesIO()
        else:
            self.path = fs.join(self.logdir, self._file_name(""))
            self._file = open(self.path, "wb")
        self._start_file()
        self.flush()

    def _file_name(self, part: str) -> str:
        return f"events.out.tfevents.{int(time.time()):010d}.{self._id}{part}{self._suffix}"

    def _start_file(self) -> None:
        event = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
        head, tail = frame_event(event.SerializeToString(), memoryview(b""), b"")
        self._file.write(head + tail)
        self._header_end = self._file.tell()

    def _upload(self) -> None:
        """Uploads the buffered records as the next event file (lock held)."""
        if self._file.tell() <= self._header_end:
            return
        # Parts sort in upload order (time, then number): TensorBoard reads files in name order.
        path = fs.join(self.logdir, self._file_name(f".{self._parts:06d}"))
        fs.upload(path, self._file.getvalue())
        self.path = path
        self._parts += 1
        self._file = io.BytesIO()
        self._start_file()

    def _write_record(self, tag: str, rec: Record, step: Any, description: str | None) -> None:
        """Writes `rec`; an incomplete one gets its stats while its payload is written."""
        check_tag(tag)
        step = check_step(step)
        wall_time = time.time()
        out: dict = {}  # what `send` wrote, once the lock is held

        def send() -> None:
            prefix, payload, suffix_len = encode_event(
                tag, rec.header, rec.array, step, wall_time, description
            )
            self._lock.acquire()
            out["locked"] = True
            if self._file is None:
                raise ValueError(f"Writer for {self.logdir!r} is closed")
            out["start"] = self._file.tell()
            self._file.write(_record_head(len(prefix) + payload.nbytes + suffix_len, prefix))
            self._file.write(payload)  # into a URL logdir's buffer: a copy, as it must be
            out["framing"] = prefix, payload, suffix_len

        try:
            done = rec.complete(meanwhile=send)
            prefix, payload, suffix_len = out["framing"]
            suffix = encode_suffix(done)
            if len(suffix) != suffix_len:
                raise AssertionError(f"stats of {len(suffix)} bytes, expected {suffix_len}")
            self._file.write(_record_tail(prefix, payload, done.payload_crc, suffix))
            if self._remote and self._file.tell() >= PART_BYTES:
                self._upload()
        except BaseException:
            if "start" in out and self._file is not None:  # no half record stays in the file
                self._file.seek(out["start"])
                self._file.truncate()
            raise
        finally:
            if out.get("locked"):
                self._lock.release()

    def write_record(
        self, tag: str, rec: Record, step: Any, description: str | None = None
    ) -> None:
        """Writes a record made by ``record.make_record`` (lets callers build before opening).

        Pass one made with ``complete=False``: its stats are computed as it is written.
        """
        self._write_record(tag, rec, step, description)

    @property
    def closed(self) -> bool:
        return self._file is None

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

    def flush(self) -> None:
        """Writes out what was logged (on a URL logdir: uploads it as a new event file)."""
        with self._lock:
            if self._file is None:
                return
            if self._remote:
                self._upload()
            else:
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                if self._remote:
                    self._upload()
                else:
                    self._file.close()
            finally:
                self._file = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
