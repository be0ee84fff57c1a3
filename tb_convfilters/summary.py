"""Summary ops: TF2 ops (``kernel``, ``activation``) and numpy-only twins (``*_pb``).

The ``*_pb`` functions never import TensorFlow; the TF2 ops import it on first
use, so ``import tb_convfilters.summary`` works without TensorFlow installed.

Dataset examples (``inputs=``, ``examples=``) are ranked in numpy, so the TF2
``activation`` logs them in eager mode only; the probe inputs go to each default
writer once per digest, while ``activation_pb`` (stateless) holds them in every
Summary it returns.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

from tb_convfilters._record import encoding, metadata, parallel
from tb_convfilters._record.arguments import check_tag
from tb_convfilters._record.examples import INPUTS_PREFIX, rank
from tb_convfilters._record.patterns import _check_pattern_values, _pattern_options, pattern_record
from tb_convfilters._record.receptive_field import ReceptiveField
from tb_convfilters._record.record import Record, make_record
from tb_convfilters._writing.examples import examples_arguments, write_examples

Cap = int | Sequence[int] | None


def _summary_pb(
    tag: str, rec: Record, description: str | None, summary: summary_pb2.Summary | None = None
) -> summary_pb2.Summary:
    """`summary` (default a new one) with the value of `rec` at `tag` added."""
    check_tag(tag)
    blobs = rec.blobs()
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(blobs))]
        ),
        string_val=blobs,
    )
    summary = summary_pb2.Summary() if summary is None else summary
    summary.value.add(
        tag=tag,
        metadata=metadata.create_summary_metadata(rec.header, description),
        tensor=tensor,
    )
    return summary


def kernel_pb(
    tag: str,
    data: Any,
    *,
    layout: str = "HWIO",
    description: str | None = None,
    dtype: str | None = None,
    max_filters: Cap = None,
    max_channels: Cap = None,
    image_shape: Sequence[int] | None = None,
    max_bytes: int | None = None,
) -> summary_pb2.Summary:
    """A ``Summary`` proto holding one conv kernel, exactly as given (numpy only).

    Args:
      tag: the series name, e.g. ``"conv1/kernel"``.
      data: array-like whose axes are named by `layout`.
      layout: e.g. ``"HWIO"`` (Keras) or ``"OIHW"`` (PyTorch); see ``layouts.KERNEL_LAYOUTS``.
      description: Markdown shown with the series.
      dtype: store as this dtype instead (e.g. ``"float16"`` halves storage).
      max_filters / max_channels: keep the first N output filters / input channels
        (or the listed indices); the kept indices are recorded.
      image_shape: for Dense layouts, ``(h, w, c)`` of the input side, to draw
        each unit's weights as an image.
      max_bytes: refuse tensors larger than this (default 1 GiB).
    """
    rec = make_record(
        data,
        kind="kernel",
        layout=layout,
        dtype=dtype,
        max_filters=max_filters,
        max_channels=max_channels,
        image_shape=image_shape,
        max_bytes=max_bytes,
        tag=tag,
    )
    return _summary_pb(tag, rec, description)


def activation_pb(
    tag: str,
    data: Any,
    *,
    layout: str = "NHWC",
    max_samples: int | None = None,
    description: str | None = None,
    dtype: str | None = None,
    max_filters: Cap = None,
    max_bytes: int | None = None,
    inputs: Any = None,
    examples: int | None = None,
    receptive_field: ReceptiveField | dict | None = None,
    input_layout: str | None = None,
) -> summary_pb2.Summary:
    """A ``Summary`` proto holding the feature maps of every sample given.

    `layout` is one of ``NWC NCW NHWC NCHW NDHWC NCDHW``. `max_samples` keeps
    only the first N samples and `max_filters` the first N channels (or the
    listed ones). Data over `max_bytes` (default 1 GiB) keeps the samples that
    fit, with a warning (once) naming the knobs.

    Dataset examples as in ``Writer.activation``: with `inputs` (one network input
    per sample of `data`) the top `examples` inputs per channel (default 9; 0:
    none), cut by `receptive_field` when given, are a second value at
    ``<tag>/examples``; the inputs a third at ``examples_inputs/<digest>``. Being
    stateless, every Summary holds the inputs again: log them rarely, or use
    ``Writer`` (once per digest).
    """
    k, field, inputs, input_layout = examples_arguments(
        data, layout, inputs, examples, receptive_field, input_layout
    )
    rec = make_record(
        data,
        kind="activation",
        layout=layout,
        dtype=dtype,
        max_filters=max_filters,
        max_samples=max_samples,
        max_bytes=max_bytes,
        tag=tag,
    )
    summary = _summary_pb(tag, rec, description)
    if k:
        records = _examples_records(tag, data, rec, layout, k, field, inputs, input_layout, dtype)
        for value_tag, value_rec, text in records:
            _summary_pb(value_tag, value_rec, text, summary)
    return summary


def _examples_records(
    tag: str,
    data: Any,
    rec: Record,
    layout: str,
    k: int,
    field: ReceptiveField | None,
    inputs: np.ndarray | None,
    input_layout: str | None,
    dtype: str | None,
    written: dict[str, dict | None] | None = None,
) -> list[tuple[str, Record, str | None]]:
    """(tag, record, description) of the probe inputs (unless their digest is in
    `written`) and of the examples of activation `tag` (`rec`: its record)."""
    filters = rec.header.get("filters")
    found = rank(np.asarray(data), layout, k, keep_maps=field is None)
    if filters is not None:
        found = found.take(filters)
    out: list[tuple[str, Record, str | None]] = []
    write_examples(
        lambda t, r, _step, text: out.append((t, r, text)),
        {} if written is None else written,
        tag,
        found,
        0,
        layout=layout,
        field=field,
        inputs=inputs,
        input_layout=input_layout,
        dtype=dtype,
        filters=filters,
    )
    return out


def patterns_pb(
    tag: str,
    images: Any,
    *,
    filters: Sequence[int] | None = None,
    kind: str = "pattern",
    description: str | None = None,
    dtype: str | None = None,
    max_bytes: int | None = None,
) -> summary_pb2.Summary:
    """A ``Summary`` proto holding images of filters, e.g. from ``vis.filter_patterns``.

    Args:
      tag: the series name, e.g. ``"conv2/pattern"``.
      images: floats in [0, 1], ``(n, height, width, channels)`` with 1 (grey) or
        3 (RGB) channels; stored exactly as given, without per-filter stats.
      filters: the filter index each image shows (one per image); recorded so the
        dashboard labels the images with it.
      kind: ``"pattern"`` (activation maximization) or ``"projection"``
        (deconvnet / guided backprop).
      description: Markdown shown with the series.
      dtype: store as ``"float16"`` / ``"bfloat16"`` instead (halves storage).
      max_bytes: refuse stacks larger than this (default 1 GiB).
    """
    rec = pattern_record(images, kind=kind, filters=filters, dtype=dtype, max_bytes=max_bytes)
    return _summary_pb(tag, rec, description)


def kernel(
    name: str,
    data: Any,
    step: Any = None,
    *,
    layout: str = "HWIO",
    description: str | None = None,
    **options: Any,
) -> Any:
    """Writes a conv kernel to the default TF2 summary writer.

    Use inside ``with writer.as_default():`` like ``tf.summary.scalar``; `data`
    is a ``tf.Tensor``, ``tf.Variable`` or numpy array. `step` defaults to
    ``tf.summary.experimental.get_step()`` like every ``tf.summary`` op (TensorFlow
    raises "No step set" without one); ``Writer.kernel`` has no default step and
    requires it. Other options as in `kernel_pb`.
    Returns True on success, False if no default writer is set.
    """
    return _write_tf(name, data, step, description, dict(kind="kernel", layout=layout, **options))


def activation(
    name: str,
    data: Any,
    step: Any = None,
    *,
    layout: str = "NHWC",
    max_samples: int | None = None,
    description: str | None = None,
    inputs: Any = None,
    examples: int | None = None,
    receptive_field: ReceptiveField | dict | None = None,
    input_layout: str | None = None,
    **options: Any,
) -> Any:
    """Writes feature maps to the default TF2 summary writer (see `activation_pb`).

    With `inputs` (or `examples` > 0) the dataset examples are written too, at
    ``<name>/examples``, and the probe inputs once per default writer and digest;
    that needs eager mode (a ValueError inside ``tf.function``: log them from
    eager code, ``Writer.activation`` or the callbacks).
    """
    import tensorflow as tf

    wants = inputs is not None or bool(examples)
    if wants and not tf.executing_eagerly():
        raise ValueError(
            f"summary.activation({name!r}, inputs=..., examples={examples!r}): dataset examples "
            "need eager mode; call it outside tf.function, or use Writer.activation or the "
            "FiltersCallback"
        )
    k = 0
    if wants:
        if isinstance(getattr(data, "value", None), tf.Variable):
            data = data.value
        data = np.asarray(data)
        x = None if inputs is None else np.asarray(inputs)
        k, field, x, in_layout = examples_arguments(
            data, layout, x, examples, receptive_field, input_layout
        )
    options = dict(kind="activation", layout=layout, max_samples=max_samples, **options)
    result = _write_tf(name, data, step, description, options)
    if k and tf.summary.should_record_summaries():
        rec = make_record(data, tag=name, convert=False, **options)  # for its kept filters
        written = _probe_inputs_written()
        records = _examples_records(
            name, data, rec, layout, k, field, x, in_layout, options.get("dtype"), written
        )
        for value_tag, value_rec, text in records:
            if value_tag.startswith(INPUTS_PREFIX):
                tf.summary.write(
                    tag=value_tag,
                    tensor=tf.constant(value_rec.blobs(), dtype=tf.string),
                    step=step,
                    metadata=metadata.create_summary_metadata(value_rec.header, text),
                )
            else:
                _write_tf_record(value_tag, value_rec, step, text)
    return result


# default TF2 writer -> {digest: what the examples say of its inputs}: the probe inputs
# written to it (kept while the writer lives)
_INPUTS_WRITTEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe_inputs_written() -> dict[str, dict | None]:
    """The probe inputs already written to the current default writer (a fresh dict, so
    written every call, where it cannot be told)."""
    from tensorflow.python.ops import summary_ops_v2

    writer = getattr(getattr(summary_ops_v2, "_summary_state", None), "writer", None)
    try:
        return _INPUTS_WRITTEN.setdefault(writer, {})
    except TypeError:  # None, or a writer that cannot be weakly referenced
        return {}


def _write_tf_record(tag: str, rec: Record, step: Any, description: str | None) -> Any:
    """Writes a complete record at `tag` (under the current name scope) with tf.summary."""
    import tensorflow as tf

    meta = metadata.create_summary_metadata(rec.header, description)
    tensor = tf.constant(rec.blobs(), dtype=tf.string)
    with tf.summary.experimental.summary_scope(tag, "convfilters_summary", values=[step]) as (
        scoped,
        _,
    ):
        return tf.summary.write(tag=scoped, tensor=tensor, step=step, metadata=meta)


def patterns(
    name: str,
    images: Any,
    step: Any = None,
    *,
    filters: Sequence[int] | None = None,
    kind: str = "pattern",
    description: str | None = None,
    dtype: str | None = None,
    max_bytes: int | None = None,
) -> Any:
    """Writes images of filters to the default TF2 summary writer (see `patterns_pb`).

    Value checks ([0, 1], float) run in eager mode; inside ``tf.function`` only the
    shape is checked.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    options = _pattern_options(tuple(images.shape), kind, filters, dtype, max_bytes)
    if tf.executing_eagerly():
        _check_pattern_values(images.numpy())
    return _write_tf(name, images, step, description, options)


