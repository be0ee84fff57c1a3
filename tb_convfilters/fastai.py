"""fastai callback that logs conv kernels (and activations) while a ``Learner`` fits.

>>> from fastai.callback.tensorboard import TensorBoardCallback
>>> from tb_convfilters.fastai import FiltersCallback
>>> learn.fit(5, cbs=[TensorBoardCallback(), FiltersCallback(sample_inputs=xb[:64])])

Records go next to the ``TensorBoardCallback``'s scalars (its SummaryWriter's
directory), in a file of their own, at fastai's TensorBoard step (the number of
training batches so far); without a ``TensorBoardCallback`` pass ``log_dir``. Needs
``pip install "tb-convfilters[fastai]"``. Under distributed training only rank 0
writes; ``lr_find`` is not logged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

try:
    from fastai.callback.core import Callback
    from fastai.callback.tensorboard import TensorBoardBaseCallback
    from fastai.torch_core import rank_distrib
except ImportError as e:
    raise ImportError(
        "tb_convfilters.fastai needs fastai: pip install 'tb-convfilters[fastai]' "
        f"(or pip install fastai). Import failed with: {e}"
    ) from e

from tb_convfilters._record.arguments import check_positive_int
from tb_convfilters._record.examples import DEFAULT_EXAMPLES
from tb_convfilters._writing.policies import DEFAULT_MAX_MAPS, DEFAULT_STEP_BUDGET_MB
from tb_convfilters.torch.callbacks import LoopLogger, check_log_dir


class FiltersCallback(Callback):
    """Logs the kernels of conv (and linear) modules, and conv outputs on `sample_inputs`.

    Args:
      log_dir: where to write (default: the ``TensorBoardCallback``'s log directory).
      modules: submodule names (as in ``named_modules()``) and/or classes; default
        every Conv*/ConvTranspose*/Linear, as ``tb_convfilters.torch.log_kernels``
        (activations: of the Conv*/ConvTranspose* modules by default).
      every_n_epochs: log after epochs 0, n, 2n, ...; every_n_batches: instead, after
        every n-th training batch. The step is always ``learn.train_iter``, the
        training batches so far: the step of the ``TensorBoardCallback``'s scalars.
      sample_inputs, batch_size, max_samples, examples, dtype, max_filters,
      max_channels, budget_mb, raise_errors: as in
        ``tb_convfilters.lightning.FiltersCallback``: a failing module is warned once
        and training goes on unless `raise_errors`.

    The state at the end of ``fit`` is logged too when its step was not logged yet.
    """

    order = TensorBoardBaseCallback.order + 1  # after its writer exists (before_fit)

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
    ):
        super().__init__()
        self.log_dir = check_log_dir(log_dir)
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
        )
        self._target: str | None = None
        self._active = False

    # ---- fastai events ----

    def before_fit(self) -> None:
        learn = self.learn
        self._active = not hasattr(learn, "lr_finder") and rank_distrib() == 0
        self._logger.logged_step = None
        self._logger.check(learn.model)
        if self._active:
            self._target = self.log_dir or self._tensorboard_dir()

    def after_batch(self) -> None:
        learn = self.learn
        if self.every_n_batches and learn.training and learn.train_iter % self.every_n_batches == 0:
            self._log()

    def after_epoch(self) -> None:
        if not self.every_n_batches and self.learn.epoch % self.every_n_epochs == 0:
            self._log()

    def after_fit(self) -> None:
        self._log()  # the last state, unless that step is logged already
        self._logger.close()

    # ---- logging ----

    def _tensorboard_dir(self) -> str:
        for cb in self.learn.cbs:
            if isinstance(cb, TensorBoardBaseCallback) and getattr(cb, "run", True):
                writer = getattr(cb, "writer", None)
                found = getattr(writer, "log_dir", None) or getattr(cb, "log_dir", None)
                if found:
                    return os.fspath(found)
        raise ValueError(
            "FiltersCallback: the Learner has no TensorBoardCallback (callbacks: "
            + ", ".join(type(cb).__name__ for cb in self.learn.cbs)
            + "); add one or pass FiltersCallback(log_dir=...) to choose where to write"
        )

    def _log(self) -> None:
        step = self.learn.train_iter
        if self._active and step != self._logger.logged_step:
            self._logger.log(self._target, self.learn.model, step)
