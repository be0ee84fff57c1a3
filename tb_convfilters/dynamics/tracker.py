"""The arithmetic of training dynamics, one logged step at a time (numpy only).

`Tracker` is fed a layer's logged kernels in ascending step order and keeps three
of them: the first, the previous and the one being added (as float64 filter rows).
Everything it returns is a function of those, so a series of any length is read
in the memory of three steps. `Dynamics` is what it found.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tb_convfilters._record import layouts


def filter_rows(array: np.ndarray, layout: str) -> np.ndarray:
    """float64 ``(n_filters, weights per filter)``: one row per filter, the grid's rows
    (``layouts.filter_axes``: ``O``, or ``I`` x ``M`` for depthwise kernels)."""
    axes = layouts.filter_axes(layout)
    moved = np.moveaxis(np.asarray(array), axes, range(len(axes)))
    n = math.prod(moved.shape[: len(axes)])
    return moved.reshape(n, -1).astype(np.float64)


def filter_labels(header: dict) -> list[int]:
    """The filters' indices in the model (the kept ones when ``max_filters`` was given)."""
    layout, shape = header["layout"], header["shape"]
    n = math.prod(shape[a] for a in layouts.filter_axes(layout))
    kept = header.get("filters")
    if not isinstance(kept, list):
        return list(range(n))
    if "M" in layout:  # depthwise: kept input channels i of filters i*M + m
        m = shape[layout.index("M")]
        return [int(i) * m + j for i in kept for j in range(m)]
    return [int(i) for i in kept]


@dataclass
class Dynamics:
    """A kernel's training dynamics over its logged steps (`T` steps, `F` filters).

    * ``ratios[i, f]``: ``||W[i+1] - W[i]|| / ||W[i]||`` of filter ``f`` over the logged
      interval from ``steps[i]`` to ``steps[i+1]`` (``(T-1, F)``); the weights of a filter
      are those logged (its row of the grid). A filter all zeros at ``steps[i]`` gives
      ``inf`` if it changed and ``nan`` if it stayed zero.
    * ``rotation[i]``: cosine distance ``1 - cos(W[i], W[0])`` of the flattened layer
      from its first logged step (``(T,)``, 0 at the first step); ``rotation_filters``
      the same per filter (``(T, F)``). ``nan`` where either vector is all zeros.
    * ``grad_norms[i, f]``: the gradient norm logged with step ``i`` (``nan`` at steps
      logged without gradients); ``updates[i]``: the optimizer updates made when step
      ``i`` was logged, or None where the record does not say.
    """

    layout: str
    shape: tuple[int, ...]
    filters: list[int]
    steps: np.ndarray
    ratios: np.ndarray
    rotation: np.ndarray
    rotation_filters: np.ndarray
    grad_norms: np.ndarray
    updates: list[int | None] = field(default_factory=list)

    @property
    def intervals(self) -> list[int | None]:
        """Optimizer updates between consecutive logged steps (``T-1``), None where unknown.

        ``ratios / intervals`` estimates the per-update ratio (about 1e-3 is the usual
        rule of thumb); the ratio of an interval is not the sum of its updates' ratios,
        so this is an estimate."""
        u = self.updates
        return [
            None if a is None or b is None or b < a else b - a
            for a, b in zip(u[:-1], u[1:], strict=True)
        ]

    @property
    def has_grads(self) -> bool:
        return bool(np.isfinite(self.grad_norms).any()) if self.grad_norms.size else False


