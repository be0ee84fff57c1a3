"""Dataset examples: for each channel of an activation, the probe inputs it responds to most.

Per channel, the `k` inputs with the largest maximum over positions (one entry per
input), each with its index into the probe inputs, that maximum and where it is;
kept by `TopK` batch by batch, so memory does not grow with the probe size. Ties go
to the lower index; NaN ranks below every number (an all-NaN map has value -inf).

Stored as two kinds of record, beside the activation step:

* ``<activation tag>/examples`` (kind ``examples``) each step: the payload packs
  ``indices`` int32 ``(C, k)``, ``values`` ``(C, k)``, ``positions`` int32
  ``(C, k, spatial axes)`` and, only when the receptive field is unknown, ``maps``
  ``(C, k, *map)`` (the examples' maps, to lay over the whole input); the header
  holds the parts' dtypes and shapes, the receptive field and the probe inputs' tag.
* ``examples_inputs/<digest>`` (kind ``inputs``) once per probe set and Writer: the
  probe inputs, from which each example's crop (its receptive field) is cut when read.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from tb_convfilters._record import encoding, layouts
from tb_convfilters._record.receptive_field import ReceptiveField, cut

DEFAULT_EXAMPLES = 9
MAX_EXAMPLES = 1024
EXAMPLES_SUFFIX = "/examples"
INPUTS_PREFIX = "examples_inputs/"


def examples_tag(activation_tag: str) -> str:
    """The tag of the examples of `activation_tag`."""
    return activation_tag + EXAMPLES_SUFFIX


def inputs_tag(digest: str) -> str:
    return INPUTS_PREFIX + digest


def check_examples(value: Any, name: str = "examples") -> int:
    """`value` as a number of examples per channel (0: none), or a ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not (0 <= value <= MAX_EXAMPLES)
    ):
        raise ValueError(
            f"{name}={value!r} must be an integer from 0 (off) to {MAX_EXAMPLES}; "
            f"the default is {DEFAULT_EXAMPLES}"
        )
    return int(value)


@dataclass
class Found:
    """The top `k` inputs of each channel so far (columns best first)."""

    indices: np.ndarray  # (C, k) int64, into the probe inputs
    values: np.ndarray  # (C, k), each input's maximum over positions
    positions: np.ndarray  # (C, k, spatial axes) int64, where that maximum is
    maps: np.ndarray | None  # (C, k, *map) when kept (unknown receptive field)
    inputs: int  # how many inputs were ranked

    def take(self, channels: list[int]) -> Found:
        maps = None if self.maps is None else self.maps[channels]
        return Found(
            self.indices[channels],
            self.values[channels],
            self.positions[channels],
            maps,
            self.inputs,
        )


