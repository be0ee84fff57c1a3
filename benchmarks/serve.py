"""Figure 2, serve: the plugin's routes, from its own index and from TensorBoard's data provider.

* ``tensor``: a 3x3x512x512 float32 kernel (9.4 MB) fetched from real event
  files vs ``np.load`` of the same ``.npy``: through the plugin's WSGI app
  in-process (served from the plugin's index, and, as before the index, from
  TensorBoard's Python data provider), then through a real ``tensorboard`` with
  each loader (``--load_fast=false|true``; the index serves under both).
* ``tags`` and ``steps`` of a logdir of 10 runs x 50 layers x 100 steps:
  median latency of each, against a budget of 20 ms.
* ``appended``: a step appended to a run while the real ``tensorboard`` runs is
  listed by ``steps`` within one reload interval (TensorBoard's default, 5 s).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import numpy as np

from benchmarks.common import (
    Result,
    Timer,
    fmt_ms,
    http_get,
    log,
    median_ms,
    scratch_dir,
    tensorboard,
    tree,
    tree_read_bytes,
)

PREFIX = "/data/plugin/convfilters/"


def plugin_client(logdir: str, source: str):
    """A werkzeug client of TensorBoard's WSGI app holding our plugin.

    `source` "index": the plugin knows the logdir and serves from its own index (as
    under a real TensorBoard); "provider": only TensorBoard's Python data provider,
    every step loaded once (what the plugin served from before it had an index).
    """
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client

    import tb_convfilters
    from tb_convfilters import plugin

    if source == "index":  # TensorBoard's flags, for its reload interval (5 s)
        flags = argparse.Namespace(
            logdir=logdir, logdir_spec="", grpc_data_provider="", reload_interval=5
        )
        context = base_plugin.TBContext(logdir=logdir, flags=flags, data_provider=None)
    else:
        multiplexer = plugin_event_multiplexer.EventMultiplexer(
            tensor_size_guidance={tb_convfilters.PLUGIN_NAME: 0}
        )
        multiplexer.AddRunsFromDirectory(logdir)
        multiplexer.Reload()
        provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
        context = base_plugin.TBContext(data_provider=provider)
    return Client(application.TensorBoardWSGI([plugin.ConvFiltersPlugin(context)]))


def get(client, route: str) -> bytes:
    response = client.get(PREFIX + route)
    if response.status_code != 200:
        raise RuntimeError(f"{route}: HTTP {response.status_code}: {response.data[:300]!r}")
    return response.data


def run(quick: bool) -> list[Result]:
    import tb_convfilters

    results = []
    runs, layers, steps = 10, 50, (20 if quick else 100)
    rounds = 10 if quick else 30
    size = f"{runs} runs x {layers} layers x {steps} steps"
    with scratch_dir("serve") as root:
        logdir = os.path.join(root, "logs")
        kernel = np.random.default_rng(0).standard_normal((3, 3, 512, 512)).astype(np.float32)
        with tb_convfilters.Writer(os.path.join(logdir, "big")) as w:
            for step in range(3):
                w.kernel("conv/kernel", kernel, step=step)
        npy = os.path.join(root, "kernel.npy")
        np.save(npy, kernel)
        log(f"writing {size}")
        small = np.random.default_rng(1).standard_normal((3, 3, 4, 8)).astype(np.float32)
        for r in range(runs):
            with tb_convfilters.Writer(os.path.join(logdir, f"run{r:02d}")) as w:
                for step in range(steps):
                    for layer in range(layers):
                        w.kernel(f"layer{layer:02d}/kernel", small, step=step)
        tensor = "tensor?run=big&tag=conv/kernel&step=1"
        routes = (("tags", "tags"), ("steps", "steps?run=run05&tag=layer25/kernel"))

        def fetch(get_body) -> dict:
            served = np.load(io.BytesIO(get_body(tensor)))
            assert served.tobytes() == kernel.tobytes(), "served tensor differs from the logged one"
            timer = Timer(rounds, warmup=2)
            timer.add("GET tensor", lambda: get_body(tensor))
            timer.add("np.load", lambda: np.load(npy))
            return timer.run()

        for source in ("index", "provider"):
            start = time.perf_counter()
            client = plugin_client(logdir, source)
            get(client, routes[1][1])
            log(
                f"{source}: {runs * layers * steps + 3} records ready in "
                f"{time.perf_counter() - start:.1f} s"
            )
            suffix = "" if source == "index" else "_provider"
            how = f"WSGI app, {'index' if source == 'index' else 'Python data provider'}"
            best = fetch(lambda route, client=client: get(client, route))
            results.append(_versus_np_load(f"serve.tensor_vs_np_load{suffix}", best, how, rounds))
            for name, route in routes:
                ms = median_ms(lambda route=route, client=client: get(client, route), rounds)
                results.append(_budget(f"serve.{name}_ms{suffix}", ms, f"{how}; {size}", rounds))
            del client

        for load_fast in ("false", "true"):
            loader = "Rust" if load_fast == "true" else "Python"
            log(f"the same logdir in a real tensorboard --load_fast={load_fast} ({loader} loader)")
            live = os.path.join(root, f"live-{load_fast}")
            os.makedirs(live)
            with tensorboard(live, load_fast) as (base, proc):
                url = base + PREFIX
                # The runs move in once TensorBoard is up; the index lists every step at
                # once: measure once TensorBoard's own loader has read them all too (it
                # competes for the CPU while it loads).
                before = tree_read_bytes(proc.pid)
                stored = _move_runs(logdir, live)
                wait_for_steps(url + routes[1][1], steps)
                seconds = wait_read(proc.pid, before + stored) + wait_idle(proc.pid)
                log(f"tensorboard read the runs in {seconds:.0f} s")
                suffix = f"_{loader.lower()}_loader"
                how = f"HTTP, {loader} loader, index"
                best = fetch(lambda route, url=url: http_get(url + route))
                results.append(
                    _versus_np_load(f"serve.tensor_vs_np_load{suffix}", best, how, rounds)
                )
                for name, route in routes:
                    ms = median_ms(lambda route=route, url=url: http_get(url + route), rounds)
                    results.append(
                        _budget(f"serve.{name}_ms{suffix}", ms, f"{how}; {size}", rounds)
                    )
                results.append(_appended(url, live, small, steps, loader))
            _move_runs(live, logdir)
    return results


def _move_runs(src: str, dst: str) -> int:
    """Moves every run folder of `src` into `dst`; returns the bytes moved."""
    stored = 0
    for name in os.listdir(src):
        for folder, _, files in os.walk(os.path.join(src, name)):
            stored += sum(os.path.getsize(os.path.join(folder, f)) for f in files)
        os.rename(os.path.join(src, name), os.path.join(dst, name))
    return stored


def _appended(url: str, logdir: str, small: np.ndarray, steps: int, loader: str) -> Result:
    """Seconds until a step appended to a run is listed, over TensorBoard's reload interval."""
    import tb_convfilters

    interval = 5.0  # TensorBoard's default --reload_interval
    route = url + "steps?run=run03&tag=layer00/kernel"
    with tb_convfilters.Writer(os.path.join(logdir, "run03")) as w:
        w.kernel("layer00/kernel", small, step=steps + (loader == "Rust"))
    start = time.monotonic()
    want = steps + 1 + (loader == "Rust")
    while len(json.loads(http_get(route))) < want:
        if time.monotonic() - start > 6 * interval:
            raise TimeoutError(f"the appended step was not listed within {6 * interval} s")
        time.sleep(0.05)
    seconds = time.monotonic() - start
    return Result(
        f"serve.appended_step_listed_{loader.lower()}_loader",
        seconds / interval,
        "<= 1",
        f"a step appended while tensorboard runs ({loader} loader) was listed after "
        f"{seconds:.2f} s; reload interval {interval:.0f} s",
        {"seconds": round(seconds, 3)},
    )


