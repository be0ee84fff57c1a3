"""``sample_inputs=`` / ``--sample-inputs x.npy``: activations, firing and dataset examples of
the files that hold a model's architecture, recorded as the callbacks record them.

Which files, and how each runs (nothing from a file runs as Python):

- ``.keras``: ``keras.saving.load_model(safe_mode=True, compile=False)`` (a ``Lambda`` is
  refused, a custom class must be registered), then ``FiltersCallback``'s own probe
  (``keras.activations.ActivationProbe``): the same tags, records and examples.
- ``.onnx``: ``onnx_models``, through ``onnxruntime``.
- TorchScript ``.pt``: ``torchscript`` (``torch.jit.load``: TorchScript IR, no pickle).
- SavedModel folders: kernels only, with a note; ``tf.saved_model.load`` exposes the
  signatures' outputs, not the conv layers'.

Files that hold weights only (state_dicts, ``.safetensors``, ``.h5``, TensorFlow
checkpoints) are refused with ``sample_inputs``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tb_convfilters._record import encoding
from tb_convfilters._record.examples import DEFAULT_EXAMPLES, check_examples
from tb_convfilters._writing.policies import DEFAULT_MAX_MAPS
from tb_convfilters._writing.writer import Writer
from tb_convfilters.importing.formats import Checkpoint
from tb_convfilters.importing.kernels import ImportFailure

# format -> what runs it; "savedmodel" records kernels only (see `_savedmodel`)
WITH_ARCHITECTURE = ("keras", "onnx", "torchscript", "savedmodel")
_WITH_ARCHITECTURE_TEXT = (
    ".keras files, .onnx models (with onnxruntime), TorchScript archives (torch.jit.save) "
    "and SavedModel folders (kernels only)"
)
SAVEDMODEL_NOTE = (
    "no activations: a SavedModel loaded with tf.saved_model.load exposes its signatures' "
    "outputs, not its conv layers'; import the model's .keras file (model.save('x.keras')) "
    "for activations"
)


@dataclass(frozen=True)
class SampleInputs:
    """The probe inputs and the callbacks' knobs for them."""

    inputs: np.ndarray
    batch_size: int = 64
    max_samples: int = DEFAULT_MAX_MAPS
    examples: int = DEFAULT_EXAMPLES


@dataclass
class Recorded:
    """What one checkpoint's model recorded: the activation tags, and a note when it
    recorded less than asked (why, and what to do)."""

    tags: list[str] = field(default_factory=list)
    note: str | None = None


