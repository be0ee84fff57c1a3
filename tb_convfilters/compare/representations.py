"""How alike two layers' activations are: linear CKA of two arrays (`cka`), and over
runs and steps read from the logs (`similarity`), within a memory budget."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tb_convfilters import reader
from tb_convfilters._record import layouts
from tb_convfilters.compare.linear_cka import (
    DEFAULT_MAX_BYTES,
    _cka_matrix,
    _features,
    check_plan,
    plan_cka,
)
from tb_convfilters.compare.matching import finite

UNKNOWN_SAMPLES = (
    "activations logged without a samples digest (by a version before 0.2): whether they "
    "were computed on the same inputs is unknown"
)


def _spatial(shape: Sequence[int], layout: str) -> tuple[int, ...]:
    return tuple(int(shape[i]) for i, c in enumerate(layout) if c in "DHW")


def cka(
    x: np.ndarray, y: np.ndarray, layout: str = "NHWC", *, y_layout: str | None = None
) -> float:
    """Linear CKA of two layers' activations on the same samples (0..1).

    Rows are samples x positions, features are channels: both arrays need the
    same number of samples and the same spatial size (the channel counts may
    differ). `y_layout` defaults to `layout`. Returns NaN when either has no
    variance at all.
    """
    y_layout = layout if y_layout is None else y_layout
    x, y = np.asarray(x), np.asarray(y)
    sx, sy = (x.shape[0], *_spatial(x.shape, layout)), (y.shape[0], *_spatial(y.shape, y_layout))
    if sx != sy or x.ndim != len(layout) or y.ndim != len(y_layout):
        raise ValueError(
            f"activations of shapes {x.shape} ({layout}) and {y.shape} ({y_layout}) need the "
            "same samples and spatial size"
        )
    channels = [x.shape[layout.index("C")], y.shape[y_layout.index("C")]]
    plan = plan_cka(math.prod(sx), channels)
    feats = (_features(a, lay) for a, lay in ((x, layout), (y, y_layout)))
    return float(_cka_matrix(feats, plan)[0, 1])


@dataclass
class Activation:
    """An activation record: its array, layout and the digest of its inputs (None: unknown).

    `array` may be None with `shape` and `load` given: the array is then read only when
    needed (``similarity_of`` reads one at a time)."""

    array: np.ndarray | None
    layout: str
    digest: str | None
    shape: tuple[int, ...] = ()
    load: Callable[[], np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.array is not None:
            self.shape = tuple(self.array.shape)

    def data(self) -> np.ndarray:
        """The array (read now when it was not)."""
        if self.array is not None:
            return self.array
        if self.load is None:
            raise ValueError("an Activation needs its array or a load function")
        return self.load()

    @classmethod
    def of(cls, entry: reader.Entry, *, lazy: bool = False) -> Activation:
        """The record of `entry`; with `lazy`, its array is read when needed."""
        header = entry.header()
        if header["kind"] != "activation":
            raise ValueError(f"{entry._where()} holds a {header['kind']}, not activations")
        digest = header.get("samples_digest")
        if lazy:
            return cls(None, header["layout"], digest, tuple(header["shape"]), entry.array)
        return cls(entry.array(), header["layout"], digest)


def check_samples(items: Sequence[tuple[str, Activation]]) -> str | None:
    """Raises ValueError when known sample digests differ; returns a note when some are
    unknown (None when all are known and equal)."""
    known = {name: act.digest for name, act in items if act.digest is not None}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{name}: {d}" for name, d in known.items())
        raise ValueError(
            "activations were computed on different inputs (samples digests "
            f"{listed}); CKA compares layers on the same samples only: log every run "
            "with the same sample_inputs (Keras) or the same batch (PyTorch)"
        )
    unknown = [name for name, act in items if act.digest is None]
    return f"{', '.join(unknown)}: {UNKNOWN_SAMPLES}" if unknown else None


def pair_cka(x: Activation, y: Activation) -> float:
    """`cka` of two activation records on their common samples (a shared digest means
    the same inputs; fewer stored samples are the first of them)."""
    xa, ya = x.data(), y.data()
    n = min(len(xa), len(ya))
    return cka(xa[:n], ya[:n], x.layout, y_layout=y.layout)


@dataclass
class Similarity:
    """CKA between every pair of (run, step) activations of one layer."""

    labels: list[tuple[str, int]]
    matrix: np.ndarray
    note: str | None = None  # set when some digests are unknown

    def to_json(self) -> dict:
        return {
            "labels": [{"run": r, "step": s} for r, s in self.labels],
            "matrix": [[finite(v) for v in row] for row in self.matrix.tolist()],
            "note": self.note,
        }


def similarity_of(
    items: Sequence[tuple[tuple[str, int], Activation]],
    *,
    max_bytes: int | None = None,
    max_work: int | None = None,
    knob: str = "max_bytes",
) -> Similarity:
    """`Similarity` of activation records labelled (run, step), on the samples all of them
    stored (a shared digest means the same inputs; fewer stored samples are the first).

    Memory: the kept Gram matrices or features of all records (`CkaPlan.nbytes`), plus
    one record's array at a time when they are loaded lazily. Raises BudgetError when
    that is over `max_bytes` or the multiply-adds are over `max_work` (the message names
    `knob`), before any array is read."""
    note = check_samples([(f"run {r!r} step {s}", a) for (r, s), a in items])
    n = min(a.shape[0] for _, a in items)
    sizes = {(n, *_spatial(a.shape, a.layout)) for _, a in items}
    if len(sizes) > 1:
        raise ValueError(f"activations of different spatial sizes {sorted(sizes)}: not comparable")
    for _, a in items:
        layouts.check_layout(a.layout, "activation")
        if len(a.shape) != len(a.layout):
            raise ValueError(f"activations of shape {a.shape} do not have layout {a.layout!r}")
    rows = math.prod(sizes.pop())
    channels = [a.shape[a.layout.index("C")] for _, a in items]
    plan = plan_cka(rows, channels, DEFAULT_MAX_BYTES if max_bytes is None else max_bytes)
    check_plan(plan, max_bytes, max_work, knob)
    feats = (_features(a.data()[:n], a.layout) for _, a in items)
    return Similarity([label for label, _ in items], _cka_matrix(feats, plan), note)


def similarity(
    logdir: str | os.PathLike,
    runs: Sequence[str],
    tag: str,
    *,
    steps: Iterable[int] | None = None,
    max_bytes: int | None = None,
) -> Similarity:
    """CKA of activation `tag` between every (run, step) pair: every step of each run,
    or only `steps`. Refuses activations computed on different inputs, and with
    `max_bytes` a computation that needs more memory (BudgetError); records are read
    one at a time."""
    wanted = None if steps is None else set(steps)
    items = []
    for run in runs:
        found = [
            e
            for e in reader.entries(logdir, run=run, tag=tag)
            if wanted is None or e.step in wanted
        ]
        latest = {e.step: e for e in found}  # the last record of a step wins
        if not latest:
            raise reader.NotFoundError(
                f"no activations {tag!r} in run {run!r}"
                + ("" if wanted is None else f" at steps {sorted(wanted)}")
            )
        items += [((run, s), Activation.of(latest[s], lazy=True)) for s in sorted(latest)]
    return similarity_of(items, max_bytes=max_bytes)


def activation_tag(kernel_tag: str, tags: Container) -> str | None:
    """The activation tag logged for the layer of `kernel_tag` (``conv1/kernel`` ->
    ``conv1/activation``), if it is in `tags`."""
    head = kernel_tag.rsplit("/", 1)[0] if "/" in kernel_tag else kernel_tag
    candidate = f"{head}/activation"
    return candidate if candidate in tags else None
