"""PyTorch Lightning callback that logs conv kernels (and activations) during ``Trainer.fit``.

>>> from tb_convfilters.lightning import FiltersCallback
>>> trainer = Trainer(max_epochs=10, callbacks=[FiltersCallback(sample_inputs=x[:4])])

Records go into the trainer's ``TensorBoardLogger`` directory (its ``log_dir``, the
default logger's ``lightning_logs/version_N``), in a file of their own, so the
Filters tab shows them in the same run as the scalars; with another logger pass
``log_dir``. Works with ``lightning`` and ``pytorch_lightning`` Trainers
(``pip install "tb-convfilters[lightning]"``). Under DDP only global rank 0 writes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from tb_convfilters import torch as tb_torch
from tb_convfilters._record.arguments import check_positive_int
from tb_convfilters._record.examples import DEFAULT_EXAMPLES
from tb_convfilters._writing.policies import DEFAULT_MAX_MAPS, DEFAULT_STEP_BUDGET_MB
from tb_convfilters.torch.callbacks import LoopLogger, check_log_dir

_BASES: list[type] = []
_LOGGERS: list[type] = []
for _package in ("lightning.pytorch", "pytorch_lightning"):
    try:
        _module = __import__(_package, fromlist=["Callback", "loggers"])
    except ImportError:
        continue
    _BASES.append(_module.Callback)
    _LOGGERS.append(_module.loggers.TensorBoardLogger)
if not _BASES:
    raise ImportError(
        "tb_convfilters.lightning needs PyTorch Lightning: pip install "
        "'tb-convfilters[lightning]' (or pip install lightning)"
    )


class FiltersCallback(*_BASES):  # one class for both packages' Trainers
    """Logs the kernels of conv modules, and their outputs on `sample_inputs`.

    Args:
      log_dir: where to write when the trainer has no ``TensorBoardLogger``
        (default: that logger's ``log_dir``).
      modules: submodule names (as in ``named_modules()``) and/or classes; default
        every Conv*/ConvTranspose*/Linear, as ``tb_convfilters.torch.log_kernels``
        (activations: of the Conv*/ConvTranspose* modules by default).
      every_n_epochs: log at the end of epochs 0, n, 2n, ... with step = epoch.
      every_n_batches: instead, log after every n-th training batch with step = the
        trainer's ``global_step`` (the step of Lightning's own scalars).
      sample_inputs: inputs the module is called on (``module(batch)``; a tuple is
        unpacked) in batches of `batch_size`, moved to the module's device (floating
        point ones also to its dtype), in eval mode under ``torch.no_grad``; each
        conv module's output is logged as ``<name>/activation``: the maps of the
        first `max_samples` inputs and how often each channel fires over all of them
        (see ``torch.log_activations``).
      max_samples: how many inputs' feature maps are stored (default 8).
      examples: with `sample_inputs`, each conv output's dataset examples: the top
        N of the sample inputs per channel (default 9; 0: off), stored with the
        inputs (see ``torch.log_activations``).
      batch_size: inputs per forward pass over `sample_inputs`.
      dtype: store as this float dtype, e.g. ``"float16"``; max_filters / max_channels:
        keep the first N output filters / input channels, or the listed indices.
      budget_mb: warn once when one step stores more MiB than this (None: never).
      raise_errors: raise a logging error instead of warning once per module and
        going on.
      grads: also store each filter's gradient norm with the kernels (stats column
        ``grad_norm``, see ``tb_convfilters.dynamics``): the gradients are copied in
        ``on_after_backward`` of the batches whose step is logged and kept until then.

    The state at the end of ``fit`` is logged too when its step was not logged yet.
    Tags are ``<module name>/weight`` and ``<module name>/activation``.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        *,
        modules: Iterable[str | type] | str | type | None = None,
        every_n_epochs: int = 1,
        every_n_batches: int | None = None,
        sample_inputs: Any = None,
        max_samples: int = DEFAULT_MAX_MAPS,
        batch_size: int = 64,
        dtype: str | None = None,
        max_filters: int | Sequence[int] | None = None,
        max_channels: int | Sequence[int] | None = None,
        budget_mb: float | None = DEFAULT_STEP_BUDGET_MB,
        raise_errors: bool = False,
        examples: int = DEFAULT_EXAMPLES,
        grads: bool = False,
    ):
        super().__init__()
        if not isinstance(grads, bool):
            raise TypeError(f"grads={grads!r} must be True or False")
        self.grads = grads
        self._grads: dict[str, torch.Tensor] = {}
        self.log_dir = check_log_dir(log_dir)
        self._dir: str | None = None  # where this fit writes (setup)
        self.modules = modules
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.every_n_batches = check_positive_int(every_n_batches, "every_n_batches", optional=True)
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
            call=_call,  # a dict batch is one argument, as Lightning's own batches are
        )

    @property
    def raise_errors(self) -> bool:
        return self._logger.policy.raise_errors

    # ---- where ----

    def _target_dir(self, trainer: Any) -> str:
        if self.log_dir is not None:
            return self.log_dir
        for logger in trainer.loggers:
            if isinstance(logger, tuple(_LOGGERS)):
                return logger.log_dir
        raise ValueError(
            "FiltersCallback: the trainer has no TensorBoardLogger (loggers: "
            + (", ".join(type(lg).__name__ for lg in trainer.loggers) or "none")
            + "); pass FiltersCallback(log_dir=...) to choose where to write"
        )

    # ---- Lightning hooks ----

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit":
            self._dir = self._target_dir(trainer)  # fails now, not at the first log
            self._logger.check(pl_module)
            self._logger.logged_step = None

    def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
        if not self.grads or not trainer.is_global_zero:
            return
        if self.every_n_batches:  # logged after this batch's optimizer step
            logged = (trainer.global_step + 1) % self.every_n_batches == 0
        else:  # logged at the end of this epoch (or of training): keep the last batch's
            epoch = trainer.current_epoch
            logged = epoch % self.every_n_epochs == 0 or epoch + 1 == trainer.max_epochs
        if logged:
            selected = tb_torch._select(pl_module, self.modules, tuple(tb_torch.KERNEL_LAYOUTS))
            self._grads = {
                name: m.weight.grad.detach().clone()
                for name, m in selected
                if isinstance(getattr(m, "weight", None), torch.Tensor)
                and m.weight.grad is not None
            }

    def on_train_batch_end(self, trainer: Any, pl_module: Any, *args: Any) -> None:
        step = trainer.global_step  # with gradient accumulation, one step spans several batches
        logged = self._logger.logged_step
        if self.every_n_batches and step % self.every_n_batches == 0 and step != logged:
            self._log(trainer, pl_module, step)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        if not self.every_n_batches and epoch % self.every_n_epochs == 0:
            self._log(trainer, pl_module, epoch)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.every_n_batches:
            last = trainer.global_step
        else:  # current_epoch has moved past the last finished epoch
            last = max(trainer.current_epoch - 1, 0)
        if last != self._logger.logged_step:
            self._log(trainer, pl_module, last)
        self._logger.close()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._logger.close(may_raise=False)  # the trainer's exception stays the one raised

    # ---- logging ----

    def _log(self, trainer: Any, pl_module: nn.Module, step: int) -> None:
        if not trainer.is_global_zero:  # the rank is the trainer's global rank
            return
        grads, self._grads = (self._grads if self.grads else False), {}
        self._logger.log(self._dir, pl_module, step, grads=grads, updates=int(trainer.global_step))


def _call(module: nn.Module, batch: Any) -> Any:
    return module(*batch) if isinstance(batch, tuple) else module(batch)