def _versus_np_load(name: str, best: dict, how: str, rounds: int) -> Result:
    ours, floor = best["GET tensor"], best["np.load"]
    return Result(
        name,
        ours / floor,
        "<= 3",
        f"GET tensor 3x3x512x512 f32 ({how}) {fmt_ms(ours)} vs np.load {fmt_ms(floor)} "
        f"(best of {rounds})",
        {"best_of": rounds},
    )


def _budget(name: str, ms: float, what: str, n: int) -> Result:
    return Result(
        name,
        ms / 20,
        "<= 1",
        f"median {ms:.1f} ms of a 20 ms budget ({what}; median of {n})",
        {"value_ms": round(ms, 2), "n": n},
    )


def _cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            pass
    return total


def wait_idle(pid: int, timeout: float = 300) -> float:
    """Seconds until process `pid` and its children use < 5 % of a core over 3 s.

    (Read bytes alone do not tell: the plugin's index reads small records whole.)
    """
    start = time.monotonic()
    last = _cpu_seconds(pid)
    while time.monotonic() - start < timeout:
        time.sleep(3)
        now = _cpu_seconds(pid)
        if now - last < 0.15:
            break
        last = now
    return time.monotonic() - start


def wait_read(pid: int, total: int, timeout: float = 600) -> float:
    """Seconds until process `pid` (and its children) has read `total` bytes in all."""
    start = time.monotonic()
    while tree_read_bytes(pid) < total and time.monotonic() - start < timeout:
        time.sleep(0.5)
    return time.monotonic() - start


def wait_for_steps(url: str, steps: int, timeout: float = 180) -> None:
    """Waits until a live TensorBoard has loaded every step of the series at `url`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if len(json.loads(http_get(url))) >= steps:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not reach {steps} steps")
        time.sleep(0.5)
