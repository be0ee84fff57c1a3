"""``tb-convfilters compare LOGDIR --run B --base A [--step S] [--json]`` (see ``compare``).

Per kernel both runs logged: the mean cosine of matched filters, the mean cosine
before matching and, where both logged the layer's activations on the same
inputs, linear CKA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

from tb_convfilters import reader
from tb_convfilters._record import encoding
from tb_convfilters.compare.matching import align, entries_at, finite
from tb_convfilters.compare.representations import (
    Activation,
    activation_tag,
    check_samples,
    pair_cka,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logdir", metavar="LOGDIR", help="TensorBoard log directory")
    parser.add_argument("--run", required=True, metavar="B", help="the run to align")
    parser.add_argument("--base", required=True, metavar="A", help="the run to align it to")
    parser.add_argument("--step", type=int, metavar="S", help="this step (default: each last)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per layer: tag, mean_cosine, unaligned_mean_cosine, cka, chained",
    )
    parser.epilog = (
        "Per kernel: the mean cosine of matched filters, the mean cosine before matching "
        "(filter i with filter i) and, where both runs logged the layer's activations on "
        "the same inputs, linear CKA. Exit status 0, or 2 on errors."
    )


def compare_rows(logdir: str | os.PathLike, run: str, base: str, step: int | None) -> list[dict]:
    """One row per kernel: what ``tb-convfilters compare`` prints."""
    matches = align(logdir, run, base, step=step)
    acts_b = entries_at(reader.entries(logdir, run=base), step)
    acts_a = entries_at(reader.entries(logdir, run=run), step)
    rows = []
    for tag, m in matches.items():
        value, cka_note = None, None
        act = activation_tag(tag, acts_b)
        if act is not None and act in acts_a:
            x, y = Activation.of(acts_b[act]), Activation.of(acts_a[act])
            try:
                cka_note = check_samples([(base, x), (run, y)])
                value = finite(pair_cka(x, y))
            except ValueError as e:
                cka_note = str(e)
        rows.append(
            {
                "tag": tag,
                "mean_cosine": finite(m.mean_cosine),
                "unaligned_mean_cosine": finite(m.unaligned_mean_cosine),
                "cka": value,
                "chained": m.chained,
                "note": m.note,
                "cka_note": cka_note,
            }
        )
    return rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    """The ``compare`` subcommand; returns the exit status."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rows = compare_rows(args.logdir, args.run, args.base, args.step)
    except (ValueError, LookupError, encoding.RecordError) as e:
        print(f"tb-convfilters compare: error: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(
            f"tb-convfilters compare: error: runs {args.base!r} and {args.run!r} have no "
            "kernels in common" + (f" at step {args.step}" if args.step is not None else ""),
            file=sys.stderr,
        )
        return 2
    if args.json:
        for row in rows:
            print(json.dumps(row, allow_nan=False))
        return 0
    width = max(len(r["tag"]) for r in rows)
    print(f"{'tag':<{width}}  matched  unmatched    CKA  chained")
    notes = []
    for r in rows:
        print(
            f"{r['tag']:<{width}}  {_fmt(r['mean_cosine']):>7}  "
            f"{_fmt(r['unaligned_mean_cosine']):>9}  {_fmt(r['cka']):>5}  "
            f"{'yes' if r['chained'] else 'no'}"
        )
        if r["cka_note"]:
            notes.append(f"{r['tag']}: CKA: {r['cka_note']}")
    print(
        f"run {args.run!r} aligned to {args.base!r}: mean cosine of matched filters vs. "
        "filter i with filter i; CKA of the layers' activations (1 = same up to rotation)"
    )
    for line in notes:
        print(line)
    return 0
