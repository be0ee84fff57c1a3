"""Which files are checkpoints, of which format, and the reader of each format."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tb_convfilters.importing import keras_files, onnx_files, tf_checkpoints, torch_files
from tb_convfilters.importing.kernels import ImportFailure, Kernel

# File name ending -> format; the longest ending that matches wins.
SUFFIXES = {
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".bin": "pytorch",
    ".ckpt": "pytorch",
    ".safetensors": "safetensors",
    ".keras": "keras",
    ".weights.h5": "keras-h5",
    ".h5": "keras-h5",
    ".hdf5": "keras-h5",
    ".onnx": "onnx",
}
READERS: dict[str, Callable[[Path], Iterator[Kernel]]] = {
    "pytorch": torch_files.read_torch,
    "safetensors": torch_files.read_safetensors,
    "keras": keras_files.read_keras,
    "keras-h5": keras_files.read_h5,
    "onnx": onnx_files.read_onnx,
    "tf-checkpoint": tf_checkpoints.read_checkpoint,
    "savedmodel": tf_checkpoints.read_savedmodel,
    "torchscript": lambda path: _torchscript().read_torchscript(path),  # with sample inputs
}
KNOWN = (
    ", ".join(sorted(SUFFIXES))
    + ", TensorFlow checkpoint prefixes (ckpt-N with ckpt-N.index) and SavedModel folders"
)


def _torchscript():
    from tb_convfilters.importing import torchscript

    return torchscript


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: its path (a TF checkpoint's prefix), format and name for the step rule."""

    path: Path
    format: str
    stem: str

    @property
    def file(self) -> Path:
        """The file whose modification time dates the checkpoint."""
        return Path(str(self.path) + ".index") if self.format == "tf-checkpoint" else self.path

    def kernels(self) -> Iterator[Kernel]:
        return READERS[self.format](self.path)


def _suffix(name: str) -> str | None:
    lower = name.lower()
    matches = [s for s in SUFFIXES if lower.endswith(s) and len(lower) > len(s)]
    return max(matches, key=len) if matches else None


def checkpoint_at(path: Path) -> Checkpoint | None:
    """The checkpoint `path` is (a file, a SavedModel folder, a TF prefix), else None."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return Checkpoint(path, "savedmodel", path.name)
        return None
    if path.name.endswith(".index") and path.is_file():
        prefix = path.with_name(path.name[: -len(".index")])
        return Checkpoint(prefix, "tf-checkpoint", prefix.name)
    if not path.exists() and Path(str(path) + ".index").is_file():
        return Checkpoint(path, "tf-checkpoint", path.name)
    suffix = _suffix(path.name)
    if suffix is None or not path.is_file():
        return None
    return Checkpoint(path, SUFFIXES[suffix], path.name[: -len(suffix)])


def checkpoints_in(folder: Path) -> list[Checkpoint]:
    """The checkpoints directly inside `folder` (SavedModel subfolders too), by name."""
    found = [checkpoint_at(p) for p in sorted(folder.iterdir())]
    return [c for c in found if c is not None]


def resolve(path: Path) -> tuple[list[Checkpoint], bool]:
    """The checkpoints a PATH names, and whether it was a folder of them; raises ImportFailure."""
    single = checkpoint_at(path)
    if single is not None:
        return [single], False
    if path.is_dir():
        found = checkpoints_in(path)
        if not found:
            raise ImportFailure(f"{path}: a folder without checkpoints; known formats: {KNOWN}")
        return found, True
    if not path.exists():
        raise ImportFailure(f"{path}: no such file or folder")
    raise ImportFailure(f"{path}: unknown format; known formats: {KNOWN}")
