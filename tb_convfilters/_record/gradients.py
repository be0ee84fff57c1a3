"""Per-filter gradient norms of a kernel, stored as one more stats column.

``torch.log_kernels(..., grads=True)`` (and the Lightning callback) pass a kernel's
gradient with its weights; the record keeps, per logged filter, the L2 norm of the
gradient over the same weights the record stores (the same ``max_filters`` /
``max_channels`` slice), as the column ``grad_norm`` appended to the stats blob.
Records without it read as before: readers take stats columns by name.
"""

from __future__ import annotations

import math

import numpy as np

from tb_convfilters._record import layouts

GRAD_STATS = ("grad_norm",)


def grad_norm_column(grad: np.ndarray, layout: str) -> np.ndarray:
    """float32 ``(n_filters, 1)``: the L2 norm of each filter's gradient (float64 sums)."""
    axes = layouts.filter_axes(layout)
    moved = np.moveaxis(np.asarray(grad), axes, range(len(axes)))
    n = math.prod(moved.shape[: len(axes)])
    rows = moved.reshape(n, -1).astype(np.float64)
    return np.linalg.norm(rows, axis=1).astype(np.float32)[:, None]
