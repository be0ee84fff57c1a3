"""Load: 20 clients fetch tensors and stats from a real ``tensorboard`` while a training
process keeps appending steps. No errors, no step lost, memory bounded.

The duration is ``CONVFILTERS_LOAD_SECONDS`` (default 60, per loader); the figures
are printed and, with ``CONVFILTERS_LOAD_REPORT=path``, written there as JSON.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np
import pytest
from support import PREFIX, http_get, load_npy, tensorboard, wait_for

SECONDS = float(os.environ.get("CONVFILTERS_LOAD_SECONDS", "60"))
CLIENTS = 20
STEPS_PER_SECOND = 10
KERNEL_SHAPE = (3, 3, 16, 32)  # 18 KiB per step
ACTIVATION_SHAPE = (1, 16, 16, 32)  # 32 KiB per step
RUN = "train ü"

TRAINER = f"""
import json, sys, time
import numpy as np
import tb_convfilters

logdir, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
base = np.random.default_rng(0).standard_normal({KERNEL_SHAPE}).astype(np.float32)
act = np.random.default_rng(1).random({ACTIVATION_SHAPE}).astype(np.float32)
start, step = time.monotonic(), 0
with tb_convfilters.Writer(logdir) as w:
    while time.monotonic() - start < seconds:
        w.kernel("conv1/kernel", base + step, step)
        w.activation("conv1/activation", act * step, step)
        w.flush()
        step += 1
        time.sleep(max(0.0, start + step / rate - time.monotonic()))
print(json.dumps({{"steps": step}}))
"""

BASE_KERNEL = np.random.default_rng(0).standard_normal(KERNEL_SHAPE).astype(np.float32)


def _rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and all its descendants (the Rust data server)."""
    total = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                total += sum(_rss_bytes(int(child)) for child in f.read().split())
    except (FileNotFoundError, ProcessLookupError):
        pass
    return total


def _tensorboard_pid(port: int) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--port" in args and str(port).encode() in args and b"--logdir" in args:
            return int(entry)
    raise LookupError(f"no tensorboard process on port {port}")


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values) * 1000
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(a, 50)), 1),
        "p95_ms": round(float(np.percentile(a, 95)), 1),
        "max_ms": round(float(a.max()), 1),
    }


