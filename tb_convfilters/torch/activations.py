"""``log_activations`` and ``log_sample_activations``: conv outputs on sample inputs,
logged from forward hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tb_convfilters._record import encoding
from tb_convfilters._record.arguments import (
    check_budget_mb,
    check_cap,
    check_float_dtype,
    check_step,
)
from tb_convfilters._record.examples import DEFAULT_EXAMPLES, check_examples, examples_tag
from tb_convfilters._record.firing import Firing
from tb_convfilters._record.record import make_record, samples_digest
from tb_convfilters._writing.policies import DEFAULT_MAX_MAPS, DEFAULT_STEP_BUDGET_MB
from tb_convfilters._writing.writer import WriterError
from tb_convfilters.torch.common import (
    _ACTIVATION_LAYOUTS,
    _CONV_TYPES,
    _check_budget,
    _policy,
    _rank,
    _select,
    _tag,
    _unwrap,
    _writer_for,
    kernel_layout,
    to_numpy,
)
from tb_convfilters.torch.examples import ExamplesProbe


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
    examples: int = DEFAULT_EXAMPLES,
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

    With `examples` (default 9; 0: off) each output's dataset examples are logged
    beside it as ``<name>/activation/examples`` (``reader.examples``): per channel,
    the `examples` inputs to `module` whose map has the largest maximum, over
    every input of every pass. The inputs (when `module` is called with one tensor)
    are stored once per Writer as the probe inputs; each example's crop is its
    receptive field (``receptive_field``), or where that is unknown the whole
    input with the example's map to lay over it.

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
    examples = check_examples(examples)
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
            options = dict(
                max_samples=max_samples, dtype=dtype, max_filters=max_filters, examples=examples
            )
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
    probe = (
        ExamplesProbe(_unwrap(module), options["examples"], policy) if options["examples"] else None
    )

    def keep_inputs(_m: nn.Module, args: Any) -> None:
        kept = sum(len(a) for a in inputs)
        whole = probe.keep(args) if probe is not None else None  # every input, for the examples
        if kept < max_samples and args and isinstance(args[0], torch.Tensor):
            if whole is None:
                whole = to_numpy(args[0].detach()[: max_samples - kept]).copy()
            inputs.append(whole[: max_samples - kept])

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
            unbatched = conv_rank is not None and out.dim() == conv_rank - 1
            if unbatched:
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
            if probe is not None:  # ranked on the CPU copy that the firing counts used
                probe.rank(tag, name, m, values, layout, unbatched)
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
        if probe is not None:
            try:
                sizes.append(
                    probe.write(
                        writer,
                        tag,
                        step,
                        layout=layout,
                        dtype=options["dtype"],
                        filters=rec.header.get("filters"),
                    )
                )
            except Exception as e:
                policy.report(examples_tag(tag), f"dataset examples of {tag!r}", e)
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
