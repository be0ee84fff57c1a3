"""FiltersCallback under a real ``model.fit`` (Keras 3, TF backend), read back through
TensorBoard's data provider and the plugin's routes."""

from __future__ import annotations

import json
import os
import warnings

import keras
import numpy as np
import pytest
from support import PREFIX, load_npy, load_provider, plugin_client

from tb_convfilters.keras import FiltersCallback, activation_layout

L = keras.layers


def model_2d() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = L.SeparableConv2D(3, 1, depth_multiplier=2, name="sep")(x)
    x = L.Conv2DTranspose(2, 3, name="up")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    outputs = L.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    return model


def data(shape: tuple[int, ...], n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype("f4"), rng.standard_normal((n, 2)).astype("f4")


def tensor(client, tag: str, step: int | None = None, run: str = "train"):
    query = {"run": run, "tag": tag, **({} if step is None else {"step": str(step)})}
    response = client.get(PREFIX + "tensor", query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return load_npy(response.get_data()), json.loads(response.headers["X-Convfilters-Header"])


def steps(client, tag: str, run: str = "train") -> list[int]:
    body = client.get(PREFIX + "steps", query_string={"run": run, "tag": tag}).json
    return [s["step"] for s in body]


def test_fit_logs_conv_kernels_and_activations_beside_the_stock_callback(tmp_path):
    model = model_2d()
    x, y = data((8, 8, 3))
    callback = FiltersCallback(tmp_path, sample_inputs=x[:2], examples=0)  # test_examples_keras
    model.fit(
        x, y, epochs=2, batch_size=4, verbose=0,
        callbacks=[keras.callbacks.TensorBoard(tmp_path), callback],
    )
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json
    assert set(tags) == {"train"}  # not the stock callback's validation run: it has no data of ours
    kinds = {tag: (t["kind"], t["layout"], t["shape"]) for tag, t in tags["train"].items()}
    assert kinds == {
        "conv/kernel": ("kernel", "HWIO", [3, 3, 3, 4]),
        "dw/kernel": ("kernel", "HWIM", [3, 3, 4, 2]),
        "sep/depthwise": ("kernel", "HWIM", [1, 1, 8, 2]),
        "sep/pointwise": ("kernel", "HWIO", [1, 1, 16, 3]),
        "up/kernel": ("kernel", "HWOI", [3, 3, 2, 3]),
        "conv/activation": ("activation", "NHWC", [2, 6, 6, 4]),
        "dw/activation": ("activation", "NHWC", [2, 4, 4, 8]),
        "sep/activation": ("activation", "NHWC", [2, 4, 4, 3]),
        "up/activation": ("activation", "NHWC", [2, 6, 6, 2]),
    }  # Dense "head" is not a filter bank: logged only when selected
    assert all(steps(client, tag) == [0, 1] for tag in kinds)

    # The last step holds the trained weights, bit for bit.
    weights = {
        "conv/kernel": model.get_layer("conv").kernel,
        "dw/kernel": model.get_layer("dw").kernel,
        "sep/depthwise": model.get_layer("sep").depthwise_kernel,
        "sep/pointwise": model.get_layer("sep").pointwise_kernel,
        "up/kernel": model.get_layer("up").kernel,
    }
    for tag, variable in weights.items():
        served, header = tensor(client, tag, step=1)
        want = keras.ops.convert_to_numpy(variable)
        assert header["dtype"] == "float32" and served.tobytes() == want.tobytes(), tag
    first, _ = tensor(client, "conv/kernel", step=0)
    assert not np.array_equal(first, keras.ops.convert_to_numpy(weights["conv/kernel"]))

    probe = keras.Model(model.input, [model.get_layer(n).output for n in ("conv", "up")])
    for name, want in zip(("conv", "up"), probe(x[:2], training=False), strict=True):
        served, _ = tensor(client, f"{name}/activation", step=1)
        assert served.tobytes() == keras.ops.convert_to_numpy(want).tobytes(), name
    conv_act, _ = tensor(client, "conv/activation", step=1)
    assert (conv_act >= 0).all() and conv_act.any()  # after the layer's relu

    # Both callbacks share log_dir/train, each with its own event file; the scalars survive.
    assert len(os.listdir(tmp_path / "train")) == 2
    provider = load_provider(tmp_path)
    from tensorboard import context

    scalars = provider.list_scalars(
        context.RequestContext(), experiment_id="", plugin_name="scalars"
    )
    assert "epoch_loss" in scalars["train"]
    assert callback._writer is None  # closed at train end


def test_layers_by_name_and_type_include_dense_and_dtype_and_caps(tmp_path):
    model = model_2d()
    x, y = data((8, 8, 3))
    callback = FiltersCallback(
        tmp_path, layers=["head", L.Conv2DTranspose], dtype="float16", max_filters=1
    )
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[callback])
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json["train"]
    assert sorted(tags) == ["head/kernel", "up/kernel"]
    assert tags["head/kernel"]["layout"] == "IO" and tags["head/kernel"]["filters"] == [0]
    served, header = tensor(client, "up/kernel")
    assert header["dtype"] == "float16" and header["source_dtype"] == "float32"
    want = keras.ops.convert_to_numpy(model.get_layer("up").kernel)[:, :, :1, :]
    assert served.tobytes() == want.astype(np.float16).tobytes()


def test_every_n_batches_steps_are_the_batch_count_1d_layers(tmp_path):
    inputs = keras.Input((12, 2))
    x = L.Conv1D(3, 3, name="c1")(inputs)
    x = L.DepthwiseConv1D(3, depth_multiplier=2, name="dw1")(x)
    x = L.SeparableConv1D(4, 3, name="sep1")(x)
    x = L.Conv1DTranspose(2, 3, name="up1")(x)
    outputs = L.Dense(2)(L.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    x, y = data((12, 2))
    callback = FiltersCallback(tmp_path, every_n_batches=3, sample_inputs=x[:1], examples=0)
    model.fit(x, y, epochs=2, batch_size=2, verbose=0, callbacks=[callback])  # 8 batches
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json["train"]
    layouts = {tag: t["layout"] for tag, t in tags.items()}
    assert layouts == {
        "c1/kernel": "WIO", "dw1/kernel": "WIM", "sep1/depthwise": "WIM",
        "sep1/pointwise": "WIO", "up1/kernel": "WOI",
        "c1/activation": "NWC", "dw1/activation": "NWC", "sep1/activation": "NWC",
        "up1/activation": "NWC",
    }
    # every 3rd batch, and the last one (8): the final weights are always logged
    assert all(steps(client, tag) == [3, 6, 8] for tag in tags)


def test_3d_layers_every_n_epochs(tmp_path):
    model = keras.Sequential([
        keras.Input((4, 4, 4, 1)),
        L.Conv3D(2, 2, name="c3"),
        L.Conv3DTranspose(3, 2, name="up3"),
        L.GlobalAveragePooling3D(),
        L.Dense(2),
    ])
    model.compile(optimizer="sgd", loss="mse")
    x, y = data((4, 4, 4, 1), n=4)
    callback = FiltersCallback(tmp_path, every_n_epochs=2, sample_inputs=x[:1], examples=0)
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[callback])
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json["train"]
    assert {tag: t["layout"] for tag, t in tags.items()} == {
        "c3/kernel": "DHWIO", "up3/kernel": "DHWOI",
        "c3/activation": "NDHWC", "up3/activation": "NDHWC",
    }
    assert tags["up3/activation"]["shape"] == [1, 4, 4, 4, 3]
    assert all(steps(client, tag) == [0, 2] for tag in tags)  # epochs 0 and 2, like histogram_freq


def nested_model() -> keras.Model:
    """A Sequential without Input, holding a nested model (like a pretrained backbone)."""
    backbone = keras.Sequential([L.Conv2D(3, 3, name="inner")], name="backbone")
    model = keras.Sequential([backbone, L.Conv2D(2, 3, name="outer"), L.Flatten(), L.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_nested_layer_errors_warn_once_and_training_goes_on(tmp_path):
    x, y = data((7, 7, 1), n=4)
    with pytest.warns(RuntimeWarning, match=r"layer 'inner' cannot be computed from the model's "
                                            r"inputs.*training goes on") as caught:
        nested_model().fit(x, y, epochs=3, verbose=0,
                           callbacks=[FiltersCallback(tmp_path / "a", sample_inputs=x,
                                                      examples=0)])
    assert sum("FiltersCallback" in str(w.message) for w in caught) == 1
    client = plugin_client(tmp_path / "a")
    tags = client.get(PREFIX + "tags").json["train"]
    assert sorted(tags) == ["inner/kernel", "outer/activation", "outer/kernel"]
    assert tags["outer/activation"]["shape"] == [4, 3, 3, 2]
    assert all(steps(client, tag) == [0, 1, 2] for tag in tags)

    # Inputs the model cannot take: warned once, the kernels are still logged.
    with pytest.warns(RuntimeWarning, match="running the model on sample_inputs failed"):
        nested_model().fit(x, y, epochs=2, verbose=0, callbacks=[
            FiltersCallback(tmp_path / "b", layers=["outer"], sample_inputs=x[:, :4, :4])
        ])
    client = plugin_client(tmp_path / "b")
    assert steps(client, "outer/kernel") == [0, 1]
    assert list(client.get(PREFIX + "tags").json["train"]) == ["outer/kernel"]

    with pytest.raises(ValueError, match="not connected to `inputs`"):
        nested_model().fit(x, y, epochs=1, verbose=0, callbacks=[
            FiltersCallback(tmp_path / "c", sample_inputs=x, raise_errors=True)
        ])


def test_unknown_layers_fail_at_train_begin_listing_the_valid_names(tmp_path):
    x, y = data((8, 8, 3))
    cases = [
        (["nope"], r"'nope' is not a layer of the model; layers with kernels: conv, dw, sep, up, "
                   r"head"),
        (["pool"], r"'pool' is a GlobalAveragePooling2D, which has no kernel to log"),
        ([L.Conv3D], r"Conv3D matches no layer with a kernel; layers with kernels: conv"),
    ]
    for layers, message in cases:
        with pytest.raises(ValueError, match=message):
            model_2d().fit(x, y, epochs=1, verbose=0,
                           callbacks=[FiltersCallback(tmp_path, layers=layers)])
    assert not os.path.exists(tmp_path / "train")


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"every_n_epochs": 0}, r"every_n_epochs=0 must be a positive integer"),
        ({"every_n_epochs": 1.5}, r"every_n_epochs=1.5 must be a positive integer"),
        ({"every_n_epochs": True}, r"every_n_epochs=True must be a positive integer"),
        ({"every_n_batches": 0}, r"every_n_batches=0 must be a positive integer or None"),
        ({"dtype": "float8"}, r"dtype='float8' cannot be stored.*expected None or one of: float64"),
        ({"max_filters": -1}, r"max_filters=-1 must be a positive integer or a list of indices"),
        ({"max_channels": []}, r"max_channels=\[\] must be a non-empty list of indices"),
        ({"dtype": "int8"}, r"dtype='int8' cannot be stored for a model's float tensors.*truncate"),
        ({"activation_layers": ["relu"]}, r"activation_layers needs sample_inputs"),
        ({"patterns": ["c"], "patterns_options": {"max_filters": 2}},
         r"patterns_options keys \['max_filters'\] are not options of vis.log_patterns"),
        ({"layers": [3]}, r"layers=\[3\] must be a non-empty list of layer names"),
        ({"layers": []}, r"layers=\[\] must be a non-empty list"),
        ({"budget_mb": 0}, r"budget_mb=0 must be a positive number of MiB or None"),
        ({"sample_inputs": "x.npy"}, r"sample_inputs='x.npy' must be model inputs"),
    ],
)
def test_arguments_are_checked_in_init(tmp_path, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        FiltersCallback(tmp_path, **kwargs)


def test_no_file_when_nothing_is_logged(tmp_path):
    x, y = data((8, 8, 3))
    model_2d().fit(x, y, epochs=0, batch_size=4, verbose=0,
                   callbacks=[FiltersCallback(tmp_path / "logs", every_n_batches=100)])
    assert not os.path.exists(tmp_path / "logs")


def test_step_over_budget_warns_once_naming_the_knobs(tmp_path):
    x, y = data((8, 8, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model_2d().fit(x, y, epochs=3, verbose=0,
                       callbacks=[FiltersCallback(tmp_path, budget_mb=0.0001)])
    budget = [str(w.message) for w in caught if "budget_mb" in str(w.message)]
    assert len(budget) == 1
    for knob in ("every_n_epochs", "dtype='float16'", "max_filters", "layers",
                 "--samples_per_plugin=convfilters=N"):
        assert knob in budget[0]


def test_activation_layout_follows_data_format():
    assert activation_layout(4, "channels_last") == "NHWC"
    assert activation_layout(4, "channels_first") == "NCHW"
    assert activation_layout(3, "channels_first") == "NCW"
    assert activation_layout(5, None) == "NDHWC"
    assert activation_layout(2, None) is None  # Dense output: no feature map


def test_fit_logs_patterns_and_projections_every_n_epochs(tmp_path):
    model = model_2d()
    x, y = data((8, 8, 3))
    callback = FiltersCallback(
        tmp_path,
        layers=["conv"],
        patterns=["conv"],
        patterns_every_n_epochs=2,
        projection_inputs=x[:2],
        patterns_max_filters=3,
        patterns_options={"steps": 3},
    )
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[callback])
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json["train"]
    assert tags["conv/pattern"]["kind"] == "pattern"
    assert tags["conv/projection"]["kind"] == "projection"
    assert steps(client, "conv/pattern") == [0, 2]
    assert steps(client, "conv/kernel") == [0, 1, 2]
    images, header = tensor(client, "conv/pattern")
    assert images.shape == (3, 8, 8, 3) and header["filters"] == [0, 1, 2]
    assert 0.0 <= images.min() and images.max() <= 1.0
    projections, _ = tensor(client, "conv/projection")
    assert projections.shape == (2 * 3, 8, 8, 3)


def test_an_earlier_failure_does_not_cost_the_patterns_of_the_step(tmp_path):
    """A record that failed in the background before the patterns are logged is warned
    once; every pattern layer of that step is still logged."""
    import os

    model = model_2d()
    x, y = data((8, 8, 3))
    callback = FiltersCallback(
        tmp_path,
        layers=["conv"],
        every_n_epochs=2,  # no kernels at step 1: the patterns' writes meet the failure
        patterns=["conv", "up"],
        patterns_every_n_epochs=1,
        patterns_max_filters=2,
        patterns_options={"steps": 2},
    )

    class RemoveFile(keras.callbacks.Callback):  # runs before ours at each epoch's end
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                callback._writer.flush()
                for name in os.listdir(tmp_path / "train"):  # the next record fails
                    os.remove(tmp_path / "train" / name)
                callback._writer.kernel("probe", np.zeros((3, 3, 1, 1), np.float32), epoch)
                callback._writer._queue.wait()

    with pytest.warns(RuntimeWarning, match="writing an earlier record failed"):
        model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[RemoveFile(), callback])
    client = plugin_client(tmp_path)
    assert steps(client, "conv/pattern") == [1] and steps(client, "up/pattern") == [1]
    assert steps(client, "conv/kernel") == [1]  # the final weights, at the end of training


def test_patterns_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="patterns_every_n_epochs"):
        FiltersCallback(tmp_path, patterns=["conv"], patterns_every_n_epochs=0)
    with pytest.raises(ValueError, match="projection_inputs needs patterns"):
        FiltersCallback(tmp_path, projection_inputs=np.zeros((1, 8, 8, 3)))
    model = model_2d()
    x, y = data((8, 8, 3))
    with pytest.raises(ValueError, match="nope"):
        callback = FiltersCallback(tmp_path, patterns=["nope"])
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])


@pytest.mark.parametrize("raise_errors", [False, True])
def test_a_failed_last_write_warns_and_fit_returns(tmp_path, raise_errors):
    """The run directory removed before the last epoch is logged: fit() still returns."""
    import shutil

    from tb_convfilters import WriterError

    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(L.Conv2D(2, 3, name="c")(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    x, _ = data((6, 6, 1))
    callback = FiltersCallback(tmp_path, raise_errors=raise_errors)

    class RemoveRun(keras.callbacks.Callback):  # runs before ours at each epoch's end
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                callback._writer.flush()
                shutil.rmtree(tmp_path / "train")

    fit = lambda: model.fit(x, x[:, :2, 0, 0], epochs=3, verbose=0,  # noqa: E731
                            callbacks=[RemoveRun(), callback])
    if raise_errors:
        with pytest.raises(WriterError, match=r"tag 'c/kernel' step 2"):
            fit()
        return
    with pytest.warns(RuntimeWarning, match=r"FiltersCallback: closing the event file at the "
                      r"end of training: WriterError: .*could not write tag 'c/kernel' step 2"):
        fit()
    assert callback._writer is None
