"""The index at scale (``tb_convfilters._serving.index``): compact columns, records found
by template, statistics read on demand, the first build in the background, findings kept.

Every record the index finds is checked against protobuf's own parse of its bytes;
memory per record is measured with tracemalloc; a record replaced, cut short or
corrupted after it was indexed is never served as if it were the indexed one.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tensorboard.backend import application
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins import base_plugin
from test_event_files import format1, framed, framed_raw, good_record, write_run
from werkzeug.test import Client

import tb_convfilters
from tb_convfilters import plugin
from tb_convfilters._record import encoding
from tb_convfilters._serving import data_sources, findings, index, payloads

PREFIX = "/data/plugin/convfilters/"
rng = np.random.default_rng(7)


def small(step: int, shape=(3, 3, 2, 4)) -> np.ndarray:
    return (rng.standard_normal(shape) + step).astype(np.float32)


def records_of(path: str) -> list[tuple[int, event_pb2.Event]]:
    """(offset, Event) of every record of an event file, parsed by protobuf."""
    data, out, offset = Path(path).read_bytes(), [], 0
    while offset + 12 <= len(data):
        length = int.from_bytes(data[offset : offset + 8], "little")
        out.append((offset, event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])))
        offset += length + 16
    return out


def test_every_record_found_by_template_is_what_protobuf_reads(tmp_path):
    steps = [0, 1, 127, 128, 300, 16384, 2**40]  # step 0 has no step field; varints of 1-6 bytes
    with tb_convfilters.Writer(tmp_path / "run", blocking=True) as w:
        for step in steps:
            w.kernel("a/kernel", small(step), step)
            w.kernel("b/kernel", small(step, (5, 5, 3, 2)), step)
            w.kernel("c/kernel", small(step), step, max_filters=2)
        path = w.path
    with open(path, "ab") as f:  # an old format and another plugin's value, between ours
        f.write(framed_raw(5, format1(5), tag="old"))
        f.write(framed_raw(6, [b"x" * 10], tag="other", content=b"{}"))
        f.write(framed(good_record(9), 9, tag="old"))
    idx = index.Index({str(tmp_path): None})
    idx.refresh()
    want = {}  # (tag, step) -> (offset, event)
    for offset, event in records_of(path):
        for value in event.summary.value:
            if value.tensor.string_val:
                want[(value.tag, event.step)] = (offset, event, value)
    got = 0
    for tag in ("a/kernel", "b/kernel", "c/kernel", "old"):
        for loc in idx.series("run", tag):
            offset, event, value = want[(tag, loc.step)]
            blobs = list(value.tensor.string_val)
            assert (loc.start, loc.wall_time, loc.count) == (offset, event.wall_time, len(blobs))
            data = Path(path).read_bytes()
            for i, (at, n) in enumerate(loc.spans):
                assert data[at : at + n] == blobs[i]
                assert loc.blobs[i] == (b"" if i == encoding.PAYLOAD else blobs[i])
            assert loc.end == offset + 16 + event.ByteSize()
            got += 1
    assert got == 3 * len(steps) + 2
    assert [loc.step for loc in idx.series("run", "a/kernel")] == steps
    table = idx._runs["run"].table
    assert len(table.shapes) <= 6  # one per series (varint lengths are a shift, not a shape)


def _stats_route(client: Client, step: int) -> dict:
    body = client.get(PREFIX + "stats?run=run&tag=k").get_data()
    return {s["step"]: s for s in json.loads(body)["steps"]}[step]


def test_statistics_read_on_demand_never_come_from_another_record(tmp_path):
    """Statistics stay in the file: a record replaced (same size), cut short or removed
    after it was indexed is `Stale`, never another record's; corrupt ones are named."""
    path = write_run(tmp_path, "run", range(4))
    idx = index.Index({str(tmp_path): None}, reload_interval=3600)
    idx.refresh()
    locs = idx.series("run", "k")
    assert all(loc.held[encoding.STATS] is None for loc in locs)  # not held in memory
    data = bytearray(Path(path).read_bytes())
    other = framed(good_record(7), 1)  # the same size, other stats and checks
    assert len(other) == locs[1].end - locs[1].start
    data[locs[1].start : locs[1].end] = other
    at, n = locs[2].spans[encoding.STATS]
    data[at + 1] ^= 0x20  # stats corrupt in place: same record, same checks
    Path(path).write_bytes(bytes(data))
    with pytest.raises(index.Stale):
        locs[1].blobs[encoding.STATS]
    header = encoding.read_header(locs[2].blobs.__getitem__, locs[2].count)
    with pytest.raises(encoding.RecordError, match="stats checksum mismatch"):
        encoding.decode_stats(header, locs[2].blobs[encoding.STATS])
    Path(path).write_bytes(bytes(data[: locs[3].start + 30]))  # step 3 cut short
    with pytest.raises(index.Stale):
        locs[3].blobs[encoding.STATS]
    idx.maybe_refresh()  # the stale file is read again: step 1 is the new record
    again = idx.find("run", "k", 1)
    want = encoding.encode_stats(good_record(7).stats)
    assert again.blobs[encoding.STATS] == want
    assert [loc.step for loc in idx.series("run", "k")] == [0, 1, 2]
    os.remove(path)  # removed: a read (past the index's cache of read blobs) is Stale
    with pytest.raises(index.Stale):
        payloads.read_blob(again, encoding.STATS)


