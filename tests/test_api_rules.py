"""The rules every entry point follows (docs/rules.md): layouts, caps, samples, errors,
steps. Each test writes real event files through the real API and reads them back."""

from __future__ import annotations

import inspect
import warnings

import keras
import numpy as np
import pytest
import torch
from torch import nn

from tb_convfilters import Writer, reader, summary
from tb_convfilters.keras import FiltersCallback
from tb_convfilters.torch import log_activations, log_kernels

L = keras.layers
RNG = np.random.default_rng(0)


def headers(logdir, run: str = ".") -> dict[str, dict]:
    """{tag: header of its latest step}."""
    out = {}
    for entry in reader.entries(logdir, run=run):
        out[entry.tag] = entry.header()
    return out


def steps(logdir, tag: str, run: str = "train") -> list[int]:
    return reader.list(logdir)[run][tag]


# ---- 1. layouts that cannot be right --------------------------------------------------------


def test_a_torch_weight_under_the_default_layout_warns_once_naming_oihw(tmp_path):
    weight = RNG.standard_normal((64, 3, 7, 7)).astype("f4")  # Conv2d(3, 64, 7).weight
    with Writer(tmp_path) as w:
        with pytest.warns(UserWarning, match=r"'conv1/weight': shape \(64, 3, 7, 7\) cannot be "
                                             r"right as layout='HWIO'.*'OIHW' \(Conv2d"):
            w.kernel("conv1/weight", weight, 0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # once per tag
            w.kernel("conv1/weight", weight, 1)
            w.kernel("conv1/oihw", weight, 0, layout="OIHW")  # the right layout: no warning
    small = RNG.standard_normal((8, 3, 3, 3)).astype("f4")  # Conv2d(3, 8, 3): 8 x 3 "spatial"
    with pytest.warns(UserWarning, match=r"fits layout='OIHW'"):
        summary.kernel_pb("small/weight", small)
    keras_kernel = RNG.standard_normal((7, 7, 3, 64)).astype("f4")
    with pytest.warns(UserWarning, match=r"layout='OIHW'.*fits layout='HWIO'"):
        summary.kernel_pb("keras/kernel", keras_kernel, layout="OIHW")


def test_an_nchw_map_under_the_default_layout_warns_naming_nchw(tmp_path):
    maps = RNG.standard_normal((2, 64, 32, 32)).astype("f4")
    with Writer(tmp_path) as w:
        with pytest.warns(UserWarning, match=r"shape \(2, 64, 32, 32\).*layout='NHWC'.*'NCHW'"):
            w.activation("c/activation", maps, 0)
        w.activation("c/nchw", maps, 0, layout="NCHW")
    assert headers(tmp_path)["c/nchw"]["layout"] == "NCHW"


@pytest.mark.parametrize(
    "shape, layout, kind",
    [
        ((3, 3, 64, 128), "HWIO", "kernel"),
        ((1, 7, 128, 192), "HWIO", "kernel"),  # Inception's 1x7
        ((16, 16, 3, 1), "OIHW", "kernel"),  # ERFNet's 3x1 with equal in/out channels
        ((5, 12), "IO", "kernel"),
        ((3, 3, 32, 1), "HWIM", "kernel"),
        ((1, 224, 224, 3), "NHWC", "activation"),
        ((4, 480, 640, 16), "NHWC", "activation"),  # not square, and no square reading
        ((4, 16, 112, 112), "NCHW", "activation"),
    ],
)
def test_shapes_that_can_be_right_do_not_warn(shape, layout, kind):
    data = np.zeros(shape, "f4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if kind == "kernel":
            summary.kernel_pb("k", data, layout=layout)
        else:
            summary.activation_pb("a", data, layout=layout)


def test_torch_helpers_pass_their_layouts_without_warnings(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 64, 7), nn.Conv2d(64, 8, 3))
    with warnings.catch_warnings(), Writer(tmp_path) as w:
        warnings.simplefilter("error")
        log_kernels(w, model, 0)
        with log_activations(w, model, 0):
            model(torch.randn(2, 3, 16, 16))
    found = headers(tmp_path)
    assert found["0/weight"]["layout"] == "OIHW" and found["0/activation"]["layout"] == "NCHW"


# ---- 2. the last state is always logged ------------------------------------------------------


def conv_model(input_shape=(8, 8, 3)) -> keras.Model:
    inputs = keras.Input(input_shape)
    x = L.Conv2D(4, 3, name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu")(x)
    x = L.DepthwiseConv2D(3, name="dw")(x)
    outputs = L.Dense(2, name="head")(L.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    return model


def xy(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    return RNG.standard_normal((n, 8, 8, 3)).astype("f4"), RNG.standard_normal((n, 2)).astype("f4")


def test_every_n_epochs_also_logs_the_final_weights(tmp_path):
    model = conv_model()
    x, y = xy()
    model.fit(x, y, epochs=12, batch_size=8, verbose=0,
              callbacks=[FiltersCallback(tmp_path, every_n_epochs=5)])
    assert steps(tmp_path, "conv/kernel") == [0, 5, 10, 11]
    final = keras.ops.convert_to_numpy(model.get_layer("conv").kernel)
    assert reader.read(tmp_path, "train", "conv/kernel").tobytes() == final.tobytes()
    # the last epoch already logged: not twice
    callback = FiltersCallback(tmp_path / "b", every_n_epochs=5)
    model.fit(x, y, epochs=11, verbose=0, callbacks=[callback])
    assert steps(tmp_path / "b", "conv/kernel") == [0, 5, 10]


# ---- 3. logging activations does not change the model ----------------------------------------


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.drop(self.bn(self.conv(x))))


def test_log_activations_runs_in_eval_mode_without_grad_and_restores_modes(tmp_path):
    torch.manual_seed(0)
    model = BNNet().train()
    model.head.eval()  # a submodule's own mode is restored too
    before = model.bn.running_mean.clone(), model.bn.num_batches_tracked.clone()
    x = torch.randn(4, 1, 8, 8) * 3 + 1
    with Writer(tmp_path) as w:
        with log_activations(w, model, 0, modules=["bn", "head"], max_samples=4) as tags:
            out = model(x)
            assert not out.requires_grad
    assert tags == ["bn/activation", "head/activation"]
    assert torch.equal(model.bn.running_mean, before[0])
    assert torch.equal(model.bn.num_batches_tracked, before[1])
    assert model.training and model.bn.training and model.drop.training and not model.head.training
    with torch.no_grad():
        want = BNNet.forward(model.eval(), x)  # eval: no dropout, running statistics
    model.train()
    assert reader.read(tmp_path, ".", "head/activation").tobytes() == want.numpy().tobytes()


# ---- 4. the same knob takes the same values everywhere ---------------------------------------


def test_callback_caps_take_indices(tmp_path):
    x, y = xy()
    conv_model().fit(x, y, epochs=1, verbose=0, callbacks=[
        FiltersCallback(tmp_path, max_filters=[3, 1], max_channels=2)])
    found = headers(tmp_path, "train")
    assert found["conv/kernel"]["filters"] == [3, 1] and found["conv/kernel"]["channels"] == [0, 1]
    assert found["dw/kernel"]["filters"] == [3, 1]  # max_filters caps a depthwise kernel's I


def test_callback_wide_max_channels_caps_depthwise_kernels_instead_of_dropping_them(tmp_path):
    x, y = xy()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no layer dropped with a warning
        conv_model().fit(x, y, epochs=1, verbose=0, callbacks=[
            FiltersCallback(tmp_path, max_channels=2)])
    found = headers(tmp_path, "train")
    assert found["conv/kernel"]["channels"] == [0, 1]
    # a depthwise kernel's filters are its input channels: capped, not dropped
    assert found["dw/kernel"]["layout"] == "HWIM" and found["dw/kernel"]["filters"] == [0, 1]


def test_torch_caps_are_checked_when_called(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match=r"max_channels=\[\] must be a non-empty list"):
        log_kernels(tmp_path, model, 0, max_channels=[])
    with pytest.raises(ValueError, match=r"max_filters=0 must be a positive integer"):
        with log_activations(tmp_path, model, 0, max_filters=0):
            pass
    with Writer(tmp_path) as w:
        assert log_kernels(w, model, 0, max_filters=[2, 0], max_channels=1) == ["0/weight"]
    assert headers(tmp_path)["0/weight"]["filters"] == [2, 0]


# ---- 5. one error policy for training-time logging -------------------------------------------


def test_torch_logging_errors_warn_once_per_tag_and_training_goes_on(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 2, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):  # filter 5 exists in layer 0 only
            assert log_kernels(tmp_path, model, step, max_filters=[5]) == ["0/weight"]
    reports = [str(w.message) for w in caught if "log_kernels" in str(w.message)]
    assert len(reports) == 1 and "'1/weight'" in reports[0] and "outside 0..1" in reports[0]
    with pytest.raises(ValueError, match="outside 0..1"):
        log_kernels(tmp_path, model, 3, max_filters=[5], raise_errors=True)

    class Pair(nn.Module):  # returns a tuple: a hook cannot log it
        def forward(self, x):
            return x, x

    net = nn.Sequential(nn.Conv2d(1, 2, 3), Pair())
    with pytest.warns(RuntimeWarning, match=r"module '1'.*returned tuple, not a tensor"):
        with log_activations(tmp_path, net, 0, modules=["0", "1"]) as tags:
            net(torch.randn(1, 1, 5, 5))  # the forward is not aborted
    assert tags == ["0/activation"]


# ---- 6. conversions never destroy data silently ----------------------------------------------


def test_float_weights_are_never_truncated_to_int8(tmp_path):
    weights = RNG.uniform(-1, 1, (3, 3, 2, 4)).astype("f4")
    with Writer(tmp_path) as w:
        with pytest.raises(TypeError, match=r"dtype='int8' would truncate float32 data.*float16"):
            w.kernel("k", weights, 0, dtype="int8")
        with pytest.raises(TypeError, match=r"dtype='uint8' would truncate"):
            summary.kernel_pb("k", weights, dtype="uint8")
        ints = RNG.integers(-128, 128, (3, 3, 2, 4)).astype(np.int16)
        w.kernel("q", ints, 0, dtype="int8")  # integer data: stored exactly
    assert np.array_equal(reader.read(tmp_path, ".", "q"), ints)
    assert list(reader.list(tmp_path)["."]) == ["q"]


# ---- 7. Keras activations after BatchNorm / ReLU ---------------------------------------------


def test_activation_layers_log_post_relu_maps(tmp_path):
    model = conv_model()
    x, y = xy()
    model.fit(x, y, epochs=1, verbose=0, callbacks=[
        FiltersCallback(tmp_path / "a", sample_inputs=x[:2],
                        activation_layers=["relu", L.BatchNormalization])])
    found = headers(tmp_path / "a", "train")
    assert {t for t in found if t.endswith("/activation")} == {"bn/activation", "relu/activation"}
    assert found["relu/activation"]["layout"] == "NHWC"
    want = keras.Model(model.input, model.get_layer("relu").output)(x[:2], training=False)
    got = reader.read(tmp_path / "a", "train", "relu/activation")
    np.testing.assert_array_equal(got, keras.ops.convert_to_numpy(want))
    assert got.min() >= 0
    with pytest.raises(ValueError, match=r"'head' has output rank 2; layers with a 3-5-D output: "
                                         r"conv, bn, relu, dw"):
        conv_model().fit(x, y, epochs=1, verbose=0, callbacks=[
            FiltersCallback(tmp_path / "b", sample_inputs=x[:2], activation_layers="head")])


# ---- 9. steps, nested layers, options --------------------------------------------------------


def test_patterns_with_every_n_batches_get_batch_steps(tmp_path):
    x, y = xy()
    callback = FiltersCallback(tmp_path, every_n_batches=2, patterns=["conv"],
                               patterns_every_n_epochs=1, patterns_max_filters=2,
                               patterns_options={"steps": 2})
    conv_model().fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[callback])  # 4 batches
    assert steps(tmp_path, "conv/kernel") == [2, 4]
    assert steps(tmp_path, "conv/pattern") == [2, 4]  # the same counter as the kernels


def test_vis_finds_layers_inside_nested_models(tmp_path):
    from tb_convfilters import vis

    backbone = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, name="inner")], name="bb")
    model = keras.Sequential([keras.Input((8, 8, 3)), backbone, L.Conv2D(2, 3, name="outer")])
    assert vis.filter_patterns(model, "inner", 2, steps=2).shape == (2, 8, 8, 3)
    assert vis.projections(model, "inner", np.ones((1, 8, 8, 3)), [3], method="gradient").shape == (
        1, 1, 8, 8, 3)
    with Writer(tmp_path) as w:
        vis.log_patterns(w, model, ["inner"], 0, max_filters=3, steps=2)
    assert headers(tmp_path)["inner/pattern"]["filters"] == [0, 1, 2]


def test_patterns_options_are_checked_in_init(tmp_path):
    with pytest.raises(ValueError, match=r"patterns_options keys \['bogus'\].*expected some of: "
                                         r"method, size, steps"):
        FiltersCallback(tmp_path, patterns=["conv"], patterns_options={"bogus": 1})
    from tb_convfilters import vis
    from tb_convfilters.keras import PATTERNS_OPTIONS

    keywords = [p.name for p in inspect.signature(vis.filter_patterns).parameters.values()
                if p.kind is p.KEYWORD_ONLY]
    assert set(PATTERNS_OPTIONS) == {"method", *keywords}
