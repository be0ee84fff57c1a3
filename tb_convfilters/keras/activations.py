"""Activations of chosen layers on sample inputs: the maps of the first few inputs, and
how often each channel fires over all of them (what the doctor's dead rule reads)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np

from tb_convfilters._record.firing import Firing
from tb_convfilters._record.record import Record, make_record, samples_digest
from tb_convfilters.keras.layers import activation_layout

# (key, what failed, error): the callback's error policy, which warns once or raises
Report = Callable[[str, str, Exception], None]
# (tag, record, step, description) -> bytes stored
Write = Callable[[str, Record, int, str], int]


class ActivationProbe:
    """A model from a model's inputs to the outputs of `layers`, run on `sample_inputs`
    in batches of `batch_size` whenever `log` is called.

    Built once: a layer without an output, or one whose output cannot be computed from
    the model's inputs, is reported and left out; a Dense output (no feature map) too.
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
    ):
        self.sample_inputs = sample_inputs
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.dtype = dtype
        self.max_filters = max_filters
        self._report = report
        self.model, self.heads = self._build(model, layers)

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
        return probe, [(f"{layer.name}/activation", layout) for layer, _, layout in heads]

    def _run(self) -> tuple[list[list[np.ndarray]], list[Firing]]:
        """Per output: the maps of the first `max_samples` inputs, and the firing counts."""
        maps: list[list[np.ndarray]] = [[] for _ in self.heads]
        firing = [Firing() for _ in self.heads]
        for batch in _batches(self.sample_inputs, self.batch_size):
            values = keras.tree.flatten(self.model(batch, training=False))
            for i, ((_, layout), value) in enumerate(zip(self.heads, values, strict=True)):
                value = np.asarray(keras.ops.convert_to_numpy(value))
                firing[i].add(value, layout)
                kept = sum(len(m) for m in maps[i])
                if kept < self.max_samples:
                    maps[i].append(value[: self.max_samples - kept])
        return maps, firing

    def log(self, step: int, write: Write) -> int:
        """Runs the probe and writes one activation record per output; the bytes stored."""
        if self.model is None:
            return 0
        try:
            maps, firing = self._run()
        except Exception as e:
            self._report("sample_inputs", "running the model on sample_inputs failed", e)
            return 0
        nbytes = 0
        # the inputs of the stored maps, for CKA across runs (compare/)
        inputs = keras.tree.flatten(self.sample_inputs)
        digest = samples_digest(
            *(np.asarray(keras.ops.convert_to_numpy(x))[: self.max_samples] for x in inputs)
        )
        for (tag, layout), head_maps, counts in zip(self.heads, maps, firing, strict=True):
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
        return nbytes


def _batches(inputs: Any, size: int) -> Iterator[Any]:
    """`inputs` (an array, or a nest of arrays as ``fit`` takes them) in slices of `size`."""
    leaves = keras.tree.flatten(inputs)
    n = len(leaves[0]) if leaves else 0
    if n == 0:
        raise ValueError("sample_inputs holds no inputs")
    for start in range(0, n, size):
        yield keras.tree.map_structure(lambda a, start=start: a[start : start + size], inputs)
