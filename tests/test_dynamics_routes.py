"""The ``dynamics`` and ``rotation`` routes, and ``stalled`` in ``findings``, from the
plugin's index and from TensorBoard's data provider."""

from __future__ import annotations

import numpy as np
import pytest
from support import array, get, plugin_client, route_fixtures

from tb_convfilters import Writer, doctor, dynamics
from tb_convfilters._record.record import make_record

PREFIX = "/data/plugin/convfilters/"
rng = np.random.default_rng(29)
STEPS = [0, 5, 10, 15, 20, 25]
STALLED = 2  # k1 filter held fixed from step 10 on


def kernels():
    k1 = [rng.normal(size=(3, 3, 4, 6)).astype("f4")]
    for _ in STEPS[1:]:
        k1.append(k1[-1] + rng.normal(0, 0.1, k1[-1].shape).astype("f4"))
    for k in k1[3:]:
        k[..., STALLED] = k1[2][..., STALLED]
    k2 = [rng.normal(size=(5, 2, 3)).astype("f4") for _ in STEPS]  # OIW
    for k in k2:
        k[1] = 0  # a zero filter: nan ratios and rotations
    return k1, k2


K1, K2 = kernels()
GRADS = {s: rng.normal(size=(3, 3, 4, 6)).astype("f4") for s in STEPS[2:]}


def write(logdir):
    with Writer(logdir / "a") as w:
        for i, step in enumerate(STEPS):
            grad = GRADS.get(step)
            rec = make_record(
                K1[i], kind="kernel", layout="HWIO", grad=grad, extra={"updates": 100 * i}
            )
            w.write_record("k1", rec, step)
            if step != 15:  # k2 skips a step: rotation's columns are the union
                w.kernel("k2", K2[i], step, layout="OIW", max_filters=[0, 1, 4])
        w.activation("act", rng.random((2, 4, 4, 3)).astype("f4"), 0)


logdir, client = route_fixtures(write)


def rows(k, axis):
    return np.moveaxis(k, axis, 0).reshape(k.shape[axis], -1).astype("f8")


def test_dynamics_route_equals_numpy(client, logdir):
    status, body = get(client, "dynamics", run="a", tag="k1")
    assert status == 200, body
    assert body["steps"] == STEPS and body["filters"] == list(range(6))
    assert body["intervals"] == [100] * (len(STEPS) - 1)
    ws = [rows(k, 3) for k in K1]
    want = [
        np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)
        for a, b in zip(ws[:-1], ws[1:], strict=True)
    ]
    ratio = array(body["update_ratio"])
    assert ratio.dtype == np.float32 and ratio.shape == (len(STEPS) - 1, 6)
    np.testing.assert_allclose(ratio, want, rtol=1e-5)
    assert (ratio[2:, STALLED] == 0).all()
    cos = [np.sum(w * ws[0]) / np.linalg.norm(w) / np.linalg.norm(ws[0]) for w in ws]
    np.testing.assert_allclose(array(body["rotation"]), 1 - np.array(cos), rtol=1e-5, atol=1e-7)
    per = [
        np.sum(w * ws[0], 1) / np.linalg.norm(w, axis=1) / np.linalg.norm(ws[0], axis=1) for w in ws
    ]
    np.testing.assert_allclose(
        array(body["rotation_filters"]), 1 - np.array(per), rtol=1e-5, atol=1e-7
    )
    grad = array(body["grad_norm"])
    assert np.isnan(grad[:2]).all()  # steps 0 and 5 were logged without gradients
    want = [np.linalg.norm(rows(GRADS[s], 3), axis=1) for s in STEPS[2:]]
    np.testing.assert_allclose(grad[2:], want, rtol=1e-5)
    # the public API gives the same numbers
    d = dynamics.read(logdir, "a", "k1")
    np.testing.assert_allclose(ratio, d.ratios, rtol=1e-6)


def test_kept_filters_zero_filter_and_unknown_intervals(client):
    status, body = get(client, "dynamics", run="a", tag="k2")
    assert status == 200, body
    assert body["filters"] == [0, 1, 4] and body["grad_norm"] is None
    assert body["intervals"] == [None] * (len(STEPS) - 2)
    ratio = array(body["update_ratio"])
    assert np.isnan(ratio[:, 1]).all() and np.isfinite(ratio[:, [0, 2]]).all()
    assert np.isnan(array(body["rotation_filters"])[:, 1]).all()


def test_rotation_route_is_layers_by_steps(client):
    status, body = get(client, "rotation", run="a")
    assert status == 200, body
    assert body["tags"] == ["k1", "k2"] and body["steps"] == STEPS
    assert body["filters"] == [6, 3]
    matrix = array(body["rotation"])
    assert matrix.shape == (2, len(STEPS))
    k1 = get(client, "dynamics", run="a", tag="k1")[1]
    np.testing.assert_array_equal(matrix[0], array(k1["rotation"]))
    assert np.isnan(matrix[1, STEPS.index(15)]) and matrix[1, 0] == 0


