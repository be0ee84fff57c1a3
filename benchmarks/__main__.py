"""Runs the benchmark figures and prints a table plus one JSON line per figure.

    python -m benchmarks                  # every figure (a few minutes on 2 cores)
    python -m benchmarks write serve      # a subset
    python -m benchmarks --quick          # fewer rounds, smaller data

Figures: write, serve, render, training, memory, examples, dynamics, dynview, index, tab
(see each module's docstring).
Exit status 1 when a figure missed its target (or failed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import Result, scratch_root  # noqa: E402

FIGURES = (
    "write",
    "serve",
    "render",
    "training",
    "memory",
    "examples",
    "dynamics",
    "dynview",
    "index",
    "tab",
)


def table(results: list[Result]) -> str:
    rows = [("figure", "ratio", "target", "ok", "measured")]
    for r in results:
        ok = {True: "yes", False: "NO", None: "-"}[r.ok]
        ratio = "-" if r.ratio is None else f"{r.ratio:.3g}"
        rows.append((r.name, ratio, r.target or "-", ok, r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[c].ljust(widths[c]) for c in range(4)] + [row[4]]
        lines.append("| " + " | ".join(cells) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|---|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split(".")[0])
    parser.add_argument(
        "figures", nargs="*", metavar="figure", help=f"any of {', '.join(FIGURES)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller data")
    args = parser.parse_args(argv)
    unknown = [f for f in args.figures if f not in FIGURES]
    if unknown:
        parser.error(
            f"unknown figure(s) {', '.join(unknown)}; expected any of {', '.join(FIGURES)}"
        )
    figures = args.figures or list(FIGURES)

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"tb-convfilters benchmarks: {', '.join(figures)}{' (quick)' if args.quick else ''}; "
        f"{platform.processor() or platform.machine()}, {cpus} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; files in {scratch_root() or 'the temp dir'}",
        flush=True,
    )
    results: list[Result] = []
    for name in figures:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            results.extend(module.run(args.quick))
        except Exception as e:  # report the figure as failed and go on with the others
            traceback.print_exc()
            results.append(Result(f"{name}.failed", None, None, f"{type(e).__name__}: {e}"))
        print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)

    print()
    print(table(results))
    print()
    for r in results:
        print(r.json())
    failed = [r for r in results if r.ok is False or r.name.endswith(".failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