class TopK:
    """The running top-`k` inputs per channel of an activation, batch by batch."""

    def __init__(self, k: int, *, keep_maps: bool = False):
        self.k = check_examples(k)
        self.keep_maps = keep_maps
        self.inputs = 0
        self._values: np.ndarray | None = None  # (C, kept)
        self._indices: np.ndarray | None = None
        self._flat: np.ndarray | None = None  # flat spatial position
        self._maps: np.ndarray | None = None  # (C, kept, P)
        self._spatial: tuple[int, ...] = ()

    def add(self, batch: Any, layout: str) -> TopK:
        """Ranks `batch` (axis 0: the next inputs, axes as in `layout`) in; returns self."""
        a = np.asarray(batch)
        (channel_axis,) = layouts.filter_axes(layout)
        n, c = a.shape[0], a.shape[channel_axis]
        spatial = tuple(s for i, s in enumerate(a.shape) if i not in (0, channel_axis))
        if self._values is not None and (c != len(self._values) or spatial != self._spatial):
            raise ValueError(
                f"a batch of shape {a.shape} ({layout}) does not match the "
                f"{len(self._values)} channels x {self._spatial} ranked so far"
            )
        self._spatial = spatial
        if n == 0:
            return self
        # (n, P, C) channels last, else (n, C, P): reduced along the position axis
        last = channel_axis == a.ndim - 1
        flat = a.reshape(n, -1, c) if last else a.reshape(n, c, -1)
        axis = 1 if last else 2
        if flat.dtype.kind == "f" and flat.dtype.itemsize < 4 or flat.dtype.name == "bfloat16":
            flat = flat.astype(np.float32)
        maps_of = flat  # the maps as they are (NaN included)
        best = flat.max(axis=axis)  # (n, C); a contiguous reduction, unlike argmax
        if best.dtype.kind == "f" and np.isnan(best).any():
            flat = np.where(np.isnan(flat), -np.inf, flat)
            best = flat.max(axis=axis)
        cand_values = best.T  # (C, n)
        cand_indices = np.broadcast_to(np.arange(self.inputs, self.inputs + n), (c, n))
        kept = 0 if self._values is None else self._values.shape[1]
        if self._values is not None:
            cand_values = np.concatenate([self._values, cand_values.astype(self._values.dtype)], 1)
            cand_indices = np.concatenate([self._indices, cand_indices], 1)
        order = np.lexsort((cand_indices, -cand_values.astype(np.float64)), axis=1)[:, : self.k]
        rows = np.arange(c)[:, None]
        # where each maximum is: searched only in the maps of the inputs that enter the top k
        old = order < kept
        ch = np.broadcast_to(rows, order.shape)
        new_j, new_c = order[~old] - kept, ch[~old]
        new_maps = flat[new_j, :, new_c] if last else flat[new_j, new_c, :]  # (entries, P)
        where = np.empty(order.shape, np.int64)
        if self._flat is not None:
            where[old] = self._flat[ch[old], order[old]]
        where[~old] = np.argmax(new_maps, axis=1)  # the first maximum
        if self.keep_maps:
            maps = np.empty((c, order.shape[1], flat.shape[axis]), flat.dtype)
            if self._maps is not None:
                maps[old] = self._maps[ch[old], order[old]]
            maps[~old] = (
                new_maps
                if maps_of is flat
                else (maps_of[new_j, :, new_c] if last else maps_of[new_j, new_c, :])
            )
            self._maps = maps
        self._values = cand_values[rows, order]
        self._indices = cand_indices[rows, order]
        self._flat = where
        self.inputs += n
        return self

    def result(self) -> Found:
        """The examples ranked so far; raises before any input."""
        if self._values is None:
            raise ValueError("no inputs were ranked")
        positions = np.stack(np.unravel_index(self._flat, self._spatial), axis=-1)
        c, k = self._values.shape
        maps = None if self._maps is None else self._maps.reshape(c, k, *self._spatial)
        return Found(
            self._indices.astype(np.int64),
            self._values,
            positions.astype(np.int64),
            maps,
            self.inputs,
        )


def _value_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype("<f8") if dtype == np.float64 else np.dtype("<f4")


def examples_record_parts(found: Found, map_dtype: str | None) -> list[tuple[str, np.ndarray]]:
    """The named arrays the examples payload packs, in order."""
    parts = [
        ("indices", found.indices.astype("<i4")),
        ("values", found.values.astype(_value_dtype(found.values.dtype))),
        ("positions", found.positions.astype("<i4")),
    ]
    if found.maps is not None:
        want = np.dtype("<f2") if map_dtype == "float16" else np.dtype("<f4")
        parts.append(("maps", found.maps.astype(want)))
    return parts


def make_examples_header(
    found: Found,
    parts: list[tuple[str, np.ndarray]],
    *,
    of: str,
    layout: str,
    field: ReceptiveField | None,
    inputs: dict | None,
    filters: list[int] | None = None,
) -> dict:
    nbytes = sum(a.nbytes for _, a in parts)
    return encoding.make_header(
        "examples",
        "B",
        [nbytes],
        "uint8",
        stats=False,
        parts=[[name, a.dtype.str, list(a.shape)] for name, a in parts],
        of=of,
        activation_layout=layout,
        k=int(found.indices.shape[1]),
        ranked=int(found.inputs),
        field=None if field is None else field.to_json(),
        inputs=inputs,
        filters=filters,
    )


