"""Linear CKA between many activation records within a memory budget (used by ``compare``).

CKA(X, Y) = ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F) for centred features X (n x c1),
Y (n x c2), n rows = samples x positions. The numerator is also <X X^T, Y Y^T>_F, the
inner product of the n x n Gram matrices. Stacking every record's channels into one
Gram matrix costs (records x channels)^2 memory; here each record keeps either its
Gram matrix (n(n+1)/2 numbers) or its features (n x c), whichever costs fewer
multiply-adds within the memory budget (`plan_cka`), and records are taken one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tb_convfilters._record import layouts


def _features(x: np.ndarray, layout: str) -> np.ndarray:
    """(samples x positions, channels) float64 rows of an activation array, centred per
    channel (one copy of the array)."""
    layout = layouts.check_layout(layout, "activation")
    x = np.asarray(x)
    if x.ndim != len(layout):
        raise ValueError(f"activations of shape {x.shape} do not have layout {layout!r}")
    moved = np.moveaxis(x, layout.index("C"), -1)
    rows = np.empty(moved.shape, np.float64)
    np.copyto(rows, moved, casting="unsafe")  # bfloat16 and integers too
    rows = rows.reshape(-1, moved.shape[-1])
    rows -= rows.mean(axis=0)
    return rows


_BLOCK_BYTES = 8 << 20  # one block of Gram rows (see _packed_gram)
# Memory one CKA computation may take by default (`plan_cka`; the similarity route's
# default limit, TensorBoard flag --convfilters_max_similarity_mb).
DEFAULT_MAX_BYTES = 256 << 20


class BudgetError(ValueError):
    """A CKA computation over its memory (`nbytes` > `limit_bytes`) or work limit."""

    def __init__(self, message: str, nbytes: int = 0, limit_bytes: int = 0):
        super().__init__(message)
        self.nbytes, self.limit_bytes = nbytes, limit_bytes


@dataclass(frozen=True)
class CkaPlan:
    """How `_cka_matrix` computes CKA between activations of `rows` rows (samples x
    positions) and `channels` channels each, and what it costs.

    ``"gram"`` keeps each one's centred rows x rows Gram matrix (its upper triangle),
    ``"features"`` its centred rows x channels features; `nbytes` is the peak memory
    of the computation (float64; the arrays it is given come on top, one at a time
    when they are produced one at a time), `work` its multiply-adds.
    """

    rows: int
    channels: tuple[int, ...]
    method: str
    nbytes: int
    work: int

    def describe(self) -> str:
        widths = sorted(set(self.channels))
        return (
            f"CKA of {len(self.channels)} activations of {self.rows} rows (samples x "
            f"positions) x {'/'.join(map(str, widths))} channels"
        )


def plan_cka(rows: int, channels: Sequence[int], max_bytes: int = DEFAULT_MAX_BYTES) -> CkaPlan:
    """The way to compute CKA with the fewest multiply-adds among those within
    `max_bytes` (the one needing the least memory when neither is)."""
    m, n, c = len(channels), rows, max(channels)
    tri = n * (n + 1) // 2
    feature_bytes = n * c * 8  # one item's centred features while they are made
    block = min(n, max(1, _BLOCK_BYTES // (8 * max(n, 1))))
    gram = CkaPlan(
        n,
        tuple(channels),
        "gram",
        m * tri * 8 + feature_bytes + block * n * 8 + m * m * 8,
        sum(channels) * tri + m * m * tri // 2,
    )
    pairs = sum(ci * cj for i, ci in enumerate(channels) for cj in channels[: i + 1])
    features = CkaPlan(
        n,
        tuple(channels),
        "features",
        sum(channels) * n * 8 + feature_bytes + c * c * 8 + m * m * 8,
        n * pairs,
    )
    within = [p for p in (gram, features) if p.nbytes <= max_bytes]
    if not within:
        return min(gram, features, key=lambda p: p.nbytes)
    return min(within, key=lambda p: p.work)


def check_plan(plan: CkaPlan, max_bytes: int | None, max_work: int | None, knob: str) -> None:
    """Raises BudgetError when `plan` needs more than `max_bytes` (named `knob`) or
    `max_work` multiply-adds (None: no limit)."""
    mb = 1 << 20
    if max_bytes is not None and plan.nbytes > max_bytes:
        raise BudgetError(
            f"{plan.describe()} needs {plan.nbytes / mb:.0f} MiB, over the limit of "
            f"{max_bytes / mb:.0f} MiB ({knob}): compare fewer steps or runs, or log "
            "fewer samples (max_samples)",
            plan.nbytes,
            max_bytes,
        )
    if max_work is not None and plan.work > max_work:
        raise BudgetError(
            f"{plan.describe()} needs {plan.work:.2e} multiply-adds, over the limit of "
            f"{max_work:.2e}: compare fewer steps or runs, or log fewer samples (max_samples)"
        )


def _packed_gram(f: np.ndarray, out: np.ndarray) -> None:
    """Writes the upper triangle of the Gram matrix ``f @ f.T`` into `out`, row by row,
    its off-diagonal entries times sqrt(2): the dot product of two such vectors is the
    Frobenius inner product of the two Gram matrices. Blocks of rows keep the memory
    at one block."""
    n = len(f)
    block = max(1, _BLOCK_BYTES // (8 * max(n, 1)))
    off = 0
    for a in range(0, n, block):
        b = min(a + block, n)
        rows = f[a:b] @ f[a:].T
        for r in range(a, b):
            row = rows[r - a, r - a :]
            out[off : off + len(row)] = row
            out[off + 1 : off + len(row)] *= math.sqrt(2)
            off += len(row)


def _cka_matrix(feats: Iterable[np.ndarray], plan: CkaPlan) -> np.ndarray:
    """Linear CKA between every pair of the centred (rows, channels) feature arrays
    `feats` (taken one at a time), as `plan` says; NaN without variance.

    CKA(X, Y) = ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F), and ||X^T Y||_F^2 is also
    <X X^T, Y Y^T>_F: ``"features"`` computes it pair by pair from the features,
    ``"gram"`` from each one's Gram matrix over rows."""
    m = len(plan.channels)
    inner = np.empty((m, m))
    if plan.method == "gram":
        grams = np.empty((m, plan.rows * (plan.rows + 1) // 2))
        for i, f in enumerate(feats):
            _packed_gram(f, grams[i])
            del f
        inner[:] = grams @ grams.T
    else:
        kept: list[np.ndarray] = []
        for i, f in enumerate(feats):
            kept.append(f)
            for j, g in enumerate(kept):
                inner[i, j] = inner[j, i] = np.sum(np.square(g.T @ f))
    norms = np.sqrt(np.diag(inner))
    with np.errstate(invalid="ignore", divide="ignore"):
        matrix = inner / np.outer(norms, norms)
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix
