"""Feature visualization: activation-maximization patterns and projections, logged and read back."""

from __future__ import annotations

import gc
import json
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf
from support import PREFIX, load_npy, plugin_client
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

import tb_convfilters
from tb_convfilters import summary, vis
from tb_convfilters._writing.writer import Writer

ANGLES = (0, 45, 90, 135)


def ramp_kernels(size: int = 5) -> np.ndarray:
    """HWIO kernels that measure the intensity slope along each of ANGLES (x right, y down)."""
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    out = []
    for deg in ANGLES:
        t = np.deg2rad(deg)
        d = xx * np.cos(t) + yy * np.sin(t)
        out.append(d / np.abs(d).sum())
    return np.stack(out, -1)[:, :, None, :].astype(np.float32)


def edge_model() -> keras.Model:
    """Scale by 2, then four hand-set oriented edge detectors with ReLU."""
    inp = keras.Input((32, 32, 1))
    pre = keras.layers.Conv2D(1, 1, name="pre")
    edges = keras.layers.Conv2D(4, 5, padding="same", activation="relu", name="edges")
    x = edges(pre(inp))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    pre.set_weights([np.full((1, 1, 1, 1), 2.0, np.float32), np.zeros(1, np.float32)])
    edges.set_weights([ramp_kernels(), np.zeros(4, np.float32)])
    return model


def dominant_gradient(image: np.ndarray) -> tuple[float, float]:
    """(angle in degrees mod 180, coherence 0..1) of the image's structure tensor."""
    gy, gx = np.gradient(image.mean(axis=-1).astype(np.float64))
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    angle = 0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy)) % 180
    coherence = np.hypot(jxx - jyy, 2 * jxy) / (jxx + jyy)
    return float(angle), float(coherence)


def angle_error(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)


def small_cnn(size: int = 32, channels: int = 3, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((size, size, channels)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(12, 3, padding="same", activation="relu", name="c2"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(3, name="dense"),
        ]
    )


# ---- patterns -----------------------------------------------------------------------------


def test_patterns_of_hand_set_edge_filters_have_their_orientation():
    model = edge_model()
    images = vis.filter_patterns(model, "edges", steps=20)
    assert images.shape == (4, 32, 32, 1) and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1
    for deg, image in zip(ANGLES, images, strict=True):
        angle, coherence = dominant_gradient(image)
        assert angle_error(angle, deg) < 10, (deg, angle)
        assert coherence > 0.5, (deg, coherence)
    # The initial noise has no orientation: the patterns come from the ascent.
    assert dominant_gradient(vis.filter_patterns(model, "edges", [0], steps=1)[0])[1] < 0.3


def test_patterns_follow_the_requested_filters_and_the_regularizers_keep_them():
    model = edge_model()
    layer = model.get_layer("edges")
    for kwargs in ({}, {"jitter": 2}, {"blur": 1.0}, {"jitter": 1, "blur": 0.7}):
        images = vis.filter_patterns(model, layer, [3, 0, 2], steps=20, **kwargs)
        got = [dominant_gradient(im)[0] for im in images]
        for want, angle in zip((135, 0, 90), got, strict=True):
            assert angle_error(angle, want) < 15, (kwargs, want, angle)


def high_frequency_share(images: np.ndarray) -> float:
    """Energy of the discrete Laplacian relative to the image energy."""
    x = images - images.mean(axis=(1, 2), keepdims=True)
    lap = 4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    return float((lap**2).sum() / (x**2).sum())


def test_blur_makes_patterns_smoother():
    model = edge_model()
    plain = vis.filter_patterns(model, "edges", steps=20)
    blurred = vis.filter_patterns(model, "edges", steps=20, blur=1.0)
    assert high_frequency_share(blurred) < 0.7 * high_frequency_share(plain)


def test_patterns_are_seeded_and_independent_of_batching():
    model = small_cnn()
    a = vis.filter_patterns(model, "c2", steps=5, seed=3)
    b = vis.filter_patterns(model, "c2", steps=5, seed=3, batch_size=5)
    c = vis.filter_patterns(model, "c2", steps=5, seed=4)
    assert a.shape == (12, 32, 32, 3)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(a - c).max() > 0.1


def test_patterns_of_a_size_free_model_use_size_and_input_range():
    inp = keras.Input((None, None, 3))
    model = keras.Model(inp, keras.layers.Conv2D(4, 3, activation="relu", name="c")(inp))
    images = vis.filter_patterns(model, "c", size=(20, 24), steps=3, input_range=(0, 255))
    assert images.shape == (4, 20, 24, 3)
    assert vis.filter_patterns(model, "c", [1], steps=1).shape == (1, 128, 128, 3)


def test_patterns_see_new_weights_and_do_not_keep_the_model_alive():
    model = small_cnn()
    before = vis.filter_patterns(model, "c1", [0, 1], steps=5)
    conv = model.get_layer("c1")
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel[..., ::-1].copy(), bias[::-1].copy()])  # filter 0 <-> 7
    after = vis.filter_patterns(model, "c1", [0, 1], steps=5)
    fresh = small_cnn()
    fresh.get_layer("c1").set_weights(conv.get_weights())
    np.testing.assert_allclose(after, vis.filter_patterns(fresh, "c1", [0, 1], steps=5), atol=1e-5)
    assert np.abs(after - before).max() > 0.1
    vis.projections(model, "c2", np.zeros((1, 32, 32, 3), np.float32), [0])
    ref = weakref.ref(model)
    del model, conv, fresh
    gc.collect()
    assert ref() is None


