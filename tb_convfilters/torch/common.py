"""What the PyTorch helpers share: the Writer of a target, flushing, the step budget and
error policy, picking submodules, tags, tensors to numpy and kernel layouts."""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from tb_convfilters._record import encoding
from tb_convfilters._writing.policies import ErrorPolicy, StepBudget
from tb_convfilters._writing.writer import Writer, shared

# Most specific first: module type -> kernel layout of its `weight`.
KERNEL_LAYOUTS: dict[type, str] = {
    nn.Conv1d: "OIW",
    nn.Conv2d: "OIHW",
    nn.Conv3d: "OIDHW",
    nn.ConvTranspose1d: "IOW",
    nn.ConvTranspose2d: "IOHW",
    nn.ConvTranspose3d: "IODHW",
    nn.Linear: "OI",
}
_CONV_TYPES = tuple(t for t in KERNEL_LAYOUTS if t is not nn.Linear)
_ACTIVATION_LAYOUTS = {3: "NCW", 4: "NCHW", 5: "NCDHW"}  # output rank -> layout
_KNOBS = (
    "log less often, store dtype='float16', cap max_filters / max_channels, or pick fewer `modules`"
)

_lock = threading.Lock()
_by_summary_writer: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_budgets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Writer -> StepBudget
_reported: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Writer -> warned tags


def _writer_for(target: Any) -> Writer:
    """Our Writer for a SummaryWriter, a Writer or a log directory (one per target)."""
    if isinstance(target, Writer):
        return target
    from torch.utils.tensorboard import SummaryWriter

    tensorboard_x = sys.modules.get("tensorboardX")  # a tensorboardX writer exists only if loaded
    writers = (SummaryWriter, tensorboard_x.SummaryWriter) if tensorboard_x else SummaryWriter
    with _lock:
        if isinstance(target, writers):
            writer = _by_summary_writer.get(target)
            if writer is None or writer.closed:
                logdir = target.logdir if hasattr(target, "logdir") else target.get_logdir()
                writer = Writer(logdir)  # tensorboardX's is `logdir`
                _by_summary_writer[target] = writer
                weakref.finalize(target, writer.close)
                _follow(target, writer)
            return writer
    if isinstance(target, str | os.PathLike):
        return shared(target)
    raise TypeError(
        f"target of type {type(target).__name__} is not a torch.utils.tensorboard or tensorboardX "
        "SummaryWriter, a tb_convfilters.Writer or a log directory path"
    )


def _follow(summary_writer: Any, writer: Writer) -> None:
    """Makes the SummaryWriter's `flush` and `close` flush and close our Writer too."""
    flush, close = summary_writer.flush, summary_writer.close

    def flush_both() -> None:
        flush()
        writer.flush()

    def close_both() -> None:
        close()
        writer.close()

    summary_writer.flush, summary_writer.close = flush_both, close_both


def flush(target: Any) -> None:
    """Waits until everything logged to `target` (a ``SummaryWriter``, a ``Writer`` or a
    log directory) is in its event file: the helpers write in the background."""
    if isinstance(target, Writer):
        target.flush()
        return
    if isinstance(target, str | os.PathLike):
        writer = shared(target, create=False)
    else:
        with _lock:
            writer = _by_summary_writer.get(target)
    if writer is not None:
        writer.flush()


def _check_budget(writer: Writer, budget_mb: float | None, nbytes: int, where: str) -> None:
    with _lock:
        budget = _budgets.get(writer)
        if budget is None or budget.budget_mb != budget_mb:
            budget = _budgets[writer] = StepBudget(budget_mb, _KNOBS)
    budget.check(nbytes, where)


def _policy(writer: Writer, who: str, raise_errors: bool) -> ErrorPolicy:
    """The error policy of one call; failures are warned once per writer and tag."""
    with _lock:
        reported = _reported.setdefault(writer, set())
    return ErrorPolicy(who, raise_errors, reported)


def _unwrap(module: nn.Module) -> nn.Module:
    """The model inside DataParallel / DistributedDataParallel / ``torch.compile``, so tag
    names have no ``module.`` or ``_orig_mod.`` prefix."""
    while True:
        if isinstance(module, nn.DataParallel | nn.parallel.DistributedDataParallel):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):  # torch.compile
            module = module._orig_mod
        else:
            return module


def _rank() -> int:
    """This process's rank in ``torch.distributed`` (0 when it is not initialized)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _select(
    module: nn.Module, modules: Iterable[str | type] | str | type | None, default: tuple[type, ...]
) -> list[tuple[str, nn.Module]]:
    """(name, submodule) pairs: of the `default` types, or those named / typed in `modules`."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module of type {type(module).__name__} is not a torch.nn.Module")
    named = [(name or type(m).__name__, m) for name, m in _unwrap(module).named_modules()]
    if modules is None:
        return [(name, m) for name, m in named if isinstance(m, default)]
    if isinstance(modules, str | type):
        modules = [modules]
    entries = list(modules)
    if not entries or not all(isinstance(e, str | type) for e in entries):
        raise ValueError(
            f"modules={modules!r} must be a non-empty list of module names (str) and/or "
            "module classes, or None"
        )
    names = {name for name, _ in named}
    unknown = [e for e in entries if isinstance(e, str) and e not in names]
    if unknown:
        raise ValueError(
            f"modules entries {unknown} are not submodules; names: "
            + ", ".join(name for name, _ in named)
        )
    return [
        (name, m)
        for name, m in named
        if any(name == e if isinstance(e, str) else isinstance(m, e) for e in entries)
    ]


def _tag(prefix: str | None, name: str, suffix: str) -> str:
    return f"{prefix.rstrip('/')}/{name}/{suffix}" if prefix else f"{name}/{suffix}"


def to_numpy(tensor: torch.Tensor) -> Any:
    """A tensor's values as numpy, bit for bit (bfloat16 as ml_dtypes.bfloat16)."""
    return host_numpy(tensor)[0]


def host_numpy(tensor: torch.Tensor) -> tuple[Any, bool]:
    """`to_numpy`, and whether that made a copy (from a GPU, or a non-contiguous
    bfloat16 tensor): a copy no training step changes needs no second one."""
    t = tensor.detach()
    source = t.data_ptr()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        t = t.contiguous()
        array = t.view(torch.int16).numpy().view(encoding.numpy_dtype("bfloat16"))
    else:
        array = t.numpy()
    return array, t.data_ptr() != source


def kernel_layout(module: nn.Module) -> str | None:
    """The layout of `module.weight` (None for module types without a known kernel)."""
    for cls, layout in KERNEL_LAYOUTS.items():
        if isinstance(module, cls):
            return layout
    return None
