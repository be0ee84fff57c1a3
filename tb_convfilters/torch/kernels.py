"""``log_kernels``: the weights of a module's conv and linear submodules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tb_convfilters._record import encoding
from tb_convfilters._record.arguments import (
    check_budget_mb,
    check_cap,
    check_float_dtype,
    check_step,
    warn_once,
)
from tb_convfilters._record.record import make_record
from tb_convfilters._writing.policies import DEFAULT_STEP_BUDGET_MB
from tb_convfilters._writing.writer import WriterError
from tb_convfilters.torch.common import (
    KERNEL_LAYOUTS,
    _check_budget,
    _policy,
    _rank,
    _select,
    _tag,
    _writer_for,
    host_numpy,
    kernel_layout,
)


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
    grads: bool | Mapping[str, torch.Tensor] = False,
    updates: int | None = None,
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
      grads: also store each filter's gradient norm (stats column ``grad_norm``, see
        ``tb_convfilters.dynamics.grad_norms``): True reads ``weight.grad``, so call
        this after ``loss.backward()`` and before ``zero_grad()``; or a mapping
        ``{module name: gradient of its weight}`` saved earlier. A weight without a
        gradient is logged without, with a warning once per tag.
      updates: how many optimizer updates were made when this step is logged (e.g.
        the optimizer's step count), stored in the header so that
        ``tb_convfilters.dynamics`` can turn per-interval update ratios into
        per-update ones.

    Returns the tags written. Weights are copied to the CPU; layouts are
    ``OIW OIHW OIDHW IOW IOHW IODHW OI``.
    """
    step = check_step(step)
    if updates is not None and (
        isinstance(updates, bool) or not isinstance(updates, int) or updates < 0
    ):
        raise ValueError(f"updates={updates!r} must be a non-negative integer or None")
    if not isinstance(grads, bool | Mapping):
        raise TypeError(
            f"grads={grads!r} must be True, False or a mapping {{module name: gradient}}"
        )
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
            grad = _gradient(grads, name, weight, tag)
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
                grad=grad,
                extra=None if updates is None else {"updates": updates},
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


def _gradient(grads: bool | Mapping[str, torch.Tensor], name: str, weight: Any, tag: str) -> Any:
    """The gradient of a module's weight as numpy, or None (warned once per tag) if absent."""
    if grads is False:
        return None
    g = grads.get(name) if isinstance(grads, Mapping) else weight.grad
    if g is None:
        warn_once(
            ("grads", tag),
            f"log_kernels(grads=...): {tag!r} has no gradient (call it after loss.backward() "
            "and before zero_grad(); frozen parameters have none); logged without grad_norm",
            stacklevel=3,
        )
        return None
    return host_numpy(g.detach())[0]
