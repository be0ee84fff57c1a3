"""Figure 5, server memory: RSS that a real ``tensorboard`` grows by per byte stored.

20 steps of ResNet-50's 53 conv kernels at float16 (~940 MB of event files)
are moved into the logdir of an idle ``tensorboard``; its resident memory
(plus its data server's under ``--load_fast=true``) once every step is loaded,
minus the same before, is divided by the bytes on disk. Both loaders.
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
    scratch_dir,
    tensorboard,
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


def loaded(base: str, tags: list[str], steps: int) -> bool:
    try:
        for tag in (tags[0], tags[-1]):
            url = f"{base}{PREFIX}steps?run=run&tag={tag}"
            if len(json.loads(http_get(url))) < steps:
                return False
    except OSError:
        return False
    return True


def run(quick: bool) -> list[Result]:
    import tb_convfilters

    _, convs = resnet50()
    kernels = {layer.name: layer.kernel.numpy() for layer in convs}
    tags = [f"{name}/kernel" for name in kernels]
    steps = 5 if quick else 20
    results = []
    with scratch_dir("memory") as root:
        staged = os.path.join(root, "staged", "run")
        with tb_convfilters.Writer(staged, dtype="float16") as w:
            for step in range(steps):
                for name, k in kernels.items():
                    w.kernel(f"{name}/kernel", k, step=step)
        stored = sum(os.path.getsize(os.path.join(staged, f)) for f in os.listdir(staged))
        log(f"{steps} steps x {len(kernels)} kernels at float16: {stored / 1e6:.0f} MB on disk")
        for load_fast in ("false", "true"):
            logdir = os.path.join(root, f"logs-{load_fast}")
            os.makedirs(logdir)
            with tensorboard(logdir, load_fast, "--reload_interval=1") as (base, proc):
                time.sleep(2)
                before = settled_rss(proc.pid)
                start = time.monotonic()
                os.rename(staged, os.path.join(logdir, "run"))
                deadline = start + 300
                while not loaded(base, tags, steps):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"tensorboard did not load {steps} steps")
                    time.sleep(0.5)
                seconds = time.monotonic() - start
                after = settled_rss(proc.pid)
            os.rename(os.path.join(logdir, "run"), staged)
            loader = "Rust" if load_fast == "true" else "Python"
            growth = after - before
            log(f"{loader} loader: RSS {before / 1e6:.0f} -> {after / 1e6:.0f} MB")
            results.append(
                Result(
                    f"memory.{loader.lower()}_loader",
                    growth / stored,
                    "<= 1.1",
                    f"--load_fast={load_fast}: RSS grew {growth / 1e6:.0f} MB for "
                    f"{stored / 1e6:.0f} MB stored (TensorBoard itself {before / 1e6:.0f} MB; "
                    f"loaded in {seconds:.0f} s)",
                    {"stored_mb": round(stored / 1e6), "rss_before_mb": round(before / 1e6)},
                )
            )
        shutil.rmtree(staged, ignore_errors=True)
    return results
