"""The filter doctor on a small PyTorch CNN with the same four planted problems."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import PREFIX, plugin_client
from test_doctor import COPY, DEAD, EPOCHS, EXPLODING, ORIGINAL, planted, synthetic_images

from tb_convfilters import Writer, doctor

TORCH_RUNS = ("healthy", "dead", "exploding", "duplicate", "frozen")


def train_torch(logdir: str, problem: str, seed: int = 0, epochs: int = EPOCHS) -> None:
    """conv1 -> relu -> conv2 -> relu -> pool -> linear, a few epochs, `problem` planted."""
    torch.manual_seed(seed)
    conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
    conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
    head = torch.nn.Linear(8, 2)
    with torch.no_grad():
        if problem == "dead":
            conv1.bias[DEAD] = -50.0
        if problem == "duplicate":
            conv1.weight[COPY] = conv1.weight[ORIGINAL]
            conv1.bias[COPY] = conv1.bias[ORIGINAL]
            conv2.weight[:, COPY] = conv2.weight[:, ORIGINAL]  # keeps the pair in lockstep
    if problem == "frozen":
        conv2.requires_grad_(False)

    def features(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a1 = torch.relu(conv1(x))
        return a1, torch.relu(conv2(a1))

    params = [p for m in (conv1, conv2, head) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    images, labels = synthetic_images(seed=seed)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y_all = torch.from_numpy(labels).long()

    with Writer(logdir) as w:

        def log(step: int) -> None:
            with torch.no_grad():
                maps = features(x_all[: doctor.DEAD_MIN_INPUTS])  # 8 maps stored
            for name, conv, fmap in zip(("conv1", "conv2"), (conv1, conv2), maps, strict=True):
                w.kernel(f"{name}/kernel", conv.weight.detach().numpy(), step, layout="OIHW")
                w.activation(f"{name}/activation", fmap.numpy(), step, layout="NCHW", max_samples=8)

        log(0)
        for epoch in range(epochs):
            for i in range(0, len(x_all), 32):
                _, a2 = features(x_all[i : i + 32])
                loss = torch.nn.functional.cross_entropy(head(a2.mean((2, 3))), y_all[i : i + 32])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if problem == "exploding":
                with torch.no_grad():
                    conv2.weight[EXPLODING] *= 10
            log(epoch + 1)


@pytest.fixture(scope="module")
def torch_logdir(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("torch")
    for problem in TORCH_RUNS:
        train_torch(str(logdir / problem), problem)
    return logdir


def test_torch_planted_problems(torch_logdir):
    findings = {run: doctor.diagnose(torch_logdir, run=run) for run in TORCH_RUNS}
    assert findings["healthy"] == []
    assert planted(findings["dead"]) == {("conv1/activation", f, "dead") for f in DEAD}
    assert planted(findings["exploding"]) == {("conv2/kernel", f, "exploding") for f in EXPLODING}
    assert planted(findings["duplicate"]) == {("conv1/kernel", COPY, "duplicate")}
    assert findings["duplicate"][0].detail["other_filter"] == ORIGINAL
    assert findings["duplicate"][0].first_step == 0
    assert planted(findings["frozen"]) == {("conv2/kernel", None, "frozen")}
    assert findings["frozen"][0].first_step == 1
    for f in findings["exploding"]:
        assert f.first_step in (1, 2) and f.detail["norm_last"] > 1000 * f.detail["norm_first"]


def test_torch_findings_route(torch_logdir):
    body = plugin_client(torch_logdir).get(PREFIX + "findings").json
    assert body["series"] == 4 * len(TORCH_RUNS)
    assert body["findings"] == [f.to_json() for f in doctor.diagnose(torch_logdir)]
    assert len(body["findings"]) == len(DEAD) + len(EXPLODING) + 2
    assert np.isfinite([f["first_step"] for f in body["findings"]]).all()