# ---- projections --------------------------------------------------------------------------

X_SMALL = np.array([[0.5, -0.1, 0.2], [0.3, 1.0, 0.1], [0.0, 0.4, -0.2]], dtype=np.float32)[
    None, :, :, None
]


def one_by_one_net(relu: str) -> keras.Model:
    """x -> 1x1 conv [1, -1, 2] -> ReLU -> 1x1 conv [2, 3, -0.5]: y = x if x > 0 else -3x."""
    inp = keras.Input((3, 3, 1))
    fused = "relu" if relu == "fused" else None
    first = keras.layers.Conv2D(3, 1, use_bias=False, activation=fused)
    x = first(inp)
    if relu == "layer":
        x = keras.layers.ReLU()(x)
    elif relu == "activation":
        x = keras.layers.Activation("relu")(x)
    elif relu == "ops":
        x = keras.ops.relu(x)
    second = keras.layers.Conv2D(1, 1, use_bias=False, name="out")
    model = keras.Model(inp, second(x))
    first.set_weights([np.array([1, -1, 2], np.float32).reshape(1, 1, 1, 3)])
    second.set_weights([np.array([2, 3, -0.5], np.float32).reshape(1, 1, 3, 1)])
    return model


@pytest.mark.parametrize("relu", ["fused", "layer", "activation", "ops"])
def test_projection_rules_match_hand_computation(relu):
    # Top activation: y = 1.0 at (1, 1), where x = 1, so the hidden units are [1, -1, 2]
    # and the gradient reaching them is [2, 3, -0.5]. Back to x through weights [1, -1, 2]:
    #   gradient:        ReLU passes where the unit is > 0:  1*2 + 2*(-0.5)   =  1
    #   guided backprop: ... and where the gradient is > 0:  1*2              =  2
    #   deconvnet:       where the gradient is > 0:          1*2 + (-1)*3     = -1
    model = one_by_one_net(relu)
    for method, value in (("gradient", 1.0), ("guided_backprop", 2.0), ("deconvnet", -1.0)):
        got = vis.projections(model, "out", X_SMALL, method=method, normalize=False)
        want = np.zeros((1, 1, 3, 3, 1), np.float32)
        want[0, 0, 1, 1, 0] = value
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=method)
        shown = vis.projections(model, "out", X_SMALL, method=method)
        # One non-zero pixel of 9 is +-3 RMS: shown at 0.5 +- 0.3.
        assert shown[0, 0, 1, 1, 0] == pytest.approx(0.5 + 0.3 * np.sign(value))
        assert np.all(np.delete(shown.ravel(), 4) == 0.5)  # zero is mid grey
    first = model.layers[1]
    if relu == "fused":
        assert first.activation is keras.activations.relu  # restored after the swap
    np.testing.assert_allclose(model.predict(X_SMALL, verbose=0)[0, 1, 1, 0], 1.0, rtol=1e-6)


