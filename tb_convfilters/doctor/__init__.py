"""The filter doctor: finds dead, exploding, duplicate, mirrored and frozen filters.

The sources feed the same rules (``rules.diagnose_series``): `diagnose(logdir)` streams
event files through ``reader`` (``series.logdir_series``; any path TensorBoard reads,
``s3://`` too), keeping only headers, statistics and record offsets (for the command line
and training pipelines); the plugin's ``findings`` route reads the plugin's index or
TensorBoard's data provider (``tb_convfilters._serving.findings``) and answers `report`.

Command line: ``tb-convfilters doctor LOGDIR`` (``tb_convfilters._commands.doctor``).
"""

from __future__ import annotations

import dataclasses
import os

from tb_convfilters.doctor.rules import (
    DEAD_MIN_INPUTS,
    PROBLEMS,
    UNSURE,
    Finding,
    Thresholds,
    diagnose_series,
)
from tb_convfilters.doctor.series import COLUMNS, Series, logdir_series, make_series

__all__ = [
    "COLUMNS",
    "DEAD_MIN_INPUTS",
    "PROBLEMS",
    "UNSURE",
    "Finding",
    "Series",
    "Thresholds",
    "diagnose",
    "diagnose_series",
    "logdir_series",
    "make_series",
    "report",
]


def diagnose(
    logdir: str | os.PathLike, run: str | None = None, thresholds: Thresholds | None = None
) -> list[Finding]:
    """Findings for every run under `logdir`, or for one `run` (a name as TensorBoard shows it)."""
    return diagnose_series(logdir_series(logdir, run), thresholds)


def report(series: list[Series], run: str | None, thresholds: Thresholds | None = None) -> dict:
    """The ``findings`` route's JSON: ``{run, thresholds, series, findings}``."""
    t = thresholds or Thresholds()
    return {
        "run": run,
        "thresholds": dataclasses.asdict(t),
        "series": len(series),
        "findings": [f.to_json() for f in diagnose_series(series, t)],
    }
