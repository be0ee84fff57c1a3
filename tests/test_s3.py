"""Logs on object storage: a real S3-compatible server (moto, 127.0.0.1) and a real TensorBoard.

Writing goes through ``tb_convfilters._record.files``: in this environment TensorFlow has no
``s3://`` filesystem, so URLs use TensorBoard's TensorFlow-free gfile (boto3 and
``S3_ENDPOINT``). TensorBoard reads ``s3://`` only where TensorFlow is not installed;
the server under test runs as in such an environment (see `TENSORBOARD_WITHOUT_TF`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import boto3
import numpy as np
import pytest
from moto.server import ThreadedMotoServer
from support import PREFIX, free_port, http_get, load_npy, plugin_client, tensorboard, wait_for
from tensorboard.compat.proto import event_pb2

from tb_convfilters import Writer, cli, doctor, reader
from tb_convfilters._writing import event_file

BUCKET = "bucket"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# What `pip install tensorboard boto3 tb-convfilters` into an environment without
# TensorFlow gives: TensorBoard then uses its own gfile (tensorboard.compat.notf is the
# switch TensorBoard checks, made here because this environment has TensorFlow).
TENSORBOARD_WITHOUT_TF = (
    "import sys, types; "
    "sys.modules['tensorboard.compat.notf'] = types.ModuleType('tensorboard.compat.notf'); "
    "from tensorboard.main import run_main; sys.exit(run_main())"
)
rng = np.random.default_rng(7)
K = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def s3() -> Iterator[SimpleNamespace]:
    """A moto S3 server on 127.0.0.1 with one bucket; AWS_* and S3_ENDPOINT point at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {**AWS, "S3_ENDPOINT": f"http://127.0.0.1:{port}"}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name, value in env.items():
                mp.setenv(name, value)
            client = boto3.client("s3", endpoint_url=env["S3_ENDPOINT"])
            client.create_bucket(Bucket=BUCKET)
            yield SimpleNamespace(client=client, env=env)
    finally:
        server.stop()


def keys(s3, prefix: str) -> list[str]:
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def event_keys(s3, prefix: str) -> list[str]:
    return [k for k in keys(s3, prefix) if "tfevents" in k]


def first_event(s3, key: str) -> event_pb2.Event:
    body = s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    (length,) = struct.unpack("<Q", body[:8])
    return event_pb2.Event.FromString(body[12 : 12 + length])


