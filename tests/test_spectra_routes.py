"""The ``spectra`` and ``spectra_steps`` routes, from the plugin's index and from
TensorBoard's data provider: the values are ``tb_convfilters.spectra``'s."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support import get, plugin_client, route_fixtures

from tb_convfilters import Writer, spectra

PREFIX = "/data/plugin/convfilters/"
N = 7
STEPS = (0, 4, 8, 12)


def grating(ky, kx, n=N):
    y, x = np.mgrid[0:n, 0:n]
    return np.cos(2 * np.pi * (ky * y + kx * x) / n + 0.2)


def kernel_at(i):
    """HWIO 7x7, 2 input channels, 6 filters: gratings turning with the step, one blob, one zero."""
    waves = [(0, 1 + i % 3), (1, 0), (1, 1), (2, -1 - i % 2)]
    filters = [grating(*w) for w in waves] + [np.ones((N, N)), np.zeros((N, N))]
    k = np.stack(filters, -1)[:, :, None, :] * np.array([1.0, -0.5])[None, None, :, None]
    return k.astype(np.float32)


KERNELS = {s: kernel_at(i) for i, s in enumerate(STEPS)}


def write(logdir):
    with Writer(logdir / "a") as w:
        for step, k in KERNELS.items():
            w.kernel("c1/kernel", k, step)
            w.kernel("c1/capped", k, step, max_filters=[1, 3, 5])
            w.kernel("dw/kernel", k[:, :, :, :2], step, layout="HWIM")
        w.activation("c1/act", np.ones((1, 4, 4, 2), np.float32), 0)
        w.kernel("c3/kernel", np.ones((3, 3, 3, 2, 2), np.float32), 0, layout="DHWIO")


logdir, client = route_fixtures(write)


def nan(values):
    return np.array([np.nan if v is None else v for v in values])


@pytest.mark.parametrize("step", [None, 0, 8])
def test_values_equal_the_python_api(client, step):
    query = {"run": "a", "tag": "c1/kernel"} | ({} if step is None else {"step": str(step)})
    status, body = get(client, "spectra", **query)
    assert status == 200, body
    want_step = 12 if step is None else step
    k = KERNELS[want_step]
    o, f = spectra.dominant(k, "HWIO")
    cov = spectra.coverage(k, "HWIO")
    assert body["step"] == want_step and body["layout"] == "HWIO"
    assert body["filters"] == list(range(6))
    np.testing.assert_array_equal(nan(body["orientation"]), o)
    np.testing.assert_array_equal(nan(body["frequency"]), f)
    assert body["counts"] == cov.counts.tolist()
    assert (body["flat"], body["undefined"]) == (1, 1)
    assert body["orientation_edges"] == cov.orientation_edges.tolist()
    assert body["frequency_edges"] == list(spectra.FREQUENCY_EDGES)
    # and the planted truth: filter 2 is (1, 1) -> 45 degrees, sqrt(2)/7
    assert body["orientation"][2] == 45.0 and body["frequency"][2] == pytest.approx(
        math.sqrt(2) / N
    )


def test_kept_filters_and_depthwise_labels(client):
    status, body = get(client, "spectra", run="a", tag="c1/capped", step="0")
    assert status == 200, body
    assert body["filters"] == [1, 3, 5]
    o, f = spectra.dominant(KERNELS[0][..., [1, 3, 5]], "HWIO")
    np.testing.assert_array_equal(nan(body["frequency"]), f)
    status, body = get(client, "spectra", run="a", tag="dw/kernel", step="4")
    assert status == 200, body
    assert body["filters"] == [0, 1, 2, 3]  # input channel i, multiplier m: i*2 + m
    o, f = spectra.dominant(KERNELS[4][:, :, :, :2], "HWIM")
    np.testing.assert_array_equal(nan(body["orientation"]), o)


def test_over_steps_equals_over_steps_of_the_python_api(client, logdir):
    status, body = get(client, "spectra_steps", run="a", tag="c1/kernel")
    assert status == 200, body
    series = spectra.over_steps(logdir, "a", "c1/kernel")
    assert [s["step"] for s in body["steps"]] == series.steps == list(STEPS)
    assert [s["counts"] for s in body["steps"]] == series.counts.tolist()
    assert [s["flat"] for s in body["steps"]] == series.flat.tolist()
    assert [s["filters"] for s in body["steps"]] == [6] * 4
    assert body["total_steps"] == 4 and body["capped"] is False
    # the coverage does change over steps (the gratings turn)
    assert len({str(s["counts"]) for s in body["steps"]}) > 1
    status, body = get(client, "spectra_steps", run="a", tag="c1/kernel", max_steps="2")
    assert [s["step"] for s in body["steps"]] == [0, 12] and body["capped"] is True


@pytest.mark.parametrize(
    ("route", "query", "status", "words"),
    [
        ("spectra", {"run": "zz", "tag": "c1/kernel"}, 404, "run 'zz'"),
        ("spectra", {"run": "a", "tag": "zz"}, 404, "'zz'"),
        ("spectra", {"run": "a", "tag": "c1/kernel", "step": "3"}, 404, "step 3 not found"),
        ("spectra", {"run": "a", "tag": "c1/kernel", "step": "x"}, 400, "not a step"),
        ("spectra", {"tag": "c1/kernel"}, 400, "missing parameter 'run'"),
        ("spectra", {"run": "a", "tag": "c1/act"}, 400, "spectra are of kernels"),
        ("spectra", {"run": "a", "tag": "c3/kernel"}, 400, "need 2-D (H, W) kernels"),
        ("spectra_steps", {"run": "zz", "tag": "c1/kernel"}, 404, "run 'zz'"),
        ("spectra_steps", {"run": "a", "tag": "c3/kernel"}, 400, "need 2-D (H, W) kernels"),
        ("spectra_steps", {"run": "a", "tag": "c1/kernel", "max_steps": "0"}, 400, "1..200"),
        ("spectra_steps", {"run": "a", "tag": "c1/kernel", "max_steps": "201"}, 400, "1..200"),
    ],
)
def test_errors(client, route, query, status, words):
    got, body = get(client, route, **query)
    assert got == status, body
    assert words in body["error"]


@pytest.mark.parametrize("source", ["index", "provider"])
def test_over_the_tensor_limit_is_413_naming_the_flag(logdir, source):
    small = plugin_client(logdir, source=source, max_tensor_mb=100 / (1 << 20))
    status, body = get(small, "spectra", run="a", tag="c1/kernel")
    assert status == 413 and "--convfilters_max_tensor_mb" in body["error"], body
    status, body = get(small, "spectra_steps", run="a", tag="c1/kernel")
    assert status == 200  # each step says why it is missing
    assert all("--convfilters_max_tensor_mb" in s["error"] for s in body["steps"])


def _corrupt(tmp_path):
    write(tmp_path)
    (path,) = (tmp_path / "a").glob("*tfevents*")
    data = path.read_bytes()
    at = data.find(KERNELS[8].tobytes())
    assert at > 0
    return path, data, at


def test_a_corrupt_payload_is_422_and_the_other_steps_still_come(tmp_path):
    path, data, at = _corrupt(tmp_path)
    client = plugin_client(tmp_path)  # indexed before the byte flips: the payload CRC finds it
    assert get(client, "steps", run="a", tag="c1/kernel")[0] == 200  # waits for the run
    path.write_bytes(data[: at + 5] + bytes([data[at + 5] ^ 0xFF]) + data[at + 6 :])
    status, body = get(client, "spectra", run="a", tag="c1/kernel", step="8")
    assert status == 422 and "unreadable" in body["error"], body
    status, body = get(client, "spectra_steps", run="a", tag="c1/kernel")
    assert status == 200
    errors = {s["step"]: s.get("error") for s in body["steps"]}
    assert errors[8] and "unreadable" in errors[8] and errors[0] is None and errors[12] is None


def test_a_removed_event_file_is_a_clean_error(tmp_path):
    path, _, _ = _corrupt(tmp_path)
    client = plugin_client(tmp_path)
    assert get(client, "tags")[0] == 200
    path.unlink()
    status, body = get(client, "spectra", run="a", tag="c1/kernel", step="4")
    assert status in (404, 409, 422), body
    assert body["error"]


def test_fuzzed_queries_are_never_a_500(logdir):
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    client = plugin_client(logdir)
    values = st.one_of(
        st.sampled_from(["a", "c1/kernel", "c1/act", "c3/kernel", "dw/kernel", "0", "8", "-1"]),
        st.text(st.characters(exclude_categories=("Cs",)), max_size=20),
        st.integers(-(2**70), 2**70).map(str),
    )
    keys = st.sampled_from(["run", "tag", "step", "max_steps"])

    @hypothesis.settings(max_examples=150, deadline=None)
    @hypothesis.given(
        name=st.sampled_from(["spectra", "spectra_steps"]),
        query=st.dictionaries(keys, values, max_size=4),
    )
    def check(name, query):
        status, body = get(client, name, **query)
        assert status in (200, 400, 404, 413, 422), (status, body)
        assert status == 200 or isinstance(body["error"], str)

    check()
