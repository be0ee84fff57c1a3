"""The step of each checkpoint of a folder: from the number in its name, or the modification order.

The rule, applied to the file name without its format's extension (``epoch_12.pt`` ->
``epoch_12``, ``ckpt-1200.index`` -> ``ckpt-1200``, a SavedModel folder's own name):

1. A number right after a known word: ``step``, ``global_step``, ``iter``, ``iteration``,
   ``ckpt``, ``checkpoint``, ``epoch``, ``ep``, ``weights``, ``model``, ``snapshot``,
   joined by nothing or one of ``_ - . =`` (``epoch_12``, ``ckpt-1200``, ``weights.05-0.43``
   -> 5, ``epoch=3-step=300`` -> 300). The word must start the name or follow a character
   that is not a letter. When several words carry a number, the first word of that list
   wins (steps before checkpoints before epochs), so the finest count is used.
2. Otherwise the name's only number (``0012`` -> 12, ``run3_final`` -> 3).
3. Otherwise none: a single checkpoint is step 0. A folder takes its steps from the names
   only when every checkpoint has one and no two are equal; else every checkpoint's step is
   its place in the order of modification times (0, 1, 2, ...; ties by name).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

# Most precise first: a name with both `epoch=3` and `step=300` is step 300.
PREFIXES = (
    "step",
    "global_step",
    "iter",
    "iteration",
    "ckpt",
    "checkpoint",
    "epoch",
    "ep",
    "weights",
    "model",
    "snapshot",
)
_AFTER_WORD = re.compile(
    r"(?<![a-z])(" + "|".join(sorted(PREFIXES, key=len, reverse=True)) + r")[-_.=]?(\d+)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+")

FROM_NAMES = "steps from the file names"
FROM_MTIME = "steps from the modification order"
FROM_DEFAULT = "step 0: no number in the name"


def step_from_name(name: str) -> int | None:
    """The step a checkpoint's name (without extension) gives, or None (rule in the module doc)."""
    found = {
        m.group(1).lower(): int(m.group(2)) for m in reversed(list(_AFTER_WORD.finditer(name)))
    }
    for word in PREFIXES:
        if word in found:
            return found[word]
    numbers = _NUMBER.findall(name)
    return int(numbers[0]) if len(numbers) == 1 else None


def assign_steps(paths: Sequence[Path], stems: Sequence[str]) -> tuple[list[int], str]:
    """Steps for checkpoints `paths` (named `stems`), and how they were found."""
    steps = [step_from_name(stem) for stem in stems]
    if all(s is not None for s in steps) and len(set(steps)) == len(steps):
        return steps, FROM_NAMES  # type: ignore[return-value]
    if len(paths) == 1:
        return [0], FROM_DEFAULT
    order = sorted(range(len(paths)), key=lambda i: (os.stat(paths[i]).st_mtime_ns, stems[i]))
    out = [0] * len(paths)
    for place, i in enumerate(order):
        out[i] = place
    return out, FROM_MTIME