def _write_tf(name: str, data: Any, step: Any, description: str | None, options: dict) -> Any:
    import tensorflow as tf

    if step is not None and not tf.is_tensor(step):
        from tb_convfilters._record.arguments import check_step

        step = check_step(step)
    if tf.executing_eagerly():
        if not tf.summary.should_record_summaries():
            return tf.constant(False)
        if isinstance(getattr(data, "value", None), tf.Variable):  # a Keras 3 variable
            data = data.value
        if isinstance(data, tf.Variable):  # np.asarray(variable) copies; a read does not
            data = data.value()
        rec = make_record(np.asarray(data), complete=False, tag=name, **options)
        work = rec.completion()  # the payload's bytes are copied while the stats are computed
        _, (payload, _) = parallel.both(
            work.checksum, lambda: (rec.array.tobytes(), work.help()), split=work.large
        )
        done = rec.finished(work)
        blobs = [encoding.encode_header(done.header), payload, *done.trailing_blobs()]
        tensor = tf.constant(blobs, dtype=tf.string)
    else:
        # Inside tf.function: the header is fixed at trace time from the static
        # shape; the bytes are made by the same numpy code when the graph runs.
        data = tf.convert_to_tensor(data)
        if not data.shape.is_fully_defined():
            raise ValueError(f"data must have a static shape inside tf.function, got {data.shape}")
        rec = make_record(np.zeros(data.shape, data.dtype.as_numpy_dtype), tag=name, **options)

        def blobs(x: Any) -> np.ndarray:
            return np.array(make_record(np.asarray(x), **options).blobs(), dtype=object)

        tensor = tf.py_function(blobs, [data], Tout=tf.string)
        tensor.set_shape([4])
    meta = metadata.create_summary_metadata(rec.header, description)
    with tf.summary.experimental.summary_scope(name, "convfilters_summary", values=[step]) as (
        tag,
        _,
    ):
        return tf.summary.write(tag=tag, tensor=tensor, step=step, metadata=meta)


# Inside tf.function, AutoGraph would rewrite these ops (and the numpy code under them) on
# the first trace, which takes seconds; they need no conversion. This marks them as
# tf.autograph.experimental.do_not_convert does, without importing TensorFlow here.
kernel.autograph_info__ = activation.autograph_info__ = patterns.autograph_info__ = None
