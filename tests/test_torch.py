"""PyTorch helpers: kernels and activations logged beside a ``SummaryWriter``, read back
through TensorBoard's data provider, the plugin's routes and a real ``tensorboard``."""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings

import ml_dtypes
import numpy as np
import pytest
import torch
from support import PREFIX, http_get, load_npy, load_provider, plugin_client, tensorboard, wait_for
from tensorboard import context
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from tb_convfilters import Writer
from tb_convfilters.torch import flush, log_activations, log_kernels, to_numpy

EXPECTED_LAYOUTS = {
    "c1/weight": "OIW",
    "c2/weight": "OIHW",
    "c3/weight": "OIDHW",
    "t1/weight": "IOW",
    "t2/weight": "IOHW",
    "t3/weight": "IODHW",
    "block.0/weight": "OIHW",
    "fc/weight": "OI",
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 3)
        self.c2 = nn.Conv2d(3, 4, 3)
        self.c3 = nn.Conv3d(1, 2, 2)
        self.t1 = nn.ConvTranspose1d(3, 2, 3)
        self.t2 = nn.ConvTranspose2d(4, 2, 3, groups=2)
        self.t3 = nn.ConvTranspose3d(2, 3, 2)
        self.block = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU())
        self.bn = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):  # (N, 3, 6, 6) images
        y = self.bn(self.block(self.t2(self.c2(x))))
        return self.fc(y.mean(dim=(2, 3)))


def torch_tensor(client, run: str, tag: str, step: int | None = None):
    query = {"run": run, "tag": tag, **({} if step is None else {"step": str(step)})}
    response = client.get(PREFIX + "tensor", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return load_npy(response.get_data()), json.loads(response.headers["X-Convfilters-Header"])


def weights(model: nn.Module) -> dict[str, np.ndarray]:
    return {f"{n}/weight": to_numpy(m.weight).copy() for n, m in model.named_modules()
            if f"{n}/weight" in EXPECTED_LAYOUTS}


def test_summary_writer_model_shown_in_the_plugin(tmp_path):
    torch.manual_seed(0)
    model = Net()
    wrapped = nn.DataParallel(model)  # names come out without "module."
    writer = SummaryWriter(str(tmp_path / "exp"))
    logged = {}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        writer.add_scalar("loss", float(step), step)
        assert sorted(log_kernels(writer, wrapped, step)) == sorted(EXPECTED_LAYOUTS)
        logged[step] = weights(model)
        loss = wrapped(torch.randn(2, 3, 6, 6)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    writer.close()

    assert len(os.listdir(tmp_path / "exp")) == 2  # SummaryWriter's file and ours
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json
    assert {tag: t["layout"] for tag, t in tags["exp"].items()} == EXPECTED_LAYOUTS
    assert tags["exp"]["t2/weight"]["shape"] == [4, 1, 3, 3]  # groups=2: I, O/groups, kH, kW
    assert "ConvTranspose2d" in tags["exp"]["t2/weight"]["description"]
    for step, expected in logged.items():
        for tag, want in expected.items():
            served, header = torch_tensor(client, "exp", tag, step)
            assert header["dtype"] == "float32" and served.tobytes() == want.tobytes(), tag
    assert not np.array_equal(logged[0]["c2/weight"], logged[1]["c2/weight"])
    scalars = load_provider(tmp_path).list_scalars(
        context.RequestContext(), experiment_id="", plugin_name="scalars"
    )
    assert scalars["exp"]["loss"].max_step == 1


@pytest.mark.parametrize(
    "torch_dtype,requested,stored",
    [
        (torch.float64, None, "float64"),
        (torch.float32, None, "float32"),
        (torch.float16, None, "float16"),
        (torch.bfloat16, None, "bfloat16"),
        (torch.float32, "float16", "float16"),
        (torch.float32, "bfloat16", "bfloat16"),
    ],
)
def test_dtypes_round_trip_exactly(tmp_path, torch_dtype, requested, stored):
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 4, 3).to(torch_dtype)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = float("nan")
        conv.weight[0, 0, 0, 1] = float("-inf")
    with Writer(tmp_path / "run") as w:
        assert log_kernels(w, conv, 3, dtype=requested) == ["Conv2d/weight"]
    served, header = torch_tensor(plugin_client(tmp_path), "run", "Conv2d/weight", 3)
    assert header["dtype"] == stored
    source = to_numpy(conv.weight)
    target = ml_dtypes.bfloat16 if stored == "bfloat16" else np.dtype(stored)
    want = source if requested is None else source.astype(target)
    assert want.dtype == target
    if stored == "bfloat16":
        bits = served.view(np.uint32)
        assert not (bits & 0xFFFF).any()
        np.testing.assert_array_equal((bits >> 16).astype(np.uint16), want.view(np.uint16))
    else:
        assert served.tobytes() == want.tobytes()


def test_activations_of_conv_modules_inside_the_block(tmp_path):
    torch.manual_seed(2)
    model = Net().eval()
    images = torch.randn(4, 3, 6, 6)
    with log_activations(tmp_path / "run", model, 5, max_samples=2) as tags:
        model(images)
        model(images * 2)  # maps of the first max_samples samples; firing counts both passes
    assert sorted(tags) == ["block.0/activation", "c2/activation", "t2/activation"]
    assert all(not m._forward_hooks for m in model.modules())  # hooks removed
    flush(tmp_path / "run")  # written in the background

    expected = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: expected.setdefault(n, o.detach()))
             for n, m in model.named_modules() if n in ("c2", "t2", "block.0")]
    model(images)
    for h in hooks:
        h.remove()
    client = plugin_client(tmp_path)
    listed = client.get(PREFIX + "tags").json["run"]
    for name, out in expected.items():
        info = listed[f"{name}/activation"]
        assert (info["kind"], info["layout"]) == ("activation", "NCHW")
        served, _ = torch_tensor(client, "run", f"{name}/activation", 5)
        assert served.tobytes() == out[:2].numpy().tobytes(), name


