"""Dataset examples from FiltersCallback (Keras 3, TF backend), read back with
``reader.examples`` from the event files, against brute-force recomputations; and
``keras.receptive_field`` against fields worked out by hand and input gradients."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tb_convfilters import reader
from tb_convfilters._record.receptive_field import ReceptiveField
from tb_convfilters._writing.writer import Writer
from tb_convfilters.keras import FiltersCallback, receptive_field

L = keras.layers
K = 9
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], "f4")  # vertical edges


def fit(model: keras.Model, x: np.ndarray, log_dir, epochs: int = 1, **options) -> None:
    model.compile(optimizer="sgd", loss="mse")
    y = np.zeros((len(x), *model.output.shape[1:]), "f4")
    model.fit(
        x,
        y,
        epochs=epochs,
        batch_size=32,
        verbose=0,
        callbacks=[FiltersCallback(log_dir, **options)],
    )


def brute_force(maps: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel of NHWC `maps`: top-k inputs by maximum over positions (ties to the
    lower index), their maxima and the first position of each maximum."""
    n, c = maps.shape[0], maps.shape[-1]
    flat = maps.reshape(n, -1, c)
    best = flat.max(axis=1)  # (n, C)
    where = flat.argmax(axis=1)
    idx = np.stack([np.lexsort((np.arange(n), -best[:, ch]))[:k] for ch in range(c)])
    values = np.take_along_axis(best.T, idx, 1)
    flat_pos = np.take_along_axis(where.T, idx, 1)
    positions = np.stack(np.unravel_index(flat_pos, maps.shape[1:-1]), axis=-1)
    return idx, values, positions


def cut_by_hand(image: np.ndarray, start: int, size: int, pos: tuple[int, int], jump: int):
    """The box ``[start + p * jump, + size)`` per spatial axis of an HWC image, zero outside."""
    pad = size + abs(start) + max(pos) * jump
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    r, c = (start + p * jump + pad for p in pos)
    return padded[r : r + size, c : c + size]


# ---- planted: Sobel filters on bar images ----