def _rotation(dots: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - dots / (a * b)``, clipped to [0, 2] (rounding), nan where a or b is 0."""
    with np.errstate(all="ignore"):
        out = 1.0 - dots / (a * b)
    return np.where((a > 0) & (b > 0), np.clip(out, 0.0, 2.0), np.nan)


# Below this squared relative change, ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b loses more than
# 1e-6 of its value to rounding: those filters are subtracted instead.
_EXACT_BELOW = 1e-4


def _change(a: np.ndarray, a_norms: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    """``||a - b|| / ||b||`` per row (inf where ``b`` is 0 and ``a`` is not, nan where both
    are): one pass over the rows, and an exact subtraction for the rows that barely moved."""
    with np.errstate(all="ignore"):
        squared = a_norms**2 + b_norms**2 - 2 * np.einsum("ij,ij->i", a, b)
        close = ~(squared > _EXACT_BELOW * b_norms**2)  # nan too
        n = int(np.count_nonzero(close))
        if n > len(close) // 8:  # many (a frozen layer): subtract them all
            d = a - b
            squared = np.where(close, np.einsum("ij,ij->i", d, d), squared)
        elif n:
            d = a[close] - b[close]
            squared[close] = np.einsum("ij,ij->i", d, d)
        return np.sqrt(np.maximum(squared, 0.0)) / b_norms


class Tracker:
    """Adds up a kernel's dynamics step by step (ascending steps); `result` at any time."""

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._updates: list[int | None] = []
        self._ratios: list[np.ndarray] = []
        self._rotation: list[float] = []
        self._rotation_filters: list[np.ndarray] = []
        self._grads: list[np.ndarray | None] = []
        self._first: np.ndarray | None = None
        self._first_norms: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self._prev_norms: np.ndarray | None = None
        self.layout = ""
        self.shape: tuple[int, ...] = ()
        self.header: dict = {}

    @property
    def last_step(self) -> int | None:
        return self._steps[-1] if self._steps else None

    def __len__(self) -> int:
        return len(self._steps)

    def add(
        self,
        step: int,
        array: np.ndarray,
        header: dict,
        grad_norms: np.ndarray | None = None,
        updates: int | None = None,
    ) -> None:
        """Step `step` (greater than the last one added) with its array and record header."""
        if self._steps and step <= self._steps[-1]:
            raise ValueError(f"step {step} added after step {self._steps[-1]}")
        layout, shape = header["layout"], tuple(int(n) for n in header["shape"])
        if self._steps and (layout, shape) != (self.layout, self.shape):
            raise ValueError(
                f"step {step} has shape {shape} ({layout}); earlier steps have "
                f"{self.shape} ({self.layout}): the layer changed"
            )
        rows = filter_rows(array, layout)
        with np.errstate(all="ignore"):
            norms = np.sqrt(np.einsum("ij,ij->i", rows, rows))
        if not self._steps:
            self.layout, self.shape, self.header = layout, shape, header
            self._first, self._first_norms = rows, norms
            rotation_filters = np.where(norms > 0, 0.0, np.nan)
            rotation = 0.0 if norms.any() else math.nan
        else:
            # 1 - cos from dot products in float64: exact to about 1e-15
            dots = np.einsum("ij,ij->i", rows, self._first)
            rotation_filters = _rotation(dots, norms, self._first_norms)
            total = math.sqrt(float(np.dot(norms, norms)))
            first = math.sqrt(float(np.dot(self._first_norms, self._first_norms)))
            rotation = float(
                _rotation(np.array([dots.sum()]), np.array([total]), np.array([first]))[0]
            )
            self._ratios.append(_change(rows, norms, self._prev, self._prev_norms))
        self._prev, self._prev_norms = rows, norms
        self._steps.append(int(step))
        self._updates.append(None if updates is None else int(updates))
        self._rotation.append(rotation)
        self._rotation_filters.append(rotation_filters)
        n = rows.shape[0]
        ok = grad_norms is not None and np.shape(grad_norms) == (n,)
        self._grads.append(np.asarray(grad_norms, np.float64) if ok else None)

    def result(self) -> Dynamics:
        n = self._prev.shape[0] if self._prev is not None else 0
        grads = np.full((len(self._steps), n), np.nan)
        for i, g in enumerate(self._grads):
            if g is not None:
                grads[i] = g
        return Dynamics(
            layout=self.layout,
            shape=self.shape,
            filters=filter_labels(self.header) if self.header else [],
            steps=np.array(self._steps, dtype=np.int64),
            ratios=np.array(self._ratios, dtype=np.float64).reshape(-1, n),
            rotation=np.array(self._rotation, dtype=np.float64),
            rotation_filters=np.array(self._rotation_filters, dtype=np.float64).reshape(-1, n),
            grad_norms=grads,
            updates=list(self._updates),
        )
