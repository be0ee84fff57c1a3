"""Dataset examples through the TF2 summary ops: ``summary.activation(inputs=)`` in eager mode
(the probe inputs once per default writer) and ``summary.activation_pb`` (stateless), read
back with ``reader.examples`` and equal to a brute-force top-k."""

from __future__ import annotations

import numpy as np
import pytest

from tb_convfilters import ReceptiveField, reader, summary
from tb_convfilters._record.receptive_field import cut

tf = pytest.importorskip("tensorflow")

FIELD = ReceptiveField((-1, -1), (2, 2), (3, 3))


def _data(seed=0, n=11):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 3)).astype(np.float32)
    a = rng.normal(size=(n, 4, 4, 5)).astype(np.float32)
    return x, a


def _check(ex, x, a, k, field):
    """`ex` equals the brute-force top-k of `a` (ties to the lower index) and its crops."""
    assert ex.indices.shape == (a.shape[-1], k)
    for c in range(a.shape[-1]):
        order = sorted(range(len(a)), key=lambda i: (-a[i, ..., c].max(), i))[:k]
        np.testing.assert_array_equal(ex.indices[c], order)
        np.testing.assert_array_equal(ex.values[c], [a[i, ..., c].max() for i in order])
        for j, i in enumerate(order):
            pos = np.unravel_index(np.argmax(a[i, ..., c]), a.shape[1:3])
            np.testing.assert_array_equal(ex.positions[c, j], pos)
            if field is None:
                np.testing.assert_array_equal(ex.maps[c, j], a[i, ..., c])
                np.testing.assert_array_equal(ex.crops[c, j], x[i])
            else:
                np.testing.assert_array_equal(ex.crops[c, j], cut(x[i], [0, 1], field.box(pos)))


def _tags(logdir, run):
    return sorted({(e.tag, e.step) for e in reader.entries(logdir, run=run)})


def test_summary_activation_writes_examples_and_inputs_once_per_writer(tmp_path):
    x, a = _data()
    _, a2 = _data(1)
    writer = tf.summary.create_file_writer(str(tmp_path / "run"))
    with writer.as_default():
        summary.activation("conv/act", a, step=1, inputs=x, receptive_field=FIELD)
        summary.activation("conv/act", a2, step=2, inputs=x, receptive_field=FIELD)
        summary.activation("other/act", a, step=2, inputs=x, examples=0)
    writer.flush()
    _check(reader.examples(tmp_path, "run", "conv/act", 1), x, a, 9, FIELD)  # default k: 9
    _check(reader.examples(tmp_path, "run", "conv/act", 2), x, a2, 9, FIELD)
    tags = _tags(tmp_path, "run")
    inputs = [t for t in tags if t[0].startswith("examples_inputs/")]
    assert len(inputs) == 1 and inputs[0][1] == 1, inputs  # once, at the first step
    assert ("other/act/examples", 2) not in tags and ("other/act", 2) in tags
    other = tf.summary.create_file_writer(str(tmp_path / "second"))
    with other.as_default():  # a new writer gets the inputs again
        summary.activation("conv/act", a, step=5, inputs=x, examples=2)
    other.flush()
    _check(reader.examples(tmp_path, "second", "conv/act"), x, a, 2, None)


def test_summary_activation_examples_need_eager_mode(tmp_path):
    x, a = _data()
    writer = tf.summary.create_file_writer(str(tmp_path / "run"))

    @tf.function
    def log(data):
        summary.activation("act", data, step=0, inputs=x)

    with writer.as_default(), pytest.raises(ValueError, match="need eager mode"):
        log(tf.constant(a))


def test_activation_pb_holds_three_values_written_without_a_writer(tmp_path):
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    x, a = _data()
    pb = summary.activation_pb("conv/act", a, inputs=x, examples=3, max_filters=[0, 2, 4])
    tags = [v.tag for v in pb.value]
    assert tags[0] == "conv/act" and tags[2] == "conv/act/examples", tags
    assert tags[1].startswith("examples_inputs/")
    assert [v.tag for v in summary.activation_pb("conv/act", a).value] == ["conv/act"]
    fw = EventFileWriter(str(tmp_path / "run"))
    fw.add_event(event_pb2.Event(step=3, wall_time=1.0, summary=pb))
    fw.close()
    ex = reader.examples(tmp_path, "run", "conv/act")
    np.testing.assert_array_equal(ex.channels, [0, 2, 4])
    _check(ex, x, a[..., [0, 2, 4]], 3, None)
    pb = summary.activation_pb("conv/act", a, inputs=x, receptive_field=FIELD.to_json())
    assert len(pb.value) == 3  # stateless: the inputs again
