"""Dataset examples from FiltersCallback (Keras 3, TF backend), read back with
``reader.examples`` from the event files, against brute-force recomputations; and
``keras.receptive_field`` against fields worked out by hand and input gradients."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tb_convfilters._record.receptive_field import ReceptiveField
from tb_convfilters.keras import receptive_field

L = keras.layers
K = 9


# ---- a deeper stack: conv (stride 2, same) -> max pool -> conv (dilation 2, valid) ----


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