class Clients:
    """CLIENTS threads hammering the plugin's routes; every problem lands in `errors`."""

    def __init__(self, base: str, deadline: float):
        self.base = base + PREFIX
        self.deadline = deadline
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.latency: dict[str, list[float]] = {}
        self.first_seen: dict[int, float] = {}  # step -> when a client first saw it listed
        self.wall_time: dict[int, float] = {}

    def get(self, route: str, query: str) -> tuple[int, bytes, dict]:
        start = time.monotonic()
        status, body, headers = http_get(f"{self.base}{route}?{query}", timeout=120)
        with self.lock:
            self.latency.setdefault(route, []).append(time.monotonic() - start)
            if status != 200:
                self.errors.append(f"{route}?{query}: {status} {body[:200]!r}")
        return status, body, headers

    def list_steps(self, query: str, known: list[int]) -> list[dict] | None:
        """The `steps` listing of one tag (None on an error); no step listed before may go."""
        status, body, _ = self.get("steps", query)
        if status != 200:
            return None
        listed = json.loads(body)
        steps = {s["step"] for s in listed}
        if not set(known) <= steps:
            with self.lock:
                self.errors.append(f"{query}: steps went missing: {sorted(set(known) - steps)}")
        known[:] = sorted(steps)
        return listed

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        run = "run=" + quote(RUN)
        kernel, act = run + "&tag=conv1%2Fkernel", run + "&tag=conv1%2Factivation"
        # Each tag is asked only for steps listed for that tag: the trainer writes the
        # kernel of a step before its activation, so a kernel step may not be an
        # activation step yet (issue 20).
        known: dict[str, list[int]] = {kernel: [], act: []}
        try:
            while time.monotonic() < self.deadline:
                listed = self.list_steps(kernel, known[kernel])
                if listed is None or self.list_steps(act, known[act]) is None:
                    continue
                now = time.time()
                with self.lock:
                    for s in listed:
                        self.first_seen.setdefault(s["step"], now)
                        self.wall_time.setdefault(s["step"], s["wall_time"])
                steps, act_steps = known[kernel], known[act]
                if not steps or not act_steps:
                    continue
                for _ in range(4):
                    choice = rng.random()
                    step = rng.choice(steps)
                    if choice < 0.5:
                        status, body, headers = self.get("tensor", f"{kernel}&step={step}")
                        if status == 200 and (
                            load_npy(body).tobytes() != (BASE_KERNEL + step).tobytes()
                            or headers["X-Convfilters-Step"] != str(step)
                        ):
                            with self.lock:
                                self.errors.append(f"wrong tensor for step {step}")
                    elif choice < 0.7:
                        self.get("tensor", f"{act}&step={rng.choice(act_steps)}&max_filters=8")
                    elif choice < 0.8:
                        self.get("tensor", kernel)  # the latest step
                    elif choice < 0.95:
                        status, body, _ = self.get("stats", kernel if choice < 0.9 else act)
                        if status == 200 and any("error" in s for s in json.loads(body)["steps"]):
                            with self.lock:
                                self.errors.append("stats reported an unreadable step")
                    else:
                        self.get("tags", "")
        except Exception as e:  # a client crash is an error too, not a silent stop
            with self.lock:
                self.errors.append(f"client {seed} crashed: {type(e).__name__}: {e}")


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_many_clients_while_training_appends(tmp_path, load_fast):
    logdir = tmp_path / "logs"
    (logdir / RUN).mkdir(parents=True)
    seconds = SECONDS
    with tensorboard(logdir, load_fast=load_fast) as base:
        pid = _tensorboard_pid(urlsplit(base).port)
        trainer = subprocess.Popen(
            [sys.executable, "-c", TRAINER, str(logdir / RUN), str(seconds), str(STEPS_PER_SECOND)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(
                lambda: http_get(base + PREFIX + "tags")[1] != b"{}", timeout=60, what="first step"
            )
            rss_start = _rss_bytes(pid)
            clients = Clients(base, deadline=time.monotonic() + seconds)
            threads = [
                threading.Thread(target=clients.run, args=(i,), daemon=True) for i in range(CLIENTS)
            ]
            for t in threads:
                t.start()
            rss_samples = []
            while any(t.is_alive() for t in threads):
                rss_samples.append(_rss_bytes(pid))
                time.sleep(1)
            for t in threads:
                t.join()
            out, _ = trainer.communicate(timeout=seconds + 60)
        finally:
            if trainer.poll() is None:
                trainer.kill()
                trainer.wait()
        assert trainer.returncode == 0
        written = json.loads(out)["steps"]

        def listed(tag: str) -> list[int]:
            status, body, _ = http_get(base + PREFIX + f"steps?run={quote(RUN)}&tag={tag}")
            return [s["step"] for s in json.loads(body)] if status == 200 else []

        # no step lost: every step written is eventually listed, for both tags
        for tag in ("conv1/kernel", "conv1/activation"):
            wait_for(lambda t=tag: listed(t) == list(range(written)), timeout=60, what=tag)
        rss_end = _rss_bytes(pid)

    data_mb = written * (np.prod(KERNEL_SHAPE) + np.prod(ACTIVATION_SHAPE)) * 4 / 2**20
    lags = [clients.first_seen[s] - clients.wall_time[s] for s in clients.first_seen]
    figures = {
        "loader": "rust" if load_fast == "true" else "python",
        "seconds": seconds,
        "clients": CLIENTS,
        "steps_written": written,
        "data_written_mb": round(float(data_mb), 1),
        "requests": sum(len(v) for v in clients.latency.values()),
        "requests_per_second": round(sum(len(v) for v in clients.latency.values()) / seconds, 1),
        "errors": len(clients.errors),
        "latency": {route: _percentiles(v) for route, v in sorted(clients.latency.items())},
        "step_visible_after_s": {
            "p50": round(float(np.percentile(lags, 50)), 2),
            "max": round(float(np.max(lags)), 2),
        },
        "rss_mb": {
            "start": round(rss_start / 2**20, 1),
            "peak": round(max(rss_samples + [rss_end]) / 2**20, 1),
            "end": round(rss_end / 2**20, 1),
        },
    }
    print(json.dumps(figures, indent=1))
    report = os.environ.get("CONVFILTERS_LOAD_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(json.dumps(figures) + "\n")

    assert not clients.errors, clients.errors[:20]
    assert written >= seconds * STEPS_PER_SECOND * 0.5  # the trainer really kept going
    assert figures["requests"] >= CLIENTS * 10  # the clients really kept going
    # Memory: TensorBoard keeps every logged step (samples_per_plugin=convfilters=0), so
    # it grows with the data written, not with the requests served.
    growth_mb = (max(rss_samples + [rss_end]) - rss_start) / 2**20
    assert growth_mb < 256 + 4 * data_mb, figures
