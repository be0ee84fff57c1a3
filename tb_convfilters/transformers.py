"""Hugging Face ``Trainer`` callback that logs conv kernels (and activations) while it trains.

>>> from tb_convfilters.transformers import FiltersCallback
>>> args = TrainingArguments("out", report_to="tensorboard", logging_steps=50)
>>> trainer = Trainer(model, args, train_dataset=data,
...                   callbacks=[FiltersCallback(sample_inputs=pixel_values[:64])])

Records go into the directory of the Trainer's own TensorBoard log (that of its
``TensorBoardCallback``: ``TENSORBOARD_LOGGING_DIR`` or ``output_dir/runs/<time>_<host>``;
``args.logging_dir`` in transformers 4), in a file of their own, so the Filters tab
shows them in the same run as the Trainer's scalars; without ``report_to="tensorboard"``
pass ``log_dir``. Needs ``pip install "tb-convfilters[transformers]"``. Under
``accelerate`` / DDP only the main process writes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

try:
    from transformers import TrainerCallback
    from transformers.trainer_callback import CallbackHandler
except ImportError as e:
    raise ImportError(
        "tb_convfilters.transformers needs Hugging Face transformers: pip install "
        f"'tb-convfilters[transformers]' (or pip install transformers accelerate). "
        f"Import failed with: {e}"
    ) from e

from torch import nn

from tb_convfilters._record.arguments import check_positive_int
from tb_convfilters._record.examples import DEFAULT_EXAMPLES
from tb_convfilters._writing.policies import DEFAULT_MAX_MAPS, DEFAULT_STEP_BUDGET_MB
from tb_convfilters.torch.callbacks import LoopLogger, check_log_dir


def _trainer_callbacks() -> list:
    """The callbacks of the Trainer whose event is running: its ``CallbackHandler``
    calls ours, and hands no reference to itself or the Trainer."""
    frame = sys._getframe(1)
    while frame is not None:
        handler = frame.f_locals.get("self")
        if isinstance(handler, CallbackHandler):
            return list(handler.callbacks)
        frame = frame.f_back
    return []


def _tensorboard_dir(callbacks: list, args: Any) -> str | None:
    """Where the Trainer's ``TensorBoardCallback`` writes (None: it has none)."""
    from transformers.integrations import TensorBoardCallback

    for callback in callbacks:
        if not isinstance(callback, TensorBoardCallback):
            continue
        writer = getattr(callback, "tb_writer", None)
        for name in ("log_dir", "logdir"):  # torch's SummaryWriter, tensorboardX's
            if isinstance(getattr(writer, name, None), str):
                return getattr(writer, name)
        if getattr(callback, "logging_dir", None):
            return callback.logging_dir
    return getattr(args, "logging_dir", None)  # transformers 4


class FiltersCallback(TrainerCallback):
    """Logs the kernels of conv (and linear) modules, and conv outputs on `sample_inputs`.

    Args:
      log_dir: where to write (default: the Trainer's TensorBoard log directory).
      modules: submodule names (as in ``named_modules()``) and/or classes; default
        every Conv*/ConvTranspose*/Linear, as ``tb_convfilters.torch.log_kernels``
        (activations: of the Conv*/ConvTranspose* modules by default).
      every_n_steps / every_n_epochs: log after every n-th optimizer step / epoch;
        by default whenever the Trainer logs its scalars (``logging_steps`` or each
        epoch, as ``logging_strategy`` says). The step is always the Trainer's
        ``global_step``, the step of its own scalars.
      sample_inputs: the model's inputs (a batch of ``pixel_values``; a tuple is
        unpacked, a dict passed as keyword arguments) in batches of `batch_size`,
        moved to the model's device and float dtype, in eval mode under
        ``torch.no_grad``; each conv module's output is logged as ``<name>/activation``:
        the maps of the first `max_samples` inputs, how often each channel fires over
        all of them and, with `examples` (default 9; 0: off), each channel's top inputs.
      batch_size, max_samples, examples, dtype, max_filters, max_channels, budget_mb,
      raise_errors: as in ``tb_convfilters.lightning.FiltersCallback``: a failing
        module is warned once and training goes on unless `raise_errors`.

    The state at the end of training is logged too when its step was not logged yet.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        *,
        modules: Iterable[str | type] | str | type | None = None,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        sample_inputs: Any = None,
        max_samples: int = DEFAULT_MAX_MAPS,
        batch_size: int = 64,
        dtype: str | None = None,
        max_filters: int | Sequence[int] | None = None,
        max_channels: int | Sequence[int] | None = None,
        budget_mb: float | None = DEFAULT_STEP_BUDGET_MB,
        raise_errors: bool = False,
        examples: int = DEFAULT_EXAMPLES,
    ):
        self.log_dir = check_log_dir(log_dir)
        self.every_n_steps = check_positive_int(every_n_steps, "every_n_steps", optional=True)
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs", optional=True)
        if self.every_n_steps and self.every_n_epochs:
            raise ValueError(
                f"every_n_steps={every_n_steps} and every_n_epochs={every_n_epochs}: give one "
                "of them, or neither to log whenever the Trainer logs"
            )
        self._logger = LoopLogger(
            "FiltersCallback",
            modules=modules,
            sample_inputs=sample_inputs,
            max_samples=max_samples,
            batch_size=batch_size,
            dtype=dtype,
            max_filters=max_filters,
            max_channels=max_channels,
            budget_mb=budget_mb,
            raise_errors=raise_errors,
            examples=examples,
        )
        self._dir: str | None = None

    # ---- Trainer events ----

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        self._logger.check(model)
        self._logger.logged_step = None
        if state.is_world_process_zero:  # the TensorBoardCallback before us has its writer now
            self._dir = self.log_dir or _tensorboard_dir(_trainer_callbacks(), args)
            if self._dir is None:
                raise ValueError(
                    "FiltersCallback: the Trainer has no TensorBoard log (report_to="
                    f"{getattr(args, 'report_to', None)!r}); pass report_to='tensorboard' or "
                    "FiltersCallback(log_dir=...) to choose where to write"
                )

    def on_log(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if not (self.every_n_steps or self.every_n_epochs):
            self._log(state, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if self.every_n_steps and state.global_step % self.every_n_steps == 0:
            self._log(state, model)

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if self.every_n_epochs and round(state.epoch or 0) % self.every_n_epochs == 0:
            self._log(state, model)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        self._log(state, model)  # the last state, unless that step is logged already
        self._logger.close()

    # ---- logging ----

    def _log(self, state: Any, model: nn.Module) -> None:
        step = state.global_step
        if state.is_world_process_zero and step != self._logger.logged_step and self._dir:
            self._logger.log(self._dir, model, step)
