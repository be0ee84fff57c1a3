"""The README's demo writes what the Filters tab needs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import PREFIX, plugin_client

DEMO = Path(__file__).resolve().parent.parent / "demo" / "train.py"


def test_demo_logs_kernels_activations_and_patterns_for_two_runs(tmp_path):
    subprocess.run(
        [sys.executable, str(DEMO), "--logdir", str(tmp_path), "--epochs", "3"],
        check=True,
        timeout=300,
    )
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json
    assert set(tags) == {"lr_1e-3/train", "lr_1e-2/train"}
    kinds = {tag: info["kind"] for tag, info in tags["lr_1e-3/train"].items()}
    assert kinds["conv1/kernel"] == "kernel" and kinds["conv1/activation"] == "activation"
    assert kinds["conv2/pattern"] == "pattern" and kinds["conv2/projection"] == "projection"
    steps = client.get(PREFIX + "steps?run=lr_1e-3/train&tag=conv1/kernel").json
    assert [s["step"] for s in steps] == [0, 1, 2]
