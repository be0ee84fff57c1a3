"""Broken event files: truncated, corrupt, half-written or lying records.

Earlier good steps are still served, a broken record is skipped or answered as a
422 for that step only, and TensorBoard keeps running and reloading; checked over
the data provider and against a real ``tensorboard`` with both loaders.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from support import PREFIX, http_get, load_npy, plugin_client, tensorboard, wait_for
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

import tb_convfilters
from tb_convfilters import plugin
from tb_convfilters._record import encoding, events, metadata
from tb_convfilters._record.record import Record, make_record

KERNEL = np.arange(3 * 3 * 4 * 6, dtype=np.float32).reshape(3, 3, 4, 6) / 7


def kernel(step: int) -> np.ndarray:
    return KERNEL + step


def good_record(step: int) -> Record:
    return make_record(kernel(step), kind="kernel", layout="HWIO")


def framed(rec: Record, step: int, tag: str = "k", wall_time: float | None = None) -> bytes:
    """A whole TFRecord (valid CRCs) holding `rec` at `step`; the same bytes every time."""
    wall_time = 1_700_000_000.0 + step if wall_time is None else wall_time
    return framed_raw(step, rec.blobs(), wall_time, tag=tag)


def framed_raw(step: int, blobs: list[bytes], wall_time: float | None = None, **meta) -> bytes:
    """A TFRecord (valid CRCs) whose event holds arbitrary blobs for tag ``meta['tag']``."""
    tag = meta.pop("tag", "k")
    content = meta.pop("content", None)
    value_metadata = metadata.create_summary_metadata(good_record(0).header)
    if content is not None:
        value_metadata.plugin_data.content = content
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=blobs)
    tensor.tensor_shape.dim.add(size=len(blobs))
    event = event_pb2.Event(
        step=step,
        wall_time=time.time() if wall_time is None else wall_time,
        summary=summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag=tag, metadata=value_metadata, tensor=tensor)]
        ),
    )
    head, tail = events.frame_event(event.SerializeToString(), memoryview(b""), b"")
    return head + tail


def lying(step: int, **changes) -> Record:
    rec = good_record(step)
    return rec._replace(header={**rec.header, **changes})


def blobs(step: int, header: bytes | None = None) -> list[bytes]:
    rec = good_record(step)
    h, *rest = rec.blobs()
    return [h if header is None else header, *rest]


def format1(step: int, **changes) -> list[bytes]:
    """The 3 blobs of a record of format 1: its checksums are inside the header."""
    rec = good_record(step)
    crcs = {"payload_crc32c": rec.payload_crc, "stats_crc32c": rec.stats_crc}
    _, payload, stats, _ = rec.blobs()
    return [encoding.encode_header({**rec.header, **crcs, **changes}), payload, stats]


def write_run(logdir: Path, run: str, good_steps, *chunks: bytes) -> Path:
    """A run whose event file has `good_steps` written by the Writer, then raw `chunks`."""
    with tb_convfilters.Writer(logdir / run) as w:
        for step in good_steps:
            w.kernel("k", kernel(step), step)
    with open(w.path, "ab") as f:
        for chunk in chunks:
            f.write(chunk)
    return Path(w.path)


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x40
    return bytes(out)


# step -> (tensor status, a word of the message); the run "lying" has valid TFRecord
# CRCs everywhere, only the convfilters record inside is wrong.
LYING = {
    3: (422, "payload has 864 bytes but header [3, 3, 4, 60] float32 needs 8640"),
    4: (422, "bad dtype 'complex64'"),
    5: (422, "header is not JSON"),
    6: (422, "is not a convfilters record"),
    7: (200, None),  # stats blob broken: the tensor is fine, stats report the step
    8: (422, "payload has 864 bytes but header [3, 3, 4, 5] float32 needs 720"),
    9: (422, "payload checksum mismatch"),
    10: (413, "over the limit"),
    11: (422, "header is not JSON"),  # NaN inside the header
    12: (422, "header is not JSON"),  # nested 100000 deep
    13: (422, "bad shape"),
    14: (422, "bad stats names"),
    17: (422, "payload checksum mismatch"),  # format 1: the checksums in the header
    18: (422, "checks blob has 5 bytes"),
    19: (200, None),  # stats checksum wrong: the tensor is fine, stats report the step
}
STATS_ERRORS = {4: "bad dtype", 5: "not JSON", 6: "not a convfilters record", 7: "does not fit"}
STATS_ERRORS |= {11: "not JSON", 12: "not JSON", 13: "bad shape", 14: "bad stats names"}
STATS_ERRORS |= {18: "checks blob has 5 bytes", 19: "stats checksum mismatch"}
RUNS = {"good", "truncated", "bad_data_crc", "bad_length_crc", "lying", "odd_events"}
RUNS |= {"bad_metadata"}


def build_logdir(logdir: Path) -> Path:
    write_run(logdir, "good", range(5))
    third = framed(good_record(3), 3)
    write_run(logdir, "truncated", range(3), third[: len(third) // 2])
    # TFRecord data CRC wrong (a payload byte flipped on disk), then good steps
    write_run(
        logdir,
        "bad_data_crc",
        range(3),
        flip(third, len(third) // 2),
        *map(lambda s: framed(good_record(s), s), (4, 5)),
    )
    write_run(logdir, "bad_length_crc", range(3), flip(third, 9), framed(good_record(4), 4))
    good_header = good_record(0).header
    write_run(
        logdir,
        "lying",
        range(3),
        framed(lying(3, shape=[3, 3, 4, 60]), 3),
        framed(lying(4, dtype="complex64"), 4),
        framed_raw(5, blobs(5, b"\xff{not json")),
        framed_raw(6, blobs(6)[:1]),
        framed(good_record(7)._replace(stats=np.zeros(5, np.float32)), 7),
        framed(lying(8, shape=[3, 3, 4, 5]), 8),
        framed(good_record(9)._replace(payload_crc=(good_record(9).payload_crc + 1) % 2**32), 9),
        framed(lying(10, shape=[2**20, 2**20, 4, 6]), 10),
        framed_raw(11, blobs(11, json.dumps({**good_header, "x": math.nan}).encode())),
        framed_raw(12, blobs(12, b"[" * 100_000 + b"]" * 100_000)),
        framed(lying(13, shape="3x3"), 13),
        framed(lying(14, stats=5), 14),
        framed(good_record(15), 15),
        framed_raw(16, format1(16)),
        framed_raw(17, format1(17, payload_crc32c=(good_record(17).payload_crc + 1) % 2**32)),
        framed_raw(18, blobs(18)[:3] + [b"\0" * 5]),
        framed(good_record(19)._replace(stats_crc=(good_record(19).stats_crc + 1) % 2**32), 19),
    )
    write_run(
        logdir,
        "odd_events",
        (),
        framed(good_record(0), -5, wall_time=math.inf),
        framed(good_record(1), 1, wall_time=math.nan),
    )
    write_run(
        logdir,
        "bad_metadata",
        range(2),
        framed_raw(0, blobs(0), tag="nan", content=b'{"version":1,"kind":"kernel","x":NaN}'),
        framed_raw(0, blobs(0), tag="deep", content=b"[" * 100_000),
        framed_raw(0, blobs(0), tag="future", content=b'{"version":99,"kind":"kernel"}'),
        framed_raw(0, blobs(0), tag="garbage", content=b"\x00\xff"),
    )
    return logdir


@pytest.fixture(scope="module")
def broken_logdir(tmp_path_factory) -> Path:
    return build_logdir(tmp_path_factory.mktemp("broken") / "logs")


def _no_traceback(status: int, body: bytes, headers) -> None:
    assert status != 500, body
    assert b"Traceback" not in body and b'File "' not in body
    if status != 200:
        assert headers["Content-Type"].startswith("application/json")
        assert json.loads(body)["error"]


def check_server(get, loader: str) -> None:
    """Every expectation on `broken_logdir`; `get(query) -> (status, body, headers)`.

    `loader` is what serves: "index" (the plugin's own index, under either of
    TensorBoard's loaders), or the data provider of the "python" or "rust" loader.
    """

    def fetch(query):
        status, body, headers = get(query)
        _no_traceback(status, body, headers)
        return status, body, headers

    def steps(run):
        status, body, _ = fetch(f"steps?run={run}&tag=k")
        assert status == 200
        return [s["step"] for s in json.loads(body)]

    def tensor(run, step, extra=""):
        return fetch(f"tensor?run={run}&tag=k&step={step}{extra}")

    def assert_exact(run, step):
        status, body, headers = tensor(run, step)
        assert status == 200, body
        assert load_npy(body).tobytes() == kernel(step).tobytes()
        assert headers["X-Convfilters-Step"] == str(step)
        assert int(headers["Content-Length"]) == len(body)
        assert headers["Content-Type"] == "application/octet-stream"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Cache-Control"] == "no-cache, must-revalidate"

    status, body, _ = fetch("tags")
    tags = json.loads(body)
    assert status == 200
    assert set(tags) == RUNS - ({"odd_events"} if loader == "rust" else set())
    assert set(tags["bad_metadata"]) == {"k"}  # the hostile series are skipped, not a 500

    assert steps("good") == [0, 1, 2, 3, 4]
    for step in range(5):
        assert_exact("good", step)
    for run in ("truncated", "bad_data_crc", "bad_length_crc"):
        for step in range(3):
            assert_exact(run, step)  # everything before the damage is served
    assert steps("truncated") == [0, 1, 2]
    assert steps("bad_length_crc") == [0, 1, 2]  # the length cannot be trusted: stop there
    assert tensor("bad_length_crc", 3)[0] == 404
    if loader in ("rust", "index"):
        # The index and the Rust data server keep records whose TFRecord data CRC is wrong;
        # the payload checksum catches the flipped byte, and later steps are served.
        assert steps("bad_data_crc") == [0, 1, 2, 3, 4, 5]
        status, body, _ = tensor("bad_data_crc", 3)
        assert status == 422 and "payload checksum mismatch" in json.loads(body)["error"]
        assert_exact("bad_data_crc", 4)
        assert_exact("bad_data_crc", 5)
    else:  # TensorFlow's record reader stops at the bad record (and retries it later)
        assert steps("bad_data_crc") == [0, 1, 2]
        assert tensor("bad_data_crc", 3)[0] == 404

    assert steps("lying") == list(range(20))
    for step in (0, 1, 2, 15, 16):
        assert_exact("lying", step)
    for step, (want, needle) in LYING.items():
        status, body, _ = tensor("lying", step)
        assert status == want, (step, body)
        if needle:
            error = json.loads(body)["error"]
            assert needle in error and f"step {step}" in error, (step, error)
    assert tensor("lying", 7)[0] == 200
    for extra in ("&max_filters=1", "&max_filters=1&max_channels=1"):
        assert tensor("lying", 10, extra)[0] == 413  # still far too big: refused before reading
        assert tensor("lying", 3, extra)[0] == 422
        status, body, _ = tensor("lying", 9, extra)  # a view checks the stored payload too
        assert status == 422 and "payload checksum mismatch" in json.loads(body)["error"]
    status, body, _ = fetch("stats?run=lying&tag=k")
    assert status == 200
    by_step = {s["step"]: s for s in json.loads(body)["steps"]}
    assert sorted(by_step) == list(range(20))
    for step, entry in by_step.items():
        if step in STATS_ERRORS:
            assert STATS_ERRORS[step] in entry["error"] and "values" not in entry, entry
        else:
            assert len(entry["values"]) == 6, entry

    if loader == "rust":  # it drops events whose wall time is not finite
        status, body, _ = fetch("steps?run=odd_events&tag=k")
        assert status == 404 and "run 'odd_events' not found" in json.loads(body)["error"]
        return
    status, body, _ = fetch("steps?run=odd_events&tag=k")
    assert status == 200
    assert json.loads(body) == [{"step": -5, "wall_time": None}, {"step": 1, "wall_time": None}]
    status, body, _ = fetch("tensor?run=odd_events&tag=k")
    assert status == 200 and load_npy(body).tobytes() == kernel(1).tobytes()
    status, body, _ = fetch("stats?run=odd_events&tag=k")
    assert status == 200 and [s["wall_time"] for s in json.loads(body)["steps"]] == [None, None]


@pytest.mark.parametrize("source", ["index", "provider"])
def test_plugin_isolates_broken_records(broken_logdir, source):
    client = plugin_client(broken_logdir, source=source)

    def get(query):
        r = client.get(PREFIX + query)
        return r.status_code, r.data, r.headers

    check_server(get, loader="index" if source == "index" else "python")


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_real_tensorboard_isolates_broken_records_and_keeps_reloading(
    broken_logdir, tmp_path, load_fast
):
    logdir = shutil.copytree(broken_logdir, tmp_path / "logs")
    with tensorboard(logdir, load_fast=load_fast) as base:

        def get(query):
            return http_get(base + PREFIX + query)

        # Either loader: the plugin serves from its index.
        wait_for(lambda: len(json.loads(get("tags")[1])) == len(RUNS), timeout=60, what="runs")
        check_server(get, "index")
        # "truncated" was a file still being written: the rest of step 3 arrives, then
        # step 4; TensorBoard is still up, still reloading, and loses nothing.
        third = framed(good_record(3), 3)
        with open(next((logdir / "truncated").glob("events.out.tfevents.*")), "ab") as f:
            f.write(third[len(third) // 2 :] + framed(good_record(4), 4))
        wait_for(
            lambda: json.loads(get("steps?run=truncated&tag=k")[1])[-1]["step"] == 4,
            timeout=60,
            what="the completed steps 3 and 4",
        )
        steps = [s["step"] for s in json.loads(get("steps?run=truncated&tag=k")[1])]
        assert steps == list(range(5))
        for step in range(5):
            status, body, _ = get(f"tensor?run=truncated&tag=k&step={step}")
            assert status == 200 and load_npy(body).tobytes() == kernel(step).tobytes()
        assert http_get(base + "/data/plugins_listing")[0] == 200


# ---- a file still being written ----


def _client_over(multiplexer, logdir):
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    context = base_plugin.TBContext(logdir=str(logdir), data_provider=provider)
    return Client(application.TensorBoardWSGI([plugin.ConvFiltersPlugin(context)]))


def _steps_of(body: bytes) -> list[int]:
    return [s["step"] for s in json.loads(body)]


def test_half_written_record_is_picked_up_when_complete(tmp_path):
    """A training process is mid-way through writing step 2: steps 0 and 1 are served,
    step 2 appears, exact, once its bytes are all there; nothing is lost."""
    logdir = tmp_path / "logs"
    path = write_run(logdir, "live", range(2))
    record = framed(good_record(2), 2)
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={metadata.PLUGIN_NAME: 0}
    )
    multiplexer.AddRunsFromDirectory(str(logdir))
    client = _client_over(multiplexer, logdir)
    multiplexer.Reload()
    with open(path, "ab") as f:  # the record arrives in pieces, reloading in between
        written = 0
        for cut in (5, 11, 30, len(record) // 2, len(record) - 1, len(record)):
            f.write(record[written:cut])
            f.flush()
            written = cut
            multiplexer.Reload()
            steps = _steps_of(client.get(PREFIX + "steps?run=live&tag=k").data)
            assert steps == ([0, 1, 2] if cut == len(record) else [0, 1]), cut
        f.write(framed(good_record(3), 3))
    multiplexer.Reload()
    assert _steps_of(client.get(PREFIX + "steps?run=live&tag=k").data) == [0, 1, 2, 3]
    for step in range(4):
        r = client.get(PREFIX + f"tensor?run=live&tag=k&step={step}")
        assert load_npy(r.data).tobytes() == kernel(step).tobytes()


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_real_tensorboard_survives_a_record_that_is_not_an_event(tmp_path, load_fast):
    """A record with valid CRCs that is not an Event proto (no writer makes one).

    Both loaders stop reading that file there; the steps before it are served without
    500s. The Rust data server goes on loading other files; TensorBoard's Python loader
    raises in its reload thread, which then stops reloading altogether (a TensorBoard
    limitation, noted in the README), so live updates are checked with Rust only.
    """
    logdir = tmp_path / "logs"
    garbage = events.frame_event(b"\xff\xff\xff not an event", memoryview(b""), b"")
    write_run(logdir, "garbage", range(3), b"".join(garbage), framed(good_record(3), 3))
    with tensorboard(logdir, load_fast=load_fast) as base:

        def get(query):
            status, body, headers = http_get(base + PREFIX + query)
            _no_traceback(status, body, headers)
            return status, body

        wait_for(lambda: get("steps?run=garbage&tag=k")[0] == 200, timeout=60, what="run")
        time.sleep(2.5)
        assert _steps_of(get("steps?run=garbage&tag=k")[1]) == [0, 1, 2]
        for step in range(3):
            status, body = get(f"tensor?run=garbage&tag=k&step={step}")
            assert status == 200 and load_npy(body).tobytes() == kernel(step).tobytes()
        assert get("tensor?run=garbage&tag=k&step=3")[0] == 404
        assert get("stats?run=garbage&tag=k")[0] == 200
        assert http_get(base + "/data/plugins_listing")[0] == 200
        if load_fast == "true":
            write_run(logdir, "later", range(2))
            wait_for(lambda: get("steps?run=later&tag=k")[0] == 200, timeout=60, what="a new run")


def test_a_writer_never_truncates_an_event_file_named_like_its_own(tmp_path, monkeypatch):
    """A SummaryWriter of this process names its file as ours are named (second, host,
    pid, a counter of its own): in the same second the second file must not replace the
    first (seen: torch's SummaryWriter file emptied by ours, both counters at 0)."""
    import itertools

    from tb_convfilters._writing import event_file

    monkeypatch.setattr(event_file.time, "time", lambda: 1_700_000_000.0)
    paths = []
    for value in (1.0, 2.0):
        monkeypatch.setattr(event_file, "_file_counter", itertools.count())  # the same name
        with tb_convfilters.Writer(tmp_path / "run") as w:
            w.kernel("k", np.full((1, 1, 1, 1), value, np.float32), int(value), layout="HWIO")
            paths.append(w._event_file.path)
    assert paths[0] != paths[1]
    for step in (1, 2):  # each file still holds its record
        assert tb_convfilters.reader.read(tmp_path, "run", "k", step).item() == step
