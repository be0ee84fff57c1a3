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
  `similarity` computes it over runs and steps, within a memory budget (``linear_cka``
  module: per record its n x n Gram matrix or its features, never one Gram matrix
  of every channel of every record). Activations record a digest of
  the inputs they were computed on (``samples_digest``); CKA refuses activations
  whose digests differ.

Command line: ``tb-convfilters compare LOGDIR --run B --base A [--step S] [--json]``
(``tb_convfilters._commands.compare``).
"""

from __future__ import annotations

from tb_convfilters.compare.linear_cka import (
    DEFAULT_MAX_BYTES,
    BudgetError,
    CkaPlan,
    check_plan,
    plan_cka,
)
from tb_convfilters.compare.matching import (
    Kernel,
    Match,
    align,
    align_kernels,
    entries_at,
    finite,
    match_filters,
    n_filters,
)
from tb_convfilters.compare.representations import (
    UNKNOWN_SAMPLES,
    Activation,
    Similarity,
    activation_tag,
    check_samples,
    cka,
    pair_cka,
    similarity,
    similarity_of,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "UNKNOWN_SAMPLES",
    "Activation",
    "BudgetError",
    "CkaPlan",
    "Kernel",
    "Match",
    "Similarity",
    "activation_tag",
    "align",
    "align_kernels",
    "check_plan",
    "check_samples",
    "cka",
    "entries_at",
    "finite",
    "match_filters",
    "n_filters",
    "pair_cka",
    "plan_cka",
    "similarity",
    "similarity_of",
]
