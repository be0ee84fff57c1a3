"""TFRecord framing of event records, with the payload written from the array's own memory.

Serializing ``Event(summary=Summary(value=[Value(tensor=TensorProto(...))]))``
whole copies the payload several times; here only the small parts are
serialized by protobuf, the nested length prefixes are computed, and the
record's CRC32C is extended over the payload (or combined from its known CRC)
by the C ``crc32c`` package.
"""

from __future__ import annotations

import functools
import json
import struct

import crc32c
import numpy as np
from tensorboard.compat.proto import (
    event_pb2,
    summary_pb2,
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)

from tb_convfilters._record import encoding, metadata
from tb_convfilters._record.record import Record

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
    head = record_head(len(prefix) + payload.nbytes + len(suffix), prefix)
    return head, record_tail(prefix, payload, None, suffix)


def record_head(data_len: int, prefix: bytes) -> bytes:
    """Length, its masked CRC32C, and the first bytes of a TFRecord's data."""
    length = struct.pack("<Q", data_len)
    return length + struct.pack("<I", _masked_crc(crc32c.crc32c(length))) + prefix


def record_tail(
    prefix: bytes, payload: memoryview, payload_crc: int | None, suffix: bytes
) -> bytes:
    """The last bytes of a TFRecord's data and its masked CRC32C.

    A known CRC32C of `payload` spares reading it again.
    """
    crc = crc32c.crc32c(prefix)
    if payload_crc is None or payload.nbytes < 1 << 20:
        crc = crc32c.crc32c(payload, value=crc)
    else:
        crc = encoding.crc_combine(crc, payload_crc, payload.nbytes)
    crc = crc32c.crc32c(suffix, value=crc)
    return suffix + struct.pack("<I", _masked_crc(crc))


@functools.lru_cache(maxsize=1024)  # a series' steps share them: serialized once
def _heads(tag: str, header: bytes, description: str | None) -> tuple[bytes, bytes]:
    """The serialized TensorProto (up to its payload) and Summary.Value (up to its tensor)."""
    tensor_start = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=4)]
        ),
        string_val=[header],
    ).SerializeToString()
    value_start = summary_pb2.Summary.Value(
        tag=tag,
        metadata=metadata.create_summary_metadata(json.loads(header), description),
    ).SerializeToString()
    return tensor_start, value_start


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
    tensor_start, value_start = _heads(tag, encoding.encode_header(header), description)
    tensor_head = tensor_start + _len_field(8, payload.nbytes)
    stats_len = encoding.stats_nbytes(header)
    suffix_len = len(_len_field(8, stats_len)) + stats_len
    suffix_len += len(_len_field(8, encoding.CHECKS_NBYTES)) + encoding.CHECKS_NBYTES
    tensor_len = len(tensor_head) + payload.nbytes + suffix_len
    value_head = value_start + _len_field(8, tensor_len)
    value_len = len(value_head) + tensor_len
    summary_head = _len_field(1, value_len)
    event_head = event_pb2.Event(step=step, wall_time=wall_time).SerializeToString()
    event_head += _len_field(5, len(summary_head) + value_len)
    return event_head + summary_head + value_head + tensor_head, payload, suffix_len


def encode_suffix(rec: Record) -> bytes:
    """The bytes after the payload: the stats and checks blobs of completed `rec`."""
    stats, checks = rec.trailing_blobs()
    return _len_field(8, len(stats)) + stats + _len_field(8, len(checks)) + checks
