"""Ultralytics YOLO: log conv kernels (and activations) while ``model.train`` runs.

>>> from ultralytics import YOLO
>>> from tb_convfilters.ultralytics import add_filters
>>> model = YOLO("yolov8n.yaml")
>>> add_filters(model, sample_inputs=images[:16])  # float NCHW in [0, 1], sides /32
>>> model.train(data="data.yaml", epochs=50)

Records go into the trainer's ``save_dir`` (``runs/detect/train<N>``), where its
TensorBoard log lives once ``yolo settings tensorboard=True``, in a file of their own,
at its TensorBoard step (epoch + 1) after each epoch's training batches. Needs
``pip install "tb-convfilters[ultralytics]"``. Only the process that runs the
callbacks writes (rank 0 or a single process); ultralytics' multi-GPU workers do not
run callbacks added with ``add_callback``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable, Sequence
from typing import Any

if importlib.util.find_spec("ultralytics") is None:  # the model hands us its trainer: no import
    raise ImportError(
        "tb_convfilters.ultralytics needs Ultralytics: pip install "
        "'tb-convfilters[ultralytics]' (or pip install ultralytics)"
    )

from tb_convfilters._record.arguments import check_positive_int
from tb_convfilters._record.examples import DEFAULT_EXAMPLES
from tb_convfilters._writing.policies import DEFAULT_MAX_MAPS, DEFAULT_STEP_BUDGET_MB
from tb_convfilters.torch.callbacks import LoopLogger, check_log_dir


class FiltersHook:
    """The callbacks `add_filters` adds; its arguments are documented there."""

    def __init__(self, log_dir: str | None, every_n_epochs: int, logger: LoopLogger):
        self.log_dir = log_dir
        self.every_n_epochs = every_n_epochs
        self.logger = logger

    def on_pretrain_routine_start(self, trainer: Any) -> None:
        self.logger.logged_step = None

    def on_train_start(self, trainer: Any) -> None:
        self.logger.check(trainer.model)  # raises before the first epoch

    def on_train_epoch_end(self, trainer: Any) -> None:
        if trainer.epoch % self.every_n_epochs == 0:
            self._log(trainer)

    def on_train_end(self, trainer: Any) -> None:
        self._log(trainer)  # the last epoch, unless logged already
        self.logger.close()

    def _log(self, trainer: Any) -> None:
        step = trainer.epoch + 1  # the step of ultralytics' TensorBoard scalars
        if _rank() in (-1, 0) and step != self.logger.logged_step:
            self.logger.log(self.log_dir or os.fspath(trainer.save_dir), trainer.model, step)


def _rank() -> int:
    """ultralytics' RANK (-1: not distributed), read as it reads it."""
    return int(os.getenv("RANK", -1))


def add_filters(
    model: Any,
    log_dir: str | os.PathLike | None = None,
    *,
    modules: Iterable[str | type] | str | type | None = None,
    every_n_epochs: int = 1,
    sample_inputs: Any = None,
    max_samples: int = DEFAULT_MAX_MAPS,
    batch_size: int = 64,
    dtype: str | None = None,
    max_filters: int | Sequence[int] | None = None,
    max_channels: int | Sequence[int] | None = None,
    budget_mb: float | None = DEFAULT_STEP_BUDGET_MB,
    raise_errors: bool = False,
    examples: int = DEFAULT_EXAMPLES,
) -> FiltersHook:
    """Adds callbacks to an ultralytics ``YOLO`` model (``model.add_callback``) that log
    the kernels of the trained model's conv (and linear) modules after every
    `every_n_epochs`-th epoch (after its last optimizer step) and at the end of training.

    Args:
      model: a ``YOLO`` model (anything with ``add_callback(event, fn)``).
      log_dir: where to write (default: the trainer's ``save_dir``).
      modules: submodule names (as in ``named_modules()``, e.g. ``"model.0.conv"``)
        and/or classes; default every Conv*/ConvTranspose*/Linear.
      sample_inputs: images (float NCHW in [0, 1], sides multiples of 32) the model is
        run on in eval mode without gradients: each conv output is logged as
        ``<name>/activation`` with its firing and `examples` dataset examples.
      batch_size, max_samples, examples, dtype, max_filters, max_channels, budget_mb,
      raise_errors: as in ``tb_convfilters.lightning.FiltersCallback``: a failing
        module is warned once and training goes on unless `raise_errors`.

    The step is epoch + 1, the step of ultralytics' TensorBoard scalars. Returns the
    hook (its callbacks are its ``on_*`` methods).
    """
    if not callable(getattr(model, "add_callback", None)):
        raise TypeError(f"model of type {type(model).__name__} has no add_callback(event, fn)")
    hook = FiltersHook(
        check_log_dir(log_dir),
        check_positive_int(every_n_epochs, "every_n_epochs"),
        LoopLogger(
            "tb_convfilters.ultralytics",
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
        ),
    )
    for event in ("on_pretrain_routine_start", "on_train_start", "on_train_epoch_end",
                  "on_train_end"):
        model.add_callback(event, getattr(hook, event))
    return hook