def pack(parts: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """The parts' bytes one after the other, as the uint8 payload."""
    return np.frombuffer(
        b"".join(np.ascontiguousarray(a).tobytes() for _, a in parts), np.uint8
    ).copy()


def unpack(header: dict, payload: bytes | np.ndarray) -> dict[str, np.ndarray]:
    """The named arrays of an examples payload; RecordError when they do not fit it."""
    data = memoryview(bytes(payload) if isinstance(payload, np.ndarray) else payload)
    out, at = {}, 0
    try:
        for name, dtype, shape in header["parts"]:
            dt = np.dtype(dtype)
            n = math.prod(shape) * dt.itemsize
            out[name] = np.frombuffer(data[at : at + n], dt).reshape(shape)
            at += n
    except (KeyError, TypeError, ValueError) as e:
        raise encoding.RecordError(f"bad examples parts: {e}") from None
    if at != len(data):
        raise encoding.RecordError(f"examples parts hold {at} bytes; the payload has {len(data)}")
    return out


def input_spatial_axes(layout: str) -> list[int]:
    """Spatial axes of one input (its layout without N)."""
    return [i for i, letter in enumerate(layout[1:]) if letter in "DHW"]


def crops(
    inputs: np.ndarray,
    layout: str,
    field: ReceptiveField,
    indices: np.ndarray,
    positions: np.ndarray,
) -> np.ndarray:
    """``(C, k, *crop)``: each example's receptive field cut from `inputs` (axes as
    `layout`, N first), zero past the input's border; channels in the input's order."""
    axes = input_spatial_axes(layout)
    c, k = indices.shape
    crop_shape = list(inputs.shape[1:])
    for axis, size in zip(axes, field.size, strict=True):
        crop_shape[axis] = size
    out = np.zeros((c, k, *crop_shape), inputs.dtype)
    for ch in range(c):
        for j in range(k):
            out[ch, j] = cut(inputs[indices[ch, j]], axes, field.box(positions[ch, j]))
    return out


def rank(data: Any, layout: str, k: int, *, keep_maps: bool, batch: int = 256) -> Found:
    """`TopK` of every sample of `data` (axes as `layout`), in batches of `batch`."""
    top = TopK(k, keep_maps=keep_maps)
    for start in range(0, len(data), batch):
        top.add(data[start : start + batch], layout)
    return top.result()


def input_layout_for(layout: str, rank_: int) -> str:
    """The layout of inputs of rank `rank_` to a network whose maps are `layout`: the
    same spatial axes, channels on the same side."""
    if rank_ != len(layout):
        raise ValueError(
            f"inputs of rank {rank_} have no layout for examples of maps {layout!r}: they need "
            f"N, a channel axis and the maps' {len(layout) - 2} spatial axes (add a channel "
            "axis, or pass input_layout=)"
        )
    return layout


def inputs_header(inputs: np.ndarray, layout: str, dtype: str, digest: str) -> dict:
    """The header of the probe inputs' record (its ``range`` scales the crops drawn)."""
    finite = inputs[np.isfinite(inputs)] if inputs.dtype.kind == "f" else inputs
    value_range = [float(finite.min()), float(finite.max())] if finite.size else [0.0, 1.0]
    return encoding.make_header(
        "inputs", layout, inputs.shape, dtype, stats=False, digest=digest, range=value_range
    )


def inputs_ref(header: dict) -> dict:
    """What an examples header says of its probe inputs."""
    return {
        "tag": inputs_tag(header["digest"]),
        "digest": header["digest"],
        "layout": header["layout"],
        "shape": header["shape"],
    }


@dataclass
class Examples:
    """The dataset examples of one activation step, as ``reader.examples`` returns them.

    `indices` ``(C, k)`` index the probe inputs in the order given; `values` are each
    example's maximum over positions, at `positions` ``(C, k, spatial axes)`` of the
    activation map; `channels` the activation's channel of each row. `crops`
    ``(C, k, *crop)`` is each example's receptive field cut from its input (in the
    input's layout without N, zero past its border); where the field is unknown,
    the whole input, and `maps` ``(C, k, *map)`` the example's map to lay over it.
    None without stored probe inputs. `input_range` ``(min, max)`` of the finite probe
    inputs (their record's ``range``): the limits the crops are drawn with.
    """

    tag: str
    step: int
    indices: np.ndarray
    values: np.ndarray
    positions: np.ndarray
    channels: np.ndarray
    field: ReceptiveField | None
    maps: np.ndarray | None
    inputs: np.ndarray | None
    input_layout: str | None
    ranked: int
    input_range: tuple[float, float] | None = None

    @property
    def crops(self) -> np.ndarray | None:
        if self.inputs is None:
            return None
        if self.field is None:
            return self.inputs[self.indices]
        return crops(self.inputs, self.input_layout, self.field, self.indices, self.positions)


def decode(header: dict, payload: Any, *, tag: str, step: int) -> Examples:
    """An examples record read back (its probe inputs still to be attached)."""
    parts = unpack(header, payload)
    try:
        indices, values, positions = parts["indices"], parts["values"], parts["positions"]
        field = None if header.get("field") is None else ReceptiveField.from_json(header["field"])
    except (KeyError, ValueError) as e:
        raise encoding.RecordError(f"bad examples record: {e}") from None
    filters = header.get("filters")
    channels = np.arange(len(indices)) if filters is None else np.asarray(filters)
    return Examples(
        tag=header.get("of", tag),
        step=step,
        indices=indices.astype(np.int64),
        values=values,
        positions=positions.astype(np.int64),
        channels=channels,
        field=field,
        maps=parts.get("maps"),
        inputs=None,
        input_layout=None,
        ranked=int(header.get("ranked", 0)),
    )
