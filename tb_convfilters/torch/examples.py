"""Dataset examples for ``log_activations``: the probe inputs kept, each hooked output
ranked as its batches arrive, and the examples written after each activation record."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from tb_convfilters._record.examples import TopK, examples_tag, input_spatial_axes
from tb_convfilters._record.receptive_field import ReceptiveField
from tb_convfilters._record.record import samples_digest
from tb_convfilters._writing.policies import ErrorPolicy
from tb_convfilters._writing.writer import Writer
from tb_convfilters.torch.common import _ACTIVATION_LAYOUTS, host_numpy
from tb_convfilters.torch.receptive_fields import trailing_fields, with_axes


class ExamplesProbe:
    """The top `k` probe inputs of each hooked output during one ``log_activations`` block.

    `root` is the (unwrapped) module whose inputs are the probe inputs; each output's
    receptive field over them comes from its ``torch.fx`` graph (traced once per
    module), and where it is unknown the examples keep their maps.
    """

    def __init__(self, root: nn.Module, k: int, policy: ErrorPolicy):
        self.root = root
        self.k = k
        self.policy = policy
        self.passes: list[np.ndarray | None] = []  # each forward's input (None: not one tensor)
        self.unbatched: list[bool] = []
        self.tops: dict[str, TopK | None] = {}  # tag -> ranking so far (None: it failed)
        self.fields: dict[str, ReceptiveField | None] = {}
        self._inputs: tuple[np.ndarray | None, str | None, str | None] | None = None
        # Traced now, before any hook runs: fx patches Module.__call__ while it traces,
        # which a forward running in another thread (DataParallel) must not see.
        self._trailing = trailing_fields(root)

    def keep(self, args: tuple) -> np.ndarray | None:
        """Keeps a forward's input (the module's only argument, as a numpy copy);
        returns it, or None when the module was called with something else."""
        array = None
        if len(args) == 1 and isinstance(args[0], torch.Tensor):
            array, copied = host_numpy(args[0])
            if not copied:
                array = array.copy()
        self.passes.append(array)
        self.unbatched.append(False)
        return array

    def rank(
        self, tag: str, name: str, m: nn.Module, values: Any, layout: str, unbatched: bool
    ) -> None:
        """Ranks one output batch of submodule `name` (``values``: a CPU copy, as `layout`)."""
        if unbatched and self.unbatched:
            self.unbatched[-1] = True
        if tag not in self.tops:
            key = "" if m is self.root else name
            field = with_axes(self._trailing.get(key), len(layout) - 2)
            self.fields[tag] = field
            self.tops[tag] = TopK(self.k, keep_maps=field is None)
        top = self.tops[tag]
        if top is None:
            return
        try:
            top.add(values, layout)
        except Exception as e:
            self.tops[tag] = None
            self.policy.report(examples_tag(tag), f"ranking the examples of {tag!r}", e)

    def inputs(self) -> tuple[np.ndarray | None, str | None, str | None]:
        """All probe inputs (N first), their layout and digest; Nones when a forward
        had no single tensor input or they do not stack."""
        if self._inputs is None:
            self._inputs = None, None, None
            if self.passes and all(a is not None for a in self.passes):
                parts = [
                    a[None] if u else a for a, u in zip(self.passes, self.unbatched, strict=True)
                ]
                layout = _ACTIVATION_LAYOUTS.get(parts[0].ndim)
                if layout and all(p.shape[1:] == parts[0].shape[1:] for p in parts):
                    inputs = np.concatenate(parts)
                    self._inputs = inputs, layout, samples_digest(inputs)
        return self._inputs

    def write(
        self,
        writer: Writer,
        tag: str,
        step: int,
        *,
        layout: str,
        dtype: str | None,
        filters: list[int] | None,
    ) -> int:
        """Writes the examples of `tag` (``filters``: the channels its activation record
        kept); returns the bytes queued (0 when it has none)."""
        top = self.tops.get(tag)
        if top is None or not top.inputs:
            return 0
        found = top.result()
        if filters is not None:
            found = found.take(filters)
        field = self.fields[tag]
        inputs, input_layout, digest = self.inputs()
        fits = inputs is not None and len(inputs) == found.inputs  # one output per input
        if fits and field is not None:
            fits = len(input_spatial_axes(input_layout)) == field.axes
        return writer.write_examples(
            tag,
            found,
            step,
            layout=layout,
            field=field,
            inputs=inputs if fits else None,
            input_layout=input_layout if fits else None,
            digest=digest if fits else None,
            dtype=dtype,
            filters=filters,
        )
