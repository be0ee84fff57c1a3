"""Figure 5, server memory and start-up: a real ``tensorboard`` on ~2 GB of kernels.

20 steps of ResNet-50's 53 conv kernels in float32 (~1.9 GB of event files;
3 steps with ``--quick``), both loaders:

* memory: the run is moved into the logdir of an idle ``tensorboard``; its
  resident memory (plus its data server's under ``--load_fast=true``) once it
  has read every byte and settled, minus the same before, divided by the bytes
  on disk. By default TensorBoard keeps one step per tag of ours and the
  plugin's index serves every step; "all kept" is TensorBoard keeping every step
  (``--samples_per_plugin=convfilters=0``, the default before the index), for
  the figure beside it (not with ``--quick``).
* start-up: ``tensorboard`` started on that logdir: seconds from its first HTTP
  answer to the first tensor served (the last step of the last layer), against
  a budget of 3 s.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from benchmarks.common import (
    Result,
    http_get,
    log,
    own_rss,
    scratch_dir,
    tensorboard,
    tree_read_bytes,
    tree_rss,
)
from benchmarks.write import resnet50

PREFIX = "/data/plugin/convfilters/"


def settled_rss(pid: int, seconds: float = 2.0, timeout: float = 60) -> int:
    """RSS of the process tree once it changed by < 1 % over `seconds`."""
    deadline = time.monotonic() + timeout
    last = tree_rss(pid)
    while True:
        time.sleep(seconds)
        now = tree_rss(pid)
        if abs(now - last) < 0.01 * max(last, 1) or time.monotonic() > deadline:
            return now
        last = now


def served(base: str, tags: list[str], steps: int) -> bool:
    try:
        for tag in (tags[0], tags[-1]):
            url = f"{base}{PREFIX}steps?run=run&tag={tag}"
            if len(json.loads(http_get(url))) < steps:
                return False
    except OSError:
        return False
    return True


def _memory(root: str, staged: str, stored: int, load_fast: str, keep_all: bool, tags, steps):
    logdir = os.path.join(root, f"logs-{load_fast}-{keep_all}")
    os.makedirs(logdir)
    extra = ("--samples_per_plugin=convfilters=0",) if keep_all else ()
    with tensorboard(logdir, load_fast, "--reload_interval=1", *extra) as (base, proc):
        time.sleep(2)
        before = settled_rss(proc.pid)
        own_before = own_rss(proc.pid)
        read_before = tree_read_bytes(proc.pid)
        start = time.monotonic()
        os.rename(staged, os.path.join(logdir, "run"))
        deadline = start + 600
        # Loaded: every step is listed, and TensorBoard has read every byte stored.
        while not (
            served(base, tags, steps) and tree_read_bytes(proc.pid) - read_before >= stored
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"tensorboard did not load {steps} steps")
            time.sleep(0.5)
        seconds = time.monotonic() - start
        after = settled_rss(proc.pid)
        own_after = own_rss(proc.pid)
    os.rename(os.path.join(logdir, "run"), staged)
    loader = "Rust" if load_fast == "true" else "Python"
    growth = after - before
    how = "every step kept by TensorBoard" if keep_all else "served from the index"
    server = after - own_after - (before - own_before)
    log(
        f"{loader} loader, {how}: RSS {before / 1e6:.0f} -> {after / 1e6:.0f} MB "
        f"(TensorBoard's process {(own_after - own_before) / 1e6:+.0f} MB, "
        f"its data server {server / 1e6:+.0f} MB)"
    )
    return Result(
        f"memory.{loader.lower()}_loader" + ("_all_kept" if keep_all else ""),
        growth / stored,
        None if keep_all else "<= 0.1",
        f"--load_fast={load_fast}, {how}: RSS grew {growth / 1e6:.0f} MB for "
        f"{stored / 1e6:.0f} MB stored (TensorBoard itself {before / 1e6:.0f} MB; "
        f"read in {seconds:.0f} s)",
        {
            "stored_mb": round(stored / 1e6),
            "rss_before_mb": round(before / 1e6),
            "data_server_growth_mb": round(server / 1e6),
        },
    )


def _startup(logdir: str, load_fast: str, tag: str, step: int) -> list[Result]:
    route = f"{PREFIX}tensor?run=run&tag={tag}&step={step}"
    with tensorboard(logdir, load_fast) as (base, _):
        start = time.monotonic()  # the launcher yields at TensorBoard's first answers
        listed = json.loads(http_get(base + PREFIX + "tags"))  # the tab's first request
        first_tags = time.monotonic() - start
        while True:
            try:
                if http_get(base + route):
                    break
            except OSError:
                pass
            if time.monotonic() - start > 300:
                raise TimeoutError("no tensor within 300 s")
            time.sleep(0.05)
        seconds = time.monotonic() - start
    loader = "Rust" if load_fast == "true" else "Python"
    layers = len(listed.get("run", {}))
    return [
        Result(
            f"memory.startup_{loader.lower()}_loader",
            seconds / 3,
            "<= 1",
            f"--load_fast={load_fast}: first tensor (last step of {tag}) served {seconds:.2f} s "
            "after TensorBoard's first HTTP answer; budget 3 s",
            {"seconds": round(seconds, 3)},
        ),
        Result(
            f"memory.first_tags_{loader.lower()}_loader",
            first_tags / 0.05,
            "<= 1",
            f"--load_fast={load_fast}: the first `tags` answered {first_tags * 1000:.0f} ms "
            f"after TensorBoard's first HTTP answer ({layers} layers of the run listed in it); "
            "budget 50 ms",
            {"ms": round(first_tags * 1000, 1), "layers_listed": layers},
        ),
    ]


def run(quick: bool) -> list[Result]:
    import tb_convfilters

    _, convs = resnet50()
    kernels = {layer.name: layer.kernel.numpy() for layer in convs}
    tags = [f"{name}/kernel" for name in kernels]
    steps = 3 if quick else 20
    results = []
    with scratch_dir("memory") as root:
        staged = os.path.join(root, "staged", "run")
        with tb_convfilters.Writer(staged) as w:
            for step in range(steps):
                for name, k in kernels.items():
                    w.kernel(f"{name}/kernel", k, step=step)
        stored = sum(os.path.getsize(os.path.join(staged, f)) for f in os.listdir(staged))
        log(f"{steps} steps x {len(kernels)} kernels at float32: {stored / 1e6:.0f} MB on disk")
        for load_fast in ("false", "true"):
            for keep_all in (False,) if quick else (False, True):
                results.append(_memory(root, staged, stored, load_fast, keep_all, tags, steps))
        shutil.move(staged, os.path.join(root, "started", "run"))
        for load_fast in ("false", "true"):
            results.extend(_startup(os.path.join(root, "started"), load_fast, tags[-1], steps - 1))
    return results
