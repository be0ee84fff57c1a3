"""What the callbacks and framework helpers share while training: their defaults, the
per-step storage budget, and what a logging failure does."""

from __future__ import annotations

import warnings

from tb_convfilters._record.arguments import check_budget_mb
from tb_convfilters._writing.failures import WriterError

# Feature maps the callbacks store per activation (their `max_samples`); the firing
# statistics cover every sample input.
DEFAULT_MAX_MAPS = 8

# A logging step (all tensors of one callback call) above this many MiB gets a warning.
DEFAULT_STEP_BUDGET_MB = 256.0


class StepBudget:
    """Warns once when one logging step stores more than `budget_mb` MiB.

    `knobs` names the options of the caller that log less (shown in the warning).
    """

    def __init__(self, budget_mb: float | None, knobs: str):
        self.budget_mb = check_budget_mb(budget_mb)
        self.knobs = knobs
        self.warned = False

    def check(self, nbytes: int, where: str) -> None:
        if self.warned or self.budget_mb is None or nbytes <= self.budget_mb * (1 << 20):
            return
        self.warned = True
        warnings.warn(
            f"{where}: one step stored {nbytes / (1 << 20):.1f} MiB, over budget_mb="
            f"{self.budget_mb:g}. Every logged step is kept on disk (and in TensorBoard's "
            f"memory when it has no logdir to read). To store less: {self.knobs}; or keep "
            "fewer steps in TensorBoard with --samples_per_plugin=convfilters=N. (Warned once.)",
            UserWarning,
            stacklevel=3,
        )


class ErrorPolicy:
    """What a logging failure during training does: with `raise_errors` it is raised, else
    it is warned once per key (a layer's tag) and that tensor is skipped; training goes on.

    A ``WriterError`` is about the record it names (an earlier one, written in the
    background), so it is warned once per that record's tag, not the caller's key.
    """

    def __init__(self, who: str, raise_errors: bool = False, reported: set[str] | None = None):
        self.who = who
        self.raise_errors = bool(raise_errors)
        self.reported: set[str] = set() if reported is None else reported

    def report(self, key: str, message: str, error: Exception) -> None:
        """Raises `error`, or warns it unless its key was warned before."""
        if self.raise_errors:
            raise error
        if isinstance(error, WriterError):
            key = "upload" if error.tag is None else error.tag
            message = "writing an earlier record failed"
        if key in self.reported:
            return
        self.reported.add(key)
        warnings.warn(
            f"{self.who}: {message}: {type(error).__name__}: {error} "
            "(not logged; training goes on; raise_errors=True raises instead)",
            RuntimeWarning,
            stacklevel=3,
        )

    def report_close(self, error: Exception, *, may_raise: bool = True) -> None:
        """Reports a failure of closing the Writer at the end of training: always warned (it
        names what was lost), raised only with `raise_errors` and `may_raise`."""
        if self.raise_errors and may_raise:
            raise error
        warnings.warn(
            f"{self.who}: closing the event file at the end of training: "
            f"{type(error).__name__}: {error} (not logged; raise_errors=True raises instead)",
            RuntimeWarning,
            stacklevel=3,
        )