def test_activation_modules_by_name_unbatched_and_1d_3d(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with Writer(tmp_path / "run") as w:
        with log_activations(w, model, 0, modules=["0"], prefix="net") as tags0:
            model(torch.randn(1, 5, 5))  # unbatched (C, H, W): a conv's output gets N=1
        with log_activations(w, model, 1, modules=["0", nn.ReLU], prefix="net") as tags:
            model(torch.randn(2, 1, 5, 5))
        conv1, conv3 = nn.Conv1d(2, 3, 2), nn.Conv3d(1, 2, 2)
        with log_activations(w, conv1, 1) as tags1:
            conv1(torch.randn(3, 2, 6))
        with log_activations(w, conv3, 1) as tags3:
            conv3(torch.randn(1, 1, 3, 3, 3))
    assert tags0 == ["net/0/activation"] and tags1 == ["Conv1d/activation"]
    assert tags == ["net/0/activation", "net/1/activation"]
    assert tags3 == ["Conv3d/activation"]
    listed = plugin_client(tmp_path).get(PREFIX + "tags").json["run"]
    assert listed["net/0/activation"]["shape"] == [1, 2, 3, 3]
    assert listed["net/1/activation"]["layout"] == "NCHW"
    assert (listed["Conv1d/activation"]["layout"], listed["Conv1d/activation"]["shape"]) == (
        "NCW", [3, 3, 5])
    assert listed["Conv3d/activation"]["layout"] == "NCDHW"

    linear = nn.Sequential(nn.Linear(3, 2))
    message = r"module '0' output has shape \(4, 2\); activations need"
    with pytest.raises(ValueError, match=message):
        with log_activations(tmp_path / "run2", linear, 0, modules=[nn.Linear], raise_errors=True):
            linear(torch.randn(4, 3))
    with pytest.warns(RuntimeWarning, match=message):  # by default the forward goes on
        with log_activations(tmp_path / "run2", linear, 0, modules=[nn.Linear]):
            assert linear(torch.randn(4, 3)).shape == (4, 2)


def test_targets_module_selection_and_errors(tmp_path):
    model = Net()
    tags = log_kernels(str(tmp_path / "p"), model, 0, modules=["c2", nn.Linear], prefix="net/")
    assert tags == ["net/c2/weight", "net/fc/weight"]
    log_kernels(tmp_path / "p", model, 1, modules="c2", max_filters=2, max_channels=[2])
    assert len(os.listdir(tmp_path / "p")) == 1  # one cached writer per path
    flush(tmp_path / "p")  # written in the background
    client = plugin_client(tmp_path)
    _, header = torch_tensor(client, "p", "c2/weight", 1)
    assert (header["filters"], header["channels"], header["shape"]) == ([0, 1], [2], [2, 1, 3, 3])

    with pytest.raises(ValueError, match=r"\['nope'\] are not submodules; names: Net, c1, c2"):
        log_kernels(tmp_path / "p", model, 2, modules=["nope"])
    with pytest.raises(ValueError, match=r"modules \['bn'\] have no conv/linear weight"):
        log_kernels(tmp_path / "p", model, 2, modules=["bn"])
    with pytest.raises(TypeError, match="target of type int is not a torch.utils.tensorboard"):
        log_kernels(3, model, 0)
    with pytest.raises(TypeError, match="module of type str is not a torch.nn.Module"):
        log_kernels(tmp_path / "p", "model", 0)
    with pytest.raises(ValueError, match="step=-2 must be a non-negative integer"):
        log_kernels(tmp_path / "p", model, -2)
    with pytest.raises(ValueError, match="max_samples=0 must be a positive integer"):
        with log_activations(tmp_path / "p", model, 0, max_samples=0):
            pass

    compiled = torch.compile(nn.Sequential(nn.Conv2d(1, 2, 3)))
    assert log_kernels(tmp_path / "compiled", compiled, 0) == ["0/weight"]
    lazy = nn.Sequential(nn.LazyConv2d(4, 3), nn.Conv2d(4, 2, 1))
    assert log_kernels(tmp_path / "lazy", lazy, torch.tensor(7)) == ["1/weight"]  # 0 not built


def test_budget_warning_once_per_writer(tmp_path):
    model = Net()
    with Writer(tmp_path) as w, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            log_kernels(w, model, step, budget_mb=0.0001)
    messages = [str(c.message) for c in caught if "budget_mb" in str(c.message)]
    assert len(messages) == 1
    assert "log_kernels at step 0" in messages[0] and "dtype='float16'" in messages[0]


def test_import_without_torch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "tb_convfilters.torch")
    with pytest.raises(ImportError, match=r"needs PyTorch: pip install 'tb-convfilters\[torch\]'"):
        importlib.import_module("tb_convfilters.torch")


