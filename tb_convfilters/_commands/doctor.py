"""``tb-convfilters doctor LOGDIR [--run R] [--json] [--strict]``: exit status 0 when nothing
is found, 1 when something is (``suspected_dead`` only with ``--strict``), 2 on usage errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from tb_convfilters import doctor
from tb_convfilters.doctor.rules import PROBLEMS, UNSURE, Finding, Thresholds


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _problem_list(text: str) -> list[str]:
    problems = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in problems if p not in PROBLEMS]
    if bad or not problems:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of: " + ", ".join(PROBLEMS)
        )
    return problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logdir", metavar="LOGDIR", help="TensorBoard log directory")
    parser.add_argument("--run", help="diagnose only this run (name as TensorBoard shows it)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per finding: run, tag, filter, problem, first_step, detail",
    )
    parser.add_argument(
        "--problems",
        type=_problem_list,
        default=list(PROBLEMS),
        help="report (and gate on) only these problems, comma-separated (default: all of "
        + ",".join(PROBLEMS)
        + ")",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="count suspected_dead findings in the exit status too (by default they are "
        "listed but judged on too few inputs to fail a run)",
    )
    group = parser.add_argument_group("thresholds")
    for f in dataclasses.fields(Thresholds):
        group.add_argument(
            _flag(f.name),
            type=type(f.default),
            default=f.default,
            help=f.metadata["help"] + " (default: %(default)s)",
        )
    parser.epilog = (
        "Exit status: 0 nothing found, 1 something found (suspected_dead only with "
        "--strict), 2 usage error."
    )


def _format_detail(detail: dict) -> str:
    parts = []
    for key, value in detail.items():
        if isinstance(value, list):
            value = ",".join(map(str, value))
        elif isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def format_table(findings: list[Finding]) -> str:
    """Findings as an aligned text table."""
    head = ("run", "tag", "filter", "problem", "first_step", "detail")
    rows = [
        (
            f.run,
            f.tag,
            "layer" if f.filter is None else str(f.filter),
            f.problem,
            str(f.first_step),
            _format_detail(f.to_json()["detail"]),
        )
        for f in findings
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in [head, *rows]
    )


def run(args: argparse.Namespace) -> int:
    """The ``doctor`` subcommand; returns the exit status."""

    def fail(message: str) -> int:
        print(f"tb-convfilters doctor: error: {message}", file=sys.stderr)
        return 2

    try:
        thresholds = Thresholds(
            **{f.name: getattr(args, f.name) for f in dataclasses.fields(Thresholds)}
        )
        series = doctor.logdir_series(args.logdir, args.run)
    except (ValueError, FileNotFoundError) as e:
        return fail(str(e))
    if not series:
        where = f"run {args.run!r} of " if args.run is not None else ""
        return fail(f"no convfilters kernels or activations with stats in {where}{args.logdir!r}")
    found = doctor.diagnose_series(series, thresholds, args.problems)
    findings = [f for f in found if f.problem in args.problems]
    if args.json:
        for f in findings:
            print(json.dumps(f.to_json(), allow_nan=False))
    else:
        if findings:
            print(format_table(findings))
        n_runs = len({s.run for s in series})
        print(f"{len(findings)} finding(s); {len(series)} series in {n_runs} run(s) checked")
    gating = [f for f in findings if args.strict or f.problem not in UNSURE]
    return 1 if gating else 0