def bar_images(n: int, size: int = 24, seed: int = 0):
    """Half hold one thin vertical bar, half one horizontal (length 10), plus small noise;
    returns the images, which are vertical, and each bar's (row, col) first pixel."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.02, (n, size, size, 1)).astype("f4")
    vertical = np.arange(n) % 2 == 0
    where = rng.integers(2, size - 12, (n, 2))
    for i, (r, c) in enumerate(where):
        if vertical[i]:
            x[i, r : r + 10, c, 0] += 1
        else:
            x[i, r, c : c + 10, 0] += 1
    return x, vertical, where


def test_planted_sobel_examples_are_bars_of_their_orientation(tmp_path):
    x, vertical, where = bar_images(64)
    inputs = keras.Input((24, 24, 1))
    conv = L.Conv2D(3, 3, padding="same", use_bias=False, name="conv1", trainable=False)
    maps = conv(inputs)
    model = keras.Model(inputs, L.Dense(1)(L.GlobalMaxPooling2D()(maps)))
    kernel = np.zeros((3, 3, 1, 3), "f4")
    kernel[..., 0, 0], kernel[..., 0, 1] = SOBEL_X, SOBEL_X.T  # filter 2: all zero
    conv.set_weights([kernel])
    fit(model, x, tmp_path, sample_inputs=x, batch_size=24)

    ex = reader.examples(tmp_path, "train", "conv1/activation")
    assert ex.field == ReceptiveField((-1, -1), (1, 1), (3, 3))  # 3x3 "same": rows p-1..p+1
    assert ex.indices.shape == (3, K) and ex.ranked == 64 and list(ex.channels) == [0, 1, 2]
    assert vertical[ex.indices[0]].all() and not vertical[ex.indices[1]].any()

    # brute force: a numpy cross-correlation of each image, max over positions
    padded = np.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))
    numpy_maps = np.einsum("nhwij,ijc->nhwc", windows, kernel[:, :, 0, :])
    idx, values, positions = brute_force(numpy_maps)
    np.testing.assert_array_equal(ex.indices[:2], idx[:2])
    np.testing.assert_allclose(ex.values, values, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ex.positions[:2], positions[:2])
    assert (ex.values[:2] > 3.5).all()  # 4 on the bar, over 2 at the other filter's bar ends
    # the zero filter: all ties, broken by the lower index, at the first position
    np.testing.assert_array_equal(ex.indices[2], np.arange(K))
    assert (ex.values[2] == 0).all() and (ex.positions[2] == 0).all()

    crops = ex.crops
    assert crops.shape == (3, K, 3, 3, 1)
    for ch in range(3):
        for j, (i, (r, c)) in enumerate(zip(ex.indices[ch], ex.positions[ch], strict=True)):
            want = np.pad(x[i], ((1, 1), (1, 1), (0, 0)))[r : r + 3, c : c + 3]
            np.testing.assert_array_equal(crops[ch, j], want)
    for j, i in enumerate(ex.indices[0]):  # vertical: left of the bar, the bar in its right column
        r, c = ex.positions[0, j]
        assert c == where[i, 1] - 1 and where[i, 0] <= r < where[i, 0] + 10
        assert (crops[0, j, :, 2, 0] > 0.9).all() and (np.abs(crops[0, j, :, :2]) < 0.1).all()
    for j, i in enumerate(ex.indices[1]):  # horizontal: above the bar
        r, c = ex.positions[1, j]
        assert r == where[i, 0] - 1 and where[i, 1] <= c < where[i, 1] + 10
        assert (crops[1, j, 2, :, 0] > 0.9).all()

    inputs_stored = ex.inputs
    assert ex.input_layout == "NHWC" and inputs_stored.tobytes() == x.tobytes()


# ---- deeper: conv (stride 2, same) -> max pool -> conv (dilation 2, valid) ----


def deep_model() -> keras.Model:
    inputs = keras.Input((29, 29, 2))
    a = L.Conv2D(4, 3, strides=2, padding="same", name="c1")(inputs)  # 15x15
    b = L.MaxPooling2D(2, name="pool")(a)  # 7x7
    c = L.Conv2D(3, 3, dilation_rate=2, name="c2")(b)  # 3x3
    return keras.Model(inputs, L.Dense(1)(L.Flatten()(c)))


# worked out by hand: c1 pads max((15-1)*2 + 3 - 29, 0) = 2 in all, 1 before;
# c2 over pool: start 0, jump 1, size 2*(3-1)+1 = 5; over c1: jump 2, size 4*2+2 = 10;
# over the input: start 0*2 - 1, jump 4, size 9*2 + 3 = 21
C1_FIELD = ReceptiveField((-1, -1), (2, 2), (3, 3))
C2_FIELD = ReceptiveField((-1, -1), (4, 4), (21, 21))


def test_deeper_stack_examples_equal_brute_force_and_crops_by_hand(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((100, 29, 29, 2)).astype("f4")
    model = deep_model()
    fit(model, x, tmp_path, sample_inputs=x, batch_size=16)  # 100 = 6 * 16 + 4
    probe = keras.Model(model.input, [model.get_layer(n).output for n in ("c1", "c2")])
    outs = [probe(x[s : s + 16], training=False) for s in range(0, 100, 16)]
    for name, field, i in (("c1", C1_FIELD, 0), ("c2", C2_FIELD, 1)):
        maps = np.concatenate([keras.ops.convert_to_numpy(o[i]) for o in outs])
        ex = reader.examples(tmp_path, "train", f"{name}/activation", step=0)
        idx, values, positions = brute_force(maps)
        np.testing.assert_array_equal(ex.indices, idx)
        np.testing.assert_array_equal(ex.values, values)
        np.testing.assert_array_equal(ex.positions, positions)
        assert ex.field == field and ex.maps is None
        crops = ex.crops
        for ch in range(len(idx)):
            for j in range(K):
                pos = tuple(ex.positions[ch, j])
                want = cut_by_hand(x[idx[ch, j]], field.start[0], field.size[0], pos, field.jump[0])
                np.testing.assert_array_equal(crops[ch, j], want)


def gradient_region(model: keras.Model, layer: str, x: np.ndarray, pos, channel: int = 0):
    """Rows and columns of the input where one output unit's gradient is non-zero."""
    sub = keras.Model(model.input, model.get_layer(layer).output)
    xt = tf.constant(x[None])
    with tf.GradientTape() as tape:
        tape.watch(xt)
        unit = sub(xt, training=False)[0, pos[0], pos[1], channel]
    g = np.abs(tape.gradient(unit, xt).numpy()[0]).sum(-1)
    rows, cols = np.nonzero(g)
    return rows, cols