def download(s3, prefix: str, dest: Path) -> Path:
    for key in keys(s3, prefix):
        if not key.endswith("/"):
            path = dest / key[len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.client.download_file(BUCKET, key, str(path))
    return dest


def test_writer_uploads_every_flush_as_a_complete_event_file(s3, monkeypatch):
    url = f"s3://{BUCKET}/parts/run"
    w = Writer(url)
    data = K.copy()
    w.kernel("k", data, 0)
    data[:] = 0  # PyTorch weights are shared memory: what was logged must not change
    assert event_keys(s3, "parts/") == [] and w.path is None  # buffered until a flush
    w.flush()
    (first,) = event_keys(s3, "parts/")
    assert w.path == f"s3://{BUCKET}/{first}"
    w.flush()  # nothing new: nothing uploaded
    assert event_keys(s3, "parts/") == [first]
    w.kernel("k", K * 2, 1)
    w.activation("a", K[None, ..., 0], 1)
    w.close()
    parts = event_keys(s3, "parts/")
    assert len(parts) == 2 and parts[0] == first  # name order is upload order
    for key in parts:  # each one a whole event file TensorBoard can read on its own
        assert first_event(s3, key).file_version == "brain.Event:2"
    base = f"s3://{BUCKET}/parts"
    assert reader.list(base) == {"run": {"a": [1], "k": [0, 1]}}
    assert reader.read(base, "run", "k", 0).tobytes() == K.tobytes()
    assert reader.read(base, "run", "k", 1).tobytes() == (K * 2).tobytes()
    with pytest.raises(ValueError, match="is closed"):
        w.kernel("k", K, 2)

    monkeypatch.setattr(event_file, "PART_BYTES", 3000)  # bounded buffer between flushes
    with Writer(f"s3://{BUCKET}/big/run") as big:
        for step in range(3):
            big.kernel("k", np.full((10, 10, 2, 2), step, np.float32), step)  # 1.6 kB each
        wait_for(lambda: event_keys(s3, "big/"), 30, 0.1, "the background upload")
        assert len(event_keys(s3, "big/")) == 1
    assert len(event_keys(s3, "big/")) == 2
    assert reader.list(f"s3://{BUCKET}/big") == {"run": {"k": [0, 1, 2]}}


def train_keras_run(logdir: str) -> dict[int, np.ndarray]:
    """FiltersCallback on a tiny CNN for two epochs; {epoch: conv kernel after it}."""
    import keras

    from tb_convfilters.keras import FiltersCallback

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(3, 3, name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    kernels = {}

    class Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernels[epoch] = model.get_layer("conv").kernel.numpy().copy()

    x = rng.standard_normal((16, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 2, 16)
    callbacks = [FiltersCallback(logdir, sample_inputs=x[:2], examples=0), Keep()]
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=callbacks)
    return kernels


def torch_run(logdir: str) -> dict[int, np.ndarray]:
    """log_kernels / log_activations of a small module at steps 0 and 1; {step: conv weight}."""
    import torch
    from torch import nn

    from tb_convfilters.torch import log_activations, log_kernels

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    weights = {}
    for step in range(2):
        with torch.no_grad():
            model[0].weight.mul_(1.5)
        weights[step] = model[0].weight.detach().numpy().copy()
        log_kernels(logdir, model, step)
        with log_activations(logdir, model, step, examples=0):  # (tests/test_examples_torch.py)
            model(torch.ones(1, 1, 5, 5))
    return weights


@pytest.fixture(scope="module")
def two_runs(s3) -> SimpleNamespace:
    """s3://bucket/logs with a Keras run (keras/train) and a PyTorch run (torch)."""
    base = f"s3://{BUCKET}/logs"
    return SimpleNamespace(
        url=base, keras=train_keras_run(f"{base}/keras"), torch=torch_run(f"{base}/torch")
    )


def tensorboard_on(url: str, env: dict, *flags: str, timeout: float = 90):
    """TensorBoard as installed without TensorFlow, on `url`; yields its base URL."""
    return tensorboard(
        url,
        load_fast=None,
        extra=flags,
        timeout=timeout,
        command=[sys.executable, "-c", TENSORBOARD_WITHOUT_TF],
        env=env,
    )


def get_json(url: str):
    status, body, _ = http_get(url)
    assert status == 200, body[:300]
    return json.loads(body)


def test_tensorboard_serves_runs_from_s3(s3, two_runs):
    # the plugin leaves --reload_multifile off for URL logdirs: each finished file is read once
    with tensorboard_on(two_runs.url, s3.env) as base:

        def loaded():  # TensorBoard serves what it has read so far: wait for every file
            tags = get_json(base + PREFIX + "tags")
            steps = {
                run: [s["step"] for s in get_json(base + PREFIX + f"steps?run={run}&tag={tag}")]
                for run, tag in (("keras/train", "conv/kernel"), ("torch", "0/weight"))
                if tag in tags.get(run, {})
            }
            return tags if steps == {"keras/train": [0, 1], "torch": [0, 1]} else None

        tags = wait_for(loaded, 60, 0.5, "both runs, steps 0 and 1")
        assert set(tags) == {"keras/train", "torch"}
        assert set(tags["keras/train"]) == {"conv/kernel", "conv/activation"}
        assert set(tags["torch"]) == {"0/weight", "0/activation"}
        assert tags["keras/train"]["conv/kernel"]["shape"] == [3, 3, 1, 3]
        for run, tag, step, expected in (
            ("keras/train", "conv/kernel", 1, two_runs.keras[1]),
            ("torch", "0/weight", 0, two_runs.torch[0]),
        ):
            query = f"tensor?run={run}&tag={tag}&step={step}"
            status, body, headers = http_get(base + PREFIX + query)
            assert status == 200 and headers["X-Convfilters-Step"] == str(step), body[:300]
            got = load_npy(body)
            assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()


def test_rust_data_server_and_tensorflow_refuse_s3(s3, two_runs):
    """What the README says about --load_fast=true and TensorBoard with TensorFlow."""
    fast = subprocess.run(
        [
            sys.executable,
            "-c",
            TENSORBOARD_WITHOUT_TF,
            "--logdir",
            two_runs.url,
            "--port",
            str(free_port()),
            "--load_fast=true",
        ],
        env={**os.environ, **s3.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fast.returncode != 0 and 'unknown protocol "s3"' in fast.stderr
    exe = shutil.which("tensorboard", path=os.path.dirname(sys.executable))
    with_tf = subprocess.run(
        [exe, "--logdir", two_runs.url, "--port", str(free_port())],
        env={**os.environ, **s3.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert with_tf.returncode != 0 and "Unsupported filename scheme 's3'" in with_tf.stderr


def test_reader_export_and_doctor_read_urls_like_local_paths(s3, two_runs, tmp_path, capsys):
    local = download(s3, "logs/", tmp_path / "copy")
    assert (
        reader.list(two_runs.url)
        == reader.list(local)
        == {
            "keras/train": {"conv/activation": [0, 1], "conv/kernel": [0, 1]},
            "torch": {"0/activation": [0, 1], "0/weight": [0, 1]},
        }
    )
    got = reader.read(two_runs.url, "torch", "0/weight", 1)
    assert got.tobytes() == two_runs.torch[1].tobytes()
    assert reader.read(two_runs.url, "keras/train", "conv/kernel").tobytes() == (
        two_runs.keras[1].tobytes()
    )
    out_remote, out_local = tmp_path / "remote", tmp_path / "local"
    assert cli.main(["export", two_runs.url, "--out", str(out_remote), "--quiet"]) == 0
    assert cli.main(["export", str(local), "--out", str(out_local), "--quiet"]) == 0
    files = sorted(p.relative_to(out_remote) for p in out_remote.rglob("*.npy"))
    assert len(files) == 8
    for rel in files:
        assert (out_remote / rel).read_bytes() == (out_local / rel).read_bytes()
    assert cli.main(["export", str(local), "--out", f"s3://{BUCKET}/npy"]) == 1
    assert "must be a local folder" in capsys.readouterr().err
    assert doctor.diagnose(two_runs.url) == doctor.diagnose(local)
    assert cli.main(["doctor", two_runs.url, "--json"]) in (0, 1)
    capsys.readouterr()
    assert cli.main(["doctor", two_runs.url, "--run", "torch"]) in (0, 1)
    assert "2 series in 1 run(s) checked" in capsys.readouterr().out


def test_other_fsspec_urls_go_through_tensorboards_gfile():
    """Schemes TensorFlow lacks and fsspec has (gs:// with gcsfs, ...): here fsspec's memory://."""
    with Writer("memory://fsspec-logs/run") as w:
        w.kernel("k", K, 3)
        w.flush()
        w.kernel("k", K * 3, 4)
    assert reader.list("memory://fsspec-logs") == {"run": {"k": [3, 4]}}
    assert reader.read("memory://fsspec-logs", "run", "k").tobytes() == (K * 3).tobytes()
    assert [s.steps.tolist() for s in doctor.logdir_series("memory://fsspec-logs")] == [[3, 4]]
    with pytest.raises(ValueError, match=r"no filesystem for 'nosuch://x/run': s3:// needs"):
        Writer("nosuch://x/run")


def test_tf2_ops_write_wherever_tensorflow_writes(s3, tmp_path):
    """The TF2 ops use TensorFlow's writer: its filesystems (here ram://), not boto3."""
    import tensorflow as tf

    from tb_convfilters import summary

    url = f"ram://{tmp_path.name}/tf2"
    with tf.summary.create_file_writer(f"{url}/run").as_default():
        summary.kernel("conv/kernel", K, step=5)
    assert reader.read(url, "run", "conv/kernel", 5).tobytes() == K.tobytes()
    client = plugin_client(url)
    assert client.get(PREFIX + "steps?run=run&tag=conv/kernel").json[0]["step"] == 5
    with pytest.raises(tf.errors.UnimplementedError, match="scheme 's3' not implemented"):
        tf.summary.create_file_writer(f"s3://{BUCKET}/tf2")


def test_index_reads_one_range_per_tensor(s3, two_runs, monkeypatch):
    """Served from the plugin's index: a tensor is one ranged read of its record, not the file."""
    from tensorboard.backend import application
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client

    from tb_convfilters import plugin
    from tb_convfilters._record import files as fs

    # No data provider at all (TensorBoard's own cannot list s3:// with TensorFlow here).
    context = base_plugin.TBContext(logdir=two_runs.url, data_provider=None)
    client = Client(application.TensorBoardWSGI([plugin.ConvFiltersPlugin(context)]))
    steps = client.get(PREFIX + "steps?run=keras/train&tag=conv/kernel").json
    assert [s["step"] for s in steps] == [0, 1]
    calls = []
    real = fs.read_at
    monkeypatch.setattr(fs, "read_at", lambda *a: calls.append(a) or real(*a))
    r = client.get(PREFIX + "tensor?run=keras/train&tag=conv/kernel&step=0")
    assert r.status_code == 200 and load_npy(r.data).tobytes() == two_runs.keras[0].tobytes()
    assert len(calls) == 1, calls
    path, offset, size = calls[0]
    key = path.split(f"s3://{BUCKET}/", 1)[1]
    whole = s3.client.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
    assert offset > 0 and size < whole - offset  # a range inside the object


def test_index_skips_objects_that_vanish_or_fail_during_a_refresh(s3, monkeypatch, caplog):
    """An object listed then gone (or failing to read) is skipped; the others are served."""
    import botocore.exceptions
    from tensorboard.backend import application
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client

    from tb_convfilters import plugin
    from tb_convfilters._record import files as fs

    base = f"s3://{BUCKET}/vanish"
    for run in ("a", "b"):
        with Writer(f"{base}/{run}") as w:
            w.kernel("k", K, 0)
    context = base_plugin.TBContext(logdir=base, data_provider=None)  # refreshes every request
    client = Client(application.TensorBoardWSGI([plugin.ConvFiltersPlugin(context)]))
    assert sorted(client.get(PREFIX + "tags").json) == ["a", "b"]

    with Writer(f"{base}/a") as w:  # a second object in run a, deleted right after listing
        w.kernel("k", K * 2, 1)
    doomed = event_keys(s3, "vanish/a/")[-1]
    listed = reader._runs

    def list_then_delete(*args, **kwargs):
        runs = listed(*args, **kwargs)
        s3.client.delete_object(Bucket=BUCKET, Key=doomed)
        return runs

    monkeypatch.setattr(reader, "_runs", list_then_delete)
    caplog.set_level(logging.WARNING, "tb_convfilters")
    for run in ("a", "b"):
        r = client.get(PREFIX + f"steps?run={run}&tag=k")
        assert r.status_code == 200 and [s["step"] for s in r.json] == [0], r.data
    assert sum(doomed in m for m in caplog.messages) == 1, caplog.messages
    monkeypatch.setattr(reader, "_runs", listed)

    # An object that stays listed but cannot be read: skipped, warned about once.
    with Writer(f"{base}/b") as w:
        w.kernel("k", K * 3, 2)
    broken = f"s3://{BUCKET}/" + event_keys(s3, "vanish/b/")[-1]
    read_at = fs.read_at

    def failing(path, *args):
        if path == broken:
            error = {"Error": {"Code": "SlowDown", "Message": "Reduce your request rate"}}
            raise botocore.exceptions.ClientError(error, "GetObject")
        return read_at(path, *args)

    monkeypatch.setattr(fs, "read_at", failing)
    caplog.clear()
    for _ in range(3):
        r = client.get(PREFIX + "steps?run=b&tag=k")
        assert r.status_code == 200 and [s["step"] for s in r.json] == [0], r.data
        assert client.get(PREFIX + "tensor?run=b&tag=k&step=0").status_code == 200
    assert sum(broken in m for m in caplog.messages) == 1, caplog.messages
    monkeypatch.setattr(fs, "read_at", read_at)
    r = client.get(PREFIX + "steps?run=b&tag=k")  # readable again: served
    assert [s["step"] for s in r.json] == [0, 2]
