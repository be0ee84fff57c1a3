"""The region of the input that one position of a feature map sees, and cutting it out.

A `ReceptiveField` holds, per spatial axis of the map, the input box of position p:
``[start + p * jump, start + p * jump + size)``. It is built by walking from the map
back to the input through each layer (`through`), branches joined by `union`;
the framework walks live in ``keras.receptive_fields`` and ``torch_receptive_fields``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ReceptiveField:
    """Input box ``[start + p * jump, start + p * jump + size)`` of map position p, per axis."""

    start: tuple[int, ...]
    jump: tuple[int, ...]
    size: tuple[int, ...]

    def __post_init__(self) -> None:
        for name in ("start", "jump", "size"):
            values = getattr(self, name)
            if not isinstance(values, tuple):
                object.__setattr__(self, name, values := tuple(values))
            if len(values) != len(self.start) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
            ):
                raise ValueError(
                    f"ReceptiveField {name}={values!r} must be {len(self.start)} integers "
                    "(one per spatial axis)"
                )
        if min(self.jump, default=1) < 1 or min(self.size, default=1) < 1:
            raise ValueError(f"{self!r}: jump and size must be >= 1")

    @classmethod
    def identity(cls, axes: int) -> ReceptiveField:
        """The field of a map over itself: each position sees itself."""
        return cls((0,) * axes, (1,) * axes, (1,) * axes)

    @property
    def axes(self) -> int:
        return len(self.start)

    def through(
        self,
        kernel: Sequence[int],
        stride: Sequence[int],
        dilation: Sequence[int],
        pad_before: Sequence[int],
    ) -> ReceptiveField:
        """This field (over a layer's output) as a field over that layer's input.

        A convolution or pooling window: output position q reads inputs
        ``q * stride - pad_before + [0, dilation * (kernel - 1) + 1)``.
        """
        start, jump, size = [], [], []
        for st, j, sz, k, s, d, p in zip(
            self.start, self.jump, self.size, kernel, stride, dilation, pad_before, strict=True
        ):
            start.append(st * s - p)
            jump.append(j * s)
            size.append((sz - 1) * s + d * (k - 1) + 1)
        return ReceptiveField(tuple(start), tuple(jump), tuple(size))

    def shifted(self, offset: Sequence[int]) -> ReceptiveField:
        """This field moved by `offset` (padding removed before the layer: negative)."""
        start = tuple(a + b for a, b in zip(self.start, offset, strict=True))
        return ReceptiveField(start, self.jump, self.size)

    def union(self, other: ReceptiveField) -> ReceptiveField | None:
        """The smallest field holding both (branches joined by add or concatenate);
        None when their steps differ (no box per position holds both)."""
        if self.jump != other.jump:
            return None
        start = tuple(min(a, b) for a, b in zip(self.start, other.start, strict=True))
        end = tuple(
            max(a + n, b + m)
            for a, n, b, m in zip(self.start, self.size, other.start, other.size, strict=True)
        )
        size = tuple(e - s for e, s in zip(end, start, strict=True))
        return ReceptiveField(start, self.jump, size)

    def box(self, position: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """``(first input index, size)`` per axis of the box map `position` sees."""
        return tuple(
            (int(s + int(p) * j), int(n))
            for s, j, n, p in zip(self.start, self.jump, self.size, position, strict=True)
        )

    def to_json(self) -> dict[str, list[int]]:
        return {
            "start": list(map(int, self.start)),
            "jump": list(map(int, self.jump)),
            "size": list(map(int, self.size)),
        }

    @classmethod
    def from_json(cls, data: Any) -> ReceptiveField:
        try:
            return cls(tuple(data["start"]), tuple(data["jump"]), tuple(data["size"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a receptive field: {data!r} ({e})") from None


def same_padding(n: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Padding before an axis of size `n` under TensorFlow/Keras ``padding="same"``."""
    total = max((math.ceil(n / stride) - 1) * stride + dilation * (kernel - 1) + 1 - n, 0)
    return total // 2


def cut(
    image: np.ndarray, spatial_axes: Sequence[int], box: Sequence[tuple[int, int]]
) -> np.ndarray:
    """The part of `image` in `box` (per spatial axis: first index, size), zero past
    the image's border; the other axes (channels) whole."""
    shape = list(image.shape)
    for axis, (_, size) in zip(spatial_axes, box, strict=True):
        shape[axis] = size
    out = np.zeros(shape, image.dtype)
    src: list[Any] = [slice(None)] * image.ndim
    dst: list[Any] = [slice(None)] * image.ndim
    for axis, (first, size) in zip(spatial_axes, box, strict=True):
        lo, hi = max(first, 0), min(first + size, image.shape[axis])
        if hi <= lo:
            return out
        src[axis] = slice(lo, hi)
        dst[axis] = slice(lo - first, hi - first)
    out[tuple(dst)] = image[tuple(src)]
    return out
