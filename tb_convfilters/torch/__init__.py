"""PyTorch helpers: log a module's conv kernels and activations (``pip install .[torch]``).

>>> from torch.utils.tensorboard import SummaryWriter
>>> from tb_convfilters.torch import log_kernels, log_activations
>>> writer = SummaryWriter("runs/exp1")
>>> log_kernels(writer, model, step)
>>> with log_activations(writer, model, step):
...     model(sample_batch)
>>> log_sample_activations(writer, model, step, x[:512])  # the same, in batches

`target` is a ``torch.utils.tensorboard.SummaryWriter`` or a
``tensorboardX.SummaryWriter`` (our records go to a file of their own in its
``log_dir``, written by a ``tb_convfilters.Writer``: TensorBoard's Python writer
checksums in pure Python and is ~80x slower), a ``tb_convfilters.Writer`` or a
log directory path (or URL, see ``tb_convfilters._record.files``). The helpers copy the
tensors and return; the Writer's thread writes them (``flush(target)`` waits for
that, as do the ``SummaryWriter``'s own ``flush()`` and ``close()``, and
interpreter exit).

Under ``torch.distributed`` (DDP) only rank 0 writes unless ``all_ranks=True``;
the other ranks return at once, so ``target`` may be None there.

Modules: ``common`` (targets, flushing, budgets, picking submodules), ``kernels``
(``log_kernels``), ``activations`` (``log_activations``, ``log_sample_activations``),
``examples`` (their dataset examples), ``receptive_fields`` (``receptive_field``: a
submodule's field over the model's input, from its ``torch.fx`` graph).
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by a test that hides torch
    raise ImportError(
        "tb_convfilters.torch needs PyTorch: pip install 'tb-convfilters[torch]' "
        f"(or pip install torch). Import failed with: {e}"
    ) from e

from tb_convfilters.torch.activations import log_activations, log_sample_activations
from tb_convfilters.torch.common import (  # noqa: F401 - semi-private names, re-exported as before
    _ACTIVATION_LAYOUTS,
    _CONV_TYPES,
    _KNOBS,
    KERNEL_LAYOUTS,
    _budgets,
    _by_summary_writer,
    _check_budget,
    _follow,
    _lock,
    _policy,
    _rank,
    _reported,
    _select,
    _tag,
    _unwrap,
    _writer_for,
    flush,
    host_numpy,
    kernel_layout,
    to_numpy,
)
from tb_convfilters.torch.kernels import log_kernels
from tb_convfilters.torch.receptive_fields import receptive_field

__all__ = [
    "KERNEL_LAYOUTS",
    "flush",
    "host_numpy",
    "kernel_layout",
    "log_activations",
    "log_kernels",
    "log_sample_activations",
    "receptive_field",
    "to_numpy",
]