def _positive(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


def sample_options(
    sample_inputs: Any, batch_size: Any, max_samples: Any, examples: Any
) -> SampleInputs | None:
    """The checked options (None without `sample_inputs`); `sample_inputs` is an array or
    the path of a ``.npy`` file."""
    if sample_inputs is None:
        changed = {
            name: value
            for name, value, default in (
                ("batch_size", batch_size, 64),
                ("max_samples", max_samples, DEFAULT_MAX_MAPS),
                ("examples", examples, DEFAULT_EXAMPLES),
            )
            if value != default
        }
        if changed:
            raise ValueError(
                f"{', '.join(changed)} set the activations recorded on sample_inputs "
                "(--sample-inputs); give them too"
            )
        return None
    if isinstance(sample_inputs, (str, os.PathLike)):
        inputs = _load_npy(Path(sample_inputs))
    else:
        inputs = np.asarray(sample_inputs)
    if inputs.ndim < 2 or len(inputs) == 0 or inputs.dtype.kind not in "biuf":
        raise ValueError(
            f"sample_inputs of shape {inputs.shape} and dtype {inputs.dtype} must be a "
            "non-empty numeric batch (N first, one model input per row)"
        )
    return SampleInputs(
        inputs,
        _positive(batch_size, "batch_size"),
        _positive(max_samples, "max_samples"),
        check_examples(examples),
    )


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"sample_inputs {str(path)!r}: no such file (expected a .npy array)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:  # an object array: pickled
        raise ValueError(f"sample_inputs {str(path)!r}: not loaded ({e})") from None
    except Exception as e:
        raise ValueError(f"sample_inputs {str(path)!r}: not a readable .npy array ({e})") from None


def with_architecture(c: Checkpoint) -> Checkpoint:
    """`c` as the format that runs it; raises ImportFailure for a file of weights only."""
    if c.format == "pytorch":
        from tb_convfilters.importing import torch_files

        if torch_files.is_torchscript(c.path):
            return Checkpoint(c.path, "torchscript", c.stem)
    if c.format in WITH_ARCHITECTURE:
        return c
    raise ImportFailure(
        f"{c.path}: holds weights only ({c.format}), not the model that computes activations; "
        f"sample_inputs (--sample-inputs) needs a file that holds the architecture: "
        f"{_WITH_ARCHITECTURE_TEXT}. Import it without sample inputs for its kernels."
    )


def record(
    c: Checkpoint, writer: Writer, step: int, sample: SampleInputs, keep: Callable[[str], bool]
) -> Recorded:
    """Runs checkpoint `c`'s model on the sample inputs and writes its activations and
    examples at `step` (the tags for which `keep` is true); raises ImportFailure."""
    if c.format == "keras":
        return _keras(c.path, writer, step, sample, keep)
    if c.format == "onnx":
        from tb_convfilters.importing import onnx_models

        return onnx_models.record(c.path, writer, step, sample, keep)
    if c.format == "torchscript":
        from tb_convfilters.importing import torchscript

        return torchscript.record(c.path, writer, step, sample, keep)
    if c.format == "savedmodel":
        return Recorded([], SAVEDMODEL_NOTE)
    raise ImportFailure(f"{c.path}: {c.format} holds no architecture")  # with_architecture


# --- Keras


def _keras_refusal(path: Path, e: Exception) -> str:
    import re

    text = str(e)
    if "safe_mode" in text:
        return (
            f"{path}: refused by Keras safe mode: a layer (a Lambda) holds Python code that "
            "loading would run. The kernels import without sample inputs; for activations, "
            "build the model in your code, load the weights (model.load_weights) and log them "
            "with FiltersCallback(sample_inputs=...), or save the model without Lambda layers"
        )
    missing = re.search(r"Could not locate (?:class|function) '([^']+)'", text)
    if missing:
        name = missing.group(1)
        return (
            f"{path}: Keras cannot rebuild the model: {name!r} is a custom class that is not "
            "registered (safe mode builds Keras' classes and registered ones only). From "
            f"Python: import the module that defines {name} (decorated with "
            "@keras.saving.register_keras_serializable()) and call import_models(..., "
            f"sample_inputs=...), or do it inside keras.saving.custom_object_scope({{{name!r}: "
            f"{name}}}). The kernels import without sample inputs"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"{path}: Keras cannot load the model (safe mode): {first}"


class _Report:
    """The probe's error policy here: while it is built, a layer left out is warned (as
    FiltersCallback does); once it runs, any failure stops the import."""

    def __init__(self, path: Path):
        self.path = path
        self.building = True
        self.notes: list[str] = []

    def __call__(self, key: str, what: str, error: Exception) -> None:
        if self.building:
            self.notes.append(f"{key}: {what}")
            warnings.warn(f"{self.path}: {what}: {error}", UserWarning, stacklevel=2)
            return
        raise ImportFailure(f"{self.path}: {what}: {error}") from error


def _keras(
    path: Path, writer: Writer, step: int, sample: SampleInputs, keep: Callable[[str], bool]
) -> Recorded:
    import keras

    from tb_convfilters.keras.activations import ActivationProbe
    from tb_convfilters.keras.layers import select_layers

    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:
        raise ImportFailure(_keras_refusal(path, e)) from None
    layers = [layer for layer in select_layers(model, None) if keep(f"{layer.name}/activation")]
    if not layers:
        return Recorded([], "no conv layer selected for activations")
    report = _Report(path)
    probe = ActivationProbe(
        model,
        layers,
        sample.inputs,
        batch_size=sample.batch_size,
        max_samples=sample.max_samples,
        dtype=None,
        max_filters=None,
        report=report,
        examples=sample.examples,
    )
    report.building = False

    def write(tag: str, rec: Any, at: int, description: str) -> int:
        writer.write_record(tag, rec, at, description)
        return encoding.payload_nbytes(rec.header)

    probe.log(step, write, writer.write_examples)
    note = "left out: " + "; ".join(report.notes) if report.notes else None
    return Recorded([tag for tag, _ in probe.heads], note)
