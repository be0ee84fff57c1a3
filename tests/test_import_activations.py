"""``import_models(sample_inputs=)`` / ``--sample-inputs``: the models of ``.keras`` checkpoints,
ONNX files and TorchScript archives run on sample inputs record activations, firing and
dataset examples equal to what the callbacks record for the same weights; files of weights
only and ``Lambda`` layers are refused before anything is written or run."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from tb_convfilters import Writer, cli, reader
from tb_convfilters._record import encoding
from tb_convfilters.importing import ImportFailure, import_models

SEED = 5


def _records(logdir, run, kind):
    """{step: {tag: entry}} of the records of `kind` in a run."""
    out: dict[int, dict] = {}
    for e in reader.entries(logdir, run=run):
        if e.header().get("kind") == kind:
            out.setdefault(e.step, {})[e.tag] = e
    return out


def _activations(logdir, run):
    """{step: {tag: (maps, stats blob: per-filter stats and firing)}}."""
    return {
        step: {tag: (e.array(), e._blob(encoding.STATS)) for tag, e in tags.items()}
        for step, tags in _records(logdir, run, "activation").items()
    }


def _same_examples(a, b, *, exact: bool, field: bool = True) -> None:
    assert np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.positions, b.positions)
    assert np.array_equal(a.channels, b.channels)
    if exact:
        assert a.values.tobytes() == b.values.tobytes()
    else:
        np.testing.assert_allclose(a.values, b.values, rtol=1e-5, atol=1e-6)
    if field:
        assert a.field == b.field
        assert (a.maps is None) == (b.maps is None)
    assert a.inputs is not None and b.inputs is not None
    assert np.array_equal(a.inputs, b.inputs) and a.input_layout == b.input_layout


# --- Keras: .keras checkpoints per epoch and FiltersCallback(sample_inputs=) in the same fit


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory):
    import keras

    from tb_convfilters.keras import FiltersCallback

    root = tmp_path_factory.mktemp("keras_act")
    keras.utils.set_random_seed(SEED)
    inp = keras.Input((10, 10, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inp)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(3, 3, name="head")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(1)(x))
    model.compile("adam", "mse")
    rng = np.random.default_rng(SEED)
    data = rng.normal(size=(32, 10, 10, 2)).astype("float32"), rng.normal(size=(32, 1))
    probe = rng.normal(size=(40, 10, 10, 2)).astype("float32")
    np.save(root / "probe.npy", probe)
    model.fit(
        *data,
        epochs=3,
        batch_size=8,
        verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(str(root / "ckpts" / "epoch_{epoch:02d}.keras")),
            FiltersCallback(root / "logs", sample_inputs=probe, batch_size=16),  # run "train"
        ],
    )
    return root


def test_keras_checkpoints_record_what_the_callback_logged(keras_run, tmp_path, capsys):
    """Bit-exact: the same weights run through the same probe model code, in the same
    batches, on the same CPU kernels."""
    logdir = tmp_path / "logs"
    argv = ["import", str(keras_run / "ckpts"), "--logdir", str(logdir), "--run", "imp"]
    argv += ["--sample-inputs", str(keras_run / "probe.npy"), "--batch-size", "16"]
    assert cli.main(argv) == 0
    assert "2 kernel tag(s), 2 activation tag(s)" in capsys.readouterr().out
    logged = _activations(keras_run / "logs", "train")
    imported = _activations(logdir, "imp")
    assert sorted(imported) == [1, 2, 3] and sorted(logged) == [0, 1, 2]
    for epoch in (0, 1, 2):
        got, want = imported[epoch + 1], logged[epoch]  # epoch_01.keras is epoch 0's end
        assert set(got) == set(want) == {"stem/activation", "head/activation"}
        for tag, (maps, stats) in got.items():
            assert maps.tobytes() == want[tag][0].tobytes(), (epoch, tag)
            assert stats == want[tag][1], (epoch, tag)  # firing over all 40 inputs included
        for tag in got:
            a = reader.examples(logdir, "imp", tag, step=epoch + 1)
            b = reader.examples(keras_run / "logs", "train", tag, step=epoch)
            _same_examples(a, b, exact=True)
            assert a.field is not None and a.ranked == 40
    # the probe inputs are stored once for the run, not once per checkpoint
    inputs = [t for t in reader.list(logdir)["imp"] if t.startswith("examples_inputs/")]
    assert len(inputs) == 1 and reader.list(logdir)["imp"][inputs[0]] == [1]


def test_keras_max_samples_examples_and_include(keras_run, tmp_path):
    summary = import_models(
        keras_run / "ckpts" / "epoch_02.keras",
        tmp_path,
        run="r",
        include="stem/*",
        sample_inputs=np.load(keras_run / "probe.npy"),
        max_samples=3,
        examples=2,
        progress=False,
    )
    (c,) = summary.runs[0].checkpoints
    assert c.tags == ["stem/kernel"] and c.activations == ["stem/activation"]
    ((maps, _),) = _activations(tmp_path, "r")[2].values()
    assert maps.shape == (3, 10, 10, 4)
    assert reader.examples(tmp_path, "r", "stem/activation").indices.shape == (4, 2)
    with pytest.raises(ValueError, match="examples set the activations .* give them too"):
        import_models(keras_run / "ckpts", tmp_path, run="s", examples=3, progress=False)


def test_a_lambda_is_refused_by_safe_mode_and_runs_nothing(tmp_path):
    import keras

    marker = tmp_path / "ran"
    where = str(marker)  # (a str: Keras serializes the closure)
    inp = keras.Input((6, 6, 1))
    touch = keras.layers.Lambda(lambda t: (__import__("pathlib").Path(where).touch(), t)[1])
    model = keras.Model(inp, keras.layers.Conv2D(2, 3)(touch(inp)))
    model.save(tmp_path / "lam.keras")
    marker.unlink(missing_ok=True)  # building the model called it; loading must not
    logdir = tmp_path / "logs"
    x = np.ones((4, 6, 6, 1), "float32")
    with pytest.raises(ImportFailure, match="refused by Keras safe mode") as e:
        import_models(tmp_path / "lam.keras", logdir, sample_inputs=x, progress=False)
    assert "lam.keras" in str(e.value) and "without sample inputs" in str(e.value)
    assert not marker.exists(), "loading the file ran its Lambda"
    assert not logdir.exists() or not any(logdir.iterdir())
    import_models(tmp_path / "lam.keras", logdir, progress=False)  # the kernels, as it says
    assert not marker.exists()


def test_an_unregistered_custom_class_says_what_to_do(tmp_path):
    import keras

    class Doubler(keras.layers.Layer):
        def call(self, t):
            return t * 2

    keras.Sequential([keras.Input((6, 6, 1)), Doubler(), keras.layers.Conv2D(2, 3, name="c")]).save(
        tmp_path / "custom.keras"
    )
    x = np.ones((2, 6, 6, 1), "float32")
    with pytest.raises(ImportFailure, match="'Doubler' is a custom class that is not registered"):
        import_models(tmp_path / "custom.keras", tmp_path / "logs", sample_inputs=x)
    with keras.saving.custom_object_scope({"Doubler": Doubler}):  # the fix it names
        summary = import_models(
            tmp_path / "custom.keras", tmp_path / "logs", sample_inputs=x, progress=False
        )
    (c,) = summary.runs[0].checkpoints
    assert c.tags == ["c/kernel"] and c.activations == ["c/activation"]


# --- PyTorch models: exported to ONNX, scripted to TorchScript; log_sample_activations beside


def _torch_model():
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    layers = OrderedDict(
        conv1=nn.Conv2d(2, 4, 3, padding=1),
        act=nn.ReLU(),
        pool=nn.MaxPool2d(2),
        conv2=nn.Conv2d(4, 3, 3, stride=2, dilation=1),
        up=nn.ConvTranspose2d(3, 2, 2, stride=2),
    )
    return nn.Sequential(layers).eval()


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    import torch

    from tb_convfilters.torch import log_sample_activations

    root = tmp_path_factory.mktemp("torch_act")
    model = _torch_model()
    rng = np.random.default_rng(SEED)
    probe = rng.normal(size=(30, 2, 12, 12)).astype("float32")
    np.save(root / "probe.npy", probe)
    x = torch.from_numpy(probe)
    with Writer(root / "logs" / "logged") as w:
        log_sample_activations(w, model, 0, x, batch_size=16)
    torch.onnx.export(
        model,
        (x[:2],),
        str(root / "model.onnx"),
        dynamo=False,
        input_names=["x"],
        dynamic_axes={"x": {0: "n"}},
    )
    torch.jit.script(model).save(str(root / "scripted.pt"))
    return root, model


def test_onnx_activations_equal_torch(torch_run, tmp_path):
    """Within float tolerance: onnxruntime's convolutions are not torch's; the ranking,
    positions and receptive fields (walked from the Conv attributes) are the same."""
    root, model = torch_run
    summary = import_models(
        root / "model.onnx",
        tmp_path,
        run="onnx",
        sample_inputs=root / "probe.npy",
        batch_size=16,
        progress=False,
    )
    tags = ["conv1/activation", "conv2/activation", "up/activation"]
    assert summary.runs[0].checkpoints[0].activations == tags
    logged = _activations(root / "logs", "logged")[0]
    got = _activations(tmp_path, "onnx")[0]
    assert set(got) == set(logged) == set(tags)
    for tag in tags:
        np.testing.assert_allclose(got[tag][0], logged[tag][0], rtol=1e-5, atol=1e-5)
        a = reader.examples(tmp_path, "onnx", tag)
        b = reader.examples(root / "logs", "logged", tag)
        _same_examples(a, b, exact=False)
        header = _records(tmp_path, "onnx", "activation")[0][tag].header()
        assert header["layout"] == "NCHW"
    from tb_convfilters.torch import receptive_field

    assert reader.examples(tmp_path, "onnx", "conv2/activation").field == receptive_field(
        model, "conv2"
    )
    assert reader.examples(tmp_path, "onnx", "up/activation").field is None  # unknown: maps


def test_torchscript_activations_equal_torch(torch_run, tmp_path):
    """Bit-exact maps and ranking: the compiled children run the same aten kernels. The
    receptive field is unknown through TorchScript: the examples keep their maps."""
    import torch

    root, model = torch_run
    summary = import_models(
        root / "scripted.pt",
        tmp_path,
        run="ts",
        sample_inputs=root / "probe.npy",
        batch_size=16,
        progress=False,
    )
    (c,) = summary.runs[0].checkpoints
    assert c.format == "torchscript" and c.note is None
    kernels = _records(tmp_path, "ts", "kernel")[0]
    assert {t: e.header()["layout"] for t, e in kernels.items()} == {
        "conv1/weight": "OIHW",
        "conv2/weight": "OIHW",
        "up/weight": "IOHW",  # the archive keeps the class: no override needed
    }
    for tag, e in kernels.items():
        want = model.get_submodule(tag.split("/")[0]).weight.detach().numpy()
        assert e.array().tobytes() == want.tobytes(), tag
    logged = _activations(root / "logs", "logged")[0]
    got = _activations(tmp_path, "ts")[0]
    assert set(got) == set(logged)
    for tag, (maps, stats) in got.items():
        assert maps.tobytes() == logged[tag][0].tobytes() and stats == logged[tag][1], tag
        a = reader.examples(tmp_path, "ts", tag)
        b = reader.examples(root / "logs", "logged", tag)
        _same_examples(a, b, exact=True, field=False)
        assert a.field is None and a.maps is not None

    # not a Sequential: kernels only, and the report says why
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 2, 3)

        def forward(self, x):
            return self.conv(x).relu()

    torch.jit.script(Net()).save(str(tmp_path / "net.pt"))
    summary = import_models(
        tmp_path / "net.pt", tmp_path, sample_inputs=root / "probe.npy", progress=False
    )
    (c,) = summary.runs[0].checkpoints
    assert c.tags == ["conv/weight"] and c.activations == []
    assert "nn.Sequential" in c.note and "note: no activations" in str(summary)


# --- files without the architecture


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    import keras
    import tensorflow as tf
    import torch
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("weights_only")
    sd = {"conv.weight": torch.randn(2, 1, 3, 3)}
    torch.save(sd, root / "a.pt")
    save_file(sd, str(root / "b.safetensors"))
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(2, 3)])
    model.save_weights(root / "c.weights.h5")
    tf.train.Checkpoint(model=model).write(str(root / "ckpt-1"))
    return root


@pytest.mark.parametrize("name", ["a.pt", "b.safetensors", "c.weights.h5", "ckpt-1"])
def test_weights_only_files_are_refused_with_sample_inputs(weight_files, tmp_path, name, capsys):
    logdir = tmp_path / "logs"
    np.save(tmp_path / "x.npy", np.ones((2, 1, 6, 6), "float32"))
    argv = ["import", str(weight_files / name), "--logdir", str(logdir)]
    assert cli.main([*argv, "--sample-inputs", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert f"{name}: holds weights only" in err
    assert ".keras files, .onnx models" in err and "TorchScript" in err
    assert not logdir.exists() or not any(logdir.iterdir())
    assert cli.main([*argv, "--quiet"]) == 0  # without sample inputs its kernels import


def test_bad_sample_inputs(torch_run, tmp_path):
    root, _ = torch_run
    path, logdir = root / "model.onnx", tmp_path / "logs"
    with pytest.raises(ValueError, match="no such file"):
        import_models(path, logdir, sample_inputs=tmp_path / "missing.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects.npy.*not loaded"):
        import_models(path, logdir, sample_inputs=tmp_path / "objects.npy")
    with pytest.raises(ValueError, match="non-empty numeric batch"):
        import_models(path, logdir, sample_inputs=np.zeros((0, 2, 4, 4)))
    with pytest.raises(ImportFailure, match="running the model on the sample inputs"):
        import_models(path, logdir, sample_inputs=np.zeros((2, 3, 12, 12), "f4"))
    assert not logdir.exists() or not any(logdir.iterdir())


def test_a_savedmodel_gives_kernels_and_says_why_no_activations(tmp_path):
    import keras

    inp = keras.Input((6, 6, 1))
    model = keras.Model(inp, keras.layers.Conv2D(2, 3, name="c")(inp))
    model.export(str(tmp_path / "sm"), verbose=False)
    x = np.ones((2, 6, 6, 1), "float32")
    summary = import_models(tmp_path / "sm", tmp_path / "logs", sample_inputs=x, progress=False)
    (c,) = summary.runs[0].checkpoints
    assert c.tags == ["c/kernel"] and c.activations == []
    assert "SavedModel" in c.note and ".keras" in c.note and "note: no activations" in str(summary)


def test_a_broken_torchscript_archive_or_no_onnxruntime(torch_run, tmp_path, monkeypatch):
    import sys
    import zipfile

    root, _ = torch_run
    broken = tmp_path / "broken.pt"
    with zipfile.ZipFile(broken, "w") as z:  # a TorchScript archive's names, garbage inside
        z.writestr("broken/code/__torch__.py", "not torchscript (")
        z.writestr("broken/data.pkl", b"\x80\x02garbage")
    logdir = tmp_path / "logs"
    with pytest.raises(ImportFailure, match=r"broken\.pt: not a loadable TorchScript archive"):
        import_models(broken, logdir, sample_inputs=root / "probe.npy", progress=False)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    with pytest.raises(ImportFailure, match="need onnxruntime: pip install onnxruntime"):
        import_models(root / "model.onnx", logdir, sample_inputs=root / "probe.npy")
    assert not logdir.exists() or not any(logdir.iterdir())
