"""A real ``tensorboard`` (both loaders) serving every step from the plugin's index.

TensorBoard keeps one step per tag of ours (``samples_per_plugin=convfilters=1``)
and, here, its data provider cannot read blobs at all: every answer comes from
the plugin's own index of the event files, which follows appended steps, new
runs, corrupted, truncated and replaced files while TensorBoard runs.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from support import PREFIX, http_get, load_npy, tensorboard, wait_for

import tb_convfilters
from tb_convfilters._record import encoding
from tb_convfilters._serving import index

# TensorBoard with every blob read of its data providers (Python and Rust) failing.
NO_PROVIDER_BLOBS = (
    "import sys\n"
    "from tensorboard.backend.event_processing import data_provider\n"
    "from tensorboard.data import grpc_provider\n"
    "def fail(*args, **kwargs):\n"
    "    raise RuntimeError('blob reads of the data provider are switched off')\n"
    "for cls in (data_provider.MultiplexerDataProvider, grpc_provider.GrpcDataProvider):\n"
    "    cls.read_blob = cls.read_blob_sequences = cls.list_blob_sequences = fail\n"
    "from tensorboard.main import run_main\n"
    "sys.exit(run_main())\n"
)
rng = np.random.default_rng(3)
BASE = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
STEPS = 12


def kernel(step: int) -> np.ndarray:
    return BASE + step


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_real_tensorboard_serves_every_step_from_the_index(tmp_path, load_fast):
    logdir = tmp_path / "logs"
    w = tb_convfilters.Writer(logdir / "train")
    for step in range(STEPS):
        w.kernel("conv/kernel", kernel(step), step)
    w.flush()
    command = [sys.executable, "-c", NO_PROVIDER_BLOBS]
    with tensorboard(logdir, load_fast=load_fast, command=command) as base:

        def get(query: str):
            status, body, headers = http_get(base + PREFIX + query)
            assert status != 500, body
            return status, body, headers

        def steps(run: str = "train") -> list[int]:
            status, body, _ = get(f"steps?run={run}&tag=conv/kernel")
            return [s["step"] for s in json.loads(body)] if status == 200 else []

        def exact(step: int, run: str = "train", want: np.ndarray | None = None) -> bool:
            status, body, headers = get(f"tensor?run={run}&tag=conv/kernel&step={step}")
            want = kernel(step) if want is None else want
            return status == 200 and load_npy(body).tobytes() == want.tobytes()

        tags = json.loads(get("tags")[1])
        assert tags["train"]["conv/kernel"]["max_step"] == STEPS - 1
        assert steps() == list(range(STEPS))
        assert all(exact(step) for step in range(STEPS))
        stats = json.loads(get("stats?run=train&tag=conv/kernel")[1])
        assert [s["step"] for s in stats["steps"]] == list(range(STEPS))
        assert get("findings?run=train")[0] == 200

        # Appended steps and a new run are listed within a reload interval (1 s here).
        w.kernel("conv/kernel", kernel(STEPS), STEPS)
        w.flush()
        with tb_convfilters.Writer(logdir / "eval" / "nested") as w2:
            w2.kernel("conv/kernel", kernel(100), 0)
        wait_for(lambda: steps()[-1:] == [STEPS], timeout=10, what="the appended step")
        wait_for(lambda: steps("eval/nested") == [0], timeout=10, what="the new run")
        assert exact(STEPS) and exact(0, "eval/nested", kernel(100))
        w.close()

        # A payload byte flipped on disk: 422 for that step only.
        loc = _loc(logdir, "train", 5)
        _flip(w.path, loc.spans[encoding.PAYLOAD][0] + 7)
        status, body, _ = get("tensor?run=train&tag=conv/kernel&step=5")
        assert status == 422 and "payload checksum mismatch" in json.loads(body)["error"]
        assert exact(4) and exact(6)

        # Truncated in the middle of step 8: steps 8 and later go, the rest is served.
        cut = _loc(logdir, "train", 8).start + 30
        os.truncate(w.path, cut)
        wait_for(lambda: steps() == list(range(8)), timeout=10, what="the truncation")
        assert exact(7) and get("tensor?run=train&tag=conv/kernel&step=9")[0] == 404

        # Replaced by a shorter file holding other data for step 2 (never the old bytes).
        with tb_convfilters.Writer(tmp_path / "other") as w3:
            w3.kernel("conv/kernel", kernel(50), 2)
        os.replace(w3.path, w.path)
        wait_for(lambda: steps() == [2], timeout=10, what="the replaced file")
        assert exact(2, want=kernel(50))


def _loc(logdir, run: str, step: int) -> index.Loc:
    idx = index.Index({str(logdir): None})
    idx.refresh()
    return idx.find(run, "conv/kernel", step)


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))
