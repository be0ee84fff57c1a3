"""``tb-convfilters import PATH... --logdir LOGDIR [--run NAME] [--step N] [--include PAT]
[--exclude PAT] [--layout PAT=LAYOUT] [--sample-inputs X.npy [--batch-size N]
[--max-samples N] [--examples N]]``: exit status 0 when imported, 2 when nothing was
written (a bad path, an unknown format, a file refused or unreadable, bad arguments)."""

from __future__ import annotations

import argparse
import sys

from tb_convfilters import importing
from tb_convfilters._record.examples import DEFAULT_EXAMPLES
from tb_convfilters._writing.policies import DEFAULT_MAX_MAPS


def _step(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
    return value


def _positive(text: str) -> int:
    value = _step(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="a checkpoint or model file, a TensorFlow checkpoint prefix, a SavedModel folder, "
        "or a folder of checkpoints (one run, one step per checkpoint)",
    )
    parser.add_argument("--logdir", required=True, help="TensorBoard log directory to write into")
    parser.add_argument(
        "--run", help="the run's name (default: the folder's name, or the file's name)"
    )
    parser.add_argument(
        "--step",
        type=_step,
        help="the step of a single checkpoint (default: the number in its name, else 0)",
    )
    parser.add_argument(
        "--include",
        action="append",
        metavar="PAT",
        help="import only tags matching this glob pattern (e.g. 'conv*'); repeatable",
    )
    parser.add_argument(
        "--exclude", action="append", metavar="PAT", help="skip tags matching this; repeatable"
    )
    parser.add_argument(
        "--layout",
        action="append",
        metavar="PAT=LAYOUT",
        help="the layout of the tags matching PAT, for kernels a file does not describe "
        "(e.g. 'up*/weight=IOHW' for a PyTorch ConvTranspose2d); repeatable",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no report")
    parser.add_argument(
        "--sample-inputs",
        metavar="X.npy",
        help="model inputs (N first) to run each checkpoint's model on: activations, firing "
        "and dataset examples as the callbacks record them; for files that hold the "
        "architecture (.keras, .onnx with onnxruntime, TorchScript; SavedModel: kernels only)",
    )
    parser.add_argument(
        "--batch-size", type=_positive, default=64, help="inputs per forward pass (default 64)"
    )
    parser.add_argument(
        "--max-samples",
        type=_positive,
        default=DEFAULT_MAX_MAPS,
        help=f"inputs whose feature maps are stored (default {DEFAULT_MAX_MAPS})",
    )
    parser.add_argument(
        "--examples",
        type=_step,
        default=DEFAULT_EXAMPLES,
        help=f"dataset examples per channel (default {DEFAULT_EXAMPLES}; 0: none)",
    )
    parser.epilog = (
        "Formats: " + importing.formats.KNOWN + ". Nothing from a file runs: PyTorch files "
        "load with weights_only=True, Keras files are read as data; with --sample-inputs the "
        "model runs (Keras safe mode, onnxruntime, torch.jit.load: never Python code from the "
        "file). Exit status: 0 imported, 2 nothing written (the error says why)."
    )


def run(args: argparse.Namespace) -> int:
    """The ``import`` subcommand; returns the exit status."""
    try:
        summary = importing.import_models(
            args.paths,
            args.logdir,
            run=args.run,
            step=args.step,
            include=args.include,
            exclude=args.exclude,
            layouts=args.layout,
            progress=not args.quiet,
            sample_inputs=args.sample_inputs,
            batch_size=args.batch_size,
            max_samples=args.max_samples,
            examples=args.examples,
        )
    except ValueError as e:  # ImportFailure included
        print(f"tb-convfilters import: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(summary)
    return 0