def conv_valid(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = w.shape[0]
    h, wd = x.shape[0] - k + 1, x.shape[1] - k + 1
    out = np.empty((h, wd, w.shape[3]))
    for i in range(h):
        for j in range(wd):
            out[i, j] = np.tensordot(x[i : i + k, j : j + k], w, axes=3) + b
    return out


def conv_valid_backward(g: np.ndarray, w: np.ndarray, in_shape: tuple) -> np.ndarray:
    k = w.shape[0]
    gx = np.zeros(in_shape)
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            gx[i : i + k, j : j + k] += np.tensordot(w, g[i, j], axes=([3], [0]))
    return gx


def reference_projection(x, w1, b1, w2, b2, f, method):
    a1 = conv_valid(x, w1, b1)
    a2 = conv_valid(np.maximum(a1, 0), w2, b2)
    g2 = np.zeros_like(a2)
    i, j = np.unravel_index(np.argmax(a2[..., f]), a2.shape[:2])
    if a2[i, j, f] <= 0:
        return np.zeros_like(x)
    g2[i, j, f] = 1
    g1 = conv_valid_backward(g2, w2, a1.shape)
    if method == "gradient":
        g1 = g1 * (a1 > 0)
    elif method == "guided_backprop":
        g1 = g1 * (a1 > 0) * (g1 > 0)
    else:
        g1 = np.maximum(g1, 0)
    return conv_valid_backward(g1, w1, x.shape)


@pytest.mark.parametrize("method", vis.METHODS)
def test_projections_match_a_numpy_reference(method):
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    b1 = rng.normal(size=4).astype(np.float32) * 0.1
    w2 = rng.normal(size=(2, 2, 4, 3)).astype(np.float32)
    b2 = np.array([0.1, -0.2, -1e3], np.float32)  # filter 2 never fires: zero projection
    model = keras.Sequential(
        [
            keras.Input((7, 7, 2)),
            keras.layers.Conv2D(4, 3, name="c1"),
            keras.layers.ReLU(name="r1"),
            keras.layers.Conv2D(3, 2, name="c2"),
        ]
    )
    model.get_layer("c1").set_weights([w1, b1])
    model.get_layer("c2").set_weights([w2, b2])
    x = rng.normal(size=(3, 7, 7, 2)).astype(np.float32)
    filters = [2, 0, 1]
    got = vis.projections(model, "c2", x, filters, method=method, normalize=False, batch_size=4)
    assert got.shape == (3, 3, 7, 7, 2)
    want = np.stack(
        [[reference_projection(xi, w1, b1, w2, b2, f, method) for f in filters] for xi in x]
    )
    assert np.abs(want[:, 1:]).max() > 0.1 and not want[:, 0].any()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_guided_backprop_refuses_nested_models_but_gradient_works():
    inner = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, activation="relu")], name="inner"
    )
    inp = keras.Input((8, 8, 1))
    model = keras.Model(inp, keras.layers.Conv2D(2, 3, name="top")(inner(inp)))
    x = np.ones((1, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="nested model 'inner'"):
        vis.projections(model, "top", x)
    assert vis.projections(model, "top", x, method="gradient").shape == (1, 2, 8, 8, 1)


# ---- argument errors ----------------------------------------------------------------------


def _patterns(*args, **kwargs):
    return lambda m: vis.filter_patterns(m, *args, **kwargs)


def _projections(*args, **kwargs):
    return lambda m: vis.projections(m, *args, **kwargs)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (_patterns("nope"), ValueError, "layers with a 2-D feature map output: c1, pool, c2$"),
        (_patterns("dense"), ValueError, r"'dense' has output shape \(None, 3\)"),
        (_patterns("gap"), ValueError, "layers that have one: c1, pool, c2$"),
        (_patterns("c1", [0, 8]), ValueError, r"indices in 0\.\.7 \(layer 'c1' has 8 filters"),
        (_patterns("c1", []), ValueError, r"non-empty list of indices in 0\.\.7"),
        (_patterns("c1", 0), ValueError, r"filters=0 must be an integer >= 1"),
        (_patterns("c1", "ab"), TypeError, r"a number of filters or a list of filter indices"),
        (_patterns("c1", size=(64, 64)), ValueError, "input is 32 x 32"),
        (_patterns("c1", steps=0), ValueError, "steps=0"),
        (_patterns("c1", jitter=-1), ValueError, "jitter=-1"),
        (_patterns("c1", step_size=0), ValueError, "step_size=0"),
        (_patterns("c1", input_range=(1, 0)), ValueError, "low < high"),
        (_patterns(keras.layers.Dense(2)), ValueError, "not a layer of model"),
        (_projections("c1", np.zeros((2, 32, 32, 1))), ValueError, r"takes \(n, 32, 32, 3\)"),
        (_projections("c1", np.zeros((2, 32, 32, 3)), method="x"), ValueError, "deconvnet"),
        (lambda m: vis.filter_patterns("model", "c1"), TypeError, "keras.Model"),
    ],
)
def test_errors_name_the_bad_value(call, error, message):
    with pytest.raises(error, match=message):
        call(small_cnn())


