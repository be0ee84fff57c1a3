"""Activations keep every sample they are given; a byte budget keeps what fits and says so.

Issue 14 point 3: ``max_samples`` used to default to 1 and drop the other samples silently.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tensorflow as tf

from tb_convfilters import Writer, reader, summary
from tb_convfilters._record import encoding, record

MAPS = np.random.default_rng(0).standard_normal((8, 5, 5, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Each test sees the once-per-process warnings afresh."""
    monkeypatch.setattr(record, "_warned", set(), raising=False)


def _stored(logdir, tag="a", step=0):
    return reader.read(logdir, ".", tag, step=step)


def _no_warnings():
    return warnings.catch_warnings(record=True)


def test_writer_keeps_every_sample_by_default(tmp_path):
    with _no_warnings() as caught, Writer(tmp_path) as w:
        warnings.simplefilter("always")
        w.activation("a", MAPS, 0)
    assert _stored(tmp_path).tobytes() == MAPS.tobytes()
    assert not caught


def test_summary_pb_keeps_every_sample_by_default():
    value = summary.activation_pb("a", MAPS).value[0]
    header = encoding.decode_blobs_header(value.tensor.string_val)
    assert header["shape"] == list(MAPS.shape)
    assert value.tensor.string_val[1] == MAPS.tobytes()


def test_tf_op_keeps_every_sample_by_default_eager_and_in_tf_function(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path))

    @tf.function
    def traced(x):
        summary.activation("b", x, step=1)

    with writer.as_default():
        summary.activation("a", tf.constant(MAPS), step=0)
        traced(tf.constant(MAPS))
    writer.close()
    assert _stored(tmp_path, "a", 0).tobytes() == MAPS.tobytes()
    assert _stored(tmp_path, "b", 1).tobytes() == MAPS.tobytes()


def test_max_samples_stores_the_first_n_quietly(tmp_path):
    with _no_warnings() as caught, Writer(tmp_path) as w:
        warnings.simplefilter("always")
        w.activation("a", MAPS, 0, max_samples=3)
        w.activation("a", MAPS, 1, max_samples=30)
    assert _stored(tmp_path, step=0).tobytes() == MAPS[:3].tobytes()
    assert _stored(tmp_path, step=1).tobytes() == MAPS.tobytes()
    assert not caught
    with pytest.raises(ValueError, match=r"max_samples=0 must be a positive integer or None"):
        summary.activation_pb("a", MAPS, max_samples=0)
    with pytest.raises(ValueError, match=r"max_samples=True must be a positive integer"):
        summary.activation_pb("a", MAPS, max_samples=True)


def test_over_max_bytes_keeps_the_samples_that_fit_and_warns_once_naming_the_knobs(tmp_path):
    per_sample = MAPS[0].nbytes
    with warnings.catch_warnings(record=True) as caught, Writer(tmp_path) as w:
        warnings.simplefilter("always")
        for step in range(3):
            w.activation("a", MAPS, step, max_bytes=3 * per_sample + 10)
    assert [_stored(tmp_path, step=s).tobytes() for s in range(3)] == [MAPS[:3].tobytes()] * 3
    assert len(caught) == 1, [str(c.message) for c in caught]
    message = str(caught[0].message)
    for words in ("first 3 of its 8 samples", "max_bytes=", "max_samples", "float16"):
        assert words in message
    assert caught[0].filename == __file__  # points at the caller's line


def test_float16_fits_more_samples_under_the_same_budget():
    budget = 4 * MAPS[0].nbytes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = summary.activation_pb("a", MAPS, max_bytes=budget, dtype="float16").value[0]
    assert encoding.decode_blobs_header(value.tensor.string_val)["shape"][0] == 8
    assert not caught


def test_one_sample_over_the_budget_is_still_an_error():
    with pytest.raises(ValueError, match="over max_bytes=10"):
        summary.activation_pb("a", MAPS, max_bytes=10)


def test_patterns_default_cap_warns_once_and_an_explicit_cap_is_quiet(tmp_path):
    import keras

    from tb_convfilters import vis

    inputs = keras.Input((12, 12, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(66, 3, name="c")(inputs))
    with warnings.catch_warnings(record=True) as caught, Writer(tmp_path) as w:
        warnings.simplefilter("always")
        vis.log_patterns(w, model, "c", 0, steps=1)
        vis.log_patterns(w, model, "c", 1, steps=1)
        assert len(caught) == 1, [str(c.message) for c in caught]
        vis.log_patterns(w, model, "c", 2, steps=1, max_filters=66)
        vis.log_patterns(w, model, "c", 3, steps=1, max_filters=5)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "has 66 filters" in message and "first 64" in message and "max_filters=66" in message
    assert [len(_stored(tmp_path, "c/pattern", s)) for s in range(4)] == [64, 64, 66, 5]
