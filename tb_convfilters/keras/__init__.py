"""Keras 3 callback that logs conv kernels (and optionally activations) during ``fit``.

>>> model.fit(x, y, epochs=10, callbacks=[
...     keras.callbacks.TensorBoard("logs"),
...     tb_convfilters.keras.FiltersCallback("logs", sample_inputs=x[:512]),
... ])

Both callbacks write to ``logs/train``; the Filters tab reads ours, the other
tabs read the stock callback's file. ``log_dir`` may be a URL TensorBoard reads
(``s3://bucket/logs``, see ``tb_convfilters._record.files``).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import keras
import numpy as np

from tb_convfilters._record import encoding, files
from tb_convfilters._record.arguments import check_cap, check_float_dtype
from tb_convfilters._record.firing import Firing
from tb_convfilters._record.record import make_record, samples_digest
from tb_convfilters._writing.policies import (
    DEFAULT_MAX_MAPS,
    DEFAULT_STEP_BUDGET_MB,
    ErrorPolicy,
    StepBudget,
)
from tb_convfilters._writing.writer import Writer, WriterError

_L = keras.layers
_SPATIAL = {3: "W", 4: "HW", 5: "DHW"}  # kernel / activation rank -> spatial letters
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
# Logged when `layers` is None; Dense only when selected (it is not a filter bank).
DEFAULT_LAYER_TYPES = _CONV + _TRANSPOSE + _DEPTHWISE + _SEPARABLE
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


class _Kernel(NamedTuple):
    tag: str
    layout: str
    variable_name: str  # attribute of the layer holding the kernel


def kernel_parts(layer: keras.layers.Layer) -> list[_Kernel]:
    """The kernels a layer logs (tag, layout, attribute); empty if it has none we know."""
    name = layer.name
    if isinstance(layer, _SEPARABLE):
        spatial = "W" if isinstance(layer, _L.SeparableConv1D) else "HW"
        return [
            _Kernel(f"{name}/depthwise", spatial + "IM", "depthwise_kernel"),
            _Kernel(f"{name}/pointwise", spatial + "IO", "pointwise_kernel"),
        ]
    if isinstance(layer, _DEPTHWISE):
        spatial = "W" if isinstance(layer, _L.DepthwiseConv1D) else "HW"
        return [_Kernel(f"{name}/kernel", spatial + "IM", "kernel")]
    for types, suffix in ((_TRANSPOSE, "OI"), (_CONV, "IO")):
        for rank, cls in enumerate(types, start=3):
            if isinstance(layer, cls):
                return [_Kernel(f"{name}/kernel", _SPATIAL[rank] + suffix, "kernel")]
    if isinstance(layer, _L.Dense):
        return [_Kernel(f"{name}/kernel", "IO", "kernel")]
    return []


def variable_numpy(variable: Any) -> tuple[np.ndarray, bool]:
    """A Keras variable's value, and whether it is a snapshot no later update changes.

    On TensorFlow a read shares the variable's buffer and is such a snapshot: an
    update of a variable whose buffer is still read copies it first (copy on write,
    what lets ``tf.summary.write`` queue a variable without copying it). Elsewhere
    the value may be the live buffer (torch), so the Writer copies it.
    """
    value = getattr(variable, "value", None)
    if hasattr(value, "read_value"):  # a tf.Variable: value() is the cheapest read
        return np.asarray(value.value()), True
    return variable.numpy(), False


def activation_layout(rank: int, data_format: str | None) -> str | None:
    """Layout of a layer output of `rank` (None if it is not a 1-3D feature map)."""
    spatial = _SPATIAL.get(rank)
    if spatial is None:
        return None
    return "NC" + spatial if data_format == "channels_first" else "N" + spatial + "C"


def _walk(layers: Iterable[keras.layers.Layer]) -> Iterator[keras.layers.Layer]:
    """Every layer, descending into nested models (a backbone inside a Sequential)."""
    for layer in layers:
        yield layer
        inner = getattr(layer, "layers", None)
        if isinstance(layer, keras.Model) and inner:
            yield from _walk(inner)


def _is_chief(model: keras.Model) -> bool:
    """False on the workers of a multi-worker ``tf.distribute`` strategy that are not the chief."""
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow backend only
    return bool(getattr(getattr(strategy, "extended", None), "should_save_summary", True))


def _positive_int(value: Any, name: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        allowed = "a positive integer or None" if optional else "a positive integer"
        raise ValueError(f"{name}={value!r} must be {allowed}")
    return int(value)


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
        self.layers = self._check_layers(layers, "layers")
        self.activation_layers = self._check_layers(activation_layers, "activation_layers")
        if self.activation_layers is not None and sample_inputs is None:
            raise ValueError("activation_layers needs sample_inputs to run the model on")
        self.every_n_epochs = _positive_int(every_n_epochs, "every_n_epochs")
        self.every_n_batches = _positive_int(every_n_batches, "every_n_batches", optional=True)
        if self.every_n_batches:
            # Only then: a batch hook turns off Keras' async callback dispatch (JAX, torch).
            self.on_train_batch_end = self._on_train_batch_end
        self.dtype = check_float_dtype(dtype)
        self.max_filters = check_cap(max_filters, "max_filters")
        self.max_channels = check_cap(max_channels, "max_channels")
        if sample_inputs is not None and isinstance(sample_inputs, str | bytes):
            raise TypeError(f"sample_inputs={sample_inputs!r} must be model inputs (arrays)")
        self.sample_inputs = sample_inputs
        self.max_samples = _positive_int(max_samples, "max_samples")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self._policy = ErrorPolicy("FiltersCallback", raise_errors)
        self._budget = StepBudget(budget_mb, _KNOBS)
        if isinstance(patterns, str):
            patterns = [patterns]
        self.patterns = list(patterns or [])
        if not all(isinstance(name, str) for name in self.patterns):
            raise TypeError(f"patterns={patterns!r} must be layer names")
        self.patterns_every_n_epochs = _positive_int(
            patterns_every_n_epochs, "patterns_every_n_epochs"
        )
        if projection_inputs is not None and not self.patterns:
            raise ValueError("projection_inputs needs patterns=[layer names] to project")
        self.projection_inputs = projection_inputs
        self.patterns_max_filters = check_cap(patterns_max_filters, "patterns_max_filters")
        if patterns_options is not None and not isinstance(patterns_options, dict):
            raise TypeError(f"patterns_options={patterns_options!r} must be a dict")
        unknown = sorted(set(patterns_options or ()) - set(PATTERNS_OPTIONS))
        if unknown:
            raise ValueError(
                f"patterns_options keys {unknown} are not options of vis.log_patterns; "
                "expected some of: " + ", ".join(PATTERNS_OPTIONS)
            )
        self.patterns_options = dict(patterns_options or {})
        self._writer: Writer | None = None
        self._targets: list[keras.layers.Layer] | None = None
        self._probe: tuple[keras.Model | None, list[tuple[str, str]]] | None = None
        self._batch = 0
        self._epoch: int | None = None  # the last epoch that ended
        self._logged_step: int | None = None
        self._chief: bool | None = None

    @staticmethod
    def _check_layers(layers: Any, name: str) -> tuple | None:
        if layers is None:
            return None
        if isinstance(layers, str | type):
            layers = [layers]
        try:
            entries = tuple(layers)
        except TypeError:
            raise TypeError(f"{name}={layers!r} must be layer names and/or layer classes") from None
        bad = [e for e in entries if not isinstance(e, str | type)]
        if bad or not entries:
            raise ValueError(
                f"{name}={layers!r} must be a non-empty list of layer names (str) "
                "and/or layer classes, or None for every conv layer"
            )
        return entries

    # ---- which layers ----

    def _select(self) -> list[keras.layers.Layer]:
        every = list(_walk(self.model.layers))
        loggable = [layer for layer in every if kernel_parts(layer)]
        if self.layers is None:
            return [layer for layer in loggable if isinstance(layer, DEFAULT_LAYER_TYPES)]
        names = ", ".join(layer.name for layer in loggable) or "(none)"
        chosen: dict[int, keras.layers.Layer] = {}
        for entry in self.layers:
            if isinstance(entry, str):
                match = [layer for layer in every if layer.name == entry]
                if not match:
                    raise ValueError(
                        f"layers entry {entry!r} is not a layer of the model; "
                        f"layers with kernels: {names}"
                    )
                if not kernel_parts(match[0]):
                    raise ValueError(
                        f"layers entry {entry!r} is a {type(match[0]).__name__}, which has no "
                        f"kernel to log; layers with kernels: {names}"
                    )
            else:
                match = [layer for layer in loggable if isinstance(layer, entry)]
                if not match:
                    raise ValueError(
                        f"layers entry {entry.__name__} matches no layer with a kernel; "
                        f"layers with kernels: {names}"
                    )
            chosen.update((id(layer), layer) for layer in match)
        return [layer for layer in loggable if id(layer) in chosen]

    def _select_activations(self) -> list[keras.layers.Layer]:
        """The layers named or typed in `activation_layers` (outputs of rank 3-5)."""
        every = [la for la in _walk(self.model.layers) if not isinstance(la, _L.InputLayer)]

        def rank(layer: keras.layers.Layer) -> int | None:
            try:
                return len(layer.output.shape)
            except Exception:  # never called, or called more than once
                return None

        maps = [layer for layer in every if rank(layer) in _SPATIAL]
        names = ", ".join(layer.name for layer in maps) or "(none)"
        chosen: dict[int, keras.layers.Layer] = {}
        for entry in self.activation_layers:
            if isinstance(entry, str):
                match = [layer for layer in every if layer.name == entry]
                if not match or rank(match[0]) not in _SPATIAL:
                    what = f"has output rank {rank(match[0])}" if match else "is not a layer"
                    raise ValueError(
                        f"activation_layers entry {entry!r} {what}; layers with a 3-5-D "
                        f"output: {names}"
                    )
            else:
                match = [layer for layer in maps if isinstance(layer, entry)]
                if not match:
                    raise ValueError(
                        f"activation_layers entry {entry.__name__} matches no layer with a "
                        f"3-5-D output; those layers: {names}"
                    )
            chosen.update((id(layer), layer) for layer in match)
        return [layer for layer in every if id(layer) in chosen]

    # ---- Keras hooks ----

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._targets = self._select()
        if self.activation_layers is not None:
            self._select_activations()  # fail now, not at the first logged step
        if self.patterns:
            from tb_convfilters import vis

            vis.check_layers(self.model, self.patterns)  # fail now, not epochs later
        self._batch = 0
        self._epoch = self._logged_step = None
        self._chief = _is_chief(self.model)

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

    def _report(self, key: str, message: str, error: Exception) -> None:
        self._policy.report(key, message, error)

    def _write(self, tag: str, rec: Any, step: int, description: str) -> int:
        if self._writer is None:
            self._writer = Writer(files.join(self.log_dir, "train"))
        try:
            self._writer.write_record(tag, rec, step, description)
        except WriterError as e:  # an earlier record's failure: this one is queued
            self._report(tag, "writing an earlier record failed", e)
        return encoding.payload_nbytes(rec.header)

    def _flush(self) -> None:
        try:
            if self._writer is not None:
                self._writer.flush(wait=False)  # a URL logdir uploads the step
        except Exception as e:
            self._report("flush", "writing the event file", e)

    def _writes(self) -> bool:
        """True unless this is a worker of a multi-worker strategy other than the chief."""
        if self._chief is None:  # no on_train_begin, e.g. a custom loop
            self._chief = _is_chief(self.model)
        return self._chief

    def _log(self, step: int) -> None:
        if self._targets is None:  # fit() without on_train_begin, e.g. a custom loop
            self._targets = self._select()
        if not self._writes():
            return
        self._logged_step = step
        nbytes = 0
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
                    )
                    desc = (
                        f"{type(layer).__name__} `{layer.name}` {part.variable_name} "
                        f"({part.layout})"
                    )
                    nbytes += self._write(part.tag, rec, step, desc)
                except Exception as e:
                    self._report(part.tag, f"layer {layer.name!r} kernel {part.tag!r}", e)
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
        try:
            logged = vis.log_patterns(
                self._writer,
                self.model,
                self.patterns,
                step,
                max_filters=self.patterns_max_filters,
                projection_inputs=self.projection_inputs,
                # patterns are images in [0, 1]: only float dtypes can hold them
                dtype=self.dtype if self.dtype in ("float16", "bfloat16") else None,
                **self.patterns_options,
            )
        except Exception as e:
            self._report("patterns", f"patterns of {self.patterns}", e)
            return
        self._flush()
        nbytes = sum(a.nbytes for a in logged.values())
        self._budget.check(nbytes, f"FiltersCallback patterns at step {step}")

    def _build_probe(self) -> tuple[keras.Model | None, list[tuple[str, str]]]:
        """A model from the inputs to every logged layer's output, and (tag, layout) per output."""
        try:
            inputs = self.model.input  # nested like the data fit() takes
        except AttributeError:  # a Sequential built by fit() without an Input
            inputs = self.model.inputs[0] if len(self.model.inputs) == 1 else self.model.inputs
        heads = []
        layers = self._targets if self.activation_layers is None else self._select_activations()
        for layer in layers:
            try:
                out = layer.output
            except Exception as e:  # never called, or called more than once
                self._report(f"{layer.name}/activation", f"layer {layer.name!r} has no output", e)
                continue
            data_format = getattr(layer, "data_format", None) or keras.config.image_data_format()
            layout = activation_layout(len(out.shape), data_format)
            if layout is not None:  # Dense has no feature map to show
                heads.append((layer, out, layout))
        try:
            probe = keras.Model(inputs, [out for _, out, _ in heads]) if heads else None
        except Exception:  # find the layers that are not reachable from the model's inputs
            reachable = []
            for head in heads:
                try:
                    keras.Model(inputs, head[1])
                    reachable.append(head)
                except Exception as e:
                    self._report(
                        f"{head[0].name}/activation",
                        f"the output of layer {head[0].name!r} cannot be computed from the "
                        "model's inputs (activations need a functional or Sequential model)",
                        e,
                    )
            heads = reachable
            probe = keras.Model(inputs, [out for _, out, _ in heads]) if heads else None
        return probe, [(f"{layer.name}/activation", layout) for layer, _, layout in heads]

    def _log_activations(self, step: int) -> int:
        if self._probe is None:
            self._probe = self._build_probe()
        probe, heads = self._probe
        if probe is None:
            return 0
        maps: list[list[np.ndarray]] = [[] for _ in heads]
        firing = [Firing() for _ in heads]
        try:
            for batch in _batches(self.sample_inputs, self.batch_size):
                values = keras.tree.flatten(probe(batch, training=False))
                for i, ((_, layout), value) in enumerate(zip(heads, values, strict=True)):
                    value = np.asarray(keras.ops.convert_to_numpy(value))
                    firing[i].add(value, layout)
                    kept = sum(len(m) for m in maps[i])
                    if kept < self.max_samples:
                        maps[i].append(value[: self.max_samples - kept])
        except Exception as e:
            self._report("sample_inputs", "running the model on sample_inputs failed", e)
            return 0
        nbytes = 0
        # the inputs of the stored maps, for CKA across runs (compare.py)
        inputs = keras.tree.flatten(self.sample_inputs)
        digest = samples_digest(
            *(np.asarray(keras.ops.convert_to_numpy(x))[: self.max_samples] for x in inputs)
        )
        for (tag, layout), head_maps, counts in zip(heads, maps, firing, strict=True):
            try:
                rec = make_record(
                    np.concatenate(head_maps),
                    kind="activation",
                    layout=layout,
                    dtype=self.dtype,
                    max_filters=self.max_filters,
                    firing=counts,
                    extra={"samples_digest": digest},
                    complete=False,
                    convert=False,
                    owned=True,  # np.concatenate made it
                )
                description = (
                    f"output on sample_inputs ({layout}): maps of {len(rec.array)}; "
                    f"firing counted over all {counts.inputs}"
                )
                nbytes += self._write(tag, rec, step, description)
            except Exception as e:
                self._report(tag, f"activation {tag!r}", e)
        return nbytes


def _batches(inputs: Any, size: int) -> Iterator[Any]:
    """`inputs` (an array, or a nest of arrays as ``fit`` takes them) in slices of `size`."""
    leaves = keras.tree.flatten(inputs)
    n = len(leaves[0]) if leaves else 0
    if n == 0:
        raise ValueError("sample_inputs holds no inputs")
    for start in range(0, n, size):
        yield keras.tree.map_structure(lambda a, start=start: a[start : start + size], inputs)
