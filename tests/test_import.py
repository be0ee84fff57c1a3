"""``tb-convfilters import`` / ``importing.import_models``: checkpoints saved by real Keras,
TensorFlow, PyTorch loops and a hand-built ONNX model become runs whose kernels equal the
saved weights bit for bit, tagged and laid out as the callbacks log them; files whose load
would run code are refused; a failed import leaves nothing behind."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from tb_convfilters import Writer, cli, reader
from tb_convfilters.importing import ImportFailure, import_models, steps

SEED = 3


def _run(logdir, run):
    """{step: {tag: (array, layout)}} of a run, read back through the reader."""
    out: dict[int, dict] = {}
    for e in reader.entries(logdir, run=run):
        header = e.header()
        if header.get("kind") == "kernel":
            out.setdefault(e.step, {})[e.tag] = (
                reader.read(logdir, run, e.tag, e.step),
                header["layout"],
            )
    return out


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# --- Keras: a real fit saving .keras and .weights.h5 per epoch, FiltersCallback beside it


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    import keras
    import tensorflow as tf

    from tb_convfilters.keras import FiltersCallback

    root = tmp_path_factory.mktemp("keras")
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.SeparableConv2D(3, 3, padding="same")(x)
    x = keras.layers.Conv2DTranspose(2, 2, strides=2)(x)
    x = keras.layers.Conv2D(2, 1, name="head")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    ckpt = tf.train.Checkpoint(model=model)
    manager = tf.train.CheckpointManager(ckpt, root / "tf", max_to_keep=None)
    save_tf = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: manager.save(epoch + 1)
    )
    rng = np.random.default_rng(SEED)
    data = rng.normal(size=(16, 8, 8, 2)).astype("float32"), rng.normal(size=(16, 1))
    model.fit(
        *data,
        epochs=3,
        batch_size=8,
        verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(str(root / "keras" / "epoch_{epoch:02d}.keras")),
            keras.callbacks.ModelCheckpoint(
                str(root / "weights" / "weights.{epoch:02d}-{loss:.2f}.weights.h5"),
                save_weights_only=True,
            ),
            save_tf,
            FiltersCallback(root / "logs"),  # run "train",
        ],
    )
    model.save(root / "final.h5")
    model.export(str(root / "savedmodel"), verbose=False)
    return root


@pytest.mark.parametrize("folder", ["keras", "weights", "tf"])
def test_keras_and_tf_checkpoints_equal_the_logged_kernels(keras_files, tmp_path, folder):
    logged = _run(keras_files / "logs", "train")
    summary = import_models([keras_files / folder], tmp_path, progress=False)
    (run,) = summary.runs
    assert run.run == folder and run.steps_from == steps.FROM_NAMES
    assert [c.step for c in run.checkpoints] == [1, 2, 3]  # epoch_01, weights.01-..., ckpt-1
    imported = _run(tmp_path, folder)
    assert sorted(imported) == [1, 2, 3]
    for step, kernels in imported.items():
        want = logged[step - 1]  # FiltersCallback logs epoch e as step e; files count from 1
        assert set(kernels) == set(want)
        for tag, (array, layout) in kernels.items():
            assert layout == want[tag][1], tag
            assert _same(array, want[tag][0]), (folder, step, tag)
    layouts = {tag: layout for tag, (_, layout) in imported[1].items()}
    assert layouts == {
        "stem/kernel": "HWIO",
        "depthwise_conv2d/kernel": "HWIM",
        "separable_conv2d/depthwise": "HWIM",
        "separable_conv2d/pointwise": "HWIO",
        "conv2d_transpose/kernel": "HWOI",
        "head/kernel": "HWIO",
    }


@pytest.mark.parametrize("name", ["final.h5", "savedmodel"])
def test_legacy_h5_and_savedmodel(keras_files, tmp_path, name):
    logged = _run(keras_files / "logs", "train")
    summary = import_models(keras_files / name, tmp_path, run="final", progress=False)
    assert summary.runs[0].steps_from == steps.FROM_DEFAULT
    (kernels,) = _run(tmp_path, "final").values()
    last = logged[max(logged)]
    assert set(kernels) == set(last)
    for tag, (array, layout) in kernels.items():
        assert layout == last[tag][1] and _same(array, last[tag][0]), tag


# --- PyTorch: a real loop with one frozen conv, .pt and .safetensors per epoch, log_kernels beside


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    import torch
    from safetensors.torch import save_file
    from torch import nn

    from tb_convfilters.torch import log_kernels

    root = tmp_path_factory.mktemp("torch")
    torch.manual_seed(SEED)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(2, 4, 3, padding=1))
    model.add_module("act", nn.ReLU())
    model.add_module("conv2", nn.Conv2d(4, 4, 3, padding=1))
    model.add_module("up", nn.ConvTranspose2d(4, 3, 2, stride=2))
    model.conv2.requires_grad_(False)  # frozen: the doctor must find it in the imported run
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x = torch.randn(8, 2, 6, 6)
    writer = Writer(root / "logs" / "logged")
    (root / "pt").mkdir()
    (root / "st").mkdir()
    for epoch in range(1, 4):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        torch.save(model.state_dict(), root / "pt" / f"epoch_{epoch}.pt")
        save_file(model.state_dict(), str(root / "st" / f"step-{epoch * 10}.safetensors"))
        log_kernels(writer, model, epoch, modules=(nn.Conv2d, nn.ConvTranspose2d))
    writer.close()
    return root


TORCH_LAYOUTS = {"conv1/weight": "OIHW", "conv2/weight": "OIHW", "up/weight": "IOHW"}


@pytest.mark.parametrize(("folder", "step_of"), [("pt", lambda e: e), ("st", lambda e: 10 * e)])
def test_torch_files_equal_the_logged_kernels(torch_files, tmp_path, folder, step_of):
    logged = _run(torch_files / "logs", "logged")
    summary = import_models(
        torch_files / folder, tmp_path, run="imp", layouts=["up/*=IOHW"], progress=False
    )
    steps_written = [c.step for c in summary.runs[0].checkpoints]
    assert steps_written == [step_of(e) for e in (1, 2, 3)]
    imported = _run(tmp_path, "imp")
    for epoch in (1, 2, 3):
        kernels = imported[step_of(epoch)]
        assert {t: layout for t, (_, layout) in kernels.items()} == TORCH_LAYOUTS
        for tag, (array, _) in kernels.items():
            assert _same(array, logged[epoch][tag][0]), (folder, epoch, tag)


def test_torch_transposed_weight_needs_its_layout(torch_files, tmp_path):
    """A state_dict does not say ConvTranspose2d: without the override it is OIHW."""
    import_models(torch_files / "pt" / "epoch_1.pt", tmp_path, run="r", progress=False)
    ((_, kernels),) = _run(tmp_path, "r").items()
    assert kernels["up/weight"][1] == "OIHW"


def test_doctor_finds_the_frozen_layer_of_imported_checkpoints(torch_files, tmp_path, capsys):
    import json

    assert cli.main(["import", str(torch_files / "pt"), "--logdir", str(tmp_path), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["doctor", str(tmp_path), "--json", "--problems", "frozen"]) == 1
    found = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(f["run"], f["tag"], f["problem"]) for f in found] == [("pt", "conv2/weight", "frozen")]


def test_compare_aligns_an_imported_run_with_a_logged_one(torch_files, tmp_path):
    from tb_convfilters import compare

    shutil.copytree(torch_files / "logs" / "logged", tmp_path / "logged")
    import_models(
        torch_files / "pt", tmp_path, run="imported", layouts={"up/*": "IOHW"}, progress=False
    )
    matches = compare.align(tmp_path, "imported", "logged", step=3)
    assert list(matches) == list(TORCH_LAYOUTS)
    for tag, m in matches.items():
        assert np.array_equal(m.permutation, np.arange(len(m.permutation))), tag
        assert np.allclose(m.cosine, 1.0), tag


# --- ONNX, hand-built


def _onnx_model(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    weights = {
        "conv1.weight": rng.normal(size=(4, 3, 3, 3)).astype("float32"),
        "up.weight": rng.normal(size=(4, 2, 2, 2)).astype("float16"),
        "bias": rng.normal(size=(4,)).astype("float32"),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "bias"], ["h"], name="c1"),
        helper.make_node("Cast", ["h"], ["h16"], to=TensorProto.FLOAT16),
        helper.make_node("ConvTranspose", ["h16", "up.weight"], ["y"], name="up"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)],
        [numpy_helper.from_array(w, name) for name, w in weights.items()],
    )
    onnx.save(helper.make_model(graph), str(path))
    return weights


def test_onnx_initializers_of_conv_nodes(tmp_path):
    weights = _onnx_model(tmp_path / "model.onnx")
    import_models(tmp_path / "model.onnx", tmp_path / "logs", progress=False)
    ((step, kernels),) = _run(tmp_path / "logs", "model").items()
    assert step == 0
    assert {t: layout for t, (_, layout) in kernels.items()} == {
        "conv1/weight": "OIHW",
        "up/weight": "IOHW",
    }
    assert _same(kernels["conv1/weight"][0], weights["conv1.weight"])
    assert _same(kernels["up/weight"][0], weights["up.weight"])


# --- refusals and errors: nothing runs, nothing is written


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path, capsys, how):
    import torch

    marker = tmp_path / "ran"
    path = tmp_path / "model.pt"
    payload = {"conv.weight": torch.zeros(2, 2, 3, 3), "extra": _RunsCode(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    logdir = tmp_path / "logs"
    assert cli.main(["import", str(path), "--logdir", str(logdir)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "run code" in err and "state_dict" in err and str(path) in err
    assert not marker.exists(), "loading the file ran its code"
    assert not logdir.exists() or not any(logdir.iterdir())


def test_torchscript_is_refused(tmp_path):
    import torch

    path = tmp_path / "scripted.pt"
    torch.jit.script(torch.nn.Conv2d(1, 2, 3)).save(str(path))
    with pytest.raises(ImportFailure, match="refused: .* TorchScript archive holds code"):
        import_models(path, tmp_path / "logs", progress=False)


def test_a_corrupt_file_in_the_middle_leaves_no_run(torch_files, tmp_path):
    folder = tmp_path / "ckpts"
    shutil.copytree(torch_files / "pt", folder)
    broken = folder / "epoch_2.pt"
    broken.write_bytes(broken.read_bytes()[:200])
    logdir = tmp_path / "logs"
    logdir.mkdir()
    with pytest.raises(ImportFailure, match="epoch_2.pt"):
        import_models(folder, logdir, progress=False)
    with pytest.raises(ImportFailure, match="epoch_2.pt"):
        import_models(folder, logdir, run="group/seed1", progress=False)
    assert list(logdir.iterdir()) == []  # neither the run nor its temporary or parent folder


def _state(tmp_path: Path, name: str, tensors: dict) -> Path:
    import torch

    path = tmp_path / name
    torch.save({k: torch.as_tensor(v) for k, v in tensors.items()}, path)
    return path


def test_errors_name_the_file_and_tensor(tmp_path):
    logdir = tmp_path / "logs"
    with pytest.raises(ImportFailure, match="no such file"):
        import_models(tmp_path / "missing.pt", logdir, progress=False)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ImportFailure, match=r"notes\.txt: unknown format; known formats: .*\.pt"):
        import_models(tmp_path / "notes.txt", logdir, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImportFailure, match="a folder without checkpoints"):
        import_models(tmp_path / "empty", logdir, progress=False)
    linear = _state(tmp_path, "linear.pt", {"fc.weight": np.ones((3, 4), "float32")})
    with pytest.raises(ImportFailure, match=r"linear\.pt: no conv kernels"):
        import_models(linear, logdir, progress=False)
    # an HWIO kernel in a state_dict: read as OIHW its spatial axes are 16 x 32
    odd = _state(tmp_path, "odd.pt", {"c.weight": np.ones((3, 3, 16, 32), "float32")})
    with pytest.raises(ImportFailure, match=r"odd\.pt: tensor 'c\.weight' .*fits HWIO"):
        import_models(odd, logdir, progress=False)
    assert not logdir.exists() or list(logdir.iterdir()) == []
    import_models(odd, logdir, layouts={"c/weight": "HWIO"}, progress=False)  # the fix it names
    assert _run(logdir, "odd")[0]["c/weight"][1] == "HWIO"


def test_include_exclude_and_step(torch_files, tmp_path):
    import_models(
        torch_files / "pt" / "epoch_3.pt",
        tmp_path,
        run="r",
        step=7,
        include="conv*",
        exclude=["conv2/*"],
        progress=False,
    )
    assert {s: sorted(k) for s, k in _run(tmp_path, "r").items()} == {7: ["conv1/weight"]}
    with pytest.raises(ImportFailure, match="the filters left out: conv1/weight"):
        import_models(torch_files / "pt" / "epoch_3.pt", tmp_path, run="s", include="nothing*")
    with pytest.raises(ValueError, match="single checkpoint"):
        import_models(torch_files / "pt", tmp_path, run="t", step=1)
    with pytest.raises(ValueError, match="already exists"):
        import_models(torch_files / "pt" / "epoch_3.pt", tmp_path, run="r")


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("epoch_12", 12),
        ("ckpt-1200", 1200),
        ("weights.05-0.43", 5),
        ("epoch=3-step=300", 300),
        ("model.ckpt-1000", 1000),
        ("resnet50_epoch_7", 7),
        ("0012", 12),
        ("final", None),
        ("resnet50_v2", None),
    ],
)
def test_step_from_name(name, step):
    assert steps.step_from_name(name) == step


def test_folder_without_numbers_takes_the_modification_order(torch_files, tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    for i, name in enumerate(["last", "first", "middle"]):
        shutil.copy(torch_files / "pt" / f"epoch_{i + 1}.pt", folder / f"{name}.pt")
    for when, name in enumerate(["first", "middle", "last"]):
        os.utime(folder / f"{name}.pt", (1_000_000 + when, 1_000_000 + when))
    summary = import_models(folder, tmp_path / "logs", progress=False)
    (run,) = summary.runs
    assert run.steps_from == steps.FROM_MTIME
    assert {Path(c.path).name: c.step for c in run.checkpoints} == {
        "first.pt": 0,
        "middle.pt": 1,
        "last.pt": 2,
    }
    assert "steps from the modification order" in str(summary)


def test_cli_imports_and_reports(torch_files, tmp_path, capsys):
    assert (
        cli.main(["import", str(torch_files / "st"), "--logdir", str(tmp_path), "--run", "a/b"])
        == 0
    )
    out = capsys.readouterr().out
    assert "run 'a/b': 3 checkpoint(s), steps 10..30 (steps from the file names)" in out
    assert sorted(_run(tmp_path, "a/b")) == [10, 20, 30]
    argv = ["import", str(torch_files / "st"), str(torch_files / "pt"), "--logdir", str(tmp_path)]
    assert cli.main([*argv, "--run", "x"]) == 2
    assert "names one run, but the paths make 2" in capsys.readouterr().err
    assert cli.main([*argv, "--layout", "up*"]) == 2
    assert "PATTERN=LAYOUT" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["a.keras", "b.weights.h5", "c.h5"])
def test_nested_keras_model_tags_are_the_callbacks(tmp_path, name):
    """A backbone model inside a Sequential: tags are its layers' names, as FiltersCallback's."""
    import keras

    from tb_convfilters.keras import layers

    inner_in = keras.Input((8, 8, 2))
    y = keras.layers.Conv2D(3, 3, name="inner_conv")(inner_in)
    inner = keras.Model(inner_in, keras.layers.Conv2D(3, 3)(y), name="backbone")
    model = keras.Sequential([keras.Input((8, 8, 2)), inner, keras.layers.Conv2D(2, 1)])
    path = tmp_path / name
    model.save_weights(path) if name.endswith(".weights.h5") else model.save(path)
    import_models(path, tmp_path / "logs", run="r", progress=False)
    want = {
        part.tag: (part.layout, getattr(layer, part.variable_name).numpy())
        for layer in layers.select_layers(model, None)
        for part in layers.kernel_parts(layer)
    }
    (got,) = _run(tmp_path / "logs", "r").values()
    assert set(got) == set(want) and len(want) == 3 and "inner_conv/kernel" in want
    for tag, (array, layout) in got.items():
        assert layout == want[tag][0] and _same(array, want[tag][1]), tag


def test_state_dict_inside_a_checkpoint_dict_and_from_data_parallel(tmp_path):
    import torch

    weight = torch.randn(4, 2, 3, 3)
    path = tmp_path / "epoch=2-step=40.ckpt"  # Lightning's name; a training script's dict
    torch.save(
        {"epoch": 2, "state_dict": {"module.conv.weight": weight}, "optimizer": {"lr": 0.1}}, path
    )
    summary = import_models(path, tmp_path / "logs", progress=False)
    assert summary.runs[0].checkpoints[0].step == 40
    assert _same(reader.read(tmp_path / "logs", "epoch=2-step=40", "conv/weight"), weight.numpy())


def test_a_sequential_savedmodel_is_tagged_as_the_callback_tags_it(tmp_path):
    import keras

    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(2, 3, name="c1"),
            keras.layers.Conv2D(3, 3, name="c2"),
        ]
    )
    model.export(str(tmp_path / "sm"), verbose=False)
    import_models([tmp_path / "sm"], tmp_path / "logs", run="sm", progress=False)
    kernels = _run(tmp_path / "logs", "sm")
    (step,) = kernels
    assert sorted(kernels[step]) == ["c1/kernel", "c2/kernel"]  # not sequential/c1/kernel
    for layer in ("c1", "c2"):
        assert _same(kernels[step][f"{layer}/kernel"][0], model.get_layer(layer).kernel.numpy())