def test_fields_hold_the_input_gradient_of_one_unit():
    model = deep_model()
    x = np.random.default_rng(2).standard_normal((29, 29, 2)).astype("f4")
    assert receptive_field(model, model.get_layer("c1")) == C1_FIELD
    assert receptive_field(model, model.get_layer("c2")) == C2_FIELD
    for layer, field, pos in (("c1", C1_FIELD, (3, 5)), ("c2", C2_FIELD, (1, 2))):
        rows, cols = gradient_region(model, layer, x, pos)
        (r0, size), (c0, _) = field.box(pos)
        assert rows.size and r0 <= rows.min() and rows.max() < r0 + size, layer
        assert c0 <= cols.min() and cols.max() < c0 + size, layer
        if layer == "c1":  # no pooling: the gradient fills the whole 3x3 field
            assert (rows.min(), rows.max(), cols.min(), cols.max()) == (r0, r0 + 2, c0, c0 + 2)
        else:  # max pooling passes one element per window: smaller, but spans most of it
            assert rows.max() - rows.min() >= size - 6


# ---- receptive_field unit cases ----


def field_of(inputs, output, layer_name: str = "out"):
    model = keras.Model(inputs, output)
    return receptive_field(model, model.get_layer(layer_name))


@pytest.mark.parametrize(
    ("n", "layer", "want"),
    [
        (10, L.Conv2D(1, 5, padding="same", name="out"), ((-2, -2), (1, 1), (5, 5))),
        (10, L.Conv2D(1, 3, 2, padding="same", name="out"), ((0, 0), (2, 2), (3, 3))),
        (11, L.Conv2D(1, 3, 2, padding="same", name="out"), ((-1, -1), (2, 2), (3, 3))),
        (
            10,
            L.Conv2D(1, 3, padding="valid", dilation_rate=3, name="out"),
            ((0, 0), (1, 1), (7, 7)),
        ),
        (10, L.Conv2D(1, (3, 1), strides=(1, 3), name="out"), ((0, 0), (1, 3), (3, 1))),
        (10, L.MaxPooling2D(3, 2, padding="same", name="out"), ((0, 0), (2, 2), (3, 3))),
        (10, L.AveragePooling2D(2, name="out"), ((0, 0), (2, 2), (2, 2))),
        (10, L.DepthwiseConv2D(3, 2, padding="same", name="out"), ((0, 0), (2, 2), (3, 3))),
        (10, L.SeparableConv2D(2, 5, padding="same", name="out"), ((-2, -2), (1, 1), (5, 5))),
        (10, L.ZeroPadding2D(((2, 1), (0, 3)), name="out"), ((-2, 0), (1, 1), (1, 1))),
        (10, L.Cropping2D(((1, 0), (2, 2)), name="out"), ((1, 2), (1, 1), (1, 1))),
        (10, L.LayerNormalization(name="out"), ((0, 0), (1, 1), (1, 1))),
        (10, L.LayerNormalization(axis=(1, 2, 3), name="out"), None),
        (10, L.UpSampling2D(name="out"), None),
        (10, L.Conv2DTranspose(1, 3, name="out"), None),
    ],
)
def test_receptive_field_of_one_layer(n, layer, want):
    inputs = keras.Input((n, n, 2))
    got = field_of(inputs, layer(inputs))
    assert got == (None if want is None else ReceptiveField(*want))


