"""Dataset examples, the framework-free core: the streaming top-k against brute force,
receptive fields against brute-force index propagation, crops cut by hand, and the
Writer -> event file -> reader round trip (probe inputs once per digest)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tb_convfilters as tc
from tb_convfilters import reader
from tb_convfilters._record import encoding
from tb_convfilters._record import examples as ex
from tb_convfilters._record.receptive_field import ReceptiveField, cut, same_padding
from tb_convfilters._writing import examples as writing_examples


def brute_top_k(a: np.ndarray, layout: str, k: int):
    """(indices, values, positions) per channel: sort every input by its maximum."""
    c_axis = layout.index("C")
    maps = np.moveaxis(a, c_axis, 1)  # (n, C, *spatial)
    n, c = maps.shape[:2]
    flat = maps.reshape(n, c, -1).astype(np.float64)
    flat = np.where(np.isnan(flat), -np.inf, flat)
    out = []
    for ch in range(c):
        best = flat[:, ch].max(axis=1)
        order = sorted(range(n), key=lambda i: (-best[i], i))[:k]
        positions = [np.unravel_index(int(np.argmax(flat[i, ch])), maps.shape[2:]) for i in order]
        out.append((order, best[order], positions))
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    c=st.integers(1, 5),
    k=st.integers(1, 12),
    batch=st.integers(1, 17),
    layout=st.sampled_from(["NHWC", "NCHW", "NWC", "NCW", "NCDHW"]),
    ties=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_top_k_equals_brute_force(n, c, k, batch, layout, ties, seed):
    rng = np.random.default_rng(seed)
    shape = {"N": n, "C": c, "H": 3, "W": 4, "D": 2}
    a = rng.normal(size=[shape[letter] for letter in layout]).astype(np.float32)
    if ties:  # few distinct values: many equal maxima, broken by the lower index
        a = np.round(a).astype(np.float32)
    if n > 2:
        a[1] = np.nan  # NaN ranks last and is never a maximum
    found = ex.rank(a, layout, k, keep_maps=True, batch=batch)
    assert found.inputs == n and found.indices.shape == (c, min(k, n))
    c_axis = layout.index("C")
    for ch, (order, values, positions) in enumerate(brute_top_k(a, layout, k)):
        assert found.indices[ch].tolist() == order
        np.testing.assert_array_equal(found.values[ch].astype(np.float64), values)
        assert [tuple(p) for p in found.positions[ch]] == [tuple(p) for p in positions]
        for j, i in enumerate(order):
            expect = np.take(a[i], ch, axis=c_axis - 1)
            np.testing.assert_array_equal(found.maps[ch, j], expect)


def test_top_k_is_the_same_whatever_the_batches():
    a = np.random.default_rng(0).normal(size=(300, 6, 6, 8)).astype(np.float16)
    whole = ex.rank(a, "NHWC", 9, keep_maps=False, batch=300)
    for batch in (1, 7, 64):
        part = ex.rank(a, "NHWC", 9, keep_maps=False, batch=batch)
        np.testing.assert_array_equal(part.indices, whole.indices)
        np.testing.assert_array_equal(part.positions, whole.positions)
    assert whole.maps is None and whole.values.dtype == np.float32


def test_top_k_refuses_batches_of_another_shape():
    top = ex.TopK(3).add(np.zeros((2, 4, 4, 3)), "NHWC")
    with pytest.raises(ValueError, match="does not match"):
        top.add(np.zeros((2, 4, 4, 5)), "NHWC")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "9", ex.MAX_EXAMPLES + 1])
def test_examples_knob_errors_name_the_value(bad):
    with pytest.raises(ValueError, match=rf"examples={bad!r} must be an integer from 0"):
        ex.check_examples(bad)


def brute_field_1d(layers, p):
    """Input indices output position p depends on (padding included: no clipping)."""
    needed = {p}
    for k, s, d, pad in reversed(layers):
        needed = {q * s - pad + d * t for q in needed for t in range(k)}
    return min(needed), max(needed) + 1 - min(needed)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 3), st.integers(0, 3)),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 6),
)
def test_receptive_field_equals_index_propagation(layers, p):
    field = ReceptiveField.identity(1)
    for k, s, d, pad in reversed(layers):  # walked back from the output
        field = field.through([k], [s], [d], [pad])
    assert field.box([p]) == (brute_field_1d(layers, p),)


def test_union_and_shift():
    a = ReceptiveField((0, 0), (2, 2), (3, 3))
    b = ReceptiveField((-1, 1), (2, 2), (5, 1))
    assert a.union(b) == ReceptiveField((-1, 0), (2, 2), (5, 3))
    assert a.union(ReceptiveField((0, 0), (1, 1), (1, 1))) is None
    assert a.shifted((-2, 1)) == ReceptiveField((-2, 1), (2, 2), (3, 3))
    with pytest.raises(ValueError, match="jump and size"):
        ReceptiveField((0,), (0,), (1,))
    with pytest.raises(ValueError, match="integers"):
        ReceptiveField((0, 0), (1,), (1, 1))


@pytest.mark.parametrize("n,k,s,d", [(28, 3, 1, 1), (28, 3, 2, 1), (27, 5, 2, 1), (32, 3, 1, 2)])
def test_same_padding_keeps_ceil_n_over_s_outputs(n, k, s, d):
    before = same_padding(n, k, s, d)
    total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
    assert before == total // 2
    assert (n + total - d * (k - 1) - 1) // s + 1 == -(-n // s)


def test_cut_fills_zero_past_the_border():
    image = np.arange(1, 5 * 6 * 2 + 1, dtype=np.float32).reshape(5, 6, 2)
    crop = cut(image, [0, 1], ((-1, 3), (4, 3)))
    assert crop.shape == (3, 3, 2)
    np.testing.assert_array_equal(crop[0], 0)  # row -1
    np.testing.assert_array_equal(crop[1:, :2], image[0:2, 4:6])
    np.testing.assert_array_equal(crop[:, 2], 0)  # column 6
    assert not cut(image, [0, 1], ((9, 2), (0, 2))).any()


def field_3x3_stride_2():
    """A 3x3 convolution of stride 2 with one pixel of padding before."""
    return ReceptiveField.identity(2).through([3, 3], [2, 2], [1, 1], [1, 1])


@pytest.mark.parametrize("blocking", [True, False])
def test_writer_round_trip_crops_and_inputs_once(tmp_path, blocking):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 12, 12, 3)).astype(np.float32)
    act = rng.normal(size=(30, 6, 6, 5)).astype(np.float32)
    field = field_3x3_stride_2()
    with tc.Writer(tmp_path / "run", blocking=blocking) as w:
        for step in (0, 1):
            w.activation(
                "c/activation", act + step, step, inputs=x, receptive_field=field, max_samples=2
            )
        w.activation(
            "capped/activation",
            act,
            1,
            inputs=x,
            receptive_field=field,
            max_filters=[4, 1],
            examples=3,
        )
    listed = reader.list(tmp_path)["run"]
    inputs_tags = [t for t in listed if t.startswith(ex.INPUTS_PREFIX)]
    assert len(inputs_tags) == 1 and listed[inputs_tags[0]] == [0]  # once per digest
    assert listed["c/activation/examples"] == [0, 1]
    np.testing.assert_array_equal(reader.read(tmp_path, "run", "c/activation"), act[:2] + 1)

    got = reader.examples(tmp_path, "run", "c/activation", step=1)
    assert got.step == 1 and got.ranked == 30 and got.indices.shape == (5, 9)
    assert got.input_layout == "NHWC" and got.field == field
    np.testing.assert_array_equal(got.inputs, x)
    crops = got.crops
    assert crops.shape == (5, 9, 3, 3, 3)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for c, order in enumerate(o for o, _, _ in brute_top_k(act + 1, "NHWC", 9)):
        assert got.indices[c].tolist() == order
        for j, i in enumerate(order):
            y, xx = got.positions[c, j]
            np.testing.assert_array_equal(
                crops[c, j], padded[i, 2 * y : 2 * y + 3, 2 * xx : 2 * xx + 3]
            )
            assert got.values[c, j] == (act[i, :, :, c] + 1).max()

    capped = reader.examples(tmp_path, "run", "capped/activation/examples")
    assert capped.channels.tolist() == [4, 1] and capped.indices.shape == (2, 3)
    full = reader.examples(tmp_path, "run", "c/activation", step=0)
    np.testing.assert_array_equal(capped.indices, full.indices[[4, 1], :3])


def test_unknown_field_keeps_the_maps_and_gives_whole_inputs(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 3, 8, 8)).astype(np.float32)
    act = rng.normal(size=(10, 4, 5, 5)).astype(np.float32)
    with tc.Writer(tmp_path) as w:
        w.activation("a", act, 0, layout="NCHW", inputs=x, examples=2)
    got = reader.examples(tmp_path, ".", "a")
    assert got.field is None and got.input_layout == "NCHW"
    assert got.maps.shape == (4, 2, 5, 5) and got.crops.shape == (4, 2, 3, 8, 8)
    for c in range(4):
        for j in range(2):
            np.testing.assert_array_equal(got.maps[c, j], act[got.indices[c, j], c])
            np.testing.assert_array_equal(got.crops[c, j], x[got.indices[c, j]])


def test_examples_without_inputs_keep_indices_values_positions(tmp_path):
    act = np.random.default_rng(3).normal(size=(6, 4, 4, 2)).astype(np.float32)
    with tc.Writer(tmp_path) as w:
        w.activation("a", act, 0)  # no inputs: no examples by default
        w.activation("b", act, 0, examples=4)
    assert "a/examples" not in reader.list(tmp_path)["."]
    got = reader.examples(tmp_path, ".", "b")
    assert got.inputs is None and got.crops is None and got.indices.shape == (2, 4)


def test_activation_without_examples_says_so(tmp_path):
    with tc.Writer(tmp_path) as w:
        w.activation("a", np.ones((2, 3, 3, 1), np.float32), 0)
    with pytest.raises(reader.NotFoundError, match="a/examples"):
        reader.examples(tmp_path, ".", "a")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(inputs=np.zeros((3, 8, 8, 1))), ValueError, "one input per sample"),
        (dict(inputs=np.zeros((4, 8, 8))), ValueError, "no layout for examples"),
        (dict(inputs=np.zeros((4, 8, 8, 1)), input_layout="NCW"), ValueError, "input_layout="),
        (dict(examples=-2), ValueError, "examples=-2"),
        (dict(receptive_field=ReceptiveField((0,), (1,), (1,)), examples=1), ValueError, "1 axes"),
        (dict(receptive_field=(0, 1, 1), examples=1), TypeError, "receptive_field of type tuple"),
    ],
)
def test_writer_argument_errors(tmp_path, kwargs, error, match):
    with tc.Writer(tmp_path) as w, pytest.raises(error, match=match):
        w.activation("a", np.ones((4, 4, 4, 2), np.float32), 0, **kwargs)


def test_probe_inputs_too_large_warn_once_and_examples_stay(tmp_path, monkeypatch):
    monkeypatch.setattr(writing_examples, "DEFAULT_MAX_BYTES", 100)
    x = np.zeros((4, 8, 8, 1), np.float32)
    act = np.random.default_rng(4).normal(size=(4, 8, 8, 2)).astype(np.float32)
    with tc.Writer(tmp_path) as w, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            w.activation("a", act, step, inputs=x)
    messages = [str(c.message) for c in caught if "probe inputs are not stored" in str(c.message)]
    assert len(messages) == 1 and "dtype='float16'" in messages[0]
    got = reader.examples(tmp_path, ".", "a")
    assert got.crops is None and got.indices.shape == (2, 4)


def test_a_corrupt_examples_payload_is_a_record_error():
    header = {"parts": [["indices", "<i4", [2, 3]]]}
    with pytest.raises(encoding.RecordError, match="payload has"):
        ex.unpack(header, b"\0" * 30)
    with pytest.raises(encoding.RecordError, match="bad examples parts"):
        ex.unpack({"parts": [["indices", "nonsense", [2]]]}, b"")


def test_the_call_that_reports_an_earlier_failure_keeps_its_examples(tmp_path):
    import shutil

    run = tmp_path / "run"
    x = np.random.default_rng(5).normal(size=(6, 5, 5, 1)).astype(np.float32)
    act = np.random.default_rng(6).normal(size=(6, 5, 5, 2)).astype(np.float32)
    w = tc.Writer(run)
    w.kernel("k", np.ones((3, 3, 1, 2), np.float32), 0)
    w.flush()
    shutil.rmtree(run)
    w.kernel("k", np.ones((3, 3, 1, 2), np.float32), 1)  # fails in the background
    w._queue.wait()
    with pytest.raises(tc.WriterError, match=r"tag 'k' step 1"):
        w.activation("a", act, 1, inputs=x)  # reports it; its own records are queued
    w.close()
    got = reader.examples(tmp_path, "run", "a", step=1)
    assert got.crops is not None and got.indices.shape == (2, 6)
