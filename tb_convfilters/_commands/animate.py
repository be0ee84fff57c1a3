"""``tb-convfilters animate LOGDIR --run R --tag T --out evolution.gif|.mp4|.webm``: a layer
over its logged steps as an animation (``tb_convfilters.plot.animation``)."""

from __future__ import annotations

import argparse
import sys

from tb_convfilters import reader
from tb_convfilters._dashboard import colormaps
from tb_convfilters._record import encoding

NORMS = ("steps", "runs", "layer", "filter", "tile")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logdir", metavar="LOGDIR", help="TensorBoard log directory")
    parser.add_argument(
        "--run",
        action="append",
        required=True,
        metavar="R",
        help="the run; repeat to draw runs side by side",
    )
    parser.add_argument("--tag", required=True, metavar="T", help="the kernel or activation tag")
    parser.add_argument("--out", required=True, metavar="FILE", help="evolution.gif, .mp4 or .webm")
    parser.add_argument(
        "--align",
        action="store_true",
        help="draw the other runs' filters in the first run's matched order",
    )
    parser.add_argument("--fps", type=float, default=4, help="frames per second (default 4)")
    parser.add_argument(
        "--steps",
        metavar="SPEC",
        help="only these logged steps: a comma list of steps and A:B ranges (inclusive)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--scale", type=int, metavar="PX", help="pixels per value")
    size.add_argument(
        "--size",
        type=int,
        metavar="W",
        help="fit the panels in W pixels (default 960; the scale is at least 2, at most 16)",
    )
    parser.add_argument(
        "--norm",
        choices=NORMS,
        help="colour limits: fixed over the steps (default; over every run's with several "
        "runs) or each frame on its own (layer, filter, tile)",
    )
    parser.add_argument("--colormap", default="diverging", choices=colormaps.colormaps())
    parser.add_argument("--percentile", type=float, help="limits at this percentile (99.5)")
    parser.add_argument("--sample", type=int, default=0, help="the activation's sample")
    parser.add_argument("--dark", action="store_true", help="the dark theme's colours")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    parser.epilog = (
        "One frame per logged step (of any of the runs), drawn as the Filters tab draws it, "
        "with the step above it. GIF keeps the exact colours; MP4 and WebM need "
        'pip install "tb-convfilters[video]". Exit status 0, or 2 on errors.'
    )


def parse_steps(spec: str, logged: list[int]) -> list[int]:
    """The logged steps `spec` picks: ``10,20`` (each must be logged), ``100:500`` (the
    logged steps in that range), ``:50``, ``200:``."""
    picked: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if ":" in part:
                a, b = part.split(":")
                lo = int(a) if a.strip() else -(2**63)
                hi = int(b) if b.strip() else 2**63
                found = [s for s in logged if lo <= s <= hi]
                if not found:
                    raise LookupError(f"no logged step in {part!r}")
                picked.update(found)
            else:
                picked.add(int(part))
        except ValueError:
            raise ValueError(f"--steps {spec!r}: {part!r} is not a step or an A:B range") from None
    return sorted(picked)


def run(args: argparse.Namespace) -> int:
    """The ``animate`` subcommand; returns the exit status."""
    name = "tb-convfilters animate"
    try:
        from tb_convfilters.plot import animation, video_files
    except ImportError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    try:
        video_files.check_output(args.out, args.fps)
        steps = None
        if args.steps is not None:
            logged = sorted(
                {s for r in args.run for s in reader.list(args.logdir).get(r, {}).get(args.tag, [])}
            )
            steps = parse_steps(args.steps, logged)
        options = {"max_width": args.size} if args.size is not None else {}
        shown = animation.save(
            args.logdir,
            args.run,
            args.tag,
            args.out,
            fps=args.fps,
            progress=not args.quiet,
            steps=steps,
            norm=args.norm,
            colormap=args.colormap,
            percentile=args.percentile,
            scale=args.scale,
            align=args.align,
            sample=args.sample,
            dark=args.dark,
            **options,
        )
    except (ValueError, LookupError, ImportError, OSError, encoding.RecordError) as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        h, w = shown.size
        print(f"wrote {len(shown)} frames of {w}x{h} px to {args.out}", file=sys.stderr)
    return 0
