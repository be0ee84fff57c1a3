"""Matching filters across runs trained apart: one layer (`match_filters`), or every
layer in logging order with each layer's permutation carried into the next (`align`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from tb_convfilters import reader
from tb_convfilters._record import layouts


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
