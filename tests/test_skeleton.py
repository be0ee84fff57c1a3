"""Walking skeleton: write with every API, read back through TensorBoard, exactly."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from support import PREFIX, http_get, load_npy, make_plugin, plugin_client, tensorboard
from tensorboard.backend import application
from tensorboard.compat.proto import summary_pb2
from werkzeug.test import Client

import tb_convfilters
from tb_convfilters import summary
from tb_convfilters._dashboard.files import frontend_dir
from tb_convfilters._serving.static_files import StaticFiles

KERNEL = np.random.default_rng(0).standard_normal((3, 3, 64, 128)).astype(np.float32)


def test_numpy_api_does_not_import_tensorflow():
    code = (
        "import sys, numpy as np, tb_convfilters, tb_convfilters.plugin;"
        "import tb_convfilters.summary as s;"
        "s.kernel_pb('k', np.zeros((3, 3, 1, 2), 'f4'));"
        "tb_convfilters.Writer(sys.argv[1]).kernel('k', np.ones((1, 1, 1, 1)), 0);"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    )
    subprocess.run([sys.executable, "-c", code, "/tmp/tbcf-no-tf"], check=True)


def test_kernel_pb_is_a_blob_sequence_summary():
    pb = summary.kernel_pb("conv1/kernel", KERNEL, description="first conv")
    (value,) = pb.value
    assert value.tag == "conv1/kernel"
    assert value.metadata.plugin_data.plugin_name == "convfilters"
    assert value.metadata.data_class == summary_pb2.DATA_CLASS_BLOB_SEQUENCE
    assert value.metadata.summary_description == "first conv"
    header, payload, _, _ = value.tensor.string_val
    assert json.loads(header)["shape"] == [3, 3, 64, 128]
    assert payload == KERNEL.tobytes()


@pytest.mark.parametrize(
    "data, layout, message",
    [
        (np.zeros((3, 3, 4)), "HWIO", "rank 3"),
        (np.zeros((3, 3, 4, 4)), "HWCN", "expected one of"),
        (np.zeros((3, 3, 4, 4), dtype=complex), "HWIO", "complex128"),
    ],
)
def test_kernel_pb_rejects_bad_input(data, layout, message):
    with pytest.raises((ValueError, TypeError), match=message):
        summary.kernel_pb("k", data, layout=layout)


def _write_tf(logdir, steps):
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        for step in steps:
            assert bool(summary.kernel("conv1/kernel", tf.Variable(KERNEL + step), step=step))

        @tf.function
        def in_graph(x, step):
            return summary.kernel("conv1/in_graph", x, step=step, layout="OIHW")

        assert bool(in_graph(tf.constant(KERNEL), tf.constant(7, tf.int64)))
        tf.summary.experimental.set_step(9)
        assert bool(summary.kernel("conv1/default_step", KERNEL))
    writer.close()
    assert not bool(summary.kernel("no_writer", KERNEL, step=0))


def _write_numpy(logdir, steps):
    with tb_convfilters.Writer(logdir) as w:
        for step in steps:
            w.kernel("conv1/kernel", KERNEL + step, step, layout="HWIO")


def test_tf2_and_writer_round_trip_through_plugin(tmp_path):
    _write_tf(tmp_path / "tf", [0, 1, 2])
    _write_numpy(tmp_path / "np", [0, 1, 2])
    client = plugin_client(tmp_path)

    tags = client.get(PREFIX + "tags").json
    assert set(tags) == {"tf", "np"}
    info = tags["tf"]["conv1/kernel"]
    assert info["kind"] == "kernel" and info["layout"] == "HWIO"
    assert info["shape"] == [3, 3, 64, 128] and info["dtype"] == "float32"
    assert tags["tf"]["conv1/in_graph"]["layout"] == "OIHW"

    for run in ("tf", "np"):
        steps = client.get(PREFIX + f"steps?run={run}&tag=conv1/kernel").json
        assert [s["step"] for s in steps] == [0, 1, 2]
        assert all(isinstance(s["wall_time"], float) for s in steps)
        for step in (0, 1, 2):
            r = client.get(PREFIX + f"tensor?run={run}&tag=conv1/kernel&step={step}")
            assert r.status_code == 200 and r.headers["Content-Type"] == "application/octet-stream"
            got = load_npy(r.data)
            assert got.dtype == np.float32 and got.shape == KERNEL.shape
            assert got.tobytes() == (KERNEL + step).tobytes()
            assert r.headers["X-Convfilters-Step"] == str(step)
        latest = client.get(PREFIX + f"tensor?run={run}&tag=conv1/kernel")
        assert load_npy(latest.data).tobytes() == (KERNEL + 2).tobytes()

    r = client.get(PREFIX + "tensor?run=tf&tag=conv1/in_graph&step=7")
    assert load_npy(r.data).tobytes() == KERNEL.tobytes()
    r = client.get(PREFIX + "tensor?run=tf&tag=conv1/default_step")
    assert r.headers["X-Convfilters-Step"] == "9"


def test_every_step_is_served_by_default(tmp_path):
    small = np.arange(8, dtype=np.float32).reshape(1, 1, 2, 4)
    with tb_convfilters.Writer(tmp_path / "run") as w:
        for step in range(250):  # more than TensorBoard's default reservoir for tensors
            w.kernel("k", small * step, step)
    from tensorboard import default, program

    from tb_convfilters.plugin import ConvFiltersLoader

    plugins = default.get_plugins()  # includes entry points: ours must be there
    assert ConvFiltersLoader in plugins
    tb = program.TensorBoard(plugins=plugins)
    tb.configure(argv=["tensorboard", "--logdir", str(tmp_path)])
    # TensorBoard keeps one step per tag; the plugin's index serves every step.
    assert tb.flags.samples_per_plugin["convfilters"] == 1
    tb.configure(argv=["tensorboard", "--grpc_data_provider", "localhost:1"])
    assert tb.flags.samples_per_plugin["convfilters"] == 0  # no logdir: keep all
    tb.configure(
        argv=["tensorboard", "--logdir", str(tmp_path), "--samples_per_plugin=convfilters=5"]
    )
    assert tb.flags.samples_per_plugin["convfilters"] == 5
    assert tb.flags.reload_multifile is True
    tb.configure(argv=["tensorboard", "--logdir", str(tmp_path), "--reload_multifile=false"])
    assert tb.flags.reload_multifile is False
    tb.configure(argv=["tensorboard", "--logdir", "s3://bucket/logs"])
    assert tb.flags.reload_multifile is None  # one file per flush on object stores
    steps = plugin_client(tmp_path).get(PREFIX + "steps?run=run&tag=k").json
    assert [s["step"] for s in steps] == list(range(250))


@pytest.mark.parametrize(
    "query, status, needle",
    [
        ("tensor?run=np&tag=conv1/kernel&step=abc", 400, "step='abc'"),
        ("tensor?run=np&tag=conv1/kernel&step=-1", 400, "step='-1'"),
        ("tensor?run=np&tag=conv1/kernel&step=1.5", 400, "step='1.5'"),
        ("tensor?run=np&tag=conv1/kernel&step=99999999999999999999", 400, "is not a step"),
        ("tensor?run=np&step=1", 400, "missing parameter 'tag'"),
        ("tensor?run=np&run=np&tag=conv1/kernel", 400, "given 2 times"),
        ("steps?tag=conv1/kernel", 400, "missing parameter 'run'"),
        ("tensor?run=nope&tag=conv1/kernel", 404, "run 'nope' not found"),
        ("tensor?run=np&tag=nope", 404, "tag 'nope' not found"),
        ("tensor?run=np&tag=conv1/kernel&step=5", 404, "from 0 to 2"),
        ("steps?run=nope&tag=conv1/kernel", 404, "not found"),
        ("stats?run=np&tag=nope", 404, "not found"),
        ("static/../setup.py", 404, "no static file"),
        ("static/%2e%2e/http_api.md", 404, "no static file"),
        ("static//etc/passwd", 404, "no static file"),
        ("static/nothing.js", 404, "no static file"),
    ],
)
def test_errors_are_json(tmp_path_factory, query, status, needle):
    logdir = tmp_path_factory.getbasetemp() / "errors"
    if not logdir.exists():
        _write_numpy(logdir / "np", [0, 1, 2])
    r = plugin_client(logdir).get(PREFIX + query)
    assert r.status_code == status
    assert r.headers["Content-Type"].startswith("application/json")
    assert needle in r.json["error"]


def test_static_index_is_a_module(tmp_path):
    r = plugin_client(tmp_path).get(PREFIX + "static/index.js")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert b"export function render" in r.data or b"export async function render" in r.data


def test_the_dashboard_is_served_under_its_version_so_browsers_keep_it(tmp_path):
    plugin = make_plugin(tmp_path)
    folder = tmp_path / "static"
    shutil.copytree(frontend_dir() / "static", folder)
    plugin._static = StaticFiles(folder)
    client = Client(application.TensorBoardWSGI([plugin]))

    def served(path: str, **headers: str) -> tuple[bytes, str]:
        r = client.get(PREFIX + path.lstrip("/"), headers=headers)
        assert r.status_code == 200, path
        return r.data, r.headers["Cache-Control"]

    entry = plugin.frontend_metadata().es_module_path
    version = re.fullmatch(r"/static/([0-9a-f]{12})/index\.js", entry).group(1)
    body, cache = served(entry)
    assert b"export function render" in body and cache.startswith("private, max-age=")
    assert served(f"static/{version}/app.js")[1].startswith("private, max-age=")
    # the same bytes at the old address, never kept; gzipped for a browser that takes it
    assert served("static/index.js") == (body, "no-cache, must-revalidate")
    zipped = client.get(PREFIX + entry.lstrip("/"), headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(zipped.data) == body
    # types by suffix; a PNG is sent as it is, not gzipped again
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    png = client.get(PREFIX + entry.lstrip("/").replace("index.js", "logo.png"),
                     headers={"Accept-Encoding": "gzip"})
    assert png.headers["Content-Type"] == "image/png" and "Content-Encoding" not in png.headers
    assert png.data.startswith(b"\x89PNG")
    before, entry = entry, plugin.frontend_metadata().es_module_path
    assert entry != before  # a new file: a new version
    version = entry.split("/")[2]
    # the same contents written again (a reinstall): the same address, kept by the browser
    app = folder / "app.js"
    app.write_bytes(app.read_bytes())
    os.utime(app, ns=(0, 10**18))
    assert plugin.frontend_metadata().es_module_path == entry
    # a changed file: a new address; the old one still answers, with the new file, not kept
    app.write_bytes(app.read_bytes() + b"\n// edited\n")
    entry2 = plugin.frontend_metadata().es_module_path
    assert entry2 != entry
    new, cache = served(f"static/{version}/app.js")
    assert new.endswith(b"// edited\n") and cache == "no-cache, must-revalidate"
    assert served(entry2.replace("index.js", "app.js"))[1].startswith("private, max-age=")


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_real_tensorboard_serves_exact_kernel(tmp_path, load_fast):
    _write_numpy(tmp_path / "logs" / "np", [0, 1])
    _write_tf(tmp_path / "logs" / "tf", [0, 1])
    with tensorboard(tmp_path / "logs", load_fast=load_fast) as base:
        status, body, _ = http_get(base + "/data/plugins_listing")
        listing = json.loads(body)["convfilters"]
        assert listing["tab_name"] == "Filters" and listing["enabled"]
        status, body, _ = http_get(base + PREFIX + "tags")
        assert set(json.loads(body)) == {"np", "tf"}
        for run in ("np", "tf"):
            status, body, headers = http_get(
                base + PREFIX + f"tensor?run={run}&tag=conv1/kernel&step=1"
            )
            assert status == 200
            assert load_npy(body).tobytes() == (KERNEL + 1).tobytes()
        status, body, _ = http_get(base + PREFIX + "tensor?run=np&tag=conv1/kernel&step=x")
        assert status == 400 and "error" in json.loads(body)


@pytest.mark.parametrize("tag", ["", None, 3])
def test_writer_and_pb_refuse_bad_tags(tmp_path, tag):
    with tb_convfilters.Writer(tmp_path) as w, pytest.raises(ValueError, match="tag="):
        w.kernel(tag, KERNEL, 0)
    with pytest.raises(ValueError, match="tag="):
        summary.kernel_pb(tag, KERNEL)


def test_stats_polls_read_headers_and_stats_once(tmp_path):
    _write_numpy(tmp_path / "np", [0, 1, 2])
    from support import make_plugin

    plugin = make_plugin(tmp_path, source="provider")
    reads = []
    read_blob = plugin._source.provider.read_blob
    plugin._source.provider.read_blob = lambda ctx, blob_key: reads.append(blob_key) or read_blob(
        ctx, blob_key=blob_key
    )
    from tensorboard import context

    ctx = context.RequestContext()
    first = plugin.stats_impl(ctx, "", "np", "conv1/kernel")
    assert len(reads) == 9  # header, stats and checks of 3 steps
    assert plugin.stats_impl(ctx, "", "np", "conv1/kernel") == first
    assert len(reads) == 9


def test_steps_follow_new_data_after_reload(tmp_path):
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin

    from tb_convfilters.plugin import ConvFiltersPlugin

    w = tb_convfilters.Writer(tmp_path / "run")
    w.kernel("k", KERNEL, 0)
    w.flush()
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={"convfilters": 0}
    )
    multiplexer.AddRunsFromDirectory(str(tmp_path))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(tmp_path))
    client = Client(
        application.TensorBoardWSGI(
            [ConvFiltersPlugin(base_plugin.TBContext(logdir=str(tmp_path), data_provider=provider))]
        )
    )
    assert [s["step"] for s in client.get(PREFIX + "steps?run=run&tag=k").json] == [0]
    w.kernel("k", KERNEL + 1, 1)
    w.close()
    multiplexer.Reload()
    assert [s["step"] for s in client.get(PREFIX + "steps?run=run&tag=k").json] == [0, 1]
    r = client.get(PREFIX + "tensor?run=run&tag=k")
    assert r.headers["X-Convfilters-Step"] == "1"
    assert load_npy(r.data).tobytes() == (KERNEL + 1).tobytes()


def test_loader_gives_tensorflow_free_tensorboard_a_c_crc32c():
    import crc32c
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    from tb_convfilters.plugin import ConvFiltersLoader

    data = np.random.default_rng(1).bytes(1 << 16)
    expected = [pywrap_tensorflow.masked_crc32c(d) for d in (b"123456789", data)]
    original = pywrap_tensorflow.crc32c
    try:
        ConvFiltersLoader().fix_flags(type("Flags", (), {"samples_per_plugin": {}})())
        assert pywrap_tensorflow.crc32c is crc32c.crc32c
        assert [pywrap_tensorflow.masked_crc32c(d) for d in (b"123456789", data)] == expected
    finally:
        pywrap_tensorflow.crc32c = original
