"""Shared test machinery: the plugin behind TensorBoard's data provider, a real
``tensorboard`` process, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from tb_convfilters import PLUGIN_NAME, plugin

PREFIX = "/data/plugin/convfilters/"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def load_provider(logdir: str | Path, samples: int = 0) -> data_provider.MultiplexerDataProvider:
    """TensorBoard's Python data provider over `logdir`, loaded once."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={PLUGIN_NAME: samples}
    )
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    return data_provider.MultiplexerDataProvider(multiplexer, str(logdir))


def make_plugin(
    logdir: str | Path, samples: int = 0, source: str = "index", **kwargs
) -> plugin.ConvFiltersPlugin:
    """The plugin over `logdir`: served from its own index (the plugin knows the logdir,
    as under a real TensorBoard), or with ``source="provider"`` from the data provider
    only (as with ``--grpc_data_provider``, where the plugin gets no logdir)."""
    if source not in ("index", "provider"):
        raise ValueError(f"source={source!r}; expected 'index' or 'provider'")
    context = base_plugin.TBContext(
        logdir=str(logdir) if source == "index" else "",
        data_provider=load_provider(logdir, samples),
    )
    return plugin.ConvFiltersPlugin(context, **kwargs)


def plugin_client(logdir: str | Path, samples: int = 0, **kwargs) -> Client:
    """A werkzeug client for TensorBoard's WSGI app holding only our plugin (`make_plugin`)."""
    return Client(application.TensorBoardWSGI([make_plugin(logdir, samples, **kwargs)]))


def route_fixtures(write: Any) -> tuple[Any, Any]:
    """The `logdir` and `client` fixtures of a route test module: `write(root)` writes the
    logdir once for the module; `client` serves it from each source (the plugin's index and
    TensorBoard's data provider). Use: ``logdir, client = route_fixtures(write)``."""

    @pytest.fixture(scope="module")
    def logdir(tmp_path_factory):
        root = tmp_path_factory.mktemp("logs")
        write(root)
        return root

    @pytest.fixture(params=["index", "provider"])
    def client(request, logdir):
        return plugin_client(logdir, source=request.param)

    return logdir, client


def get(client: Client, route: str, **query: Any) -> tuple[int, Any]:
    """(status, JSON body) of a plugin route asked through `client` (``plugin_client``)."""
    response = client.get(PREFIX + route, query_string=query)
    assert response.mimetype == "application/json"
    return response.status_code, response.json


def array(blob: dict) -> np.ndarray:
    """A route's binary-in-JSON array ``{"dtype", "shape", "data"}`` (base64, little-endian)."""
    data = base64.b64decode(blob["data"])
    return np.frombuffer(data, np.dtype(blob["dtype"]).newbyteorder("<")).reshape(blob["shape"])


def load_npy(body: bytes) -> np.ndarray:
    return np.load(io.BytesIO(body), allow_pickle=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 30) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def served_json(base: str, route: str, **query: Any) -> Any:
    """The JSON answer (status 200) of plugin `route` from the ``tensorboard`` at `base`."""
    status, body, _ = http_get(f"{base}{PREFIX}{route}?" + urllib.parse.urlencode(query))
    assert status == 200, body[:300]
    return json.loads(body)


@contextlib.contextmanager
def tensorboard(logdir: str | Path, **options: Any) -> Iterator[str]:
    """`tensorboard_process`, yielding only the base URL."""
    with tensorboard_process(logdir, **options) as (base, _):
        yield base


@contextlib.contextmanager
def tensorboard_process(
    logdir: str | Path,
    *,
    load_fast: str | None = "false",
    extra: tuple[str, ...] = (),
    timeout: float = 90,
    command: list[str] | None = None,
    env: dict | None = None,
    reload_interval: int | None = 1,
    cwd: str | Path | None = None,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real ``tensorboard`` on 127.0.0.1; yields (base URL, process) once our plugin is listed.

    `command` replaces the ``tensorboard`` executable (e.g. a launcher script), `env`
    adds environment variables, `cwd` is its working directory; `load_fast=None` and
    `reload_interval=None` leave TensorBoard's defaults. ``benchmarks/`` uses it too (it
    needs the process for RSS).
    """
    port = free_port()
    exe = shutil.which("tensorboard", path=os.path.dirname(sys.executable)) or "tensorboard"
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(
        [
            *(command or [exe]),
            "--logdir",
            str(logdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *([f"--load_fast={load_fast}"] if load_fast else []),
            *([f"--reload_interval={reload_interval}"] if reload_interval else []),
            *extra,
        ],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"tensorboard exited {proc.returncode}:\n{log.read()[-3000:]}")
            try:
                status, body, _ = http_get(base + "/data/plugins_listing", timeout=5)
                if status == 200 and "convfilters" in json.loads(body):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log.seek(0)
                raise TimeoutError(f"tensorboard did not list convfilters:\n{log.read()[-3000:]}")
            time.sleep(0.3)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_for(predicate, timeout: float = 60, interval: float = 0.5, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def plugin_frame(page, timeout: float = 30):
    """The dashboard iframe of a page showing ``/#convfilters``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames:
            if "plugin_entry.html?name=convfilters" in frame.url:
                return frame
        page.wait_for_timeout(200)
    raise TimeoutError("the convfilters iframe did not appear")
