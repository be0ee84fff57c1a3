"""A tensorboardX SummaryWriter as the target of tb_convfilters.torch helpers."""

from __future__ import annotations

import json

import pytest

tensorboardX = pytest.importorskip("tensorboardX")
import torch  # noqa: E402
from support import PREFIX, load_npy, plugin_client  # noqa: E402
from torch import nn  # noqa: E402

from tb_convfilters.torch import log_activations, log_kernels, to_numpy  # noqa: E402


def served(client, run, tag, step):
    query = {"run": run, "tag": tag, "step": str(step)}
    response = client.get(PREFIX + "tensor", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return load_npy(response.get_data()), json.loads(response.headers["X-Convfilters-Header"])


def test_tensorboardx_writer_gets_our_records_in_its_logdir(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 3))
    writer = tensorboardX.SummaryWriter(str(tmp_path / "tbx"))
    kept = {}
    x = torch.randn(2, 3, 7, 7)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(3):
        writer.add_scalar("loss", float(step), step)  # the writer's own events still work
        assert log_kernels(writer, model, step) == ["0/weight", "2/weight"]
        with log_activations(writer, model, step, max_samples=2):
            out = model(x)
        kept[step] = {"0/weight": to_numpy(model[0].weight).copy(),
                      "2/weight": to_numpy(model[2].weight).copy(),
                      "0/activation": to_numpy(model[0](x)).copy()}
        optimizer.zero_grad()
        out.square().mean().backward()
        optimizer.step()
    writer.close()
    client = plugin_client(tmp_path)
    for step, values in kept.items():
        for tag, value in values.items():
            got, _ = served(client, "tbx", tag, step)
            assert got.tobytes() == value.tobytes(), (tag, step)
    assert kept[0]["0/weight"].tobytes() != kept[2]["0/weight"].tobytes()
    with pytest.raises(TypeError, match="tensorboardX SummaryWriter"):
        log_kernels(object(), model, 0)
