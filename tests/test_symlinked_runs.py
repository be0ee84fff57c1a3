"""Runs reached through a symlinked directory: listed under the link's name, as TensorBoard does."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import PREFIX, http_get, plugin_client, tensorboard, wait_for

from tb_convfilters import Writer, cli, doctor, reader

K = np.random.default_rng(4).standard_normal((3, 3, 2, 4)).astype(np.float32)


@pytest.fixture
def linked(tmp_path):
    """logs/run1 -> real/run1 (a symlinked run), logs/local (a plain run)."""
    real, logs = tmp_path / "real", tmp_path / "logs"
    with Writer(real / "run1") as w:
        w.kernel("conv/kernel", K, 0)
        w.kernel("conv/kernel", K * 2, 1)
    with Writer(logs / "local") as w:
        w.kernel("conv/kernel", K, 0)
    (logs / "run1").symlink_to(real / "run1", target_is_directory=True)
    return logs


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_symlinked_run_is_listed_as_tensorboard_names_it(linked, load_fast):
    with tensorboard(linked, load_fast=load_fast) as base:

        def runs() -> list[str] | None:
            status, body, _ = http_get(base + "/data/runs")
            listed = json.loads(body) if status == 200 else []
            return sorted(listed) if len(listed) == 2 else None

        assert wait_for(runs, 30, 0.5, "TensorBoard's run list") == ["local", "run1"]
        status, body, _ = http_get(base + PREFIX + "tags")
        assert status == 200 and sorted(json.loads(body)) == ["local", "run1"]
        status, body, _ = http_get(base + PREFIX + "steps?run=run1&tag=conv/kernel")
        assert status == 200 and [s["step"] for s in json.loads(body)] == [0, 1]


def test_reader_export_and_doctor_list_the_symlinked_run(linked, tmp_path, capsys):
    assert reader.list(linked) == {"local": {"conv/kernel": [0]}, "run1": {"conv/kernel": [0, 1]}}
    assert reader.read(linked, "run1", "conv/kernel", 1).tobytes() == (K * 2).tobytes()
    assert sorted(plugin_client(linked).get(PREFIX + "tags").json) == ["local", "run1"]
    out = tmp_path / "npy"
    assert cli.main(["export", str(linked), "--out", str(out), "--quiet"]) == 0
    exported = sorted(p.relative_to(out).parts[0] for p in out.rglob("*.npy"))
    assert exported == ["local", "run1", "run1"]
    assert [s.run for s in doctor.logdir_series(linked)] == ["local", "run1"]
    capsys.readouterr()
    assert cli.main(["doctor", str(linked), "--run", "run1"]) in (0, 1)
    assert "1 series in 1 run(s) checked" in capsys.readouterr().out


def test_a_symlink_loop_is_walked_once(linked):
    loop = linked / "local" / "loop"
    loop.symlink_to(linked, target_is_directory=True)  # logs/local/loop -> logs
    (linked / "run1" / "up").symlink_to(linked / "run1", target_is_directory=True)  # to itself
    expected = {"local": {"conv/kernel": [0]}, "run1": {"conv/kernel": [0, 1]}}
    assert reader.list(linked) == expected
    assert sorted(plugin_client(linked).get(PREFIX + "tags").json) == ["local", "run1"]
    # the same directory reached by two links that are no loop is two runs, as in TensorBoard
    (linked / "again").symlink_to(linked / "run1", target_is_directory=True)
    assert reader.list(linked) == {**expected, "again": expected["run1"]}
