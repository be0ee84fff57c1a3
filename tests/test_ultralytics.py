"""tb_convfilters.ultralytics.add_filters in real YOLO trainings from a model YAML (CPU).

Ultralytics needs an importable ``torchvision``; where there is none built for the
installed ``torch`` (the CPU build the tests pin has no such wheel on PyPI), the
training tests are skipped with that reason.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import plugin_client
from trainer_support import filters_beside_scalars, our_files, served, steps_of

WORKER = Path(__file__).with_name("ultralytics_worker.py")
ROOT = Path(__file__).parents[1]


def _usable() -> str | None:
    """Why ultralytics cannot train here (None: it can)."""
    try:
        from ultralytics import YOLO  # noqa: F401
    except Exception as e:  # a torchvision built for another torch fails with RuntimeError
        return f"ultralytics does not import: {type(e).__name__}: {e}"
    return None


needs_ultralytics = pytest.mark.skipif(_usable() is not None, reason=str(_usable()))


def train(root: Path, with_filters: bool) -> Path:
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTEST_CURRENT_TEST", None)  # ultralytics turns TensorBoard off under pytest
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(WORKER), str(root), "1" if with_filters else "0"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return Path((root / "save_dir.txt").read_text())


def results(save_dir: Path) -> list[dict]:
    """results.csv without its wall-clock column."""
    with open(save_dir / "results.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "time"} for row in csv.DictReader(f)]


@needs_ultralytics
def test_kernels_exact_in_the_save_dir_and_the_results_unchanged(tmp_path):
    save_dir = train(tmp_path / "with", True)
    assert save_dir == tmp_path / "with" / "runs" / "train"
    (ours,) = our_files(tmp_path / "with")
    assert ours.parent == save_dir  # beside ultralytics' own TensorBoard event file
    snapshots = torch.load(tmp_path / "with" / "snapshots.pt")
    assert sorted(snapshots) == [1, 2]  # epoch + 1, ultralytics' TensorBoard step
    client = plugin_client(save_dir.parent)
    tags = sorted(snapshots[2])
    assert "model.0.conv/weight" in tags and len(tags) >= 10
    for tag in tags:
        assert steps_of(client, "train", tag) == [1, 2], tag
        for step, weights in snapshots.items():
            got, header = served(client, "train", tag, step)
            assert header["layout"] == "OIHW"
            assert got.tobytes() == weights[tag].numpy().tobytes(), (tag, step)
    got, header = served(client, "train", "model.0.conv/activation", 2)
    assert header["layout"] == "NCHW" and got.shape == (2, 8, 32, 32)
    # the same seed without the hook: every loss and metric of every epoch the same
    assert results(train(tmp_path / "without", False)) == results(save_dir)
    filters_beside_scalars(save_dir.parent, "train", "model.0.conv/weight", "train/box_loss")


def test_add_filters_checks_its_arguments(monkeypatch):
    import importlib.util

    find = importlib.util.find_spec  # the module asks only whether ultralytics is installed
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: find("json") if name == "ultralytics" else find(name, *a))
    monkeypatch.delitem(sys.modules, "tb_convfilters.ultralytics", raising=False)
    from tb_convfilters.ultralytics import add_filters

    monkeypatch.delitem(sys.modules, "tb_convfilters.ultralytics")  # imported as if installed

    class Model:
        def __init__(self):
            self.events = []

        def add_callback(self, event, fn):
            self.events.append(event)

    model = Model()
    hook = add_filters(model, every_n_epochs=2)
    assert model.events == ["on_pretrain_routine_start", "on_train_start",
                            "on_train_epoch_end", "on_train_end"]
    assert hook.every_n_epochs == 2
    with pytest.raises(TypeError, match="model of type str has no add_callback"):
        add_filters("yolov8n.pt")
    with pytest.raises(ValueError, match="every_n_epochs=0"):
        add_filters(Model(), every_n_epochs=0)
    with pytest.raises(ValueError, match="log_dir=''"):
        add_filters(Model(), log_dir="")


def test_import_names_the_extra_when_ultralytics_is_missing():
    code = ("import importlib.util, sys\n"
            "find = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda n, *a: None if n == 'ultralytics' else find(n, *a)\n"
            "import tb_convfilters, tb_convfilters.torch\n"
            "try:\n    import tb_convfilters.ultralytics\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install 'tb-convfilters[ultralytics]'" in out, out
