"""Issue 28: the ``examples`` route and the tags listing of dataset examples, from the
plugin's index and from TensorBoard's data provider."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import array, get, http_get, plugin_client, route_fixtures, tensorboard

from tb_convfilters import Writer, reader
from tb_convfilters._record.receptive_field import ReceptiveField

PREFIX = "/data/plugin/convfilters/"
rng = np.random.default_rng(28)
X = rng.random((7, 9, 9, 3)).astype("f4")
ACTS = {s: rng.random((7, 4, 4, 5)).astype("f4") for s in (0, 1)}
FIELD = ReceptiveField.identity(2).through((3, 3), (2, 2), (1, 1), (1, 1))


def write(logdir):
    with Writer(logdir / "a") as w:
        for step, act in ACTS.items():
            w.activation("c1/act", act, step, inputs=X, examples=3, receptive_field=FIELD)
            w.activation("c2/act", act * 2, step, inputs=X, examples=2, receptive_field=None)
        w.activation("plain/act", ACTS[0], 0)
        w.activation("c1/act", ACTS[0], 2)  # a step without examples


logdir, client = route_fixtures(write)


def test_tags_list_activations_with_their_examples_not_the_records(client):
    status, tags = get(client, "tags")
    assert status == 200
    assert sorted(tags["a"]) == ["c1/act", "c2/act", "plain/act"]
    assert tags["a"]["c1/act"]["examples"] == "c1/act/examples"
    assert tags["a"]["c2/act"]["examples"] == "c2/act/examples"
    assert "examples" not in tags["a"]["plain/act"]


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_tags_listing_under_both_loaders(logdir, load_fast):
    with tensorboard(logdir, load_fast=load_fast) as base:
        status, body, _ = http_get(base + PREFIX + "tags")
    tags = json.loads(body)
    assert status == 200 and sorted(tags["a"]) == ["c1/act", "c2/act", "plain/act"]
    assert tags["a"]["c1/act"]["examples"] == "c1/act/examples"


def test_known_field_crops_equal_the_reader(client, logdir):
    for step in (0, 1):
        want = reader.examples(logdir, "a", "c1/act", step)
        status, body = get(client, "examples", run="a", tag="c1/act", step=str(step))
        assert status == 200, body
        assert body["step"] == step and body["k"] == 3 and body["ranked"] == 7
        assert body["rows"] == list(range(5)) and body["channels"] == list(range(5))
        assert body["indices"] == want.indices.tolist()
        assert np.array_equal(np.asarray(body["values"], "f4"), want.values)
        assert body["positions"] == want.positions.tolist()
        assert body["field"] == {"start": [-1, -1], "jump": [2, 2], "size": [3, 3]}
        assert body["input"]["layout"] == "NHWC" and body["input"]["shape"] == [7, 9, 9, 3]
        assert body["input"]["range"] == [float(X.min()), float(X.max())]
        crops = array(body["crops"])
        assert crops.shape == (5, 3, 3, 3, 3)
        assert crops.tobytes() == want.crops.tobytes()
        assert body["maps"] is None and body["inputs"] is None
    # the steps differ, so a client following the slider sees other crops
    a = get(client, "examples", run="a", tag="c1/act", step="0")[1]
    b = get(client, "examples", run="a", tag="c1/act", step="1")[1]
    assert a["indices"] != b["indices"]


def test_rows_and_whole_inputs(client, logdir):
    want = reader.examples(logdir, "a", "c1/act", 1)
    status, body = get(client, "examples", run="a", tag="c1/act", step="1", rows="4,1", whole="1")
    assert status == 200, body
    assert body["rows"] == [4, 1] and body["channels"] == [4, 1]
    assert body["indices"] == want.indices[[4, 1]].tolist()
    assert array(body["crops"]).tobytes() == want.crops[[4, 1]].tobytes()
    assert array(body["inputs"]).tobytes() == X[want.indices[[4, 1]]].tobytes()


def test_unknown_field_sends_maps_and_whole_inputs(client, logdir):
    want = reader.examples(logdir, "a", "c2/act", None)
    status, body = get(client, "examples", run="a", tag="c2/act", rows="0,3")
    assert status == 200, body
    assert body["step"] == 1 and body["field"] is None and body["k"] == 2
    assert array(body["crops"]).tobytes() == want.crops[[0, 3]].tobytes()
    assert array(body["crops"]).shape == (2, 2, 9, 9, 3)
    assert array(body["maps"]).tobytes() == want.maps[[0, 3]].tobytes()


@pytest.mark.parametrize(
    "query, status, words",
    [
        ({"run": "zz", "tag": "c1/act"}, 404, "run 'zz' not found"),
        ({"run": "a", "tag": "zz"}, 404, "tag 'zz' not found"),
        ({"run": "a", "tag": "plain/act"}, 404, "has no dataset examples"),
        ({"run": "a", "tag": "c1/act", "step": "2"}, 404, "step 2 of run 'a'"),
        ({"run": "a", "tag": "c1/act", "step": "9"}, 404, "steps with examples: 0, 1"),
        ({"run": "a", "tag": "c1/act", "rows": "x"}, 400, "row indices"),
        ({"run": "a", "tag": "c1/act", "rows": "1,,2"}, 400, "row indices"),
        ({"run": "a", "tag": "c1/act", "rows": "5"}, 400, "rows=5 is out of range"),
        ({"run": "a", "tag": "c1/act", "whole": "yes"}, 400, "expected 0 or 1"),
        ({"run": "a", "tag": "c1/act", "step": "-1"}, 400, "not a step"),
        ({"tag": "c1/act"}, 400, "missing parameter 'run'"),
    ],
)
def test_errors(client, query, status, words):
    got, body = get(client, "examples", **query)
    assert got == status, body
    assert words in body["error"]


@pytest.mark.parametrize("source", ["index", "provider"])
def test_crops_over_the_limit_are_413_naming_rows_and_the_flag(logdir, source):
    # the 5 rows' crops are 5 * 3 * 27 * 4 = 1620 bytes; allow 1000
    small = plugin_client(logdir, source=source, max_examples_mb=1000 / (1 << 20))
    status, body = get(small, "examples", run="a", tag="c1/act")
    assert status == 413, body
    assert "rows=" in body["error"] and "--convfilters_max_examples_mb" in body["error"]
    assert body["nbytes"] == 1620 and body["limit_bytes"] == 1000
    status, body = get(small, "examples", run="a", tag="c1/act", rows="0,1")
    assert status == 200, body


def test_the_probe_inputs_are_read_once(logdir, monkeypatch):
    client = plugin_client(logdir)
    plugin_app = client.application
    routes = next(p for p in plugin_app._plugins if p.plugin_name == "convfilters")._examples
    reads = []
    payload = routes.source.payload
    monkeypatch.setattr(
        routes.source, "payload", lambda *a, **k: reads.append(a[4]) or payload(*a, **k)
    )
    for step in ("0", "1", "1"):
        assert get(client, "examples", run="a", tag="c1/act", step=step)[0] == 200
    assert sum(t.startswith("examples_inputs/") for t in reads) == 1


def _inputs_file(logdir):
    (path,) = (logdir / "a").glob("*tfevents*")
    data = path.read_bytes()
    at = data.find(X.tobytes())
    assert at > 0
    return path, data, at


def test_corrupt_probe_inputs_are_a_clean_error(tmp_path):
    write(tmp_path)
    path, data, at = _inputs_file(tmp_path)
    client = plugin_client(tmp_path)
    assert get(client, "steps", run="a", tag="c1/act")[0] == 200  # indexed before the damage
    path.write_bytes(data[: at + 10] + bytes([data[at + 10] ^ 0xFF]) + data[at + 11 :])
    status, body = get(client, "examples", run="a", tag="c1/act")
    assert status == 422, body
    assert "examples_inputs/" in body["error"] and "unreadable" in body["error"]
    # the examples themselves still come, without the inputs their crops need
    status, body = get(client, "tags")
    assert status == 200


def test_removed_event_file_is_a_clean_error(tmp_path):
    write(tmp_path)
    path, _, _ = _inputs_file(tmp_path)
    client = plugin_client(tmp_path)
    assert get(client, "steps", run="a", tag="c1/act")[0] == 200  # indexed before the removal
    path.unlink()
    status, body = get(client, "examples", run="a", tag="c1/act")
    assert status in (404, 409), body
    assert body["error"]
