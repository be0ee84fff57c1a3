"""``tb-convfilters import PATH... --logdir LOGDIR [--run NAME] [--step N] [--include PAT]
[--exclude PAT] [--layout PAT=LAYOUT]``: exit status 0 when imported, 2 when nothing was
written (a bad path, an unknown format, a file refused or unreadable, bad arguments)."""

from __future__ import annotations

import argparse
import sys

from tb_convfilters import importing


def _step(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a non-negative integer")
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
    # --sample-inputs x.npy (activations, firing and dataset examples of a file that holds
    # the architecture) comes with the dataset examples; it will be added here.
    parser.epilog = (
        "Formats: " + importing.formats.KNOWN + ". Nothing from a file runs: PyTorch files "
        "load with weights_only=True, Keras files are read as data. Exit status: 0 imported, "
        "2 nothing written (the error says why)."
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
        )
    except ValueError as e:  # ImportFailure included
        print(f"tb-convfilters import: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(summary)
    return 0
