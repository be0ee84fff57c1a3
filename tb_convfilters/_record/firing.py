"""How often each channel of an activation fires (is > 0), over every input it saw.

The maps stored with a step may be a few; the firing statistics cover every input
given (callbacks feed hundreds, in batches) and go into the step's stats blob as
three more columns (``FIRING_STATS``), which the doctor's dead rule reads:

* ``fire_inputs``: fraction of inputs on which the channel is > 0 at some position;
* ``fire_positions``: fraction of (input, position) pairs where it is > 0;
* ``inputs``: how many inputs these cover (the same in every row).

Records written before these columns existed lack them; readers take the columns
by name, so both read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tb_convfilters._record import layouts

FIRING_STATS = ("fire_inputs", "fire_positions", "inputs")


@dataclass
class Firing:
    """Per-channel firing counts of an activation, added up batch by batch."""

    inputs: int = 0
    positions: int = 0  # positions per input and channel
    fired_inputs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fired_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def channels(self) -> int:
        return len(self.fired_inputs)

    def add(self, batch: np.ndarray, layout: str) -> Firing:
        """Counts `batch` (axis 0: inputs, axes as in `layout`) in; returns self."""
        a = np.asarray(batch)
        (channel_axis,) = layouts.filter_axes(layout)
        n, c = a.shape[0], a.shape[channel_axis]
        positions = math.prod(a.shape) // max(n * c, 1)
        if self.inputs and (c != self.channels or positions != self.positions):
            raise ValueError(
                f"a batch of shape {a.shape} ({layout}) does not match the {self.channels} "
                f"channels x {self.positions} positions counted so far"
            )
        with np.errstate(invalid="ignore"):  # NaN never fires; numpy may warn comparing it
            fired = np.moveaxis(a > 0, channel_axis, -1).reshape(n, -1, c)
        per_input = np.count_nonzero(fired, axis=1)  # (n, c)
        if not self.inputs:
            self.positions = positions
            self.fired_inputs = np.zeros(c, np.int64)
            self.fired_positions = np.zeros(c, np.int64)
        self.inputs += n
        self.fired_inputs += np.count_nonzero(per_input, axis=0)
        self.fired_positions += per_input.sum(axis=0)
        return self

    def take(self, channels: list[int]) -> Firing:
        """The counts of the listed channels only."""
        return Firing(
            self.inputs,
            self.positions,
            self.fired_inputs[channels],
            self.fired_positions[channels],
        )

    def columns(self) -> np.ndarray:
        """float32 ``(channels, len(FIRING_STATS))``: the stats blob's firing columns."""
        n = max(self.inputs, 1)
        return np.stack(
            [
                self.fired_inputs / n,
                self.fired_positions / (n * max(self.positions, 1)),
                np.full(self.channels, float(self.inputs)),
            ],
            axis=1,
        ).astype(np.float32)
