"""Issue 17: the ``align`` and ``similarity`` routes, from the index and from the data provider."""

from __future__ import annotations

import json
import os
import time
import urllib.parse

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import get, http_get, plugin_client, route_fixtures, tensorboard, tensorboard_process

from tb_convfilters import Writer, compare
from tb_convfilters._record.record import make_record

PREFIX = "/data/plugin/convfilters/"
rng = np.random.default_rng(7)
K1 = rng.standard_normal((3, 3, 2, 6)).astype("f4")
K2 = rng.standard_normal((3, 3, 6, 5)).astype("f4")
P1, P2 = rng.permutation(6), rng.permutation(5)
MAPS = rng.standard_normal((4, 5, 5, 6)).astype("f4")


def permuted():
    b1 = np.empty_like(K1)
    b1[..., P1] = K1
    b2 = np.empty_like(K2)
    b2[..., P2] = K2
    b2c = np.empty_like(b2)
    b2c[:, :, P1] = b2
    return b1, b2c


def write(logdir, run, k1, k2, maps, digest, steps=(1, 2)):
    with Writer(logdir / run) as w:
        for step in steps:
            w.kernel("c1/kernel", k1, step)
            w.kernel("c2/kernel", k2, step)
            rec = make_record(maps, kind="activation", layout="NHWC",
                              extra={"samples_digest": digest})
            w.write_record("c1/activation", rec, step)


def write_runs(root):
    b1, b2 = permuted()
    write(root, "a", K1, K2, MAPS, "x")
    write(root, "b", b1, b2, MAPS[..., P1] * 3, "x")
    write(root, "other", K1, K2, MAPS, "y", steps=(1,))


logdir, client = route_fixtures(write_runs)


def test_align_carries_the_permutation_into_the_next_layer(client):
    status, body = get(client, "align", run="b", base="a", tag="c1/kernel")
    assert status == 200, body
    assert body["permutation"] == P1.tolist() and body["channel_permutation"] is None
    assert min(body["cosine"]) > 0.999 and not body["chained"]
    status, body = get(client, "align", run="b", base="a", tag="c2/kernel", step="1")
    assert status == 200, body
    assert body["permutation"] == P2.tolist() and body["channel_permutation"] == P1.tolist()
    assert body["chained"] and body["step"] == 1 and body["mean_cosine"] > 0.999


@pytest.mark.parametrize(
    "query, status, words",
    [
        ({"run": "zz", "base": "a", "tag": "c1/kernel"}, 404, "run 'zz' not found"),
        ({"run": "b", "base": "a", "tag": "nope"}, 404, "tag 'nope' not found"),
        ({"run": "b", "base": "a", "tag": "c1/kernel", "step": "9"}, 404, "step 9 not found"),
        ({"run": "b", "base": "a", "tag": "c1/kernel", "step": "x"}, 400, "is not a step"),
        ({"run": "b", "tag": "c1/kernel"}, 400, "missing parameter 'base'"),
        ({"run": "b", "base": "a", "tag": "c1/activation"}, 400, "is not a kernel"),
    ],
)
def test_align_errors(client, query, status, words):
    got, body = get(client, "align", **query)
    assert got == status and words in body["error"]


def test_similarity_over_runs_and_steps(client):
    status, body = get(client, "similarity", tag="c1/activation", runs="a,b")
    assert status == 200, body
    assert body["labels"] == [{"run": r, "step": s} for r in "ab" for s in (1, 2)]
    assert np.allclose(body["matrix"], 1.0) and body["note"] is None
    status, body = get(client, "similarity", tag="c1/activation", runs="a,b", steps="2")
    assert status == 200 and len(body["labels"]) == 2


@pytest.mark.parametrize(
    "query, status, words",
    [
        ({"tag": "c1/activation", "runs": "a,other"}, 422, "different inputs"),
        ({"tag": "c1/activation", "runs": "a,zz"}, 404, "run 'zz' not found"),
        ({"tag": "c1/activation", "runs": "a", "steps": "7"}, 404, "none of steps [7]"),
        ({"tag": "c1/activation", "runs": "a", "steps": "1,x"}, 400, "not a list of steps"),
        ({"tag": "c1/activation", "runs": ","}, 400, "runs= is empty"),
        ({"tag": "c1/kernel", "runs": "a"}, 400, "CKA needs activations"),
        ({"tag": "c1/activation"}, 400, "missing parameter 'runs'"),
    ],
)
def test_similarity_errors(client, query, status, words):
    got, body = get(client, "similarity", **query)
    assert got == status and words in body["error"], body


VALUES = st.one_of(
    st.sampled_from(["a", "b", "other", "c1/kernel", "c2/kernel", "c1/activation", "1", "2",
                     "a,b", "1,2", ",", "", "-1", "9" * 30, "\x00", "ü"]),
    st.text(max_size=20),
)
QUERY = st.lists(
    st.tuples(st.sampled_from(["run", "base", "tag", "step", "runs", "steps", "x"]), VALUES),
    max_size=6,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(["align", "similarity"]), query=QUERY)
