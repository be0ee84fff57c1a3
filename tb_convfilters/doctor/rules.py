"""The doctor's rules: dead, exploding, duplicate, mirrored and frozen filters, found from
the per-filter statistics stored with every step (``encoding.STAT_NAMES``), reading few
tensors: the last step of each kernel (duplicates), a few more to date a duplicate pair,
and the first and last step of a layer whose statistics did not move (frozen). Stalled
filters and exploding updates read every step of a kernel (``updates``).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tb_convfilters._record import encoding, layouts
from tb_convfilters.doctor import updates
from tb_convfilters.doctor.series import COLUMNS, Series

logger = logging.getLogger(__name__)

PROBLEMS = (
    "dead",
    "suspected_dead",
    "exploding",
    "duplicate",
    "mirrored",
    "frozen",
    "stalled",
    "exploding_updates",
)
# Not counted in the CLI's exit status unless --strict.
UNSURE = ("suspected_dead",)
# Columns of a Series' stats (``series.COLUMNS``).
_NORM, _MEAN, _STD, _MIN, _MAX, _ZERO, _NONFINITE, _FIRE_INPUTS, _, _INPUTS = range(len(COLUMNS))

# Inputs an activation's dead verdict needs (measured: benchmarks/dead_units.py, docs).
DEAD_MIN_INPUTS = 256


def _help(text: str) -> dict:
    return {"help": text}


@dataclass(frozen=True)
class Thresholds:
    """When the doctor calls a filter sick; every field is also a CLI flag (``--dead-fraction``)."""

    dead_fraction: float = field(
        default=0.99,
        metadata=_help(
            "an activation channel is dead at a step when at least this fraction of its "
            "positions is <= 0 for every logged sample"
        ),
    )
    dead_steps: int = field(
        default=3,
        metadata=_help("dead means dead at each of the last K logged steps (all, if fewer)"),
    )
    dead_min_inputs: int = field(
        default=DEAD_MIN_INPUTS,
        metadata=_help(
            "an activation channel is called dead only when judged on at least this many "
            "inputs; on fewer it is suspected_dead (a unit firing on 1%% of inputs stays "
            "silent on all of 4 inputs 96%% of the time)"
        ),
    )
    dead_norm: float = field(
        default=1e-6,
        metadata=_help("a kernel filter whose L2 norm is at or below this is dead (zero weights)"),
    )
    dead_norm_rel: float = field(
        default=1e-3,
        metadata=_help("... or at or below this times the median filter norm of its layer"),
    )
    explode_growth: float = field(
        default=10.0,
        metadata=_help(
            "a kernel filter explodes when its norm grows past this factor of its "
            "norm at the first logged step"
        ),
    )
    explode_median: float = field(
        default=100.0,
        metadata=_help(
            "... or when its norm is above this times the median filter norm of its "
            "layer (NaN/Inf weights always count)"
        ),
    )
    duplicate_cosine: float = field(
        default=0.99,
        metadata=_help(
            "two filters of a layer are duplicates when the cosine similarity of their "
            "kernels is above this (mirrored when below minus this)"
        ),
    )
    duplicate_min_size: int = field(
        default=8,
        metadata=_help(
            "skip the duplicate check for filters with fewer weights than this "
            "(tiny random vectors are often parallel by chance)"
        ),
    )
    frozen_rtol: float = field(
        default=0.0,
        metadata=_help(
            "a layer is frozen when no weight moved by more than this times its "
            "largest |weight| between the first and last logged step (0: bit-exact)"
        ),
    )
    stall_ratio: float = field(
        default=1e-4,
        metadata=_help(
            "a kernel filter is stalled when its update ratio ||W[i+1] - W[i]|| / ||W[i]|| "
            "between logged steps stays below this ..."
        ),
    )
    stall_steps: int = field(
        default=3,
        metadata=_help("... for at least this many logged intervals in a row ..."),
    )
    stall_layer_ratio: float = field(
        default=1e-3,
        metadata=_help(
            "... while the median update ratio of its layer is above this (the rest trains)"
        ),
    )
    explode_update_median: float = field(
        default=10.0,
        metadata=_help(
            "a kernel filter's updates explode when its update ratio over a logged interval "
            "is above this times its layer's median ratio ..."
        ),
    )
    explode_update_min: float = field(
        default=1e-3,
        metadata=_help(
            "... and above this (filters at or below the dead norm limits are not judged)"
        ),
    )

    max_load_mb: float = field(
        default=256.0,
        metadata=_help(
            "largest tensor (MiB as stored) the duplicate and frozen checks read; a larger "
            "layer is skipped with a warning (they compare in float64: a float32 tensor "
            "takes about 4 times its size in memory)"
        ),
    )

    def __post_init__(self) -> None:
        checks = (
            ("dead_fraction", 0 < self.dead_fraction <= 1, "0 < x <= 1"),
            ("dead_steps", self.dead_steps >= 1, "an integer >= 1"),
            ("dead_min_inputs", self.dead_min_inputs >= 1, "an integer >= 1"),
            ("dead_norm", self.dead_norm >= 0, "x >= 0"),
            ("dead_norm_rel", 0 <= self.dead_norm_rel < 1, "0 <= x < 1"),
            ("explode_growth", self.explode_growth > 1, "x > 1"),
            ("explode_median", self.explode_median > 1, "x > 1"),
            ("duplicate_cosine", 0 < self.duplicate_cosine < 1, "0 < x < 1"),
            ("duplicate_min_size", self.duplicate_min_size >= 2, "an integer >= 2"),
            ("frozen_rtol", 0 <= self.frozen_rtol < 1, "0 <= x < 1"),
            ("stall_ratio", self.stall_ratio > 0, "x > 0"),
            ("stall_steps", self.stall_steps >= 1, "an integer >= 1"),
            ("stall_layer_ratio", self.stall_layer_ratio >= self.stall_ratio, "x >= stall_ratio"),
            ("explode_update_median", self.explode_update_median > 1, "x > 1"),
            ("explode_update_min", self.explode_update_min >= 0, "x >= 0"),
            ("max_load_mb", self.max_load_mb > 0, "x > 0"),
        )
        for name, ok, allowed in checks:
            if not ok:  # also catches NaN
                value = getattr(self, name)
                raise ValueError(f"{name}={value!r} is out of range; allowed: {allowed}")


@dataclass
class Finding:
    """One diagnosis. `filter` is the original filter index (None: the whole layer)."""

    run: str
    tag: str
    filter: int | None
    problem: str
    first_step: int
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become None)."""
        return {
            "run": self.run,
            "tag": self.tag,
            "filter": self.filter,
            "problem": self.problem,
            "first_step": self.first_step,
            "detail": {k: _jsonable(v) for k, v in self.detail.items()},
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def _too_big(s: Series, t: Thresholds, check: str) -> bool:
    """Whether `s` is over ``max_load_mb`` for `check`: then says so (never silently)."""
    if s.nbytes <= t.max_load_mb * (1 << 20):
        return False
    logger.warning(
        "doctor: skipping the %s check of %s/%s: one step is %.1f MiB, over max_load_mb=%g "
        "(--max-load-mb)",
        check,
        s.run,
        s.tag,
        s.nbytes / (1 << 20),
        t.max_load_mb,
    )
    return True


def diagnose_series(
    series: Iterable[Series],
    thresholds: Thresholds | None = None,
    problems: Iterable[str] | None = None,
) -> list[Finding]:
    """Every finding in `series`, sorted by run, tag, filter and problem. With `problems`,
    the update-ratio rules (which read every step) run only if it names one of theirs."""
    t = thresholds or Thresholds()
    wanted = set(PROBLEMS if problems is None else problems)
    by_run: dict[str, list[Series]] = defaultdict(list)
    for s in series:
        by_run[s.run].append(s)
    findings: list[Finding] = []
    for group in by_run.values():
        for s in group:
            findings += _dead(s, t)
            findings += _exploding(s, t)
            if s.kind == "kernel":
                findings += _duplicates(s, t)
                if wanted & {"stalled", "exploding_updates"}:
                    findings += updates.update_findings(s, t)
        findings += _frozen([s for s in group if s.kind == "kernel"], t)
    findings = updates.explained(findings)
    findings.sort(
        key=lambda f: (
            f.run,
            f.tag,
            -1 if f.filter is None else f.filter,
            PROBLEMS.index(f.problem),
        )
    )
    return findings


def _median_norm(s: Series) -> np.ndarray:
    """(T,) median filter norm per step over filters without NaN/Inf."""
    norms = np.where(s.stats[:, :, _NONFINITE] > 0, np.nan, s.stats[:, :, _NORM])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN step
        return np.nanmedian(norms, axis=1)


def _trailing(flags: np.ndarray) -> np.ndarray:
    """Per column: how many of the last rows in a row are True."""
    return np.cumprod(flags[::-1], axis=0).sum(axis=0)


def _dead(s: Series, t: Thresholds) -> list[Finding]:
    """Kernels: zero weights. Activations: a channel that fired on none of the inputs
    counted (firing stats), or, in records without them, whose positions were <= 0 for
    every stored sample; judged on fewer than `dead_min_inputs` inputs it is only
    ``suspected_dead``."""
    st = s.stats
    if s.kind == "activation":
        counted = np.isfinite(st[:, :, _FIRE_INPUTS])
        sick = np.where(counted, st[:, :, _FIRE_INPUTS] <= 0, st[:, :, _ZERO] >= t.dead_fraction)
        samples = s.shape[s.layout.index("N")]
        inputs = np.where(counted[-1], st[-1, :, _INPUTS], samples)
    else:
        median = _median_norm(s)
        limit = np.fmax(t.dead_norm, t.dead_norm_rel * median)
        sick = (st[:, :, _NORM] <= limit[:, None]) & (st[:, :, _NONFINITE] == 0)
    streak = _trailing(sick)
    out = []
    for f in np.flatnonzero(streak >= min(t.dead_steps, len(s.steps))):
        detail: dict[str, Any] = {"dead_steps": int(streak[f])}
        problem = "dead"
        if s.kind == "activation":  # few inputs make a rarely firing channel look dead
            detail.update(zero_frac=st[-1, f, _ZERO], inputs=int(inputs[f]))
            if inputs[f] < t.dead_min_inputs:
                problem = "suspected_dead"
        else:
            detail.update(norm=st[-1, f, _NORM], median_norm=median[-1])
        first = int(s.steps[len(s.steps) - streak[f]])
        out.append(Finding(s.run, s.tag, s.original(f), problem, first, detail))
    return out


def _exploding(s: Series, t: Thresholds) -> list[Finding]:
    st = s.stats
    flags = {"nonfinite": st[:, :, _NONFINITE] > 0}
    if s.kind == "kernel":
        norm = st[:, :, _NORM]
        median = _median_norm(s)
        alive = norm[0] > np.fmax(t.dead_norm, t.dead_norm_rel * median[0])
        with np.errstate(all="ignore"):
            growth = norm / np.where(alive, norm[0], np.nan)
            flags["outlier"] = norm > t.explode_median * median[:, None]
            flags["growth"] = growth > t.explode_growth
    sick = np.logical_or.reduce(list(flags.values()))
    out = []
    for f in np.flatnonzero(sick.any(axis=0)):
        i = int(np.argmax(sick[:, f]))
        detail: dict[str, Any] = {
            "reasons": [name for name, flag in flags.items() if flag[i, f]],
            "nonfinite": st[i, f, _NONFINITE],
        }
        if s.kind == "kernel":
            detail.update(
                norm=norm[i, f],
                norm_first=norm[0, f],
                growth=growth[i, f],
                median_norm=median[i],
                norm_last=norm[-1, f],
            )
        out.append(Finding(s.run, s.tag, s.original(f), "exploding", int(s.steps[i]), detail))
    return out


def _filter_rows(a: np.ndarray, layout: str) -> np.ndarray:
    """float64 ``(n_filters, values per filter)``."""
    axes = layouts.filter_axes(layout)
    moved = np.moveaxis(np.asarray(a), axes, range(len(axes)))
    n_filters = math.prod(moved.shape[: len(axes)])
    return moved.reshape(n_filters, -1).astype(np.float64)


class _UnitRows:
    """Unit-norm filter rows of a kernel's steps, loaded once each."""

    def __init__(self, s: Series, t: Thresholds):
        self._s, self._t = s, t
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit rows, usable mask, norms) at step index `i`; dead and non-finite unusable."""
        if i not in self._cache:
            rows = _filter_rows(self._s.load(int(self._s.steps[i])), self._s.layout)
            with np.errstate(all="ignore"):
                norms = np.linalg.norm(rows, axis=1)
            finite = np.isfinite(norms)
            median = np.median(norms[finite]) if finite.any() else 0.0
            ok = finite & (norms > max(self._t.dead_norm, self._t.dead_norm_rel * median))
            unit = np.where(ok[:, None], rows, 0) / np.where(ok, norms, 1)[:, None]
            self._cache[i] = (unit, ok, norms)
        return self._cache[i]


def _duplicates(s: Series, t: Thresholds) -> list[Finding]:
    if s.n_filters < 2 or s.filter_size < t.duplicate_min_size or _too_big(s, t, "duplicate"):
        return []
    rows = _UnitRows(s, t)
    try:
        unit, ok, norms = rows(len(s.steps) - 1)
        if unit.shape[0] != s.n_filters:
            return []
        cos = np.clip(unit @ unit.T, -1.0, 1.0)
        out = []
        for problem, sign in (("duplicate", 1), ("mirrored", -1)):
            # hit[j, i]: filter j copies an earlier filter i
            hit = np.tril(sign * cos > t.duplicate_cosine, k=-1) & ok[:, None] & ok[None, :]
            for j in np.flatnonzero(hit.any(axis=1)):
                i = int(np.argmax(hit[j]))
                first = _pair_since(s, t, rows, i, int(j), sign)
                detail = {
                    "other_filter": s.original(i),
                    "cosine": cos[j, i],
                    "norm_ratio": norms[j] / norms[i],
                }
                out.append(
                    Finding(s.run, s.tag, s.original(j), problem, int(s.steps[first]), detail)
                )
        return out
    except (encoding.RecordError, OSError, ValueError) as e:
        logger.warning("doctor: skipping the duplicate check of %s/%s: %s", s.run, s.tag, e)
        return []


def _pair_since(s: Series, t: Thresholds, rows: _UnitRows, i: int, j: int, sign: int) -> int:
    """Index of the earliest step from which filters i and j stayed (anti)parallel.

    For unit vectors u, v with ``cos > c``: ``|u - v| <= d = sqrt(2 - 2c)``, so
    their min and max differ by at most d and their mean and std by at most
    ``d / sqrt(n)``. That screen over the stored stats bounds the trailing run
    of steps where the pair can be (anti)parallel; a binary search over
    tensors inside it dates the pair with a handful of reads.
    """
    st = s.stats[:, [i, j]]
    with np.errstate(all="ignore"):
        scaled = st[:, :, [_MEAN, _STD, _MIN, _MAX]] / st[:, :, _NORM, None]
    a, b = scaled[:, 0], scaled[:, 1]
    if sign < 0:  # stats of -v
        b = np.stack([-b[:, 0], b[:, 1], -b[:, 3], -b[:, 2]], axis=1)
    d = math.sqrt(2 - 2 * t.duplicate_cosine)
    root_n = math.sqrt(s.filter_size)
    slack = np.array([d / root_n, d / root_n, d, d]) + 1e-5  # + rounding of float32 stats
    possible = np.all(np.abs(a - b) <= slack, axis=1)
    lo, hi = len(s.steps) - max(int(_trailing(possible)), 1), len(s.steps) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        unit, ok, _ = rows(mid)
        if ok[i] and ok[j] and sign * float(unit[i] @ unit[j]) > t.duplicate_cosine:
            hi = mid
        else:
            lo = mid + 1
    return hi


def _max_change(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b|, NaN/Inf equal to themselves; NaN if they differ there."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        delta = np.abs(a - b)
    delta[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0
    return float(np.max(delta, initial=0.0))


def _moved(s: Series, tol: float) -> np.ndarray:
    """(T,) True where the stats prove the kernel differs from its first step by more than tol.

    A weight change of at most tol moves min, max, mean and std by at most tol
    and the norm by at most ``tol * sqrt(n)``.
    """
    st = s.stats[:, :, : len(encoding.STAT_NAMES)]  # kernels have no firing columns
    limits = np.full(len(encoding.STAT_NAMES), tol)
    limits[_NORM] = tol * math.sqrt(max(s.filter_size, 1))
    limits[_ZERO] = math.inf if tol > 0 else 0.0
    limits[_NONFINITE] = 0.0
    with np.errstate(invalid="ignore"):
        same = (np.abs(st - st[0]) <= limits) | (np.isnan(st) & np.isnan(st[0]))
    return ~same.all(axis=(1, 2))


def _frozen(kernels: list[Series], t: Thresholds) -> list[Finding]:
    changed_since: dict[str, int] = {}  # tag -> first step whose stats differ from the first
    candidates = []
    for s in kernels:
        if len(s.steps) < 2:
            continue
        extremes = np.abs(s.stats[0][:, [_MIN, _MAX]])
        extremes = extremes[np.isfinite(extremes)]
        tol = t.frozen_rtol * float(extremes.max()) if extremes.size else 0.0
        moved = _moved(s, tol)
        if moved[-1]:
            changed_since[s.tag] = int(s.steps[np.argmax(moved)])
        else:
            candidates.append((s, tol))
    out = []
    for s, tol in candidates:
        if not changed_since:
            break
        if _too_big(s, t, "frozen"):
            continue
        try:
            change = _max_change(s.load(int(s.steps[0])), s.load(int(s.steps[-1])))
        except (encoding.RecordError, OSError, ValueError) as e:
            logger.warning("doctor: skipping the frozen check of %s/%s: %s", s.run, s.tag, e)
            continue
        if not change <= tol:
            continue
        # first seen: the first step of this layer at which another layer had moved
        since = min(changed_since.values())
        index = min(max(int(np.searchsorted(s.steps, since)), 1), len(s.steps) - 1)
        detail = {
            "max_change": change,
            "first_logged_step": int(s.steps[0]),
            "last_step": int(s.steps[-1]),
            "changed_layers": len(changed_since),
        }
        out.append(Finding(s.run, s.tag, None, "frozen", int(s.steps[index]), detail))
    return out
