"""Comparing runs trained apart: match filters across runs, measure how alike layers are.

Two runs from different seeds learn the same kinds of filters in another order:
any permutation of a layer's filters, with the matching permutation of the next
layer's input channels, is the same network.

* `match_filters` pairs one layer's filters across two runs by the cosine of the
  flattened filters (``scipy.optimize.linear_sum_assignment``, maximizing the
  summed cosine), as in Li, Yosinski et al., "Convergent Learning" (2016).
* `align` does it layer by layer in logging order and carries each layer's
  permutation into the next kernel's input axis when the sizes chain, as in
  Ainsworth et al., "Git Re-Basin" (2023).
* `cka` is linear CKA (Kornblith et al., 2019) of two layers' activations on the
  same samples: invariant to permutations, rotations and scale of the channels.
  `similarity` computes it over runs and steps, within a memory budget (``cka``
  module: per record its n x n Gram matrix or its features, never one Gram matrix
  of every channel of every record). Activations record a digest of
  the inputs they were computed on (``samples_digest``); CKA refuses activations
  whose digests differ.

Command line: ``tb-convfilters compare LOGDIR --run B --base A [--step S] [--json]``
(``compare_cli``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from tb_convfilters import reader
from tb_convfilters._record import layouts
from tb_convfilters.compare.linear_cka import DEFAULT_MAX_BYTES, _cka_matrix, _features, check_plan
from tb_convfilters.compare.linear_cka import BudgetError as BudgetError  # re-exported
from tb_convfilters.compare.linear_cka import CkaPlan as CkaPlan
from tb_convfilters.compare.linear_cka import plan_cka as plan_cka

UNKNOWN_SAMPLES = (
    "activations logged without a samples digest (by a version before 0.2): whether they "
    "were computed on the same inputs is unknown"
)


@dataclass
class Match:
    """One layer of run `b` matched to run `a`.

    `permutation[i]` is `b`'s filter matched to `a`'s filter `i`; `cosine[i]` the
    (signed) cosine of that pair. `channel_permutation` is the reordering applied to
    `b`'s input channels first (None: none). `chained` tells whether it was carried
    from the previous kernel (`align`); `note` says why not, when it is not.
    """

    permutation: np.ndarray
    cosine: np.ndarray
    unaligned_cosine: np.ndarray
    channel_permutation: np.ndarray | None = None
    chained: bool = False
    note: str = ""

    @property
    def mean_cosine(self) -> float:
        return float(np.mean(self.cosine))

    @property
    def unaligned_mean_cosine(self) -> float:
        """Mean cosine of filter i with filter i, before any reordering."""
        return float(np.mean(self.unaligned_cosine))

    def to_json(self) -> dict:
        cp = self.channel_permutation
        return {
            "permutation": self.permutation.tolist(),
            "cosine": [finite(c) for c in self.cosine.tolist()],
            "channel_permutation": None if cp is None else cp.tolist(),
            "mean_cosine": finite(self.mean_cosine),
            "unaligned_mean_cosine": finite(self.unaligned_mean_cosine),
            "chained": self.chained,
            "note": self.note,
        }


def finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _rows(kernel: np.ndarray, layout: str, per_channel: bool = False) -> np.ndarray:
    """One float64 row per filter in the dashboard's order (filter ``i*M+m`` when
    depthwise), or with `per_channel` one row per input channel (its M filters together)."""
    axes = [layout.index("I"), layout.index("M")] if "M" in layout else [layout.index("O")]
    moved = np.moveaxis(np.asarray(kernel, dtype=np.float64), axes, range(len(axes)))
    units = moved.shape[0] if per_channel else math.prod(moved.shape[: len(axes)])
    return moved.reshape(units, -1)


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1)
    norms[norms == 0] = np.inf  # an all-zero filter has cosine 0 with everything
    return rows / norms[:, None]


def _check_pair(a: np.ndarray, b: np.ndarray, layout: str) -> str:
    layout = layouts.check_layout(layout, "kernel")
    if a.ndim != len(layout) or a.shape != b.shape:
        raise ValueError(
            f"kernels of shapes {a.shape} and {b.shape} cannot be matched in layout {layout!r}: "
            f"expected equal shapes of rank {len(layout)}"
        )
    return layout


def match_filters(
    a: np.ndarray,
    b: np.ndarray,
    layout: str = "HWIO",
    *,
    channel_permutation: Sequence[int] | np.ndarray | None = None,
) -> Match:
    """Matches `b`'s filters to `a`'s by the cosine of the flattened filters.

    With `channel_permutation`, `b`'s input channels are first reordered by it
    (``b[..., channel_permutation, :]`` in ``HWIO``). Depthwise layouts (``*IM``):
    filter ``i*M+m`` reads input channel ``i`` only, so a channel's M filters move
    together: channels are matched as units (their M filters concatenated) and the
    permutation is returned over the I*M filters. A `channel_permutation` there is
    the match itself (the filters follow their input channels).
    """
    a, b = np.asarray(a), np.asarray(b)
    layout = _check_pair(a, b, layout)
    n_in = layouts.axis_length(b.shape, layout, "I")
    cp = None
    if channel_permutation is not None:
        cp = np.asarray(channel_permutation, dtype=np.int64)
        if cp.shape != (n_in,) or not np.array_equal(np.sort(cp), np.arange(n_in)):
            raise ValueError(
                f"channel_permutation must be a permutation of 0..{n_in - 1} (the input "
                f"channels of kernels of shape {b.shape} in layout {layout!r})"
            )
    fa, fb = _unit(_rows(a, layout)), _unit(_rows(b, layout))
    unaligned = np.einsum("ij,ij->i", fa, fb)
    if "M" in layout:
        if cp is None:
            cos = _unit(_rows(a, layout, True)) @ _unit(_rows(b, layout, True)).T
            cp = linear_sum_assignment(cos, maximize=True)[1].astype(np.int64)
        multiplier = layouts.axis_length(b.shape, layout, "M")
        perm = (cp[:, None] * multiplier + np.arange(multiplier)).reshape(-1)
        return Match(perm, np.einsum("ij,ij->i", fa, fb[perm]), unaligned, None)
    if cp is not None:
        fb = _unit(_rows(np.take(b, cp, axis=layout.index("I")), layout))
    cos = fa @ fb.T
    cols = linear_sum_assignment(cos, maximize=True)[1].astype(np.int64)
    return Match(cols, cos[np.arange(len(cols)), cols], unaligned, cp)


def n_filters(shape: Sequence[int], layout: str) -> int:
    """Output channels of a kernel (I*M for depthwise)."""
    if "M" in layout:
        return layouts.axis_length(shape, layout, "I") * layouts.axis_length(shape, layout, "M")
    return layouts.axis_length(shape, layout, "O")


@dataclass
class Kernel:
    """One layer's kernel as `align_kernels` needs it."""

    array: np.ndarray
    layout: str
    capped: bool = False  # only some filters or channels were logged


