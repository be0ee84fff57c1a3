"""What the training-loop callbacks share (Lightning, Hugging Face ``Trainer``, fastai,
Ultralytics): their knobs checked once, kernels and activations logged into one Writer
under one error policy, the last logged step remembered, the Writer closed at the end.

A framework's callback decides when to log, at which step, in which directory and on
which process; `LoopLogger.log` does the rest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tb_convfilters._record.arguments import check_cap, check_float_dtype, check_positive_int
from tb_convfilters._record.examples import DEFAULT_EXAMPLES, check_examples
from tb_convfilters._writing.policies import DEFAULT_MAX_MAPS, DEFAULT_STEP_BUDGET_MB, ErrorPolicy
from tb_convfilters._writing.writer import Writer
from tb_convfilters.torch.activations import log_activations
from tb_convfilters.torch.common import KERNEL_LAYOUTS, _select
from tb_convfilters.torch.kernels import log_kernels


def apply(data: Any, fn: Any) -> Any:
    """`fn` applied to every tensor of a tensor / tuple / list / dict nest."""
    if isinstance(data, torch.Tensor):
        return fn(data)
    if isinstance(data, list | tuple):
        return type(data)(apply(d, fn) for d in data)
    if isinstance(data, dict):
        return {k: apply(v, fn) for k, v in data.items()}
    return data


def batches(inputs: Any, size: int) -> Iterator[Any]:
    """`inputs` (a tensor or a nest of them) in slices of `size` along the first axis."""
    lengths: list[int] = []
    apply(inputs, lambda t: lengths.append(len(t)))
    if not lengths or lengths[0] == 0:
        raise ValueError("sample_inputs holds no inputs")
    for start in range(0, lengths[0], size):
        yield apply(inputs, lambda t, start=start: t[start : start + size])


def call_with(model: nn.Module, batch: Any) -> Any:
    """`model` on one batch: a tuple unpacked, a dict as keyword arguments, else as it is."""
    if isinstance(batch, tuple):
        return model(*batch)
    if isinstance(batch, dict):
        return model(**batch)
    return model(batch)


def check_log_dir(log_dir: Any) -> str | None:
    """`log_dir` as a string path (None stays None)."""
    if log_dir is None:
        return None
    if not isinstance(log_dir, str | os.PathLike) or not os.fspath(log_dir):
        raise ValueError(f"log_dir={log_dir!r} must be a non-empty path or None")
    return os.fspath(log_dir)


class LoopLogger:
    """Logs a model's kernels (and its conv outputs on `sample_inputs`) at a step.

    `who` names the callback in warnings; `call(model, batch)` runs the model on a batch of
    `sample_inputs` (default `call_with`). The other knobs are those of the Lightning
    callback (``tb_convfilters.lightning.FiltersCallback``); see there.
    """

    def __init__(
        self,
        who: str,
        *,
        modules: Iterable[str | type] | str | type | None = None,
        sample_inputs: Any = None,
        max_samples: int = DEFAULT_MAX_MAPS,
        batch_size: int = 64,
        dtype: str | None = None,
        max_filters: int | Sequence[int] | None = None,
        max_channels: int | Sequence[int] | None = None,
        budget_mb: float | None = DEFAULT_STEP_BUDGET_MB,
        raise_errors: bool = False,
        examples: int = DEFAULT_EXAMPLES,
        call: Callable[[nn.Module, Any], Any] = call_with,
    ):
        self.modules = modules
        self.call = call
        self.dtype = check_float_dtype(dtype)
        self.max_filters = check_cap(max_filters, "max_filters")
        self.max_channels = check_cap(max_channels, "max_channels")
        if isinstance(sample_inputs, str | bytes):
            raise TypeError(f"sample_inputs={sample_inputs!r} must be module inputs (tensors)")
        self.sample_inputs = sample_inputs
        self.max_samples = check_positive_int(max_samples, "max_samples")
        self.examples = check_examples(examples)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.budget_mb = budget_mb
        self.policy = ErrorPolicy(who, raise_errors)
        self.writer: Writer | None = None
        self.logged_step: int | None = None

    def check(self, model: nn.Module) -> None:
        """Raises now when `modules` names no submodule of `model` (not at the first log)."""
        _select(model, self.modules, tuple(KERNEL_LAYOUTS))

    def log(
        self,
        log_dir: str,
        model: nn.Module,
        step: int,
        *,
        grads: bool | Mapping[str, torch.Tensor] = False,
        updates: int | None = None,
    ) -> None:
        """Kernels, and activations on `sample_inputs`, at `step` into `log_dir`; `grads` and
        `updates` as in ``tb_convfilters.torch.log_kernels``.

        The caller runs it on the main process only; failures follow the error policy."""
        self.logged_step = step
        if self.writer is None:
            self.writer = Writer(log_dir)
        options = dict(
            modules=self.modules,
            dtype=self.dtype,
            max_filters=self.max_filters,
            budget_mb=self.budget_mb,
            all_ranks=True,  # the caller checked that this is the main process
            raise_errors=self.policy.raise_errors,  # a module's failure: warned once per tag
        )
        try:
            log_kernels(
                self.writer,
                model,
                step,
                max_channels=self.max_channels,
                grads=grads,
                updates=updates,
                **options,
            )
        except Exception as e:
            self.policy.report("kernels", f"logging kernels at step {step}", e)
        if self.sample_inputs is not None:
            self._log_activations(model, step, options)

    def _log_activations(self, model: nn.Module, step: int, options: dict) -> None:
        first = next(iter(model.parameters()), torch.empty(0))

        def to_model(t: torch.Tensor) -> torch.Tensor:  # a bfloat16 model gets bfloat16 inputs
            return t.to(first.device, first.dtype if t.is_floating_point() else t.dtype)

        try:  # log_activations: eval mode, no_grad, each submodule's mode restored after
            with log_activations(
                self.writer, model, step, max_samples=self.max_samples, examples=self.examples,
                **options,
            ):
                for batch in batches(self.sample_inputs, self.batch_size):
                    self.call(model, apply(batch, to_model))
        except Exception as e:
            self.policy.report(
                "activations", f"logging activations on sample_inputs at step {step}", e
            )

    def close(self, may_raise: bool = True) -> None:
        """Closes the Writer; a record that failed is warned (raised only with raise_errors)."""
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as e:
                self.policy.report_close(e, may_raise=may_raise)
