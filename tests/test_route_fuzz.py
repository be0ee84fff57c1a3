"""Route sweep: fuzzed query strings and static paths never give a 500 or a traceback.

Every route gets missing, repeated, empty, huge, unicode, malformed and out-of-range
parameters (Hypothesis), over the data provider and against a real ``tensorboard``
with both loaders; each answer is 200 with a well-formed body or a 4xx JSON error.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import PREFIX, load_npy, make_plugin, plugin_client, tensorboard
from tensorboard.backend import application
from werkzeug.test import Client

import tb_convfilters
from tb_convfilters._dashboard.files import frontend_dir
from tb_convfilters._serving.static_files import StaticFiles

RUNS = {
    "train": ("conv1/kernel", "act"),
    "run ü/ä": ("k",),
    "a&b=c%d+e #f?": ("conv1/kernel",),
    '"><img src=x onerror=alert(1)>': ("<script>alert(1)</script>",),
}
STEPS = (0, 3, 2**40)
ROUTES = ("tags", "steps", "tensor", "stats", "findings")
STATIC = frontend_dir() / "static"
# Some allowed per-route oddities are 413 (size) and 422 (unreadable record).
STATUSES = {200, 400, 404, 413, 422}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz") / "logs"
    rng = np.random.default_rng(0)
    for run, tags in RUNS.items():
        with tb_convfilters.Writer(root / run) as w:
            for tag in tags:
                for step in STEPS:
                    if tag == "act":
                        w.activation(tag, rng.random((2, 4, 4, 3), np.float32), step)
                    else:
                        w.kernel(tag, rng.standard_normal((3, 3, 2, 4)), step, dtype="float32")
    return root


def _values():
    known = [*RUNS, *(t for tags in RUNS.values() for t in tags), *map(str, STEPS)]
    return st.one_of(
        st.sampled_from(known),
        st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
        st.integers(-(2**70), 2**70).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(
            ["", " 1", "1 ", "+1", "0x10", "1_0", "1e3", "０", "١", "²", "9" * 19, "9" * 400]
        ),
        st.sampled_from(["x" * 20_000, "ü" * 3_000, "\x00", "../../etc/passwd", "%00", "\n"]),
    )


NAMES = st.sampled_from(["run", "tag", "step", "max_filters", "max_channels", "RUN", "", "x"])


@st.composite
def _near_valid(draw) -> list[tuple[str, str]]:
    """A real run and tag, maybe a step and a cap, plus a few random extras, shuffled."""
    run = draw(st.sampled_from(list(RUNS)))
    params = [("run", run), ("tag", draw(st.sampled_from(RUNS[run])))]
    if draw(st.booleans()):
        params.append(("step", draw(st.one_of(st.sampled_from(STEPS).map(str), _values()))))
    if draw(st.booleans()):
        cap = draw(st.sampled_from(["max_filters", "max_channels"]))
        params.append((cap, draw(st.one_of(st.integers(-2, 9).map(str), _values()))))
    params += draw(st.lists(st.tuples(NAMES, _values()), max_size=2))
    return draw(st.permutations(params))


PARAMS = st.one_of(st.lists(st.tuples(NAMES, _values()), max_size=7), _near_valid())
# Raw query fragments that are not well-formed percent-encoding.
RAW = st.one_of(
    st.just(""),
    st.sampled_from(["&", "&&=", "%", "%zz", "run=%ff%fe", "tag=%c3", "step=%2", "=&=", "x=%00"]),
)


def _query(params, raw: str) -> str:
    parts = [
        urllib.parse.quote(name, safe="") + "=" + urllib.parse.quote(value, safe="")
        for name, value in params
    ]
    return "&".join([*parts, raw] if raw else parts)


def expected_status(route: str, params) -> int | None:
    """The status a well-formed request must get; None when only "some 4xx" is known."""
    if route == "tags":
        return 200
    given_ = {}
    for name, value in params:
        given_.setdefault(name, []).append(value)
    if route == "findings":  # run is optional there
        runs = given_.get("run", [])
        if len(runs) > 1:
            return 400
        return 404 if runs and runs[0] not in RUNS else 200
    stepped = route in ("tensor", "stats")  # stats: step=S adds that step to the reply
    read = ("run", "tag", "step") if stepped else ("run", "tag")
    if any(len(v) > 1 for n, v in given_.items() if n in read):
        return 400
    if "run" not in given_ or "tag" not in given_:
        return 400
    run, tag = given_["run"][0], given_["tag"][0]
    if "max_filters" in given_ or "max_channels" in given_:
        return None
    if stepped and "step" in given_:
        raw = given_["step"][0]
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 19 and int(raw) < 2**63):
            return 400
    if run not in RUNS:
        return 404
    if tag not in RUNS[run]:
        return 404
    if stepped and "step" in given_ and int(given_["step"][0]) not in STEPS:
        return 404
    return 200


def check_response(route: str, want: int | None, status: int, body: bytes, headers) -> None:
    """`want`: the exact status expected, or None for any allowed one."""
    assert status in STATUSES, (status, body[:300])
    assert b"Traceback" not in body and b'File "' not in body
    content_type = headers.get("Content-Type", "")
    if status != 200:
        assert content_type.startswith("application/json"), content_type
        error = json.loads(body)["error"]
        assert isinstance(error, str) and error and len(error) < 1000
    elif route == "tensor":
        assert content_type == "application/octet-stream"
        header = json.loads(headers["X-Convfilters-Header"])
        assert list(load_npy(body).shape) == header["shape"]
        assert header.get("full_shape", header["shape"]) in ([3, 3, 2, 4], [2, 4, 4, 3])
        assert int(headers["X-Convfilters-Step"]) in STEPS
    else:
        json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    if want is not None:
        assert status == want, (route, status, body[:300])


@pytest.fixture(scope="module")
def client(logdir):
    return plugin_client(logdir)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(route=st.sampled_from(ROUTES), params=PARAMS, raw=RAW)
def test_fuzzed_queries_over_data_provider(client, route, params, raw):
    r = client.get(PREFIX + route + "?" + _query(params, raw))
    want = None if raw else expected_status(route, params)
    check_response(route, want, r.status_code, r.data, r.headers)


@settings(max_examples=150, deadline=None)
@given(params=_near_valid())
def test_fuzzed_tensor_requests_near_valid_ones(client, params):
    r = client.get(PREFIX + "tensor?" + _query(params, ""))
    check_response("tensor", expected_status("tensor", params), r.status_code, r.data, r.headers)


@pytest.mark.parametrize("route", ROUTES[1:4])
def test_every_known_series_and_step_is_served(client, route):
    """The oracle above is not vacuous: every valid request really succeeds."""
    for run, tags in RUNS.items():
        for tag in tags:
            queries = [[("run", run), ("tag", tag)]]
            if route == "tensor":
                queries += [[*queries[0], ("step", str(step))] for step in STEPS]
            for query in queries:
                assert expected_status(route, query) == 200
                r = client.get(PREFIX + route + "?" + _query(query, ""))
                check_response(route, 200, r.status_code, r.data, r.headers)


# ---- static files ----

TRAVERSAL = [
    "static/../../setup.py",
    "static/..%2f..%2fsetup.py",
    "static/%2e%2e/%2e%2e/setup.py",
    "static/%2e%2e%2f%2e%2e%2fsetup.py",
    "static/%252e%252e/%252e%252e/setup.py",
    "static/....//....//setup.py",
    "static/..\\..\\setup.py",
    "static/%5c..%5c..%5csetup.py",
    "static//etc/passwd",
    "static/%2fetc%2fpasswd",
    "static/%2Fetc%2Fpasswd",
    "static/./../http_api.md",
    "static/index.js/../../http_api.md",
    "static/index.js%00.png",
    "static/index.js%00",
    "static/%00",
    "static/",
    "static",
    "static/~/.bashrc",
    "static/C:/Windows/win.ini",
    "static/file:///etc/passwd",
    "static/http://example.com/x.js",
    "static/" + "a/" * 500 + "x.js",
    "static/%c0%ae%c0%ae/setup.py",
    "static/.git/config",
]


def _check_not_served(status: int, body: bytes) -> None:
    assert status == 404, (status, body[:200])
    assert b"Traceback" not in body
    for secret in (b"root:", b"setuptools", b"# convfilters HTTP API", b"[core]"):
        assert secret not in body


@pytest.mark.parametrize("path", TRAVERSAL)
def test_static_traversal_is_404(client, path):
    r = client.get(PREFIX + path)
    _check_not_served(r.status_code, r.data)


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(
        st.one_of(
            st.sampled_from(["..", ".", "", "%2e%2e", "%2f", "%5c", "index.js", "static"]),
            st.text(st.characters(exclude_categories=("Cs",)), max_size=12).map(
                lambda s: urllib.parse.quote(s, safe="")
            ),
        ),
        max_size=8,
    )
)
def test_fuzzed_static_paths(client, segments):
    path = "static/" + "/".join(segments)
    r = client.get(PREFIX + path)
    assert r.status_code in (200, 404) and b"Traceback" not in r.data
    if r.status_code == 200:  # only ever a file of frontend/static, byte for byte
        name = urllib.parse.unquote(path[len("static/") :])
        served = (STATIC / name).resolve()
        assert served.is_relative_to(STATIC.resolve()) and served.is_file()
        assert r.data == served.read_bytes()
    else:
        # TensorBoard's router cuts the decoded path at "?" or "#": with no file name left
        # it answers a text 404 itself, else our route answers JSON.
        routed = urllib.parse.urlparse(PREFIX + urllib.parse.unquote(path)).path
        if not routed.rstrip("/").endswith("/static"):
            assert r.headers["Content-Type"].startswith("application/json")


CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}


def test_every_static_file_has_its_content_type(client):
    files = sorted(p for p in STATIC.rglob("*") if p.is_file())
    assert any(p.name == "index.js" for p in files)
    for path in files:
        r = client.get(PREFIX + "static/" + path.relative_to(STATIC).as_posix())
        assert r.status_code == 200 and r.data == path.read_bytes()
        want = CONTENT_TYPES.get(path.suffix, r.headers["Content-Type"].split(";")[0])
        assert r.headers["Content-Type"].split(";")[0] == want
        assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_symlink_out_of_static_is_404(tmp_path, logdir):
    outside = tmp_path / "secret.js"
    outside.write_text("root:x:0:0")
    static = tmp_path / "static"
    static.mkdir()
    (static / "ok.js").write_text("export {};")
    (static / "link.js").symlink_to(outside)
    (static / "dir").symlink_to(tmp_path)
    the_plugin = make_plugin(logdir)
    the_plugin._static = StaticFiles(static)  # a static folder holding links that lead out of it
    client = Client(application.TensorBoardWSGI([the_plugin]))
    assert client.get(PREFIX + "static/ok.js").status_code == 200
    for path in ("static/link.js", "static/dir/secret.js"):
        r = client.get(PREFIX + path)
        _check_not_served(r.status_code, r.data)


# ---- the same against a real TensorBoard, both loaders ----
# Both serve from the plugin's index, which reads runs and tags whose names hold '"',
# '\' or control characters (the Rust data server's blob reads cannot).


@pytest.fixture(scope="module", params=["false", "true"])
def real(request, logdir):
    """The base URL of a real TensorBoard over `logdir` (--load_fast=false, true)."""
    with tensorboard(logdir, load_fast=request.param) as base:
        yield base


def _raw_get(base: str, path: str) -> tuple[int, bytes, dict]:
    """GET `path` exactly as given (no client-side normalisation)."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        conn.close()


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(route=st.sampled_from(ROUTES), params=PARAMS, raw=RAW)
def test_fuzzed_queries_over_real_tensorboard(real, route, params, raw):
    path = PREFIX + route + "?" + _query(params, raw)
    assume(len(path) < 60_000)  # longer request lines get 414 from the HTTP server itself
    status, body, headers = _raw_get(real, path)
    want = None if raw else expected_status(route, params)
    check_response(route, want, status, body, headers)


def test_real_tensorboard_serves_every_series_and_hides_files(real):
    base = real
    for run, tags in RUNS.items():
        for tag in tags:
            query = _query([("run", run), ("tag", tag), ("step", "3")], "")
            status, body, headers = _raw_get(base, PREFIX + "tensor?" + query)
            assert status == 200 and headers["X-Convfilters-Step"] == "3", body[:300]
            status, body, _ = _raw_get(base, PREFIX + "stats?" + query)
            assert status == 200 and len(json.loads(body)["steps"]) == len(STEPS)
    for path in TRAVERSAL:
        status, body, _ = _raw_get(base, PREFIX + path.replace("\\", "%5c"))
        _check_not_served(status, body)
    for path in ("/data/plugin/convfilters/../../../setup.py", "/data/plugin/convfilters/x"):
        status, body, _ = _raw_get(base, path)
        assert status == 404 and b"setuptools" not in body
