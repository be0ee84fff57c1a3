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
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - exercised by a test that hides torch
    raise ImportError(
        "tb_convfilters.torch needs PyTorch: pip install 'tb-convfilters[torch]' "
        f"(or pip install torch). Import failed with: {e}"
    ) from e

from tb_convfilters._record import encoding
from tb_convfilters._record.arguments import (
    check_budget_mb,
    check_cap,
    check_float_dtype,
    check_step,
)
from tb_convfilters._record.firing import Firing
from tb_convfilters._record.record import make_record, samples_digest
from tb_convfilters._writing.policies import (
    DEFAULT_MAX_MAPS,
    DEFAULT_STEP_BUDGET_MB,
    ErrorPolicy,
    StepBudget,
)
from tb_convfilters._writing.writer import Writer, WriterError, shared

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


def log_kernels(
    target: Any,
    module: nn.Module,
    step: Any,
    *,
    modules: Iterable[str | type] | str | type | None = None,
    dtype: str | None = None,
    max_filters: int | Sequence[int] | None = None,
    max_channels: int | Sequence[int] | None = None,
    prefix: str | None = None,
    budget_mb: float | None = DEFAULT_STEP_BUDGET_MB,
    all_ranks: bool = False,
    raise_errors: bool = False,
) -> list[str]:
    """Logs the weight of every Conv1d/2d/3d, ConvTranspose1d/2d/3d and Linear at `step`.

    Args:
      target: a ``SummaryWriter``, a ``tb_convfilters.Writer`` or a log directory.
      module: the model (DataParallel / DistributedDataParallel are unwrapped).
      modules: only these submodules (names as in ``named_modules()``, or classes).
      dtype: store as this dtype, e.g. ``"float16"``; max_filters / max_channels:
        keep the first N output filters / input channels, or the listed indices.
      prefix: put tags under ``prefix/``; tags are ``<module name>/weight``.
      budget_mb: warn once per writer when one call stores more MiB than this.
      all_ranks: under ``torch.distributed``, write on every rank (give each its own
        target or prefix); by default only rank 0 writes and other ranks return [].
      raise_errors: raise a module's logging error; by default it is warned once per
        tag and that module is skipped (training goes on). Bad arguments always raise.

    Returns the tags written. Weights are copied to the CPU; layouts are
    ``OIW OIHW OIDHW IOW IOHW IODHW OI``.
    """
    step = check_step(step)
    check_budget_mb(budget_mb)
    check_float_dtype(dtype)
    check_cap(max_filters, "max_filters")
    check_cap(max_channels, "max_channels")
    selected = _select(module, modules, tuple(KERNEL_LAYOUTS))
    if modules is not None:
        bad = [name for name, m in selected if kernel_layout(m) is None]
        if bad:
            raise ValueError(
                f"modules {bad} have no conv/linear weight; supported types: "
                + ", ".join(t.__name__ for t in KERNEL_LAYOUTS)
            )
    if not all_ranks and _rank() != 0:
        return []
    writer = _writer_for(target)
    policy = _policy(writer, "log_kernels", raise_errors)
    tags, nbytes = [], 0
    for name, m in selected:
        weight = getattr(m, "weight", None)
        if weight is None or nn.parameter.is_lazy(weight):
            continue
        layout = kernel_layout(m)
        tag = _tag(prefix, name, "weight")
        try:
            array, copied = host_numpy(weight)
            rec = make_record(
                array,
                kind="kernel",
                layout=layout,
                dtype=dtype,
                max_filters=max_filters,
                max_channels=max_channels,
                complete=False,  # the Writer copies (unless this is a copy already), converts
                convert=False,  # and computes stats in the background
                owned=copied,
            )
            writer.write_record(tag, rec, step, f"{type(m).__name__} `{name}` weight ({layout})")
        except Exception as e:
            policy.report(tag, f"module {name!r} weight {tag!r}", e)
            if not isinstance(e, WriterError):  # (an earlier record's: this one is queued)
                continue
        tags.append(tag)
        nbytes += encoding.payload_nbytes(rec.header)
    try:
        writer.flush(wait=False)  # a URL logdir uploads the step
    except Exception as e:
        policy.report("flush", "writing the event file", e)
    _check_budget(writer, budget_mb, nbytes, f"log_kernels at step {step}")
    return tags


@contextlib.contextmanager
def log_activations(
    target: Any,
    module: nn.Module,
    step: Any,
    *,
    modules: Iterable[str | type] | str | type | None = None,
    max_samples: int = DEFAULT_MAX_MAPS,
    dtype: str | None = None,
    max_filters: int | Sequence[int] | None = None,
    prefix: str | None = None,
    budget_mb: float | None = DEFAULT_STEP_BUDGET_MB,
    all_ranks: bool = False,
    raise_errors: bool = False,
) -> Iterator[list[str]]:
    """Logs the outputs of conv submodules during the forward passes run inside the block.

    >>> with log_activations(writer, model, step) as tags:
    ...     for batch in images.split(64):  # hundreds of inputs, in batches
    ...         model(batch)

    Each hooked submodule's outputs are logged as ``<name>/activation`` when the
    block ends (``NCW``/``NCHW``/``NCDHW`` by rank; an unbatched output gets N=1):
    the feature maps of the first `max_samples` samples (and, with `max_filters`,
    the first N channels, or the listed ones), and how often each channel fires
    (> 0) over every sample of every pass, which the doctor's dead rule reads (it
    wants ``doctor.DEAD_MIN_INPUTS`` inputs). By default every Conv*/ConvTranspose*
    module is hooked; `modules` picks others (names or classes, e.g. the ReLU
    after a conv) whose outputs are 3-5-D. Yields the list of tags, filled in
    when the block ends; hooks are removed then. Under ``torch.distributed`` only
    rank 0 hooks and writes unless `all_ranks`.

    Inside the block `module` is in eval mode and autograd is off (``torch.no_grad()``),
    so the sample forward moves no BatchNorm statistics and runs no dropout; each
    submodule's train/eval mode is restored when the block ends. A module that fails
    to log is warned once per tag and skipped; the forward goes on
    (``raise_errors=True`` raises).
    """
    step = check_step(step)
    check_budget_mb(budget_mb)
    check_float_dtype(dtype)
    check_cap(max_filters, "max_filters")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise ValueError(f"max_samples={max_samples!r} must be a positive integer")
    selected = _select(module, modules, _CONV_TYPES)
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            if not all_ranks and _rank() != 0:
                yield []
                return
            options = dict(max_samples=max_samples, dtype=dtype, max_filters=max_filters)
            yield from _hooked(
                target, module, selected, step, prefix, budget_mb, raise_errors, options
            )
    finally:
        for m, mode in modes:
            m.training = mode