# ---- logging ------------------------------------------------------------------------------


def test_patterns_round_trip_through_the_plugin(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.random((4, 16, 16, 1), dtype=np.float32)
    rgb = rng.random((6, 8, 8, 3)).astype(np.float16)
    with Writer(tmp_path / "np") as w:
        w.patterns("conv/pattern", grey, 0, filters=[5, 1, 2, 9], description="d")
        w.patterns("conv/pattern", grey[::-1], 1, filters=[9, 2, 1, 5])
        w.patterns("conv/projection", rgb, 0, filters=[0, 1, 2] * 2, kind="projection")
    pb_writer = EventFileWriter(str(tmp_path / "pb"))
    pb = summary.patterns_pb("p", grey, filters=[0, 1, 2, 3])
    pb_writer.add_event(event_pb2.Event(step=3, wall_time=1.0, summary=pb))
    pb_writer.close()
    tf_writer = tf.summary.create_file_writer(str(tmp_path / "tf"))
    with tf_writer.as_default():
        assert bool(summary.patterns("p", tf.constant(rgb), 4, kind="projection"))

        @tf.function
        def in_graph(images, step):
            return summary.patterns("g", images, step, filters=[3, 2, 1, 0])

        assert bool(in_graph(tf.constant(grey), tf.constant(5, tf.int64)))
    tf_writer.close()

    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json
    info = tags["np"]["conv/pattern"]
    assert info["kind"] == "pattern" and info["layout"] == "NHWC"
    assert info["filters"] == [5, 1, 2, 9]
    assert info["shape"] == [4, 16, 16, 1] and info["description"] == "d"
    assert tags["np"]["conv/projection"]["kind"] == "projection"
    assert tags["np"]["conv/projection"]["dtype"] == "float16"
    assert tags["pb"]["p"]["filters"] == [0, 1, 2, 3]
    assert tags["tf"]["p"]["kind"] == "projection" and "filters" not in tags["tf"]["p"]
    assert tags["tf"]["g"]["kind"] == "pattern" and tags["tf"]["g"]["filters"] == [3, 2, 1, 0]
    for run, tag, step, want in (
        ("np", "conv/pattern", 0, grey),
        ("np", "conv/pattern", 1, grey[::-1]),
        ("np", "conv/projection", 0, rgb),
        ("pb", "p", 3, grey),
        ("tf", "p", 4, rgb),
        ("tf", "g", 5, grey),
    ):
        r = client.get(PREFIX + f"tensor?run={run}&tag={tag}&step={step}")
        assert r.status_code == 200, r.data
        got = load_npy(r.data)
        assert got.dtype == want.dtype and got.tobytes() == np.ascontiguousarray(want).tobytes()
    header = json.loads(
        client.get(PREFIX + "tensor?run=np&tag=conv/pattern&step=1").headers["X-Convfilters-Header"]
    )
    assert header["filters"] == [9, 2, 1, 5] and header["kind"] == "pattern"
    stats = client.get(PREFIX + "stats?run=np&tag=conv/pattern")
    assert stats.status_code == 200


@pytest.mark.parametrize(
    "images, kwargs, message",
    [
        (np.full((2, 4, 4, 1), 1.5, np.float32), {}, "values from 1.5 to 1.5"),
        (np.full((2, 4, 4, 1), np.nan, np.float32), {}, "expected floats in"),
        (np.zeros((2, 4, 4, 1), np.uint8), {}, "dtype 'uint8'"),
        (np.zeros((2, 4, 4, 2), np.float32), {}, "1 \\(grey\\) or 3 \\(RGB\\)"),
        (np.zeros((4, 4, 1), np.float32), {}, "expected \\(n, height, width, channels\\)"),
        (np.zeros((2, 4, 4, 1), np.float32), {"filters": [0]}, "1 entries but images has 2"),
        (np.zeros((2, 4, 4, 1), np.float32), {"filters": [0, -1]}, "negative entries"),
        (np.zeros((2, 4, 4, 1), np.float32), {"kind": "kernel"}, "pattern, projection"),
        (np.zeros((2, 4, 4, 1), np.float32), {"dtype": "int8"}, "cannot hold images"),
    ],
)
def test_patterns_pb_rejects_bad_images(images, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        summary.patterns_pb("p", images, **kwargs)


def test_log_patterns_logs_patterns_and_projections(tmp_path):
    model = small_cnn()
    inputs = np.random.default_rng(2).random((2, 32, 32, 3)).astype(np.float32)
    with tb_convfilters.Writer(tmp_path / "run") as w:
        logged = vis.log_patterns(
            w,
            model,
            ["c1", model.get_layer("c2")],
            7,
            max_filters=5,
            projection_inputs=inputs,
            steps=4,
        )
        vis.log_patterns(w, model, "c1", 8, max_filters=[6, 2], steps=4)
        vis.log_patterns(w, model, "c2", 8, max_filters=2, steps=4, dtype="float16")
        with pytest.raises(ValueError, match="max_filters=0"):
            vis.log_patterns(w, model, ["c1"], 9, max_filters=0)
    assert vis.check_layers(model, ["c1", model.get_layer("c2")]) == ["c1", "c2"]
    with pytest.raises(ValueError, match="'nope' is not a layer"):
        vis.check_layers(model, ["c1", "nope"])
    assert sorted(logged) == ["c1/pattern", "c1/projection", "c2/pattern", "c2/projection"]
    client = plugin_client(tmp_path)
    tags = client.get(PREFIX + "tags").json["run"]
    assert sorted(tags) == ["c1/pattern", "c1/projection", "c2/pattern", "c2/projection"]
    assert tags["c1/pattern"]["filters"] == [0, 1, 2, 3, 4]
    assert tags["c2/projection"]["kind"] == "projection"
    assert tags["c2/projection"]["filters"] == [0, 1, 2, 3, 4] * 2
    assert tags["c2/projection"]["shape"] == [10, 32, 32, 3]
    f16 = load_npy(client.get(PREFIX + "tensor?run=run&tag=c2/pattern&step=8").data)
    assert f16.dtype == np.float16 and f16.shape == (2, 32, 32, 3)

    def tensor(tag, step):
        return load_npy(client.get(PREFIX + f"tensor?run=run&tag={tag}&step={step}").data)

    np.testing.assert_array_equal(
        tensor("c2/pattern", 7), vis.filter_patterns(model, "c2", range(5), steps=4)
    )
    proj = vis.projections(model, "c2", inputs, range(5))
    np.testing.assert_array_equal(tensor("c2/projection", 7), proj.reshape(10, 32, 32, 3))
    np.testing.assert_array_equal(tensor("c1/projection", 7), logged["c1/projection"])
    np.testing.assert_array_equal(
        tensor("c1/pattern", 8), vis.filter_patterns(model, "c1", [6, 2], steps=4)
    )
    header = json.loads(
        client.get(PREFIX + "tensor?run=run&tag=c1/pattern&step=8").headers["X-Convfilters-Header"]
    )
    assert header["filters"] == [6, 2]


def test_log_patterns_from_a_callback_during_fit(tmp_path):
    model = small_cnn(size=16)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.random((16, 16, 16, 3)).astype(np.float32)
    y = rng.normal(size=(16, 3)).astype(np.float32)
    with tb_convfilters.Writer(tmp_path / "run") as w:
        log = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: vis.log_patterns(
                w, model, ["c2"], epoch, max_filters=4, projection_inputs=x[:1], steps=3
            )
        )
        model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[log])
    client = plugin_client(tmp_path)
    for tag in ("c2/pattern", "c2/projection"):
        steps = client.get(PREFIX + f"steps?run=run&tag={tag}").json
        assert [s["step"] for s in steps] == [0, 1]
    first, second = (
        load_npy(client.get(PREFIX + f"tensor?run=run&tag=c2/pattern&step={s}").data)
        for s in (0, 1)
    )
    assert first.shape == (4, 16, 16, 3) and np.abs(first - second).max() > 1e-3
