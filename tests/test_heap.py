"""TensorBoard gives back the memory its loaders used to read our records
(``_serving.memory_release``).

Behaviour, not figures (those are ``python -m benchmarks memory``): the Python
loader's pinned first records are let go and the heap trimmed after a reload that
read our data; the Rust data server starts with glibc's mmap threshold fixed,
unless the user set one.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import threading
import time

import numpy as np
import pytest
from support import tensorboard_process
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin

import tb_convfilters
from tb_convfilters._record import metadata
from tb_convfilters._serving import memory_release
from tb_convfilters.plugin import ConvFiltersLoader

pytestmark = pytest.mark.skipif(
    memory_release._LIBC is None or not hasattr(memory_release._LIBC, "mallinfo2"),
    reason="glibc >= 2.33 only",
)

THRESHOLD = "MALLOC_MMAP_THRESHOLD_"
TAGS = ("a/kernel", "b/kernel", "c/kernel")
KERNEL = np.random.default_rng(5).standard_normal((3, 3, 256, 256)).astype(np.float32)  # 2.4 MB


def _flags(**values: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ConvFiltersLoader().define_flags(parser)
    flags = parser.parse_args([])
    for name, value in {"samples_per_plugin": {}, "load_fast": "auto", **values}.items():
        setattr(flags, name, value)
    return flags


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> dict:
    env: dict[str, str] = {}
    monkeypatch.setattr(os, "environ", env)
    return env


def test_data_server_gets_a_fixed_mmap_threshold(environ):
    ConvFiltersLoader().fix_flags(_flags(load_fast="true"))
    assert environ.get(THRESHOLD) == str(memory_release.MMAP_THRESHOLD)
    environ.clear()
    loader = ConvFiltersLoader()
    loader.fix_flags(_flags())  # auto: the data server if installed
    assert environ.get(THRESHOLD) == str(memory_release.MMAP_THRESHOLD)
    # TensorBoard has spawned the data server when it loads the plugins: taken back.
    loader.load(base_plugin.TBContext(logdir="", flags=_flags()))
    assert THRESHOLD not in environ


def test_data_server_env_left_alone_when_set_or_off(environ):
    environ[THRESHOLD] = "4096"
    loader = ConvFiltersLoader()
    loader.fix_flags(_flags(load_fast="true"))
    loader.load(base_plugin.TBContext(logdir="", flags=_flags()))
    assert environ.get(THRESHOLD) == "4096"  # the user's value wins, and stays
    environ.clear()
    for flags in (
        _flags(load_fast="false"),  # no data server
        _flags(load_fast="true", convfilters_release_memory="false"),
        _flags(load_fast="true", grpc_data_provider="localhost:1"),
    ):
        ConvFiltersLoader().fix_flags(flags)
        assert THRESHOLD not in environ


def _server_environ(pid: int) -> dict[str, str]:
    from benchmarks.common import tree

    for child in tree(pid):
        with open(f"/proc/{child}/cmdline", "rb") as f:
            if b"--die-after-stdin" in f.read():
                with open(f"/proc/{child}/environ", "rb") as f:
                    pairs = [e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e]
                return {k.decode(): v.decode() for k, v in pairs}
    raise AssertionError("no data server under tensorboard")


def test_real_data_server_starts_with_the_threshold_unless_the_user_set_one(tmp_path, monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with tb_convfilters.Writer(tmp_path / "run") as w:
        w.kernel("k", KERNEL[..., :4, :4], step=0)
    with tensorboard_process(tmp_path, load_fast="true") as (_, proc):
        environ = _server_environ(proc.pid)
        assert environ.get("MALLOC_MMAP_THRESHOLD_") == str(memory_release.MMAP_THRESHOLD)
    user = {"MALLOC_MMAP_THRESHOLD_": "65536"}
    with tensorboard_process(tmp_path, load_fast="true", env=user) as (_, proc):
        assert _server_environ(proc.pid).get("MALLOC_MMAP_THRESHOLD_") == "65536"


@pytest.fixture
def loaded(tmp_path) -> plugin_event_multiplexer.EventMultiplexer:
    """TensorBoard's Python loader, as configured by the plugin, over 3 tags x 2 steps."""
    with tb_convfilters.Writer(tmp_path / "run") as w:
        for step in range(2):
            for tag in TAGS:
                w.kernel(tag, KERNEL + step, step=step)
    mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={metadata.PLUGIN_NAME: 1})
    mux.AddRunsFromDirectory(str(tmp_path))
    return mux


