"""Timing and reporting shared by the figures.

Every figure is a ratio of two things measured in the same run on the same
data: contenders run interleaved (A B C A B C ...), warm-up rounds are
dropped, and each contender's best round counts (best-of-N, stated in the
output), because a shared machine only ever makes things slower.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclasses.dataclass
class Result:
    """One line of the table and one JSON line.

    `ratio` is ours / theirs (or a measured value / its budget); `target` reads
    like ``"<= 1.1"`` and is None for reference figures that have no target.
    """

    name: str
    ratio: float | None
    target: str | None
    detail: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool | None:
        if self.target is None or self.ratio is None:
            return None
        op, value = self.target.split()
        return self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)

    def json(self) -> str:
        ratio = None if self.ratio is None else round(self.ratio, 4)
        line = {"name": self.name, "ratio": ratio, "target": self.target, "ok": self.ok}
        line.update(self.extra)
        return json.dumps(line, sort_keys=False)


class Timer:
    """Best-of-N wall times of interleaved contenders, in an order rotated every round.

    ``add(name, fn, before=None, after=None)``: `before`/`after` run untimed
    around every call (fresh directories, closing files).
    """

    def __init__(self, rounds: int, warmup: int = 1):
        self.rounds = rounds
        self.warmup = warmup
        self._contenders: list[tuple[str, Callable, Callable | None, Callable | None]] = []
        self.times: dict[str, list[float]] = {}

    def add(
        self,
        name: str,
        fn: Callable[[], Any],
        before: Callable[[], Any] | None = None,
        after: Callable[[], Any] | None = None,
    ) -> None:
        self._contenders.append((name, fn, before, after))
        self.times[name] = []

    def run(self, progress: Callable[[str], None] | None = None) -> dict[str, float]:
        n = len(self._contenders)
        for r in range(self.warmup + self.rounds):
            # each round starts one contender later: none always runs first (or after another)
            for name, fn, before, after in self._contenders[r % n :] + self._contenders[: r % n]:
                if before:
                    before()
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
                if after:
                    after()
                if r >= self.warmup:
                    self.times[name].append(elapsed)
            if progress:
                label = "warm-up" if r < self.warmup else f"round {r - self.warmup + 1}"
                progress(f"{label}/{self.rounds}: " + self.summary())
        return self.best()

    def paired_median(self, ours: str, theirs: str) -> float:
        """Median over rounds of ``ours / theirs`` timed in the same round.

        For contenders that vary much more between rounds than they differ (a
        fit on a shared 2-core machine): each round's pair saw the same machine.
        """
        pairs = zip(self.times[ours], self.times[theirs], strict=True)
        return statistics.median(a / b for a, b in pairs)

    def best(self) -> dict[str, float]:
        return {name: min(t) for name, t in self.times.items() if t}

    def summary(self) -> str:
        return ", ".join(f"{n} {min(t) * 1e3:.0f} ms" for n, t in self.times.items() if t)


def median_ms(fn: Callable[[], Any], n: int, warmup: int = 2) -> float:
    """Median wall time of `n` calls of `fn`, in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def scratch_root() -> str:
    """Where figures write files: tmpfs when there is one (no disk writeback noise)."""
    root = os.environ.get("BENCH_DIR")
    if root:
        return root
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@contextmanager
def scratch_dir(prefix: str) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix=f"tbcf-bench-{prefix}-", dir=scratch_root())
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def fresh(path: str) -> None:
    """Empties (or creates) directory `path`."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def log(message: str) -> None:
    print(f"  .. {message}", flush=True)


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def http_get(url: str, timeout: float = 60) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def tensorboard(logdir: str, load_fast: str, *extra: str) -> ContextManager[tuple]:
    """A real ``tensorboard`` on 127.0.0.1: yields (base URL, process) once our plugin is listed.

    The launcher the tests use (``tests/support.py``), with TensorBoard's own reload interval.
    """
    tests = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from support import tensorboard_process

    return tensorboard_process(
        logdir, load_fast=load_fast, extra=extra, timeout=120, reload_interval=None
    )


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _proc_field(pid: int, name: str, field: str, scale: int) -> int:
    """`field` of ``/proc/<pid>/<name>`` times `scale` (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * scale
    except OSError:
        pass
    return 0


def _proc_sum(pid: int, name: str, field: str, scale: int) -> int:
    return sum(_proc_field(p, name, field, scale) for p in tree(pid))


def own_rss(pid: int) -> int:
    """Resident bytes of process `pid` alone, without its children (Linux /proc)."""
    return _proc_field(pid, "status", "VmRSS:", 1024)


def tree_rss(pid: int) -> int:
    """Resident bytes of process `pid` and all its descendants (Linux /proc)."""
    return _proc_sum(pid, "status", "VmRSS:", 1024)


def tree_read_bytes(pid: int) -> int:
    """Bytes that process `pid` and its descendants have read (``rchar``, Linux /proc)."""
    return _proc_sum(pid, "io", "rchar:", 1)
