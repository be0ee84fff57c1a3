"""Import trained models and folders of checkpoints as runs of conv kernels.

>>> from tb_convfilters.importing import import_models
>>> print(import_models(["checkpoints/"], "logs"))   # one run, one step per checkpoint

Each PATH is a checkpoint file (PyTorch ``.pt .pth .bin .ckpt``, ``.safetensors``, Keras
``.keras .h5 .weights.h5``, ``.onnx``), a TensorFlow checkpoint prefix (``ckpt-3``), a
SavedModel folder, or a folder of those. Nothing from a file runs (see the format modules),
except, with ``sample_inputs``, the model of a file that holds one, through its framework's
safe loader (``sample_inputs``): its activations and dataset examples are recorded too.
Steps follow ``importing.steps``. A run is written into a hidden folder beside it and moved
into place once every checkpoint of every run was read, checked and written: an import
that fails leaves no run behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tb_convfilters._record.examples import DEFAULT_EXAMPLES
from tb_convfilters._writing.policies import DEFAULT_MAX_MAPS
from tb_convfilters._writing.writer import Writer
from tb_convfilters.importing import formats, kernels, steps
from tb_convfilters.importing import sample_inputs as sampling
from tb_convfilters.importing.formats import Checkpoint
from tb_convfilters.importing.kernels import ImportFailure
from tb_convfilters.importing.sample_inputs import SampleInputs

__all__ = ["import_models", "ImportFailure", "ImportSummary", "ImportedRun", "ImportedCheckpoint"]


@dataclass
class ImportedCheckpoint:
    """One checkpoint written: where it came from, its format, step and the kernel tags
    written; with sample inputs, the activation tags and a note when it recorded less."""

    path: str
    format: str
    step: int
    tags: list[str]
    activations: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass
class ImportedRun:
    """One run written: its name, its folder, where its steps came from, its checkpoints."""

    run: str
    path: str
    steps_from: str  # steps.FROM_NAMES, FROM_MTIME, FROM_DEFAULT or STEP_ARGUMENT
    checkpoints: list[ImportedCheckpoint] = field(default_factory=list)


@dataclass
class ImportSummary:
    """What `import_models` wrote; ``str()`` is the command's report."""

    logdir: str
    runs: list[ImportedRun]

    def __str__(self) -> str:
        lines = []
        for r in self.runs:
            n_tags = len({t for c in r.checkpoints for t in c.tags})
            n_maps = len({t for c in r.checkpoints for t in c.activations})
            first, last = r.checkpoints[0].step, r.checkpoints[-1].step
            span = f"step {first}" if len(r.checkpoints) == 1 else f"steps {first}..{last}"
            maps = f", {n_maps} activation tag(s)" if n_maps else ""
            lines.append(
                f"run {r.run!r}: {len(r.checkpoints)} checkpoint(s), {span} "
                f"({r.steps_from}), {n_tags} kernel tag(s){maps} -> {r.path}"
            )
            for note in dict.fromkeys(c.note for c in r.checkpoints if c.note):
                lines.append(f"  note: {note}")
        return "\n".join(lines)


STEP_ARGUMENT = "step given"


def _patterns(value: str | Iterable[str] | None, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(p, str) and p for p in items):
        raise ValueError(f"{name}={value!r} must be a glob pattern or a list of them")
    return items


def _runs(paths: Sequence[Path], run: str | None) -> list[tuple[str, list[Checkpoint]]]:
    """(run name, checkpoints) per run: one per folder, one for the files named directly."""
    folders, files = [], []
    for path in paths:
        found, is_folder = formats.resolve(path)
        if is_folder:
            folders.append((path.resolve().name, found))
        else:
            files.extend(found)
    groups = list(folders)
    if files:
        if len(files) == 1:
            name = files[0].stem
        else:
            name = os.path.commonpath([str(c.path.resolve().parent) for c in files])
            name = Path(name).name or "imported"
        groups.append((name, files))
    if run is not None:
        if len(groups) > 1:
            raise ValueError(
                f"run={run!r} names one run, but the paths make {len(groups)}: "
                + ", ".join(name for name, _ in groups)
                + " (each folder is a run; import them one at a time to name each)"
            )
        groups = [(run, groups[0][1])]
    names = [name for name, _ in groups]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"two folders would make the same run {dupes[0]!r}; import them apart")
    return groups


def _check_run_name(logdir: Path, name: str) -> Path:
    parts = Path(name).parts
    if not name or Path(name).is_absolute() or ".." in parts or name.startswith("."):
        raise ValueError(f"run={name!r} must be a relative name inside the logdir")
    final = logdir / name
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise ValueError(
            f"run {name!r} already exists in {str(logdir)!r}; choose another run= (--run) "
            "or remove it"
        )
    return final


