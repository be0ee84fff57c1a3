"""Memory per request: capped tensor views, the stats route's step cap, the doctor's load bound."""

from __future__ import annotations

import logging
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
from support import PREFIX, load_npy, plugin_client

from tb_convfilters import Writer, cli, doctor, reader
from tb_convfilters._record import encoding
from tb_convfilters._serving import index

rng = np.random.default_rng(11)
MiB = 1 << 20


def peak_of(fn) -> tuple[object, int]:
    """(fn(), the peak of Python and numpy allocations while it ran, in bytes)."""
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A 36 MiB HWIO kernel, a 9 MiB OIHW one and a bfloat16 one, each at step 0."""
    logdir = tmp_path_factory.mktemp("big")
    arrays = {
        "hwio": rng.standard_normal((3, 3, 512, 2048), dtype=np.float32),
        "oihw": rng.standard_normal((1024, 256, 3, 3), dtype=np.float32),
        "bf16": rng.standard_normal((3, 3, 256, 1024)).astype(ml_dtypes.bfloat16),
    }
    layouts = {"hwio": "HWIO", "oihw": "OIHW", "bf16": "HWIO"}
    with Writer(logdir / "run") as w:
        for tag, a in arrays.items():
            w.kernel(tag, a, 0, layout=layouts[tag])
    client = plugin_client(logdir)
    assert sorted(client.get(PREFIX + "tags").json["run"]) == sorted(arrays)  # index built
    return logdir, client, arrays


@pytest.mark.parametrize(
    "tag, query, cut",
    [
        ("hwio", "max_filters=4", (slice(None), slice(None), slice(None), slice(0, 4))),
        ("hwio", "max_filters=3&max_channels=5", (slice(None),) * 2 + (slice(0, 5), slice(0, 3))),
        ("oihw", "max_filters=2", (slice(0, 2),)),
        ("oihw", "max_channels=7", (slice(None), slice(0, 7))),
        ("bf16", "max_filters=8", (slice(None), slice(None), slice(None), slice(0, 8))),
    ],
)
def test_a_capped_view_holds_the_view_and_one_window_not_the_record(big, tag, query, cut):
    _, client, arrays = big
    stored = arrays[tag]
    r, peak = peak_of(lambda: client.get(PREFIX + f"tensor?run=run&tag={tag}&step=0&{query}"))
    assert r.status_code == 200, r.data[:300]
    want = np.ascontiguousarray(stored[cut])
    if tag == "bf16":
        want = want.astype(np.float32)  # served widened, exactly
    got = load_npy(r.data)
    assert got.shape == want.shape and got.tobytes() == want.tobytes()
    # the record is 4.5-36 MiB; it was read whole, and joined again from two halves
    assert peak < 1.5 * index.VIEW_WINDOW + 3 * want.nbytes + MiB, (peak, stored.nbytes)


def test_a_capped_view_still_checks_the_whole_payload(big, tmp_path):
    logdir, _, arrays = big
    copy = tmp_path / "copy"
    (copy / "run").mkdir(parents=True)
    (path,) = (logdir / "run").iterdir()
    data = bytearray(path.read_bytes())
    last = arrays["hwio"][-1, -1, -1].tobytes()  # the payload's last elements, not in the view
    at = data.find(last)
    assert at > 0
    data[at] ^= 0xFF
    (copy / "run" / path.name).write_bytes(bytes(data))
    r = plugin_client(copy).get(PREFIX + "tensor?run=run&tag=hwio&step=0&max_filters=4")
    assert r.status_code == 422 and "checksum mismatch" in r.json["error"], r.json


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("long")
    k = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    with Writer(logdir / "run") as w:
        for step in range(30):
            w.kernel("k", k * step, step * 10)
    return plugin_client(logdir)


def test_stats_returns_at_most_max_steps(long_run, monkeypatch):
    everything = long_run.get(PREFIX + "stats?run=run&tag=k").json
    assert len(everything["steps"]) == 30 and everything["total_steps"] == 30
    assert everything["capped"] is False
    decoded = []
    real = encoding.decode_stats
    monkeypatch.setattr(encoding, "decode_stats", lambda *a: decoded.append(1) or real(*a))
    r = long_run.get(PREFIX + "stats?run=run&tag=k&max_steps=5")
    steps = [s["step"] for s in r.json["steps"]]
    assert r.status_code == 200 and len(steps) == 5 and steps[0] == 0 and steps[-1] == 290
    assert r.json["capped"] is True and r.json["total_steps"] == 30
    assert len(decoded) == 5  # only the steps returned are read
    with_step = long_run.get(PREFIX + "stats?run=run&tag=k&max_steps=5&step=70").json
    assert 70 in [s["step"] for s in with_step["steps"]] and len(with_step["steps"]) <= 5
    one = long_run.get(PREFIX + "stats?run=run&tag=k&max_steps=1&step=70").json
    assert [s["step"] for s in one["steps"]] == [70]
    assert long_run.get(PREFIX + "stats?run=run&tag=k&step=71").status_code == 404
    for bad in ("", "0", "-1", "abc", "10001", "1e3"):
        r = long_run.get(PREFIX + f"stats?run=run&tag=k&max_steps={bad}")
        assert r.status_code == 400 and "max_steps" in r.json["error"], (bad, r.json)


@pytest.fixture(scope="module")
def frozen_copies(tmp_path_factory):
    """Layer "moving" changes; layer "still" never does and its filters 0 and 1 are equal."""
    logdir = tmp_path_factory.mktemp("frozen")
    still = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    still[..., 1] = still[..., 0]
    with Writer(logdir / "run") as w:
        for step in range(3):
            w.kernel("moving", rng.standard_normal((3, 3, 2, 4)).astype(np.float32), step)
            w.kernel("still", still, step)
    return logdir


def test_doctor_reads_no_tensor_over_max_load_mb(frozen_copies, monkeypatch, caplog, capsys):
    problems = {(f.tag, f.problem) for f in doctor.diagnose(frozen_copies)}
    assert {("still", "duplicate"), ("still", "frozen")} <= problems
    loads = []
    real = reader._entry_at
    monkeypatch.setattr(reader, "_entry_at", lambda *a: loads.append(a) or real(*a))
    caplog.set_level(logging.WARNING, "tb_convfilters")
    tiny = doctor.Thresholds(max_load_mb=1e-4)  # 104 bytes; each step is 288
    problems = {(f.tag, f.problem) for f in doctor.diagnose(frozen_copies, thresholds=tiny)}
    assert not problems & {("still", "duplicate"), ("still", "frozen")}
    assert loads == []
    skipped = [m for m in caplog.messages if "max_load_mb=0.0001" in m and "--max-load-mb" in m]
    assert any("duplicate check of run/still" in m for m in skipped), caplog.messages
    assert any("frozen check of run/still" in m for m in skipped), caplog.messages
    capsys.readouterr()
    assert cli.main(["doctor", str(frozen_copies), "--max-load-mb", "0.0001"]) in (0, 1)
    assert "duplicate" not in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"max_load_mb=0 is out of range; allowed: x > 0"):
        doctor.Thresholds(max_load_mb=0)
