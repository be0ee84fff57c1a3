"""The doctor's rules on update ratios: ``stalled`` filters and ``exploding_updates``.

Both read every logged step of a kernel (``dynamics.Tracker``, three steps in memory)
unless the series brings its dynamics (the plugin caches them). ``first_step`` is the
start of the first logged interval that shows the problem: for ``stalled``, the last
logged step before the filter stopped changing.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from tb_convfilters._record import encoding
from tb_convfilters.doctor.series import Series
from tb_convfilters.dynamics import Dynamics, Tracker

if TYPE_CHECKING:
    from tb_convfilters.doctor.rules import Finding, Thresholds

logger = logging.getLogger(__name__)

_NORM = encoding.STAT_NAMES.index("norm")


def series_dynamics(s: Series) -> Dynamics:
    """The dynamics of a kernel series, from its cache or read step by step with ``load``."""
    if s.dynamics is not None:
        return s.dynamics()
    header = {"layout": s.layout, "shape": list(s.shape), "filters": s.filters}
    tracker = Tracker()
    for step in s.steps:
        tracker.add(int(step), s.load(int(step)), header)
    return tracker.result()


def _nanmedian(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        return np.nanmedian(a, axis=1)


def _first_streak(flags: np.ndarray, length: int) -> tuple[int, int] | None:
    """(start, length) of the first run of at least `length` True values, or None."""
    run = 0
    for i, flag in enumerate(flags):
        run = run + 1 if flag else 0
        if run == length:
            end = i + 1
            while end < len(flags) and flags[end]:
                end += 1
            return i + 1 - length, end - (i + 1 - length)
    return None


def update_findings(s: Series, t: Thresholds) -> list[Finding]:
    """``stalled`` and ``exploding_updates`` findings of one kernel series."""
    from tb_convfilters.doctor.rules import Finding, _too_big

    if len(s.steps) < 2 or _too_big(s, t, "update ratio"):
        return []
    try:
        d = series_dynamics(s)
    except (encoding.RecordError, OSError, ValueError) as e:
        logger.warning("doctor: skipping the update ratio checks of %s/%s: %s", s.run, s.tag, e)
        return []
    if d.ratios.shape != (len(s.steps) - 1, s.n_filters):
        return []
    ratios = np.where(np.isfinite(d.ratios), d.ratios, np.nan)
    # Filters at or below the dead limits (zero or tiny norms) are not judged.
    norms = s.stats[:-1, :, _NORM]
    limit = np.fmax(t.dead_norm, t.dead_norm_rel * _nanmedian(norms))
    judged = np.where(norms > limit[:, None], ratios, np.nan)
    median = _nanmedian(judged)
    out: list[Finding] = []
    with np.errstate(invalid="ignore"):
        stalled = (judged < t.stall_ratio) & (median > t.stall_layer_ratio)[:, None]
        # a layer whose median filter did not move (median 0) gives no scale: not judged
        exploding = (
            (judged > t.explode_update_median * median[:, None])
            & (judged > t.explode_update_min)
            & (median > 0)[:, None]
        )
    for f in range(s.n_filters):
        streak = _first_streak(stalled[:, f], t.stall_steps)
        if streak is not None:
            i, n = streak
            detail: dict[str, Any] = {
                "stalled_intervals": n,
                "until_step": int(s.steps[i + n]),
                "max_ratio": float(np.nanmax(judged[i : i + n, f])),
                "median_ratio": float(np.nanmin(median[i : i + n])),
                "ratio_before": float(ratios[i - 1, f]) if i > 0 else None,
            }
            out.append(Finding(s.run, s.tag, s.original(f), "stalled", int(s.steps[i]), detail))
        hits = np.flatnonzero(exploding[:, f])
        if hits.size:
            i = int(hits[0])
            detail = {
                "ratio": float(judged[i, f]),
                "median_ratio": float(median[i]),
                "times_median": float(judged[i, f] / median[i]),
                "to_step": int(s.steps[i + 1]),
                "intervals": int(hits.size),
            }
            out.append(
                Finding(s.run, s.tag, s.original(f), "exploding_updates", int(s.steps[i]), detail)
            )
    return out


def _layer(tag: str) -> str:
    return tag.rsplit("/", 1)[0]


def explained(findings: list[Finding]) -> list[Finding]:
    """`findings` less those another finding already explains:

    * ``stalled`` where the unit is dead: a unit that never fires gets no gradient, so
      its kernel stops; the ``dead`` finding of its activation (same layer: the tag up
      to its last ``/``, same filter) says why;
    * ``exploding_updates`` of a filter that is ``exploding`` (its norm blew up: its
      updates were large by necessity).
    """
    dead = {
        (f.run, _layer(f.tag), f.filter)
        for f in findings
        if f.problem in ("dead", "suspected_dead") and f.filter is not None
    }
    exploding = {(f.run, f.tag, f.filter) for f in findings if f.problem == "exploding"}
    return [
        f
        for f in findings
        if not (f.problem == "stalled" and (f.run, _layer(f.tag), f.filter) in dead)
        and not (f.problem == "exploding_updates" and (f.run, f.tag, f.filter) in exploding)
    ]