def _hooked(
    target: Any,
    module: nn.Module,
    selected: list[tuple[str, nn.Module]],
    step: int,
    prefix: str | None,
    budget_mb: float | None,
    raise_errors: bool,
    options: dict[str, Any],
) -> Iterator[list[str]]:
    """`log_activations`' hooks on `selected` while the caller's block runs."""
    writer = _writer_for(target)
    policy = _policy(writer, "log_activations", raise_errors)
    max_samples = options["max_samples"]
    tags: list[str] = []
    sizes: list[int] = []
    # tag -> (description, layout, maps kept, firing counts)
    seen: dict[str, tuple[str, str, list, Firing]] = {}
    inputs: list = []  # the first `max_samples` inputs to `module`: their digest goes with the maps

    def keep_inputs(_m: nn.Module, args: Any) -> None:
        kept = sum(len(a) for a in inputs)
        if kept < max_samples and args and isinstance(args[0], torch.Tensor):
            inputs.append(to_numpy(args[0].detach()[: max_samples - kept]).copy())

    def hook_for(name: str, m: nn.Module):
        tag = _tag(prefix, name, "activation")
        conv_rank = len(kernel_layout(m)) if isinstance(m, _CONV_TYPES) else None

        def hook(_m: nn.Module, _inputs: Any, output: Any) -> None:
            try:
                add(output)
            except Exception as e:
                policy.report(tag, f"module {name!r} output {tag!r}", e)

        def add(output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"module {name!r} returned {type(output).__name__}, not a tensor")
            out = output.detach()
            if conv_rank is not None and out.dim() == conv_rank - 1:
                out = out.unsqueeze(0)  # unbatched input (C, H, W)
            layout = _ACTIVATION_LAYOUTS.get(out.dim())
            if layout is None:
                raise ValueError(
                    f"module {name!r} output has shape {tuple(output.shape)}; activations need "
                    "3-5-D (N, C, ...) feature maps"
                )
            description = f"{type(m).__name__} `{name}` output ({layout})"
            _, _, maps, firing = seen.setdefault(tag, (description, layout, [], Firing()))
            values = to_numpy(out)
            firing.add(values, layout)
            kept = sum(len(a) for a in maps)
            if kept < max_samples:
                maps.append(values[: max_samples - kept].copy())

        return hook

    handles = [module.register_forward_pre_hook(keep_inputs)]
    handles += [m.register_forward_hook(hook_for(name, m)) for name, m in selected]
    try:
        yield tags
    finally:
        for handle in handles:
            handle.remove()
    digest = samples_digest(np.concatenate(inputs)) if inputs else None
    for tag, (description, layout, maps, firing) in seen.items():
        try:
            rec = make_record(
                np.concatenate(maps),
                kind="activation",
                layout=layout,
                dtype=options["dtype"],
                max_filters=options["max_filters"],
                firing=firing,
                extra={"samples_digest": digest},
                complete=False,
                convert=False,
                owned=True,  # np.concatenate made it
            )
            writer.write_record(tag, rec, step, description)
        except Exception as e:
            policy.report(tag, f"activation {tag!r}", e)
            if not isinstance(e, WriterError):  # (an earlier record's: this one is queued)
                continue
        tags.append(tag)
        sizes.append(encoding.payload_nbytes(rec.header))
    try:
        writer.flush(wait=False)  # a URL logdir uploads the step
    except Exception as e:
        policy.report("flush", "writing the event file", e)
    _check_budget(writer, budget_mb, sum(sizes), f"log_activations at step {step}")


def log_sample_activations(
    target: Any,
    module: nn.Module,
    step: Any,
    sample_inputs: torch.Tensor,
    *,
    batch_size: int = 64,
    **options: Any,
) -> list[str]:
    """`log_activations` over `sample_inputs` (hundreds are fine), run in batches of
    `batch_size` in eval mode without gradients (the module's mode is restored).

    Options as in `log_activations` (`max_samples` maps stored, firing counted over
    all inputs). Returns the tags written.
    """
    if not isinstance(sample_inputs, torch.Tensor) or sample_inputs.dim() < 1:
        raise TypeError(
            f"sample_inputs of type {type(sample_inputs).__name__} is not a batch tensor"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    with log_activations(target, module, step, **options) as tags:  # eval, no_grad
        for batch in sample_inputs.split(batch_size):
            module(batch)
    return tags
