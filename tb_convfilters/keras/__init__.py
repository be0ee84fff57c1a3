"""Keras 3 callback that logs conv kernels (and optionally activations) during ``fit``.

>>> model.fit(x, y, epochs=10, callbacks=[
...     keras.callbacks.TensorBoard("logs"),
...     tb_convfilters.keras.FiltersCallback("logs", sample_inputs=x[:512]),
... ])

Both callbacks write to ``logs/train``; the Filters tab reads ours, the other
tabs read the stock callback's file. ``log_dir`` may be a URL TensorBoard reads
(``s3://bucket/logs``, see ``tb_convfilters._record.files``).

Which layers are logged and their layouts: ``layers``; activations on
``sample_inputs``: ``activations`` (``ActivationProbe``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import keras

from tb_convfilters._record import encoding, files
from tb_convfilters._record.arguments import check_cap, check_float_dtype, check_positive_int
from tb_convfilters._record.examples import DEFAULT_EXAMPLES, Found, check_examples
from tb_convfilters._record.record import make_record
from tb_convfilters._writing.policies import (
    DEFAULT_MAX_MAPS,
    DEFAULT_STEP_BUDGET_MB,
    ErrorPolicy,
    StepBudget,
)
from tb_convfilters._writing.writer import Writer, WriterError
from tb_convfilters.keras.activations import ActivationProbe
from tb_convfilters.keras.layers import (
    DEFAULT_LAYER_TYPES,
    activation_layout,
    check_layer_spec,
    is_chief,
    kernel_parts,
    select_activation_layers,
    select_layers,
    variable_numpy,
)
from tb_convfilters.keras.receptive_fields import receptive_field

__all__ = [
    "DEFAULT_LAYER_TYPES",
    "PATTERNS_OPTIONS",
    "FiltersCallback",
    "activation_layout",
    "kernel_parts",
    "receptive_field",
    "variable_numpy",
]

# Keys of `patterns_options`: vis.log_patterns' `method` and vis.filter_patterns' options.
PATTERNS_OPTIONS = (
    "method",
    "size",
    "steps",
    "step_size",
    "seed",
    "jitter",
    "blur",
    "input_range",
    "batch_size",
)
_KNOBS = (
    "log less often (every_n_epochs / every_n_batches), store dtype='float16', cap "
    "max_filters / max_channels, or pick fewer `layers`"
)


class FiltersCallback(keras.callbacks.Callback):
    """Logs the kernels of conv layers, and their activations on `sample_inputs`.

    Args:
      log_dir: the same directory as ``keras.callbacks.TensorBoard(log_dir)``;
        events go to ``log_dir/train`` (a file of its own, opened on the first log).
      layers: names (str) and/or layer classes to log. Default: every Conv1D/2D/3D,
        Conv*Transpose, DepthwiseConv* and SeparableConv* layer, nested models
        included. Dense layers are logged only when selected here.
      every_n_epochs: log at the end of epochs 0, n, 2n, ... with step = epoch
        (like the stock callback's ``histogram_freq``), and at the end of training
        when the last epoch was not logged, so the final weights are always seen.
      every_n_batches: instead of per epoch, log after every n-th training batch with
        step = the batch count since the start of ``fit`` (1-based, like the stock
        callback's ``update_freq=n`` scalars), and after the last batch. Patterns
        then get the batch count as their step too.
      sample_inputs: model inputs (hundreds are fine: they run in batches of
        `batch_size`); when given, the output of each logged layer on them is logged
        too (needs a functional or Sequential model): the maps of the first
        `max_samples`, and how often each channel fires (> 0) over all of them,
        which the doctor's dead rule reads (it wants ``doctor.DEAD_MIN_INPUTS``).
      max_samples: how many inputs' feature maps are stored (default 8).
      examples: with `sample_inputs`, the top N sample inputs of each channel of each
        logged output (its dataset examples, ``reader.examples``), ranked over all
        of them by the channel's maximum over positions; 0: none. The sample inputs
        are stored once, and each example's crop is its receptive field
        (``receptive_field``), or the whole input with the example's map where the
        field is unknown. Sample inputs that are several arrays (a multi-input
        model), or not 3-5-D, give examples without inputs (no crops).
      batch_size: inputs per forward pass over `sample_inputs`.
      activation_layers: names (str) and/or layer classes whose outputs on
        `sample_inputs` are logged instead of the kernel layers' (any layer with a
        3-5-D output, e.g. the ReLU after a BatchNorm), as ``<layer>/activation``.
      dtype: store tensors as this float dtype, e.g. ``"float16"`` to halve storage.
      max_filters / max_channels: keep the first N output filters / input channels,
        or the listed indices (depthwise kernels: their input channels, see ``make_record``).
      budget_mb: warn once when one logging step stores more MiB than this (None: never).
      raise_errors: raise a layer's logging error instead of warning once and going on.
      patterns: layer names whose filters' activation-maximization patterns are
        logged as ``<layer>/pattern`` (see ``tb_convfilters.vis.filter_patterns``).
      patterns_every_n_epochs: log patterns at the end of epochs 0, n, 2n, ...
      projection_inputs: a few input images; when given with `patterns`, their
        guided-backprop projections are logged as ``<layer>/projection``.
      patterns_max_filters: the first N filters of each pattern layer (or a list);
        default the first 64, with a warning (once) when a layer has more.
      patterns_options: passed on to ``vis.log_patterns`` (method) and
        ``vis.filter_patterns`` (size, steps, step_size, seed, jitter, blur,
        input_range, batch_size); other keys are refused here.

    Tags are ``<layer>/kernel`` (separable layers: ``<layer>/depthwise`` and
    ``<layer>/pointwise``) and ``<layer>/activation``.

    Under a multi-worker ``tf.distribute`` strategy (``MultiWorkerMirroredStrategy``)
    only the chief logs; the other workers read and write nothing.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        layers: Iterable[str | type] | str | type | None = None,
        every_n_epochs: int = 1,
        every_n_batches: int | None = None,
        sample_inputs: Any = None,
        max_samples: int = DEFAULT_MAX_MAPS,
        examples: int = DEFAULT_EXAMPLES,
        batch_size: int = 64,
        activation_layers: Iterable[str | type] | str | type | None = None,
        dtype: str | None = None,
        max_filters: int | Sequence[int] | None = None,
        max_channels: int | Sequence[int] | None = None,
        budget_mb: float | None = DEFAULT_STEP_BUDGET_MB,
        raise_errors: bool = False,
        patterns: Iterable[str] | str | None = None,
        patterns_every_n_epochs: int = 5,
        projection_inputs: Any = None,
        patterns_max_filters: int | Sequence[int] | None = None,
        patterns_options: dict | None = None,
    ):
        super().__init__()
        if not isinstance(log_dir, str | os.PathLike) or not os.fspath(log_dir):
            raise ValueError(f"log_dir={log_dir!r} must be a non-empty path")
        self.log_dir = os.fspath(log_dir)
        self.layers = check_layer_spec(layers, "layers")
        self.activation_layers = check_layer_spec(activation_layers, "activation_layers")
        if self.activation_layers is not None and sample_inputs is None:
            raise ValueError("activation_layers needs sample_inputs to run the model on")
        self.every_n_epochs = check_positive_int(every_n_epochs, "every_n_epochs")
        self.every_n_batches = check_positive_int(every_n_batches, "every_n_batches", optional=True)
        if self.every_n_batches:
            # Only then: a batch hook turns off Keras' async callback dispatch (JAX, torch).
            self.on_train_batch_end = self._on_train_batch_end
        self.dtype = check_float_dtype(dtype)
        self.max_filters = check_cap(max_filters, "max_filters")
        self.max_channels = check_cap(max_channels, "max_channels")
        if sample_inputs is not None and isinstance(sample_inputs, str | bytes):
            raise TypeError(f"sample_inputs={sample_inputs!r} must be model inputs (arrays)")
        self.sample_inputs = sample_inputs
        self.max_samples = check_positive_int(max_samples, "max_samples")
        self.examples = check_examples(examples)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self._policy = ErrorPolicy("FiltersCallback", raise_errors)
        self._budget = StepBudget(budget_mb, _KNOBS)
        self.patterns = _check_patterns(patterns)
        self.patterns_every_n_epochs = check_positive_int(
            patterns_every_n_epochs, "patterns_every_n_epochs"
        )
        if projection_inputs is not None and not self.patterns:
            raise ValueError("projection_inputs needs patterns=[layer names] to project")
        self.projection_inputs = projection_inputs
        self.patterns_max_filters = check_cap(patterns_max_filters, "patterns_max_filters")
        self.patterns_options = _check_patterns_options(patterns_options)
        self._writer: Writer | None = None
        self._targets: list[keras.layers.Layer] | None = None
        self._probe: ActivationProbe | None = None
        self._batch = 0
        self._epoch: int | None = None  # the last epoch that ended
        self._logged_step: int | None = None
        self._chief: bool | None = None

    # ---- Keras hooks ----

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._targets = select_layers(self.model, self.layers)
        if self.activation_layers is not None:
            # fail now, not at the first logged step
            select_activation_layers(self.model, self.activation_layers)
        if self.patterns:
            from tb_convfilters import vis

            vis.check_layers(self.model, self.patterns)  # fail now, not epochs later
        self._batch = 0
        self._epoch = self._logged_step = None
        self._chief = is_chief(self.model)

    def _on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._batch += 1
        if self.every_n_batches and self._batch % self.every_n_batches == 0:
            self._log(self._batch)

    def _step(self) -> int | None:
        """The step of what is logged now: the batch count with every_n_batches, else the
        epoch (None before the first batch / epoch ended)."""
        return (self._batch or None) if self.every_n_batches else self._epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        if not self.every_n_batches and epoch % self.every_n_epochs == 0:
            self._log(epoch)
        if self.patterns and epoch % self.patterns_every_n_epochs == 0:
            self._log_patterns(self._step())

    def on_train_end(self, logs: dict | None = None) -> None:
        last = self._step()
        if last is not None and last != self._logged_step:
            self._log(last)  # the final weights, when the last step was not logged
        self._probe = None
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as e:  # fit() returns: the user's next line (model.save()) runs
                self._policy.report_close(e)

    # ---- logging ----

    @property
    def raise_errors(self) -> bool:
        return self._policy.raise_errors

    def _write(self, tag: str, rec: Any, step: int, description: str) -> int:
        if self._writer is None:
            self._writer = Writer(files.join(self.log_dir, "train"))
        try:
            self._writer.write_record(tag, rec, step, description)
        except WriterError as e:  # an earlier record's failure: this one is queued
            self._policy.report(tag, "writing an earlier record failed", e)
        return encoding.payload_nbytes(rec.header)

    def _write_examples(self, tag: str, found: Found, step: int, **options: Any) -> int:
        if self._writer is None:
            self._writer = Writer(files.join(self.log_dir, "train"))
        try:
            return self._writer.write_examples(tag, found, step, **options)
        except WriterError as e:  # an earlier record's failure
            self._policy.report(tag, "writing an earlier record failed", e)
            return 0

    def _flush(self) -> None:
        try:
            if self._writer is not None:
                self._writer.flush(wait=False)  # a URL logdir uploads the step
        except Exception as e:
            self._policy.report("flush", "writing the event file", e)

    def _writes(self) -> bool:
        """True unless this is a worker of a multi-worker strategy other than the chief."""
        if self._chief is None:  # no on_train_begin, e.g. a custom loop
            self._chief = is_chief(self.model)
        return self._chief

    def _log(self, step: int) -> None:
        if self._targets is None:  # fit() without on_train_begin, e.g. a custom loop
            self._targets = select_layers(self.model, self.layers)
        if not self._writes():
            return
        self._logged_step = step
        nbytes = 0
        updates = _updates(self.model)
        for layer in self._targets:
            for part in kernel_parts(layer):
                try:
                    value, snapshot = variable_numpy(getattr(layer, part.variable_name))
                    rec = make_record(
                        value,
                        kind="kernel",
                        layout=part.layout,
                        dtype=self.dtype,
                        max_filters=self.max_filters,
                        max_channels=self.max_channels,
                        complete=False,  # the Writer copies (unless a snapshot); converts
                        convert=False,  # and computes stats in the background
                        owned=snapshot,
                        extra=updates,
                    )
                    desc = (
                        f"{type(layer).__name__} `{layer.name}` {part.variable_name} "
                        f"({part.layout})"
                    )
                    nbytes += self._write(part.tag, rec, step, desc)
                except Exception as e:
                    self._policy.report(part.tag, f"layer {layer.name!r} kernel {part.tag!r}", e)
        if self.sample_inputs is not None:
            nbytes += self._log_activations(step)
        self._flush()
        self._budget.check(nbytes, f"FiltersCallback({self.log_dir!r}) at step {step}")

    def _log_patterns(self, step: int) -> None:
        from tb_convfilters import vis

        if not self._writes():
            return
        if self._writer is None:
            self._writer = Writer(files.join(self.log_dir, "train"))
        nbytes = 0
        for layer in self.patterns:  # one layer's failure costs no other layer its patterns
            try:
                logged = vis.log_patterns(
                    self._writer,
                    self.model,
                    layer,
                    step,
                    max_filters=self.patterns_max_filters,
                    projection_inputs=self.projection_inputs,
                    # patterns are images in [0, 1]: only float dtypes can hold them
                    dtype=self.dtype if self.dtype in ("float16", "bfloat16") else None,
                    **self.patterns_options,
                )
            except Exception as e:
                self._policy.report(f"{layer}/pattern", f"patterns of layer {layer!r}", e)
                continue
            nbytes += sum(a.nbytes for a in logged.values())
        self._flush()
        self._budget.check(nbytes, f"FiltersCallback patterns at step {step}")

    def _log_activations(self, step: int) -> int:
        if self._probe is None:
            spec = self.activation_layers
            layers = self._targets if spec is None else select_activation_layers(self.model, spec)
            self._probe = ActivationProbe(
                self.model,
                layers,
                self.sample_inputs,
                batch_size=self.batch_size,
                max_samples=self.max_samples,
                dtype=self.dtype,
                max_filters=self.max_filters,
                report=self._policy.report,
                examples=self.examples if self.sample_inputs is not None else 0,
            )
        return self._probe.log(step, self._write, self._write_examples)


def _check_patterns(patterns: Any) -> list[str]:
    """`patterns` (a layer name, or several) as a list of names."""
    names = [patterns] if isinstance(patterns, str) else list(patterns or [])
    if not all(isinstance(name, str) for name in names):
        raise TypeError(f"patterns={patterns!r} must be layer names")
    return names


def _check_patterns_options(options: Any) -> dict:
    """A copy of `patterns_options`; keys other than `PATTERNS_OPTIONS` are refused."""
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"patterns_options={options!r} must be a dict")
    unknown = sorted(set(options or ()) - set(PATTERNS_OPTIONS))
    if unknown:
        raise ValueError(
            f"patterns_options keys {unknown} are not options of vis.log_patterns; "
            "expected some of: " + ", ".join(PATTERNS_OPTIONS)
        )
    return dict(options or {})


def _updates(model: Any) -> dict | None:
    """``{"updates": the optimizer's step count}`` for the record headers, None if unknown
    (``tb_convfilters.dynamics`` divides update ratios by the updates between logs)."""
    try:
        value = int(model.optimizer.iterations.numpy())
    except Exception:  # no optimizer yet, or another kind of model
        return None
    return {"updates": value} if value >= 0 else None
