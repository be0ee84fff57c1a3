"""The plugin's index of its records (``tb_convfilters._serving.index``), on real event files.

It must read records of every format, skip payloads and other plugins' values
without reading them, follow growing files, new files and new runs without
reading old bytes again, name runs as TensorBoard does, and notice files that
were truncated or replaced (never serving bytes of another record).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.compat.proto import summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from test_event_files import format1, framed, framed_raw, good_record, kernel, write_run

import tb_convfilters
from tb_convfilters._record import encoding
from tb_convfilters._record import files as fs
from tb_convfilters._serving import index


def arrays(idx: index.Index, run: str, tag: str = "k") -> dict[int, np.ndarray]:
    """{step: array} of a series, each payload read through the index."""
    out = {}
    for loc in idx.series(run, tag) or ():
        header = encoding.read_header(loc.blobs.__getitem__, loc.count)
        out[loc.step] = encoding.decode_array(header, idx.payload(loc, header))
    return out


@pytest.fixture
def reads(monkeypatch):
    """Every (path, offset, size) read through fs.read_at."""
    seen: list[tuple[str, int, int]] = []
    real = fs.read_at

    def read_at(path, offset, size):
        seen.append((path, offset, size))
        return real(path, offset, size)

    monkeypatch.setattr(fs, "read_at", read_at)
    return seen


def test_every_format_is_read_and_the_last_record_of_a_step_wins(tmp_path):
    write_run(
        tmp_path,
        "run",
        range(3),
        framed_raw(3, format1(3)),  # format 1: three blobs, the checksums in the header
        framed(good_record(40), 1),  # step 1 logged again: this one wins
    )
    idx = index.Index({str(tmp_path): None})
    idx.refresh()
    got = arrays(idx, "run")
    assert sorted(got) == [0, 1, 2, 3]
    for step in (0, 2, 3):
        assert got[step].tobytes() == kernel(step).tobytes()
    assert got[1].tobytes() == kernel(40).tobytes()
    assert idx.series("run", "k")[3].count == 3


def test_payloads_and_other_plugins_are_skipped_unread(tmp_path, reads):
    big = np.random.default_rng(0).standard_normal((3, 3, 256, 512)).astype(np.float32)
    with tb_convfilters.Writer(tmp_path / "run") as w:
        for step in range(4):
            w.kernel("big", big + step, step)
    other = EventFileWriter(str(tmp_path / "run"))  # another plugin's large tensors
    value = summary_pb2.Summary.Value(tag="other", metadata=summary_pb2.SummaryMetadata())
    value.metadata.plugin_data.plugin_name = "images"
    value.tensor.dtype = 7  # DT_STRING
    value.tensor.string_val.append(b"\x01" * (4 << 20))
    from tensorboard.compat.proto import event_pb2

    for step in range(3):
        other.add_event(event_pb2.Event(step=step, summary=summary_pb2.Summary(value=[value])))
    other.close()
    stored = sum(p.stat().st_size for p in (tmp_path / "run").iterdir())
    idx = index.Index({str(tmp_path): None})
    idx.refresh()
    assert [loc.step for loc in idx.series("run", "big")] == [0, 1, 2, 3]
    assert idx.series("run", "other") is None
    read = sum(size for _, _, size in reads)
    assert read < stored / 20, (read, stored)  # record heads and tails only
    loc = idx.series("run", "big")[2]
    ranges = []
    real = fs.read_ranges
    fs.read_ranges = lambda path, r: ranges.append((path, r)) or real(path, r)
    try:
        header = encoding.read_header(loc.blobs.__getitem__, loc.count)
        got = encoding.decode_array(header, idx.payload(loc, header))
        assert got.tobytes() == (big + 2).tobytes()
    finally:
        fs.read_ranges = real
    # One positioned read of the record: before, at and after the payload.
    [(path, parts)] = ranges
    assert path == loc.path and parts[0][0] == loc.start and sum(n for _, n in parts) == (
        loc.end - loc.start
    )


def test_growing_files_new_files_and_new_runs_are_followed_incrementally(tmp_path, reads):
    w = tb_convfilters.Writer(tmp_path / "a")
    w.kernel("k", kernel(0), 0)
    w.flush()
    idx = index.Index({str(tmp_path): None}, reload_interval=0)
    idx.maybe_refresh()
    assert sorted(arrays(idx, "a")) == [0]
    size = os.path.getsize(w.path)
    w.kernel("k", kernel(1), 1)
    w.flush()
    reads.clear()
    idx.maybe_refresh()
    assert sorted(arrays(idx, "a")) == [0, 1]
    first_bytes = 64  # the start of the file, compared to notice a replaced file
    assert all(offset >= size or offset + n <= first_bytes for _, offset, n in reads[:2])
    w.close()
    with tb_convfilters.Writer(tmp_path / "a") as w2:  # a second file in the run
        w2.kernel("k", kernel(2), 2)
    with tb_convfilters.Writer(tmp_path / "b" / "deeper") as w3:  # a new, nested run
        w3.kernel("k", kernel(5), 5)
    idx.maybe_refresh()
    assert sorted(arrays(idx, "a")) == [0, 1, 2]
    assert arrays(idx, "b/deeper")[5].tobytes() == kernel(5).tobytes()
    shutil.rmtree(tmp_path / "b")
    idx.refresh()
    assert not idx.has_run("b/deeper")


def test_interval_none_reads_once(tmp_path):
    w = tb_convfilters.Writer(tmp_path)
    w.kernel("k", kernel(0), 0)
    w.flush()
    idx = index.Index({str(tmp_path): None}, reload_interval=None)
    idx.maybe_refresh()
    w.kernel("k", kernel(1), 1)
    w.close()
    idx.maybe_refresh()
    assert sorted(arrays(idx, ".")) == [0]  # the logdir itself is the run "."
    idx.refresh()  # on request
    assert sorted(arrays(idx, ".")) == [0, 1]


def test_torn_tail_waits_for_the_rest(tmp_path):
    path = write_run(tmp_path, "run", range(2))
    record = framed(good_record(2), 2)
    idx = index.Index({str(tmp_path): None}, reload_interval=0)
    written = 0
    with open(path, "ab") as f:
        for cut in (5, 12, 40, len(record) - 1, len(record)):
            f.write(record[written:cut])
            f.flush()
            written = cut
            idx.maybe_refresh()
            assert sorted(arrays(idx, "run")) == ([0, 1, 2] if cut == len(record) else [0, 1])


def test_truncated_and_replaced_files_are_noticed(tmp_path):
    path = write_run(tmp_path, "run", range(5))
    idx = index.Index({str(tmp_path): None}, reload_interval=0)
    idx.maybe_refresh()
    old = idx.series("run", "k")
    data = Path(path).read_bytes()
    # Truncated mid-way through step 3: steps 3 and 4 go.
    Path(path).write_bytes(data[: old[3].start + 20])
    idx.maybe_refresh()
    assert sorted(arrays(idx, "run")) == [0, 1, 2]
    # Replaced by a shorter file with other contents: the old locations are stale.
    path.unlink()
    with tb_convfilters.Writer(tmp_path / "run") as w:
        w.kernel("k", kernel(9), 1)
    os.rename(w.path, path)
    header = encoding.read_header(old[1].blobs.__getitem__, old[1].count)
    with pytest.raises(index.Stale):
        idx.payload(old[1], header)
    idx.maybe_refresh()  # the stale file is read again from its start
    got = arrays(idx, "run")
    assert list(got) == [1] and got[1].tobytes() == kernel(9).tobytes()


def test_same_size_replacement_is_never_served(tmp_path):
    path = write_run(tmp_path, "run", range(2))
    idx = index.Index({str(tmp_path): None}, reload_interval=3600)
    idx.refresh()
    loc = idx.series("run", "k")[1]
    header = encoding.read_header(loc.blobs.__getitem__, loc.count)
    data = bytearray(Path(path).read_bytes())
    other = framed(good_record(7), 1)  # the same size, other payload and checks
    assert len(other) == loc.end - loc.start
    data[loc.start : loc.end] = other
    Path(path).write_bytes(bytes(data))
    with pytest.raises(index.Stale):
        idx.payload(loc, header)
    idx.maybe_refresh()  # a stale file is read again at once, whatever the interval
    assert arrays(idx, "run")[1].tobytes() == kernel(7).tobytes()


def test_a_corrupt_payload_is_an_error_for_that_step_only(tmp_path):
    path = write_run(tmp_path, "run", range(3))
    idx = index.Index({str(tmp_path): None})
    idx.refresh()
    loc = idx.series("run", "k")[1]
    data = bytearray(Path(path).read_bytes())
    data[loc.spans[encoding.PAYLOAD][0] + 5] ^= 0x40
    Path(path).write_bytes(bytes(data))
    header = encoding.read_header(loc.blobs.__getitem__, loc.count)
    with pytest.raises(encoding.RecordError, match="payload checksum mismatch"):
        encoding.check_payload(header, idx.payload(loc, header))
    got = {s: arrays_one(idx, "run", s) for s in (0, 2)}
    assert all(got[s].tobytes() == kernel(s).tobytes() for s in got)


def test_large_payloads_come_in_checked_halves(tmp_path, monkeypatch):
    """The tensor route reads a large payload in two halves on two threads, each
    checksummed; a corrupt half is named, a replaced record is never served."""
    monkeypatch.setattr(index, "SPLIT_BYTES", 16)  # the test's kernels are small
    path = write_run(tmp_path, "run", range(3))
    idx = index.Index({str(tmp_path): None}, reload_interval=3600)
    idx.refresh()
    locs = idx.series("run", "k")
    headers = [encoding.read_header(loc.blobs.__getitem__, loc.count) for loc in locs]
    header = headers[0]
    got = idx.payload(locs[0], header, chunks=True)
    assert isinstance(got, encoding.Chunks) and len(got) == 2
    assert b"".join(got) == kernel(0).tobytes() == idx.payload(locs[0], header)
    npy = b"".join(encoding.view_npy_parts(header, header, got))
    assert np.load(io.BytesIO(npy)).tobytes() == kernel(0).tobytes()
    view = encoding.view_header(header, 1, 1)  # a cropped view: joined, not checksummed again
    monkeypatch.setattr(encoding, "crc", lambda data: pytest.fail("payload checksummed twice"))
    npy = b"".join(encoding.view_npy_parts(header, view, got))
    want = kernel(0)[tuple(slice(0, n) for n in view["shape"])]
    assert np.load(io.BytesIO(npy)).tobytes() == want.tobytes()
    monkeypatch.undo()
    monkeypatch.setattr(index, "SPLIT_BYTES", 16)
    data = bytearray(Path(path).read_bytes())
    at, n = locs[1].spans[encoding.PAYLOAD]
    data[at + n - 3] ^= 0x40  # in the second half
    other = framed(good_record(7), 2)  # the same size, other payload and checks
    data[locs[2].start : locs[2].end] = other
    Path(path).write_bytes(bytes(data))
    with pytest.raises(encoding.RecordError, match="payload checksum mismatch"):
        idx.payload(locs[1], headers[1], chunks=True)
    with pytest.raises(index.Stale):
        idx.payload(locs[2], headers[2], chunks=True)


def arrays_one(idx: index.Index, run: str, step: int) -> np.ndarray:
    loc = idx.find(run, "k", step)
    header = encoding.read_header(loc.blobs.__getitem__, loc.count)
    return encoding.decode_array(header, idx.payload(loc, header))


def test_runs_are_named_as_tensorboard_names_them(tmp_path):
    for run in (".", "a", "a/b", "c/d/e", "sp ace"):
        with tb_convfilters.Writer(tmp_path / "logs" / run) as w:
            w.kernel("k", kernel(0), 0)
    logdir = str(tmp_path / "logs")
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.AddRunsFromDirectory(logdir + "/a", "named")
    idx = index.Index({logdir: None, logdir + "/a": "named"})
    idx.refresh()
    assert set(idx.runs()) == set(multiplexer.Runs())


def test_an_earlier_file_growing_does_not_override_a_later_one(tmp_path):
    """Files are read in name order (as ``reader`` reads them): a step in a later file wins
    even when an earlier file (another writer in the run) gets it again afterwards."""
    first = write_run(tmp_path, "run", [0])
    second = write_run(tmp_path, "run", [])
    assert first.name < second.name
    with open(second, "ab") as f:
        f.write(framed(good_record(20), 1))
    idx = index.Index({str(tmp_path): None}, reload_interval=0)
    idx.maybe_refresh()
    with open(first, "ab") as f:
        f.write(framed(good_record(10), 1))
    idx.maybe_refresh()
    assert arrays(idx, "run")[1].tobytes() == kernel(20).tobytes()


def test_the_index_serves_whenever_tensorboard_has_a_logdir(tmp_path):
    from types import SimpleNamespace

    from tensorboard.plugins import base_plugin

    from tb_convfilters._serving import data_sources

    def source(logdir="", **flags):
        defaults = dict(logdir=logdir, logdir_spec="", grpc_data_provider="", reload_interval=5)
        context = base_plugin.TBContext(
            logdir=logdir, flags=SimpleNamespace(**{**defaults, **flags}), data_provider=object()
        )
        return data_sources.make_source(context)

    assert source(str(tmp_path)).index._roots == {str(tmp_path): None}
    spec = source(logdir_spec=f"a:{tmp_path}/x,{tmp_path}/y")
    assert spec.index._roots == {f"{tmp_path}/x": "a", f"{tmp_path}/y": None}
    assert spec.index._interval == 5.0
    assert source(str(tmp_path), reload_interval=0).index._interval is None  # load once
    assert source(grpc_data_provider="localhost:6806").mode == "provider"
    assert source().mode == "provider"