@pytest.mark.parametrize(
    "route,query,status,words",
    [
        ("dynamics", {"run": "nope", "tag": "k1"}, 404, ["'nope'"]),
        ("dynamics", {"run": "a", "tag": "nope"}, 404, ["'nope'", "'a'"]),
        ("dynamics", {"run": "a", "tag": "act"}, 400, ["activations", "kernels"]),
        ("dynamics", {"run": "a"}, 400, ["'tag'"]),
        ("dynamics", {"run": ["a", "a"], "tag": "k1"}, 400, ["'run'"]),
        ("rotation", {"run": "nope"}, 404, ["'nope'"]),
        ("rotation", {}, 400, ["'run'"]),
    ],
)
def test_errors(client, route, query, status, words):
    got, body = get(client, route, **query)
    assert got == status, body
    assert all(w in body["error"] for w in words), body


@pytest.mark.parametrize("source", ["index", "provider"])
def test_read_budget_is_413_naming_the_flag(logdir, source):
    client = plugin_client(logdir, source=source, max_dynamics_mb=1e-3)  # ~1 KiB
    status, body = get(client, "dynamics", run="a", tag="k1")
    assert status == 413, body
    assert "--convfilters_max_dynamics_mb" in body["error"] and body["limit_bytes"] == 1048
    assert get(client, "rotation", run="a")[0] == 413


def test_repeated_requests_read_nothing_and_new_steps_only_theirs(tmp_path, monkeypatch):
    write(tmp_path)
    client = plugin_client(tmp_path)
    from tb_convfilters._serving import data_sources

    reads = []
    original = data_sources.IndexSource.payload

    def counting(self, ctx, step, *args, **kwargs):
        reads.append(step.step)
        return original(self, ctx, step, *args, **kwargs)

    monkeypatch.setattr(data_sources.IndexSource, "payload", counting)
    first = get(client, "dynamics", run="a", tag="k1")[1]
    assert sorted(reads) == STEPS
    assert get(client, "dynamics", run="a", tag="k2")[0] == 200
    reads.clear()
    assert get(client, "dynamics", run="a", tag="k1")[1] == first
    assert get(client, "findings", run="a")[0] == 200  # the doctor reuses the cache
    assert reads == []
    more = K1[-1] + rng.normal(0, 0.1, K1[-1].shape).astype("f4")
    with Writer(tmp_path / "a") as w:
        w.kernel("k1", more, 30)
    body = get(client, "dynamics", run="a", tag="k1")[1]
    assert reads == [30] and body["steps"] == [*STEPS, 30]
    assert array(body["update_ratio"]).shape == (len(STEPS), 6)


@pytest.mark.parametrize("source", ["index", "provider"])
def test_findings_route_reports_the_stalled_filter(logdir, source):
    status, body = get(plugin_client(logdir, source=source), "findings", run="a")
    assert status == 200, body
    stalled = [f for f in body["findings"] if f["problem"] == "stalled"]
    assert [(f["tag"], f["filter"], f["first_step"]) for f in stalled] == [("k1", STALLED, 10)]
    assert stalled[0]["detail"]["stalled_intervals"] == 3
    assert body["findings"] == [f.to_json() for f in doctor.diagnose(logdir, run="a")]


def test_corrupt_payload_is_a_clean_error(tmp_path):
    write(tmp_path)
    (path,) = (tmp_path / "a").iterdir()
    data = bytearray(path.read_bytes())
    at = data.index(K1[3].tobytes()[:64])  # a byte inside step 15's k1 payload
    data[at + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    status, body = get(plugin_client(tmp_path), "dynamics", run="a", tag="k1")
    assert status == 422, body
    assert "step 15" in body["error"] and "unreadable" in body["error"]


def test_removed_event_file_is_a_clean_error(tmp_path):
    write(tmp_path)
    client = plugin_client(tmp_path)
    assert get(client, "tags")[0] == 200
    for path in (tmp_path / "a").iterdir():
        path.unlink()
    status, body = get(client, "dynamics", run="a", tag="k1")
    assert status in (404, 409, 422), body
    assert body["error"]


def test_cli_prints_stalled_and_fails(logdir, capsys):
    from tb_convfilters import cli

    assert cli.main(["doctor", str(logdir), "--run", "a", "--problems", "stalled"]) == 1
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if "stalled" in line and "k1" in line]
    assert row.split()[:5] == ["a", "k1", str(STALLED), "stalled", "10"]
    assert "stalled_intervals=3" in row and "until_step=25" in row
    argv = ["doctor", str(logdir), "--run", "a", "--problems", "stalled", "--stall-steps", "4"]
    assert cli.main(argv) == 0
    assert "0 finding(s)" in capsys.readouterr().out
