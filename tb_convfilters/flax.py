"""JAX / Flax: log the conv kernels of a Linen params tree or an NNX model exactly.

>>> from tb_convfilters.flax import log_params
>>> variables = model.init(rng, x)                   # Linen
>>> log_params("logs/train", variables["params"], step)
>>> log_params("logs/train", nnx_model, step)        # NNX: a Module or nnx.state(model)

Kernels are found by name (a ``kernel`` leaf) and rank: 3-D ``WIO``, 4-D ``HWIO``,
5-D ``DHWIO`` (``flax.linen.Conv`` / ``ConvTranspose`` and ``flax.nnx`` ones store
``(*kernel_size, in_features // groups, features)``); 2-D ``IO`` Dense kernels with
``dense=True``. Tags are the path in the tree: ``Conv_0/kernel``,
``encoder/layers/0/kernel``. Needs ``pip install "tb-convfilters[flax]"``.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

try:
    import jax
except ImportError as e:  # pragma: no cover - exercised by hand without jax
    raise ImportError(
        "tb_convfilters.flax needs JAX (and Flax for its models): pip install "
        f"'tb-convfilters[flax]'. Import failed with: {e}"
    ) from e
import numpy as np

from tb_convfilters._record.arguments import (
    check_budget_mb,
    check_cap,
    check_float_dtype,
    check_step,
)
from tb_convfilters._record.record import make_record
from tb_convfilters._writing.policies import DEFAULT_STEP_BUDGET_MB, ErrorPolicy, StepBudget
from tb_convfilters._writing.writer import Writer, WriterError, shared

KERNEL_LAYOUTS = {2: "IO", 3: "WIO", 4: "HWIO", 5: "DHWIO"}  # kernel rank -> layout
_KNOBS = "log less often, store dtype='float16', cap max_filters / max_channels, or set prefix"

_lock = threading.Lock()
_budgets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Writer -> StepBudget
_reported: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Writer -> warned tags


def _writer_for(target: Any) -> Writer:
    if isinstance(target, Writer):
        return target
    if not isinstance(target, str | os.PathLike) or not os.fspath(target):
        raise TypeError(
            f"writer_or_logdir of type {type(target).__name__} is not a tb_convfilters.Writer "
            "or a log directory path"
        )
    return shared(target)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey / FlattenedIndexKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _tree(params: Any) -> Any:
    """The params pytree of a Linen params dict / variables dict, an NNX Module or State."""
    try:
        from flax import nnx
    except ImportError:
        nnx = None
    if nnx is not None and isinstance(params, nnx.Module):
        return nnx.state(params, nnx.Param)
    if isinstance(params, Mapping) and "params" in params and isinstance(params["params"], Mapping):
        return params["params"]  # model.init(...) variables: the trainable collection
    return params


def kernels(params: Any, *, dense: bool = False) -> list[tuple[str, str, np.ndarray]]:
    """(path, layout, numpy value) of every conv kernel (and Dense kernel if `dense`)."""
    found = []
    leaves, _ = jax.tree_util.tree_flatten_with_path(_tree(params))
    for path, leaf in leaves:
        names = [_key_name(k) for k in path]
        if names and names[-1] in ("value", "raw_value"):  # an NNX Variable's array
            names = names[:-1]
        shape = getattr(leaf, "shape", None)
        if not names or names[-1] != "kernel" or shape is None:
            continue
        layout = KERNEL_LAYOUTS.get(len(shape))
        if layout is None or (layout == "IO" and not dense):
            continue
        found.append(("/".join(names), layout, np.asarray(jax.device_get(leaf))))
    return found


def log_params(
    writer_or_logdir: Any,
    params: Any,
    step: Any,
    *,
    prefix: str = "",
    dtype: str | None = None,
    dense: bool = False,
    max_filters: int | Sequence[int] | None = None,
    max_channels: int | Sequence[int] | None = None,
    budget_mb: float | None = DEFAULT_STEP_BUDGET_MB,
    raise_errors: bool = False,
) -> list[str]:
    """Logs every conv kernel of `params` at `step`; returns the tags written.

    Args:
      writer_or_logdir: a ``tb_convfilters.Writer`` or a log directory (one writer
        per directory is kept open in this process).
      params: a Linen params dict (or the variables from ``init``), an NNX Module
        (its ``nnx.Param`` state) or an ``nnx.State``.
      prefix: put tags under ``prefix/``; dtype: store as e.g. ``"float16"``.
      dense: log 2-D Dense kernels (``IO``) too.
      max_filters / max_channels: keep the first N output filters / input channels,
        or the listed indices.
      budget_mb: warn once per writer when one call stores more MiB than this.
      raise_errors: raise a kernel's logging error; by default it is warned once per
        tag and that kernel is skipped (training goes on). Bad arguments always raise.
    """
    step = check_step(step)
    check_budget_mb(budget_mb)
    check_float_dtype(dtype)
    check_cap(max_filters, "max_filters")
    check_cap(max_channels, "max_channels")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix={prefix!r} must be a string")
    found = kernels(params, dense=dense)
    if not found:
        raise ValueError(
            "params hold no conv kernel (a leaf named 'kernel' of rank 3-5"
            + (" or a 2-D Dense kernel" if dense else "; Dense kernels need dense=True")
            + f"); got {type(params).__name__}"
        )
    writer = _writer_for(writer_or_logdir)
    with _lock:
        reported = _reported.setdefault(writer, set())
    policy = ErrorPolicy("log_params", raise_errors, reported)
    tags, nbytes = [], 0
    for path, layout, value in found:
        tag = f"{prefix.rstrip('/')}/{path}" if prefix else path
        try:
            rec = make_record(
                value,
                kind="kernel",
                layout=layout,
                dtype=dtype,
                max_filters=max_filters,
                max_channels=max_channels,
                complete=False,  # the Writer computes stats while it writes
            )
            writer.write_record(tag, rec, step, f"Flax `{path}` ({layout})")
        except Exception as e:
            policy.report(tag, f"kernel {tag!r}", e)
            if not isinstance(e, WriterError):  # (an earlier record's: this one is queued)
                continue
        tags.append(tag)
        nbytes += rec.array.nbytes
    try:
        writer.flush()
    except Exception as e:
        policy.report("flush", "writing the event file", e)
    with _lock:
        budget = _budgets.get(writer)
        if budget is None or budget.budget_mb != budget_mb:
            budget = _budgets[writer] = StepBudget(budget_mb, _KNOBS)
    budget.check(nbytes, f"log_params at step {step}")
    return tags
