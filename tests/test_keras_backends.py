"""FiltersCallback on Keras 3's JAX and PyTorch backends (each in a subprocess: this
process runs Keras on TensorFlow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import PREFIX, load_npy, plugin_client

WORKER = Path(__file__).with_name("keras_backend_worker.py")
LAYOUTS = {"conv/kernel": "HWIO", "dw/kernel": "HWIM", "sep/depthwise": "HWIM",
           "sep/pointwise": "HWIO"}


def served(client, run, tag, step):
    query = {"run": run, "tag": tag, "step": str(step)}
    response = client.get(PREFIX + "tensor", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return load_npy(response.get_data()), json.loads(response.headers["X-Convfilters-Header"])


@pytest.mark.parametrize("backend,module", [("jax", "jax"), ("torch", "torch")])
def test_fit_logs_exact_kernels_and_activations(tmp_path, backend, module):
    pytest.importorskip(module)
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="",
               TF_CPP_MIN_LOG_LEVEL="2")
    logdir = tmp_path / "logs"
    done = subprocess.run([sys.executable, str(WORKER), str(logdir), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["backend"] == backend
    saved = np.load(tmp_path / "weights.npz")
    client = plugin_client(logdir)
    for tag, layout in LAYOUTS.items():
        for step in range(3):
            got, header = served(client, "train", tag, step)
            assert header["layout"] == layout
            assert got.tobytes() == saved[f"{step}:{tag}"].tobytes(), (tag, step)
        # the last step is the model's final state, not a stale copy
        assert saved[f"2:{tag}"].tobytes() == saved[f"final:{tag}"].tobytes()
        assert saved[f"0:{tag}"].tobytes() != saved[f"2:{tag}"].tobytes()
    got, header = served(client, "train", "conv/activation", 2)
    assert header["layout"] == "NHWC"
    np.testing.assert_array_equal(got, saved["final:conv/activation"])
    budget = [w for w in result["warnings"] if "over budget_mb" in w]
    assert len(budget) == 1, result["warnings"]
    for where in ("filter_patterns", "patterns"):
        message = result["errors"][where]
        assert "needs Keras' TensorFlow backend" in message
        assert f"runs Keras on '{backend}'" in message