def test_live_steps_in_a_real_tensorboard(tmp_path):
    """SummaryWriter's scalars and our kernels in one run dir, both updating live
    (the Python loader polls every file of a run: the plugin turns on --reload_multifile)."""
    logdir = tmp_path / "logs"
    model = Net()
    writer = SummaryWriter(str(logdir / "exp"))
    writer.add_scalar("loss", 1.0, 0)
    log_kernels(writer, model, 0, modules=["c2"])
    writer.flush()
    with tensorboard(logdir, load_fast="false") as base:
        def steps_seen():
            status, body, _ = http_get(
                base + PREFIX + "steps?run=exp&tag=c2/weight", timeout=10
            )
            return [s["step"] for s in json.loads(body)] if status == 200 else []

        assert wait_for(steps_seen, what="step 0") == [0]
        # Now both files grow; TensorBoard must pick up both.
        log_kernels(writer, model, 1, modules=["c2"])
        writer.add_scalar("loss", 0.5, 1)
        writer.flush()
        assert wait_for(lambda: steps_seen() == [0, 1], what="step 1 of c2/weight")

        def scalar_steps():
            status, body, _ = http_get(
                base + "/data/plugin/scalars/scalars?run=exp&tag=loss", timeout=10
            )
            return [row[1] for row in json.loads(body)] if status == 200 else []

        assert wait_for(lambda: scalar_steps() == [0, 1], what="scalar step 1")
        status, body, _ = http_get(base + PREFIX + "tensor?run=exp&tag=c2/weight&step=1")
        assert status == 200 and load_npy(body).tobytes() == to_numpy(model.c2.weight).tobytes()
    writer.close()


def test_an_earlier_failure_is_warned_under_its_own_tag_and_the_callers_record_is_kept(tmp_path):
    import shutil

    from tb_convfilters import reader

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3))
    run = tmp_path / "run"
    w = Writer(run)
    w.kernel("other", np.ones((3, 3, 1, 2), np.float32), 0)
    w.flush()
    shutil.rmtree(run)
    w.kernel("other", np.ones((3, 3, 1, 2), np.float32), 1)  # fails in the background
    w._queue.wait()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert log_kernels(w, model, 2) == ["0/weight", "1/weight"]  # the first call raised it
        w.flush()
        assert reader.list(tmp_path) == {"run": {"0/weight": [2], "1/weight": [2]}}
        shutil.rmtree(run)  # now a module's own record fails
        log_kernels(w, model, 3)
        w._queue.wait()
        log_kernels(w, model, 4)  # reports 0/weight at step 3, warned under its own tag
        w.close()
    ours = [str(c.message) for c in caught if "log_kernels" in str(c.message)]
    assert len(ours) == 2, ours
    assert "writing an earlier record failed" in ours[0] and "tag 'other' step 1" in ours[0]
    assert "tag '0/weight' step 3" in ours[1]  # (1/weight went to a new file)
    assert reader.list(tmp_path) == {"run": {"0/weight": [4], "1/weight": [3, 4]}}
