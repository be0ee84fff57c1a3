"""Activations of chosen layers on sample inputs: the maps of the first few inputs, how
often each channel fires over all of them (what the doctor's dead rule reads), and each
channel's dataset examples (the sample inputs it responds to most)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from tb_convfilters._record.examples import Found, TopK
from tb_convfilters._record.firing import Firing
from tb_convfilters._record.receptive_field import ReceptiveField
from tb_convfilters._record.record import Record, make_record, samples_digest
from tb_convfilters.keras.layers import activation_layout
from tb_convfilters.keras.receptive_fields import receptive_field

# (key, what failed, error): the callback's error policy, which warns once or raises
Report = Callable[[str, str, Exception], None]
# (tag, record, step, description) -> bytes stored
Write = Callable[[str, Record, int, str], int]
# (tag, found, step, **Writer.write_examples options) -> bytes stored
WriteExamples = Callable[..., int]
_INPUT_LAYOUTS = {  # input rank -> layout, by keras.config.image_data_format()
    "channels_last": {3: "NWC", 4: "NHWC", 5: "NDHWC"},
    "channels_first": {3: "NCW", 4: "NCHW", 5: "NCDHW"},
}


class ActivationProbe:
    """A model from a model's inputs to the outputs of `layers`, run on `sample_inputs`
    in batches of `batch_size` whenever `log` is called.

    Built once: a layer without an output, or one whose output cannot be computed from
    the model's inputs, is reported and left out; a Dense output (no feature map) too.

    With `examples` > 0, each output's top `examples` sample inputs per channel are
    ranked over every sample input (``TopK``) and written after its activation, with
    the receptive field of the output (``receptive_field``, computed once; None: the
    examples keep their maps) and the sample inputs, stored once, so crops can be
    cut. Sample inputs that are a nest of several arrays (a multi-input model), or
    whose rank has no layout (not 3-5), give examples without inputs: no crops.
    """

    def __init__(
        self,
        model: keras.Model,
        layers: Sequence[keras.layers.Layer],
        sample_inputs: Any,
        *,
        batch_size: int,
        max_samples: int,
        dtype: str | None,
        max_filters: int | Sequence[int] | None,
        report: Report,
        examples: int = 0,
    ):
        self.sample_inputs = sample_inputs
        self.examples = examples
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.dtype = dtype
        self.max_filters = max_filters
        self._report = report
        self.model, self.heads = self._build(model, layers)
        self.fields: list[ReceptiveField | None] = []
        self._inputs: tuple[np.ndarray | None, str | None, str | None] = (None, None, None)
        if self.examples and self.model is not None:
            self.fields = [self._field(model, layer) for layer in self._layers]
            try:
                self._inputs = _probe_inputs(sample_inputs)
            except Exception as e:  # the examples go on without inputs: no crops
                self._report("examples inputs", "storing sample_inputs for examples", e)

    def _build(
        self, model: keras.Model, layers: Sequence[keras.layers.Layer]
    ) -> tuple[keras.Model | None, list[tuple[str, str]]]:
        """The probe model (None if no output is left), and (tag, layout) per output."""
        try:
            inputs = model.input  # nested like the data fit() takes
        except AttributeError:  # a Sequential built by fit() without an Input
            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        heads = []
        for layer in layers:
            try:
                out = layer.output
            except Exception as e:  # never called, or called more than once
                self._report(f"{layer.name}/activation", f"layer {layer.name!r} has no output", e)
                continue
            data_format = getattr(layer, "data_format", None) or keras.config.image_data_format()
            layout = activation_layout(len(out.shape), data_format)
            if layout is not None:  # Dense has no feature map to show
                heads.append((layer, out, layout))
        try:
            probe = keras.Model(inputs, [out for _, out, _ in heads]) if heads else None
        except Exception:  # find the layers that are not reachable from the model's inputs
            reachable = []
            for head in heads:
                try:
                    keras.Model(inputs, head[1])
                    reachable.append(head)
                except Exception as e:
                    self._report(
                        f"{head[0].name}/activation",
                        f"the output of layer {head[0].name!r} cannot be computed from the "
                        "model's inputs (activations need a functional or Sequential model)",
                        e,
                    )
            heads = reachable
            probe = keras.Model(inputs, [out for _, out, _ in heads]) if heads else None
        self._layers = [layer for layer, _, _ in heads]
        return probe, [(f"{layer.name}/activation", layout) for layer, _, layout in heads]

    def _field(self, model: keras.Model, layer: keras.layers.Layer) -> ReceptiveField | None:
        try:
            return receptive_field(model, layer)
        except Exception as e:  # unknown geometry: the examples keep their maps
            self._report(f"{layer.name}/examples", f"receptive field of {layer.name!r}", e)
            return None

    def _run(self) -> tuple[list[list[np.ndarray]], list[Firing], list[TopK | None]]:
        """Per output: the maps of the first `max_samples` inputs, the firing counts and
        the examples ranked (None: off, or ranking failed, which is reported)."""
        maps: list[list[np.ndarray]] = [[] for _ in self.heads]
        firing = [Firing() for _ in self.heads]
        tops: list[TopK | None] = [
            TopK(self.examples, keep_maps=field is None) for field in self.fields
        ] or [None] * len(self.heads)
        for batch in _batches(self.sample_inputs, self.batch_size):
            values = keras.tree.flatten(self.model(batch, training=False))
            for i, ((tag, layout), value) in enumerate(zip(self.heads, values, strict=True)):
                value = np.asarray(keras.ops.convert_to_numpy(value))
                firing[i].add(value, layout)
                kept = sum(len(m) for m in maps[i])
                if kept < self.max_samples:
                    maps[i].append(value[: self.max_samples - kept])
                if tops[i] is not None:
                    try:
                        tops[i].add(value, layout)
                    except Exception as e:
                        tops[i] = None
                        self._report(examples_key(tag), f"dataset examples of {tag!r}", e)
        return maps, firing, tops

    def log(self, step: int, write: Write, write_examples: WriteExamples | None = None) -> int:
        """Runs the probe and writes one activation record per output, and its examples
        (with `write_examples`); the bytes stored."""
        if self.model is None:
            return 0
        try:
            maps, firing, tops = self._run()
        except Exception as e:
            self._report("sample_inputs", "running the model on sample_inputs failed", e)
            return 0
        nbytes = 0
        # the inputs of the stored maps, for CKA across runs (compare/)
        inputs = keras.tree.flatten(self.sample_inputs)
        digest = samples_digest(
            *(np.asarray(keras.ops.convert_to_numpy(x))[: self.max_samples] for x in inputs)
        )
        for i, ((tag, layout), head_maps, counts) in enumerate(
            zip(self.heads, maps, firing, strict=True)
        ):
            try:
                rec = make_record(
                    np.concatenate(head_maps),
                    kind="activation",
                    layout=layout,
                    dtype=self.dtype,
                    max_filters=self.max_filters,
                    firing=counts,
                    extra={"samples_digest": digest},
                    complete=False,
                    convert=False,
                    owned=True,  # np.concatenate made it
                )
                description = (
                    f"output on sample_inputs ({layout}): maps of {len(rec.array)}; "
                    f"firing counted over all {counts.inputs}"
                )
                nbytes += write(tag, rec, step, description)
            except Exception as e:
                self._report(tag, f"activation {tag!r}", e)
                continue
            top = tops[i]
            if top is not None and write_examples is not None:
                nbytes += self._write_examples(write_examples, tag, layout, i, top, rec, step)
        return nbytes

    def _write_examples(
        self,
        write_examples: WriteExamples,
        tag: str,
        layout: str,
        head: int,
        top: TopK,
        rec: Record,
        step: int,
    ) -> int:
        """Writes one output's examples (the channels its activation record kept)."""
        try:
            found: Found = top.result()
            filters = rec.header.get("filters")
            if filters is not None:
                found = found.take(filters)
            inputs, input_layout, digest = self._inputs
            return write_examples(
                tag,
                found,
                step,
                layout=layout,
                field=self.fields[head],
                inputs=inputs,
                input_layout=input_layout,
                digest=digest,
                dtype=self.dtype,
                filters=filters,
            )
        except Exception as e:
            self._report(examples_key(tag), f"dataset examples of {tag!r}", e)
            return 0


def examples_key(tag: str) -> str:
    """The error policy's key of an activation's examples (warned apart from the maps)."""
    return tag + "/examples"


def _probe_inputs(sample_inputs: Any) -> tuple[np.ndarray | None, str | None, str | None]:
    """The sample inputs as stored for crops: (array, layout, digest), or Nones when
    they are several arrays or of a rank with no layout."""
    leaves = keras.tree.flatten(sample_inputs)
    if len(leaves) != 1:
        return None, None, None
    x = np.asarray(keras.ops.convert_to_numpy(leaves[0]))
    layout = _INPUT_LAYOUTS[keras.config.image_data_format()].get(x.ndim)
    if layout is None:
        return None, None, None
    return x, layout, samples_digest(x)


def _batches(inputs: Any, size: int) -> Iterator[Any]:
    """`inputs` (an array, or a nest of arrays as ``fit`` takes them) in slices of `size`."""
    leaves = keras.tree.flatten(inputs)
    n = len(leaves[0]) if leaves else 0
    if n == 0:
        raise ValueError("sample_inputs holds no inputs")
    for start in range(0, n, size):
        yield keras.tree.map_structure(lambda a, start=start: a[start : start + size], inputs)