def test_receptive_field_causal_1d_stacks_and_shifts():
    inputs = keras.Input((20, 1))
    a = L.Conv1D(2, 3, padding="causal", dilation_rate=2, name="a")(inputs)  # pads 4 before
    b = L.ZeroPadding1D((3, 0))(a)
    c = L.Conv1D(2, 2, strides=2, name="out")(b)
    assert field_of(inputs, c, "a") == ReceptiveField((-4,), (1,), (5,))
    # out position q reads b[2q, 2q+1] = a[2q-3, 2q-2]: input from 2q-7, 6 wide
    assert field_of(inputs, c) == ReceptiveField((-7,), (2,), (6,))


def test_receptive_field_of_branches_is_their_union():
    inputs = keras.Input((16, 16, 1))
    a = L.Conv2D(2, 3, padding="same")(inputs)
    a = L.BatchNormalization()(L.ReLU()(a))
    a = L.Conv2D(2, 3, padding="same")(a)
    skip = L.Conv2D(2, 1)(inputs)
    added = L.Add(name="out")([a, skip])  # a residual block
    assert field_of(inputs, added) == ReceptiveField((-2, -2), (1, 1), (5, 5))
    shifted = L.Cropping2D(((0, 2), (0, 2)))(L.ZeroPadding2D(((2, 0), (2, 0)))(inputs))
    both = L.Concatenate(name="out")([a, shifted])  # channels: union of the two boxes
    assert field_of(inputs, both) == ReceptiveField((-2, -2), (1, 1), (5, 5))
    strided = L.Conv2D(2, 4, strides=4)(inputs)  # 4x4, jump 4
    wide = L.Conv2D(2, 13)(inputs)  # 4x4, jump 1
    assert field_of(inputs, L.Add(name="out")([strided, wide])) is None  # jumps differ
    side = L.Concatenate(axis=1, name="out")([a, a])  # along rows: no box per position
    assert field_of(inputs, side) is None


def test_receptive_field_channels_first_reads_the_spatial_axes():
    inputs = keras.Input((1, 10, 9))
    out = L.Conv2D(2, 4, 3, padding="same", data_format="channels_first", name="out")(inputs)
    # rows: 10 -> 4, pads (4-1)*3 + 4 - 10 = 3 in all, 1 before; columns: 9 -> 3, 1 in all
    assert field_of(inputs, out) == ReceptiveField((-1, 0), (3, 3), (4, 4))


def test_receptive_field_through_a_nested_model_and_unknown_paths():
    inner = keras.Sequential([keras.Input((12, 12, 1)), L.Conv2D(2, 3, name="inner")])
    inputs = keras.Input((12, 12, 1))
    out = L.Conv2D(2, 3, strides=2, name="out")(inner(inputs))
    model = keras.Model(inputs, out)
    assert receptive_field(model, model.get_layer("out")) == ReceptiveField((0, 0), (2, 2), (5, 5))
    assert receptive_field(model, inner.get_layer("inner")) is None  # not in model's graph
    flat = L.Dense(3, name="out")(L.Flatten()(inputs))
    assert field_of(inputs, flat) is None
    seq = keras.Sequential(
        [keras.Input((8, 8, 1)), L.Conv2D(1, 3, name="a"), L.Conv2D(1, 3, name="b")]
    )
    assert receptive_field(seq, seq.get_layer("b")) == ReceptiveField((0, 0), (1, 1), (5, 5))


def test_unknown_field_keeps_maps_and_crops_are_whole_inputs(tmp_path):
    inputs = keras.Input((6, 6, 1))
    up = L.UpSampling2D()(inputs)
    conv = L.Conv2D(3, 3, name="conv")(up)  # 10x10 after 12x12
    model = keras.Model(inputs, L.GlobalAveragePooling2D()(conv))
    x = np.random.default_rng(3).standard_normal((20, 6, 6, 1)).astype("f4")
    fit(model, x, tmp_path, sample_inputs=x, examples=4, max_filters=[0, 2])
    ex = reader.examples(tmp_path, "train", "conv/activation")
    assert ex.field is None and list(ex.channels) == [0, 2]  # the kept filters only
    maps = keras.ops.convert_to_numpy(keras.Model(inputs, conv)(x, training=False))
    idx, values, positions = brute_force(maps, 4)
    np.testing.assert_array_equal(ex.indices, idx[[0, 2]])
    np.testing.assert_array_equal(ex.positions, positions[[0, 2]])
    want_maps = np.stack([maps[idx[ch]][..., ch] for ch in (0, 2)])  # (C, k, H, W)
    np.testing.assert_array_equal(ex.maps, want_maps)
    np.testing.assert_array_equal(ex.crops, x[idx[[0, 2]]])