def test_fuzzed_queries_never_500(logdir, route, query):
    r = fuzz_client(logdir).get(PREFIX + route + "?" + urllib.parse.urlencode(query))
    assert r.status_code in {200, 400, 404, 413, 422}, (r.status_code, r.data[:300])
    assert r.mimetype == "application/json" and b"Traceback" not in r.data
    body = r.json
    assert ("error" in body) == (r.status_code != 200)


_clients: dict = {}


def fuzz_client(logdir):
    if logdir not in _clients:
        _clients[logdir] = plugin_client(logdir)
    return _clients[logdir]


@pytest.mark.parametrize("load_fast", ["true", "false"])
def test_real_tensorboard_serves_align_and_similarity(logdir, load_fast):
    with tensorboard(logdir, load_fast=load_fast) as base:
        url = f"{base}{PREFIX}align?" + urllib.parse.urlencode(
            {"run": "b", "base": "a", "tag": "c2/kernel"}
        )
        status, body, _ = http_get(url)
        assert status == 200, body[:300]
        match = json.loads(body)
        assert match["permutation"] == P2.tolist() and match["channel_permutation"] == P1.tolist()
        url = f"{base}{PREFIX}similarity?" + urllib.parse.urlencode(
            {"tag": "c1/activation", "runs": "a,other"}
        )
        status, body, _ = http_get(url)
        assert status == 422 and "different inputs" in json.loads(body)["error"]


def test_similarity_over_its_memory_limit_is_413(logdir):
    """The budget is in bytes (TensorBoard flag --convfilters_max_similarity_mb)."""
    client = plugin_client(logdir, max_similarity_mb=1 / 64)  # 16 KiB
    status, body = get(client, "similarity", tag="c1/activation", runs="a,b")
    assert status == 413 and "--convfilters_max_similarity_mb" in body["error"], body
    assert "fewer steps" in body["error"] and "100 rows" in body["error"]
    assert body["nbytes"] > body["limit_bytes"] == 16 << 10
    status, body = get(client, "similarity", tag="c1/activation", runs="a", steps="1")
    assert status == 200 and body["matrix"] == [[1.0]]


def test_similarity_limit_is_a_tensorboard_flag(logdir):
    import argparse

    from support import load_provider
    from tensorboard.plugins import base_plugin

    from tb_convfilters.plugin import ConvFiltersLoader

    parser = argparse.ArgumentParser()
    ConvFiltersLoader().define_flags(parser)
    assert parser.parse_args([]).convfilters_max_similarity_mb == 256
    flags = parser.parse_args(["--convfilters_max_similarity_mb=0.5"])
    context = base_plugin.TBContext(
        logdir=str(logdir), data_provider=load_provider(logdir, 0), flags=flags
    )
    assert ConvFiltersLoader().load(context)._compare.max_similarity_bytes == 1 << 19


def _rss(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_real_tensorboard_similarity_of_a_512_channel_layer(tmp_path):
    """The dashboard's request, 2 runs x 12 steps of a 512-channel activation (8 samples
    of 14 x 14, float32): 200 with TensorBoard's peak memory growing <= 400 MB (the single
    Gram matrix of all channels took 1.2 GB) and the values of `compare.cka`."""
    gen = np.random.default_rng(3)
    base = gen.standard_normal((8, 14, 14, 512), dtype=np.float32)
    first = {}
    for run in ("a", "b"):
        with Writer(tmp_path / run) as w:
            for step in range(12):
                maps = base + 0.2 * step * gen.standard_normal(base.shape, dtype=np.float32)
                first.setdefault(run, maps)
                w.write_record(
                    "l/activation",
                    make_record(
                        maps, kind="activation", layout="NHWC", extra={"samples_digest": "x"}
                    ),
                    step,
                )
    del base, maps
    with tensorboard_process(tmp_path) as (url, proc):
        with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
            f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
        before = _rss(proc.pid, "VmRSS")
        query = urllib.parse.urlencode({"tag": "l/activation", "runs": "a,b"})
        start = time.monotonic()
        status, body, _ = http_get(f"{url}{PREFIX}similarity?{query}", timeout=120)
        seconds = time.monotonic() - start
        growth = _rss(proc.pid, "VmHWM") - before
    assert status == 200, body[:300]
    answer = json.loads(body)
    assert len(answer["labels"]) == 24
    assert answer["matrix"][0][12] == pytest.approx(compare.cka(first["a"], first["b"]), rel=1e-9)
    print(f"similarity of 24 x (8, 14, 14, 512): {seconds:.1f} s, peak RSS +{growth / 1e6:.0f} MB")
    assert growth <= 400e6, f"TensorBoard grew by {growth / 1e6:.0f} MB"
