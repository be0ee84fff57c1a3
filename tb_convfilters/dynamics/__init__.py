"""Per-filter training dynamics from the kernels already logged (numpy only).

>>> from tb_convfilters import dynamics
>>> steps, ratios = dynamics.update_ratios("logs", "train", "conv2/kernel")
>>> ratios[i, f]      # ||W[i+1] - W[i]|| / ||W[i]|| of filter f, steps[i] -> steps[i+1]
>>> steps, d = dynamics.rotation("logs", "train", "conv2/kernel")  # 1 - cos(W, W_first)
>>> steps, g = dynamics.grad_norms("logs", "train", "conv2/kernel")  # where logged

Ratios are per *logged interval*: between two logged steps the optimizer made many
updates. `read` returns everything at once (`Dynamics`), with ``intervals``: the updates
between logs where the records say (``log_kernels(..., updates=)``, the callbacks).
Event files are streamed: one step in memory at a time, plus the first and the previous.
Filters are the grid's rows (``O``, or ``I`` x ``M`` of depthwise kernels). See
docs/dynamics.md.
"""

from __future__ import annotations

import os

import numpy as np

from tb_convfilters import reader
from tb_convfilters.dynamics.streaming import read
from tb_convfilters.dynamics.tracker import Dynamics, Tracker, filter_labels, filter_rows

__all__ = [
    "Dynamics",
    "Tracker",
    "filter_labels",
    "filter_rows",
    "grad_norms",
    "read",
    "rotation",
    "update_ratios",
]

NotFoundError = reader.NotFoundError


def update_ratios(
    logdir: str | os.PathLike, run: str, tag: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(steps (T,), ratios (T-1, F))``: ``ratios[i, f]`` = ``||W[i+1] - W[i]|| / ||W[i]||``
    of filter ``f`` from ``steps[i]`` to ``steps[i+1]`` (a zero filter: inf, nan if it stays 0)."""
    d = read(logdir, run, tag)
    return d.steps, d.ratios


def rotation(
    logdir: str | os.PathLike, run: str, tag: str, per_filter: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(steps (T,), distances)``: ``1 - cos(W[i], W[0])`` of the flattened layer ((T,), 0 at
    the first step), or of each filter with `per_filter` ((T, F)); nan for an all-zero vector."""
    d = read(logdir, run, tag)
    return d.steps, d.rotation_filters if per_filter else d.rotation


def grad_norms(logdir: str | os.PathLike, run: str, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps (S,), norms (S, F))`` of the steps logged with gradients (stats column
    ``grad_norm``); S is 0 when none was."""
    d = read(logdir, run, tag, arrays=False)
    logged = np.isfinite(d.grad_norms).any(axis=1)
    return d.steps[logged], d.grad_norms[logged]