# ---- the knob, failures, and the storage budget ----


def small_model() -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    a = L.Conv2D(2, 3, padding="same", name="c1")(inputs)
    b = L.Conv2D(2, 3, name="c2")(a)
    return keras.Model(inputs, L.GlobalAveragePooling2D()(b))


def logged_tags(log_dir) -> set[str]:
    return set(reader.list(log_dir)["train"])


def test_examples_zero_logs_none_and_bad_values_raise(tmp_path):
    x = np.random.default_rng(4).standard_normal((12, 8, 8, 1)).astype("f4")
    fit(small_model(), x, tmp_path / "off", sample_inputs=x, examples=0)
    tags = logged_tags(tmp_path / "off")
    assert "c1/activation" in tags and not any("examples" in t for t in tags)
    fit(small_model(), x, tmp_path / "on", sample_inputs=x)  # the default: 9
    tags = logged_tags(tmp_path / "on")
    assert {"c1/activation/examples", "c2/activation/examples"} <= tags
    assert reader.examples(tmp_path / "on", "train", "c2/activation").indices.shape == (2, 9)
    for bad in (-1, 2.5, True, 5000, "9"):
        with pytest.raises(ValueError, match=rf"examples={bad!r} must be an integer from 0"):
            FiltersCallback(tmp_path, sample_inputs=x, examples=bad)


def test_a_failing_layer_warns_once_and_the_others_are_logged(tmp_path, monkeypatch):
    x = np.random.default_rng(5).standard_normal((12, 8, 8, 1)).astype("f4")
    real = Writer.write_examples

    def failing(self, tag, *args, **kwargs):
        if tag == "c1/activation":
            raise RuntimeError("planted failure")
        return real(self, tag, *args, **kwargs)

    monkeypatch.setattr(Writer, "write_examples", failing)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(small_model(), x, tmp_path / "a", epochs=3, sample_inputs=x)  # fit() returns
    planted = [w for w in caught if "planted failure" in str(w.message)]
    assert len(planted) == 1 and "c1/activation" in str(planted[0].message)
    tags = logged_tags(tmp_path / "a")
    assert "c1/activation" in tags and "c1/activation/examples" not in tags
    assert reader.examples(tmp_path / "a", "train", "c2/activation", step=2).ranked == 12
    with pytest.raises(RuntimeError, match="planted failure"):
        fit(small_model(), x, tmp_path / "b", sample_inputs=x, raise_errors=True)


def test_storage_budget_counts_examples_bytes(tmp_path, monkeypatch):
    from tb_convfilters._writing.policies import StepBudget

    seen: list[int] = []
    real = StepBudget.check

    def spy(self, nbytes, where):
        seen.append(nbytes)
        real(self, nbytes, where)

    monkeypatch.setattr(StepBudget, "check", spy)
    x = np.random.default_rng(6).standard_normal((40, 8, 8, 1)).astype("f4")
    fit(small_model(), x, tmp_path / "off", epochs=2, sample_inputs=x, examples=0)
    fit(small_model(), x, tmp_path / "on", epochs=2, sample_inputs=x, examples=5)
    off, on = seen[:2], seen[2:]
    # per layer: 2 channels x 5 x (index, value, 2 position ints) of 4 bytes; inputs once
    examples_bytes = 2 * (2 * 5 * 4 * 4)
    assert on == [off[0] + examples_bytes + x.nbytes, off[1] + examples_bytes]
    budget_mb = (off[0] + 1) / (1 << 20)
    for examples, warned in ((0, False), (5, True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit(
                small_model(),
                x,
                tmp_path / f"b{examples}",
                sample_inputs=x,
                examples=examples,
                budget_mb=budget_mb,
            )
        assert any("budget_mb" in str(w.message) for w in caught) == warned
