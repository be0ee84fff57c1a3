"""The timm example of docs/integrations.md, run as written on a timm model built without
pretrained weights (small inputs, a two-batch loader): kernels exact, activations logged.

timm needs an importable ``torchvision``; where there is none built for the installed
``torch`` the test is skipped with that reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tb_convfilters import reader
from tb_convfilters.torch import to_numpy

DOC = Path(__file__).parents[1] / "docs" / "integrations.md"


def example() -> str:
    """The Python block of the doc's timm section."""
    section = DOC.read_text(encoding="utf-8").split("## timm", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_uses_the_torch_helpers_on_a_timm_model():
    code = example()
    assert 'timm.create_model("resnet18", pretrained=False, num_classes=10)' in code
    assert "log_kernels(writer, model, epoch)" in code
    assert len(code.strip().splitlines()) <= 16


def test_the_timm_example_runs_and_logs_exact_kernels(tmp_path, monkeypatch):
    try:
        import timm  # noqa: F401
    except Exception as e:  # a torchvision built for another torch fails with RuntimeError
        pytest.skip(f"timm does not import: {type(e).__name__}: {e}")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    loader = [(x[:4], torch.arange(4)), (x[4:], torch.arange(4, 8))]
    scope = {"loader": loader, "x_val": x[:4]}
    exec(compile(example(), str(DOC), "exec"), scope)
    model = scope["model"]
    assert [e.step for e in reader.entries(tmp_path / "runs", tag="conv1/weight")] == [0, 1, 2]
    got = reader.read(tmp_path / "runs", "timm", "conv1/weight", 2)
    assert got.tobytes() == to_numpy(model.conv1.weight).tobytes()
    assert reader.read(tmp_path / "runs", "timm", "conv1/activation", 2).shape[:2] == (4, 64)