def align_kernels(
    a: dict[str, Kernel], b: dict[str, Kernel], order: Iterable[str]
) -> dict[str, Match]:
    """Matches every tag of `order` (kernels of both runs), carrying permutations.

    A layer's permutation reorders the next kernel's input channels when that
    kernel's input count equals this layer's filter count; otherwise the next
    layer is matched on its own and its `note` says why.
    """
    out: dict[str, Match] = {}
    prev: tuple[str, Kernel, np.ndarray] | None = None
    for tag in order:
        ka, kb = a[tag], b[tag]
        if ka.layout != kb.layout:
            raise ValueError(
                f"tag {tag!r} has layout {ka.layout!r} in one run and {kb.layout!r} in the other"
            )
        n_in = layouts.axis_length(ka.array.shape, ka.layout, "I")
        carry, note = None, "first kernel: nothing to carry"
        if prev is not None:
            ptag, pk, pperm = prev
            n_prev = n_filters(pk.array.shape, pk.layout)
            if pk.capped or ka.capped or kb.capped:
                note = f"not chained to {ptag!r}: only some filters or channels were logged"
            elif n_prev != n_in:
                note = (
                    f"not chained to {ptag!r}: its {n_prev} filters do not feed these {n_in} "
                    "input channels one to one (residual join, pooling or flatten between?)"
                )
            else:
                carry, note = pperm, f"input channels reordered by the match of {ptag!r}"
        match = match_filters(ka.array, kb.array, ka.layout, channel_permutation=carry)
        match.chained, match.note = carry is not None, note
        out[tag] = match
        prev = (tag, ka, match.permutation)
    return out


# ---- CKA ----


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


# ---- reading logs ----


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


def entries_at(entries: Iterable[reader.Entry], step: int | None) -> dict[str, reader.Entry]:
    """{tag: entry at `step` (each tag's last if None)} in order of first appearance."""
    out: dict[str, reader.Entry] = {}
    for e in entries:
        if step is None:
            if e.tag not in out or e.step >= out[e.tag].step:
                out[e.tag] = e
            continue
        out.setdefault(e.tag, None)  # keep the logging order
        if e.step == step:
            out[e.tag] = e
    return {t: e for t, e in out.items() if e is not None}


def _kernels(entries: dict[str, reader.Entry]) -> dict[str, Kernel]:
    out = {}
    for tag, e in entries.items():
        header = e.header()
        if header["kind"] == "kernel":
            capped = "filters" in header or "channels" in header
            out[tag] = Kernel(e.array(), header["layout"], capped)
    return out


def align(
    logdir: str | os.PathLike,
    run: str,
    base: str,
    *,
    step: int | None = None,
    tags: Iterable[str] | None = None,
) -> dict[str, Match]:
    """``{tag: Match}`` of `run`'s kernels matched to `base`'s, in `base`'s logging order.

    Every kernel both runs logged is matched (at `step`, or each run's last step
    if None); a permutation is carried into the next kernel's input axis when the
    sizes chain, and each `Match.note` says where they do not. `tags` picks the
    layers returned (the chain still runs through the others).
    """
    of_base = _kernels(entries_at(reader.entries(logdir, run=base), step))
    of_run = _kernels(entries_at(reader.entries(logdir, run=run), step))
    order = [t for t in of_base if t in of_run]
    wanted = None if tags is None else list(tags)
    missing = [t for t in wanted or () if t not in order]
    if missing:
        raise reader.NotFoundError(
            f"tags {missing} are not kernels logged by both runs {base!r} and {run!r}"
            + (f" at step {step}" if step is not None else "")
            + f"; both have: {', '.join(order) or '(none)'}"
        )
    matches = align_kernels(of_base, of_run, order)
    return {t: m for t, m in matches.items() if wanted is None or t in wanted}


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
