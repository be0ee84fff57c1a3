"""Writing an activation's dataset examples, and its probe inputs once per digest.

Shared by ``Writer.activation(inputs=, examples=)``, the Keras and Lightning
callbacks and the PyTorch helpers (see ``_record.examples`` for what is stored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tb_convfilters._record import encoding
from tb_convfilters._record.arguments import warn_once
from tb_convfilters._record.examples import (
    DEFAULT_EXAMPLES,
    Found,
    check_examples,
    examples_record_parts,
    examples_tag,
    input_layout_for,
    inputs_header,
    inputs_ref,
    inputs_tag,
    make_examples_header,
    pack,
)
from tb_convfilters._record.layouts import ACTIVATION_LAYOUTS
from tb_convfilters._record.receptive_field import ReceptiveField
from tb_convfilters._record.record import DEFAULT_MAX_BYTES, Record, samples_digest
from tb_convfilters._writing.failures import WriterError

# (tag, record, step, description): the Writer's record writer
WriteRecord = Callable[[str, Record, int, str | None], None]


def inputs_record(inputs: Any, layout: str, dtype: str | None, digest: str) -> Record:
    """The probe inputs' record, in `dtype` (None: as given; float data not storable
    as is: float32)."""
    a = np.asarray(inputs)
    if dtype is None:
        try:
            dtype = encoding.dtype_name(a.dtype)
        except TypeError:
            dtype = "float32"
    if a.ndim != len(layout):
        raise ValueError(f"inputs of shape {a.shape} do not fit input_layout={layout!r}")
    want = encoding.numpy_dtype(dtype)
    stored = np.ascontiguousarray(a.astype(want, copy=False))
    if stored.nbytes > DEFAULT_MAX_BYTES:
        raise ValueError(
            f"the {len(a)} probe inputs are {stored.nbytes} bytes as {dtype}, over "
            f"{DEFAULT_MAX_BYTES} bytes"
        )
    header = inputs_header(stored, layout, dtype, digest)
    return Record(stored, header, owned=stored is not a).complete()


def write_examples(
    write: WriteRecord,
    written: dict[str, dict | None],
    tag: str,
    found: Found,
    step: int,
    *,
    layout: str,
    field: ReceptiveField | None,
    inputs: Any = None,
    input_layout: str | None = None,
    digest: str | None = None,
    dtype: str | None = None,
    filters: list[int] | None = None,
) -> int:
    """Writes the examples of activation `tag` at `step`, and the probe `inputs` the
    first time this writer sees their digest (`written`: digest -> what the examples
    say of them, None when they could not be stored); returns the bytes queued.

    `found` covers the activation's channels as stored (`filters`: the kept ones).
    Without `inputs` (or when they cannot be stored) no crops can be cut: the
    examples keep their indices, values and positions.
    """
    nbytes = 0
    ref = None
    earlier: WriterError | None = None
    if inputs is not None and input_layout is not None:
        digest = digest or samples_digest(inputs)
        if digest not in written:
            try:
                rec = inputs_record(inputs, input_layout, dtype, digest)
            except ValueError as e:
                written[digest] = None
                warn_once(
                    ("examples inputs", digest),
                    f"{tag!r}: the probe inputs are not stored ({e}), so its dataset examples "
                    "have no crops; pass fewer sample inputs, smaller ones, or dtype='float16'",
                    stacklevel=3,
                )
            else:
                try:
                    write(inputs_tag(digest), rec, step, "probe inputs of dataset examples")
                except WriterError as e:  # an earlier record's failure: this one is queued
                    earlier = e
                nbytes += rec.array.nbytes
                written[digest] = inputs_ref(rec.header)
        ref = written[digest]
    parts = examples_record_parts(found, dtype)
    header = make_examples_header(
        found, parts, of=tag, layout=layout, field=field, inputs=ref, filters=filters
    )
    rec = Record(pack(parts), header, owned=True).complete()
    write(
        examples_tag(tag),
        rec,
        step,
        f"dataset examples of `{tag}`: the top {header['k']} of {found.inputs} inputs per channel",
    )
    if earlier is not None:
        raise earlier
    return nbytes + rec.array.nbytes


def examples_arguments(
    data: Any,
    layout: str,
    inputs: Any,
    examples: int | None,
    receptive_field: Any,
    input_layout: str | None,
) -> tuple[int, ReceptiveField | None, np.ndarray | None, str | None]:
    """`Writer.activation`'s examples arguments checked: (k, field, inputs, input layout)."""
    k = check_examples(
        (DEFAULT_EXAMPLES if inputs is not None else 0) if examples is None else examples
    )
    if not k:
        return 0, None, None, None
    field = receptive_field
    if isinstance(field, dict):
        field = ReceptiveField.from_json(field)
    elif field is not None and not isinstance(field, ReceptiveField):
        raise TypeError(
            f"receptive_field of type {type(field).__name__} is not a ReceptiveField or None"
        )
    spatial = sum(letter in "DHW" for letter in layout)
    if field is not None and field.axes != spatial:
        raise ValueError(
            f"receptive_field has {field.axes} axes; layout {layout!r} has {spatial} spatial axes"
        )
    if inputs is None:
        return k, field, None, None
    x, n = np.asarray(inputs), len(np.asarray(data))
    if x.ndim == 0 or len(x) != n:
        raise ValueError(
            f"inputs of shape {x.shape} must hold one input per sample of data ({n} samples)"
        )
    input_layout = input_layout or input_layout_for(layout, x.ndim)
    if input_layout not in ACTIVATION_LAYOUTS or len(input_layout) != x.ndim:
        raise ValueError(
            f"input_layout={input_layout!r} does not fit inputs of shape {x.shape}; expected "
            "one of: " + ", ".join(a for a in ACTIVATION_LAYOUTS if len(a) == x.ndim)
        )
    if sum(letter in "DHW" for letter in input_layout) != spatial:
        raise ValueError(
            f"input_layout={input_layout!r} has other spatial axes than layout={layout!r}"
        )
    return k, field, x, input_layout
