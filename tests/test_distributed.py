"""Distributed training writes once: two real worker processes on 127.0.0.1.

Keras: two workers of a ``tf.distribute.MultiWorkerMirroredStrategy`` cluster (TF_CONFIG
with two local ports). PyTorch: two ranks of ``DistributedDataParallel`` with the gloo
backend. Both log to the same logdir on every worker; only the chief / rank 0 writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from support import PREFIX, free_port, plugin_client

from tb_convfilters import reader

WORKERS = Path(__file__).with_name("distributed_workers.py")
TIMEOUT = 240  # seconds for the whole job; TensorFlow's start-up dominates


def run_workers(kind: str, envs: list[dict], logdir: Path, outdir: Path) -> list[int]:
    """Runs one worker process per env to completion; returns their pids."""
    outdir.mkdir()
    base = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", GLOO_SOCKET_IFNAME="lo")
    base.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    procs = []
    for i, env in enumerate(envs):
        log = open(outdir / f"worker{i}.log", "w+")
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, str(WORKERS), kind, str(logdir), str(outdir)],
                    env={**base, **env},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    deadline = time.monotonic() + TIMEOUT
    try:
        for proc, _ in procs:
            proc.wait(max(deadline - time.monotonic(), 1))
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    failed = []
    for i, (proc, log) in enumerate(procs):
        log.seek(0)
        if proc.returncode != 0:
            failed.append(f"worker {i} exited {proc.returncode}:\n{log.read()[-3000:]}")
        log.close()
    assert not failed, "\n".join(failed)
    return [proc.pid for proc, _ in procs]


def event_files(logdir: Path) -> list[Path]:
    return sorted(p for p in logdir.rglob("*") if "tfevents" in p.name)


def assert_written_once(logdir: Path, run: str, tags: set[str], steps: list[int]) -> None:
    """One series per tag with each step exactly once, through the reader and TensorBoard."""
    assert reader.list(logdir) == {run: {tag: steps for tag in sorted(tags)}}
    counts = Counter((e.tag, e.step) for e in reader.entries(logdir))
    assert set(counts.values()) == {1}, counts
    listing = plugin_client(logdir).get(PREFIX + "tags").json
    assert set(listing) == {run} and set(listing[run]) == tags
    for tag in tags:
        got = plugin_client(logdir).get(PREFIX + "steps", query_string={"run": run, "tag": tag})
        assert [s["step"] for s in got.json] == steps


def test_keras_multi_worker_only_the_chief_writes(tmp_path):
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    envs = [
        {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        for i in range(2)
    ]
    logdir, out = tmp_path / "logs", tmp_path / "out"
    chief, _ = run_workers("keras", envs, logdir, out)

    (path,) = event_files(logdir)  # one file, in log_dir/train, written by the chief
    assert path.parent == logdir / "train" and f".{chief}." in path.name
    tags = {f"{layer}/{kind}" for layer in ("conv1", "conv2") for kind in ("kernel", "activation")}
    assert_written_once(logdir, "train", tags, [0, 1])
    final = [np.load(out / f"worker{i}.npz") for i in range(2)]
    for layer in ("conv1", "conv2"):
        logged = reader.read(logdir, "train", f"{layer}/kernel", step=1)
        assert logged.tobytes() == final[0][layer].tobytes()  # the chief's mirrored weights
        assert np.array_equal(final[0][layer], final[1][layer])
        assert not np.array_equal(reader.read(logdir, "train", f"{layer}/kernel", 0), logged)


def test_torch_ddp_only_rank_zero_writes(tmp_path):
    port = free_port()
    envs = [{"RANK": str(r), "WORLD_SIZE": "2", "MASTER_PORT": str(port)} for r in range(2)]
    logdir, out = tmp_path / "logs", tmp_path / "out"
    rank0, _ = run_workers("torch", envs, logdir, out)

    (path,) = event_files(logdir)  # one file, written by rank 0 (rank 1 created none)
    assert f".{rank0}." in path.name
    kernels = {"conv1/weight", "conv2/weight", "head/weight"}  # DDP's "module." unwrapped
    activations = {"conv1/activation", "conv2/activation"}
    examples = {f"{tag}/examples" for tag in activations}
    listed = reader.list(logdir)["."]
    (inputs,) = [tag for tag in listed if tag.startswith("examples_inputs/")]
    assert listed.pop(inputs) == [0]  # the probe inputs, once per Writer
    assert listed == {tag: [0, 1] for tag in sorted(kernels | activations | examples)}
    written = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert Counter(written[0]) == Counter({tag: 2 for tag in kernels | activations})
    assert written[1] == []
    final = [np.load(out / f"rank{r}.npz") for r in range(2)]
    for tag in kernels:
        name = tag.replace("/", ".")
        logged = reader.read(logdir, ".", tag, step=1)
        assert logged.tobytes() == final[0][name].tobytes()
        assert np.array_equal(final[0][name], final[1][name])  # DDP kept the ranks in sync