def test_the_stats_route_reads_again_a_file_replaced_after_indexing(tmp_path):
    path = write_run(tmp_path, "run", range(3))
    client = Client(application.TensorBoardWSGI([_plugin(tmp_path, reload_interval=3600)]))
    first = _stats_route(client, 1)
    data = bytearray(Path(path).read_bytes())
    loc = client.application._plugins[0]._source.index.find("run", "k", 1)
    data[loc.start : loc.end] = framed(good_record(7), 1)
    Path(path).write_bytes(bytes(data))
    source = client.application._plugins[0]._source
    assert _stats_route(client, 1) == first  # read once, then kept: the indexed record's
    source.index._blobs = index.BlobCache(1 << 20)  # as if they had left the cache
    second = _stats_route(client, 1)  # its stale read makes the index read the file again
    assert "changed on disk" in second["error"]  # the header read was the old record's
    third = _stats_route(client, 1)
    want = good_record(7).stats.astype(np.float64)
    assert np.allclose(np.array(third["values"], dtype=np.float64), want, equal_nan=True)
    assert third["values"] != first["values"]


def _plugin(logdir, reload_interval: float = 5):
    flags = SimpleNamespace(
        logdir=str(logdir), logdir_spec="", grpc_data_provider="", reload_interval=reload_interval
    )
    context = base_plugin.TBContext(logdir=str(logdir), flags=flags, data_provider=None)
    return plugin.ConvFiltersPlugin(context)


def _write_many(logdir: Path, runs: int, layers: int, steps: int) -> int:
    k = small(0, (3, 3, 2, 4))
    for r in range(runs):
        with tb_convfilters.Writer(logdir / f"run{r}", blocking=True) as w:
            for step in range(steps):
                for layer in range(layers):
                    w.kernel(f"layer{layer}/kernel", k, step)
    return runs * layers * steps


def test_memory_per_record_is_bounded(tmp_path):
    """~50 bytes of numpy columns per record; the Python objects of the old design
    (a Loc with its blobs per record) took ~1.6 KB."""
    n = _write_many(tmp_path, 2, 20, 500)
    index.Index({str(tmp_path): None}).refresh()  # imports and caches of a first build
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        idx = index.Index({str(tmp_path): None})
        idx.refresh()
        gc.collect()
        per_record = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    series = [idx.series(f"run{r}", f"layer{x}/kernel") for r in range(2) for x in range(20)]
    assert sum(map(len, series)) == n
    print(f"{per_record:.1f} bytes per record")
    assert per_record <= 120, per_record


def test_a_request_during_the_first_build_answers_and_later_ones_see_everything(
    tmp_path, monkeypatch
):
    for run in ("a", "b"):
        write_run(tmp_path, run, range(5))
    gate = threading.Event()
    real = index.Index._refresh_run

    def slow(self, run, listing, dirty):  # run "b" is read once the gate opens
        if any(f"{os.sep}b{os.sep}" in path for path, _ in listing):
            assert gate.wait(30)
        return real(self, run, listing, dirty)

    monkeypatch.setattr(index.Index, "_refresh_run", slow)
    client = Client(application.TensorBoardWSGI([_plugin(tmp_path)]))  # starts the build
    start = time.monotonic()
    response = client.get(PREFIX + "tags")
    assert time.monotonic() - start < 5
    assert response.status_code == 200, response.get_data()
    assert response.headers.get("X-Convfilters-Indexing") == "1"
    assert set(json.loads(response.get_data())) <= {"a"}
    answers = {}

    def steps_of_b():
        answers["b"] = client.get(PREFIX + "steps?run=b&tag=k")

    waiting = threading.Thread(target=steps_of_b)
    waiting.start()  # waits for run "b" to be indexed
    time.sleep(0.2)
    assert waiting.is_alive()
    gate.set()
    waiting.join(30)
    assert answers["b"].status_code == 200
    assert [s["step"] for s in json.loads(answers["b"].get_data())] == list(range(5))
    source = client.application._plugins[0]._source  # noqa: SLF001
    assert source.index.wait_built(30)
    response = client.get(PREFIX + "tags")
    assert "X-Convfilters-Indexing" not in response.headers
    assert set(json.loads(response.get_data())) == {"a", "b"}


def test_findings_are_kept_per_series_and_read_again_where_records_changed(tmp_path, monkeypatch):
    with tb_convfilters.Writer(tmp_path / "run", blocking=True) as w:
        for step in range(4):
            for layer in range(3):
                k = small(step)
                if layer == 0:
                    k[..., 0] = 0  # a dead filter: a finding
                w.kernel(f"layer{layer}/kernel", k, step)
    idx = index.Index({str(tmp_path): None}, reload_interval=0)
    source = data_sources.IndexSource.__new__(data_sources.IndexSource)
    source.index, source._findings = idx, findings.IndexFindings(idx)
    reads: list[int] = []
    real = payloads.read_blobs
    monkeypatch.setattr(
        payloads, "read_blobs", lambda locs, i: reads.append(len(locs)) or real(locs, i)
    )
    first = source.findings(None, "", "run")
    assert reads == [4, 4, 4]
    assert any(f["problem"] == "dead" and f["tag"] == "layer0/kernel" for f in first["findings"])
    reads.clear()
    start = time.perf_counter()
    assert source.findings(None, "", "run") == first  # reopened: kept
    assert time.perf_counter() - start < 0.2
    assert reads == []
    with tb_convfilters.Writer(tmp_path / "run", blocking=True) as w:
        w.kernel("layer2/kernel", small(9), 9)
    again = source.findings(None, "", "run")
    assert reads == [5]  # only the series that changed
    want = findings.doctor.report(findings.index_series(idx, "run"), "run")
    assert again == want  # the same as computed from scratch