_MALLINFO2 = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2]


def _malloc_in_use() -> int:
    """Bytes malloc has handed out and not got back (glibc >= 2.33: protobuf's arenas too)."""
    gc.collect()
    memory_release._LIBC.mallinfo2.restype = _Mallinfo2
    info = memory_release._LIBC.mallinfo2()
    return info.uordblks + info.hblkhd


def test_release_lets_go_of_the_first_records_and_trims(loaded, monkeypatch):
    trims = []
    monkeypatch.setattr(memory_release, "trim", lambda: trims.append(1))
    loaded.Reload()
    contents = {t: loaded.SummaryMetadata("run", t).SerializeToString() for t in TAGS}
    before = _malloc_in_use()
    releaser = memory_release.Releaser(loaded, 1.0)
    assert releaser.release()
    freed = before - _malloc_in_use()
    # TensorBoard pinned each tag's first record (payload included) through its metadata.
    assert freed > 0.9 * len(TAGS) * KERNEL.nbytes
    assert trims == [1]
    for tag in TAGS:  # the same metadata, and the step TensorBoard keeps is still there
        assert loaded.SummaryMetadata("run", tag).SerializeToString() == contents[tag]
        assert [e.step for e in loaded.Tensors("run", tag)] == [1]
    assert not releaser.release()  # nothing new read: no trim
    assert trims == [1]


def test_release_trims_again_once_new_steps_are_read(loaded, tmp_path, monkeypatch):
    trims = []
    monkeypatch.setattr(memory_release, "trim", lambda: trims.append(1))
    loaded.Reload()
    releaser = memory_release.Releaser(loaded, 1.0)
    assert releaser.release()
    with tb_convfilters.Writer(tmp_path / "run") as w:
        w.kernel(TAGS[0], KERNEL, step=2)
    loaded.Reload()
    assert releaser.release()
    assert trims == [1, 1]


def test_loader_starts_a_releaser_for_the_python_loader_only(loaded):
    def threads() -> int:
        return sum(t.name == "convfilters-release" for t in threading.enumerate())

    start = threads()
    context = base_plugin.TBContext(logdir="", flags=_flags(reload_interval=1), multiplexer=None)
    ConvFiltersLoader().load(context)
    assert threads() == start
    for value, started in (("false", 0), ("true", 1)):
        flags = _flags(reload_interval=1, convfilters_release_memory=value)
        ConvFiltersLoader().load(base_plugin.TBContext(logdir="", flags=flags, multiplexer=loaded))
        assert threads() == start + started


def test_releaser_thread_releases_after_tensorboard_reloads(loaded):
    releaser = memory_release.Releaser(loaded, 0.05)
    releaser.start()
    try:
        loaded.Reload()
        deadline = time.monotonic() + 30
        while not releaser._seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(releaser._seen) == {("run", t) for t in TAGS}
    finally:
        releaser.stop()


def test_releaser_thread_ends_with_the_multiplexer(tmp_path):
    mux = plugin_event_multiplexer.EventMultiplexer()
    releaser = memory_release.Releaser(mux, 0.01)
    releaser.start()
    del mux
    gc.collect()
    releaser._thread.join(30)
    assert not releaser._thread.is_alive()


def test_releaser_that_fails_says_so_once_and_stops(caplog):
    class Changed:  # a TensorBoard whose multiplexer lacks what the plugin uses
        def PluginRunToTagToContent(self, plugin):
            raise AttributeError("no such thing")

    mux = Changed()
    releaser = memory_release.Releaser(mux, 0.01)
    with caplog.at_level("WARNING", logger="tb_convfilters._serving.memory_release"):
        releaser.start()
        releaser._thread.join(30)
    assert not releaser._thread.is_alive()
    failed = [r for r in caplog.records if "giving back memory failed" in r.getMessage()]
    assert len(failed) == 1 and "--convfilters_release_memory=false" in failed[0].getMessage()