def import_models(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    logdir: str | os.PathLike,
    run: str | None = None,
    step: int | None = None,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    *,
    layouts: Mapping[str, str] | Iterable[str] | None = None,
    progress: bool = True,
    sample_inputs: Any = None,
    batch_size: int = 64,
    max_samples: int = DEFAULT_MAX_MAPS,
    examples: int = DEFAULT_EXAMPLES,
) -> ImportSummary:
    """Writes the conv kernels of `paths` into `logdir`: one run per folder of checkpoints
    (named after it), one run for the files given directly; one step per checkpoint.

    Args:
      run: the run's name, when the paths make one run.
      step: the step of a single checkpoint (else steps come from the names, see ``steps``).
      include / exclude: glob patterns on tags (``conv1/*``): keep the tags that match an
        include pattern (all if none) and no exclude pattern.
      layouts: ``{tag pattern: layout}`` (or ``"PATTERN=LAYOUT"`` strings) for kernels a
        file does not describe, e.g. ``{"up*/weight": "IOHW"}`` for a PyTorch
        ConvTranspose2d in a state_dict.
      progress: a progress bar on stderr for more than one checkpoint.
      sample_inputs: model inputs (an array, N first, or the path of a ``.npy`` file) for
        files that hold the architecture (``.keras``, ``.onnx``, TorchScript; a SavedModel
        gives kernels only): each checkpoint's model runs on them and its conv outputs are
        recorded as the callbacks record them (``<layer>/activation``: the maps of the
        first `max_samples`, firing over all, and the top `examples` inputs per channel),
        in batches of `batch_size`. Files of weights only are refused.

    Raises ImportFailure (a ValueError) naming the file and tensor that cannot be imported,
    and ValueError for bad arguments; in both cases nothing is written.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths is empty; give checkpoint files or folders")
    include_p, exclude_p = _patterns(include, "include"), _patterns(exclude, "exclude")
    sample = sampling.sample_options(sample_inputs, batch_size, max_samples, examples)
    overrides = kernels.parse_layout_overrides(layouts)
    logdir_path = Path(logdir)
    if "://" in str(logdir):
        raise ValueError(f"logdir={str(logdir)!r}: import writes to a local folder only")
    groups = _runs(paths, run)
    if sample is not None:  # refuse weights-only files before anything is written
        groups = [(name, [sampling.with_architecture(c) for c in cs]) for name, cs in groups]
    total = sum(len(c) for _, c in groups)
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step={step!r} must be a non-negative integer")
        if total != 1:
            raise ValueError(
                f"step={step} sets the step of a single checkpoint, but the paths hold {total}; "
                "their steps come from their names (or modification order)"
            )
    finals = [_check_run_name(logdir_path, name) for name, _ in groups]
    written: list[tuple[Path, Path]] = []  # (temporary folder, final folder)
    created: list[Path] = []
    summary = ImportSummary(str(logdir_path), [])
    bar = _progress(total, progress)
    try:
        for (name, checkpoints), final in zip(groups, finals, strict=True):
            missing = [d for d in [final.parent, *final.parent.parents] if not d.exists()]
            final.parent.mkdir(parents=True, exist_ok=True)
            created.extend(missing)  # deepest first
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.importing-", dir=final.parent))
            written.append((tmp, final))
            summary.runs.append(
                _write_run(
                    name,
                    final,
                    tmp,
                    checkpoints,
                    step,
                    (include_p, exclude_p, overrides),
                    sample,
                    bar,
                )
            )
    except BaseException:
        for tmp, _ in written:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # the run's parent folders made here (run="group/name")
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        bar.close()
    for tmp, final in written:
        if final.is_dir():  # an empty folder left where the run goes
            final.rmdir()
        os.replace(tmp, final)
    return summary


def _progress(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="checkpoint", disable=not show or total < 2, file=sys.stderr)


def _write_run(
    name: str,
    final: Path,
    tmp: Path,
    checkpoints: list[Checkpoint],
    step: int | None,
    selection: tuple[Sequence[str], Sequence[str], Mapping[str, str]],
    sample: SampleInputs | None,
    bar,
) -> ImportedRun:
    include, exclude, overrides = selection
    if step is not None:
        numbers, steps_from = [step], STEP_ARGUMENT
    else:
        numbers, steps_from = steps.assign_steps(
            [c.file for c in checkpoints], [c.stem for c in checkpoints]
        )
    out = ImportedRun(name, str(final), steps_from)
    writer = Writer(tmp, blocking=True)
    try:
        for number, c in sorted(zip(numbers, checkpoints, strict=True), key=lambda p: p[0]):
            bar.set_postfix_str(c.path.name, refresh=False)
            # Read and check the whole checkpoint before writing any of it.
            found = kernels.select(c.kernels(), str(c.path), include, exclude, overrides)
            for k in found:
                writer.kernel(
                    k.tag,
                    k.array,
                    number,
                    layout=k.layout,
                    description=f"imported from {c.path.name} ({c.format}): {k.name}",
                )
            imported = ImportedCheckpoint(str(c.path), c.format, number, [k.tag for k in found])
            del found  # memory of one checkpoint
            if sample is not None:
                recorded = sampling.record(
                    c, writer, number, sample, lambda t: kernels.selected(t, include, exclude)
                )
                imported.activations, imported.note = recorded.tags, recorded.note
            out.checkpoints.append(imported)
            bar.update()
    finally:
        writer.close()
    return out
