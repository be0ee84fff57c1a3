"""``tb-convfilters export LOGDIR --out DIR``: every logged step as a ``.npy`` file, with an
``index.json`` listing them."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse

from tqdm import tqdm

from tb_convfilters import reader
from tb_convfilters._record import encoding, files

# Header keys about the record format, left out of the export's index.json.
_NOT_INDEXED = {"version", "stats", "payload_crc32c", "stats_crc32c"}


def safe_path(name: str) -> str:
    """A relative path for a run or tag: ``/`` splits folders, anything else unusual
    is percent-encoded (``.`` and ``..`` too), so names never leave the output folder."""
    parts = []
    for part in name.split("/"):
        quoted = urllib.parse.quote(part, safe="-_.=+,@")
        if quoted.strip(".") == "":  # "", ".", "..": not usable as a folder name
            quoted = "%2E" * len(part) or "%2F"
        parts.append(quoted)
    return "/".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logdir", metavar="LOGDIR", help="TensorBoard log directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the .npy files")
    parser.add_argument("--run", action="append", metavar="R", help="only this run (repeatable)")
    parser.add_argument("--tag", action="append", metavar="T", help="only this tag (repeatable)")
    parser.add_argument(
        "--step", action="append", type=int, metavar="S", help="only this step (repeatable)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary line")
    parser.epilog = (
        "Writes DIR/<run>/<tag>/<step>.npy (bfloat16 widened to float32, exact) and "
        "DIR/index.json describing every file (layout, stored dtype, kept filters)."
    )


def run(args: argparse.Namespace) -> int:

    if files.is_url(args.out):
        print(f"tb-convfilters export: --out {args.out!r} must be a local folder", file=sys.stderr)
        return 1
    try:
        runs = reader._runs(args.logdir)
    except reader.NotFoundError as e:
        print(f"tb-convfilters export: {e}", file=sys.stderr)
        return 1
    missing = [r for r in args.run or () if r not in runs]
    if missing:
        print(
            f"tb-convfilters export: runs {missing} not found; runs: {', '.join(runs) or '(none)'}",
            file=sys.stderr,
        )
        return 1
    tags, steps = set(args.tag or ()), set(args.step or ())
    seen: dict[str, set[int]] = {}  # tag -> steps, of the selected runs, for error messages
    index: dict[str, dict] = {}
    failed = 0
    bar = tqdm(unit="B", unit_scale=True, desc="export", disable=True if args.quiet else None)
    try:
        for name in args.run or runs:
            for entry in reader._values(name, runs[name], None):
                seen.setdefault(entry.tag, set()).add(entry.step)
                if (tags and entry.tag not in tags) or (steps and entry.step not in steps):
                    continue
                rel = f"{safe_path(entry.run)}/{safe_path(entry.tag)}/{entry.step}.npy"
                try:
                    header, data = entry.header(), entry.npy_bytes()
                except encoding.RecordError as e:
                    print(f"tb-convfilters export: skipped: {e}", file=sys.stderr)
                    failed += 1
                    continue
                path = os.path.join(args.out, *rel.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
                index[rel] = {
                    "file": rel,
                    "run": entry.run,
                    "tag": entry.tag,
                    "step": entry.step,
                    "wall_time": entry.wall_time,
                    **{k: v for k, v in header.items() if k not in _NOT_INDEXED},
                }
                bar.update(len(data))
                bar.set_postfix(arrays=len(index), refresh=False)
    finally:
        bar.close()
    if index:
        with open(os.path.join(args.out, "index.json"), "w", encoding="utf-8") as f:
            json.dump({"logdir": os.fspath(args.logdir), "arrays": [*index.values()]}, f, indent=1)
        if not args.quiet:
            print(f"wrote {len(index)} arrays to {args.out}", file=sys.stderr)
    all_steps = set().union(*seen.values())
    unmatched = [f"tag {t!r}" for t in sorted(tags - seen.keys())]
    unmatched += [f"step {s}" for s in sorted(steps - all_steps)]
    if failed:
        print(f"tb-convfilters export: {failed} unreadable steps skipped", file=sys.stderr)
    if unmatched or not index:
        have = "; ".join(f"{tag} ({reader._steps_text(s)})" for tag, s in sorted(seen.items()))
        print(
            f"tb-convfilters export: {', '.join(unmatched) or 'nothing'} not found; "
            f"the selected runs have: {have or 'no convfilters data'}",
            file=sys.stderr,
        )
        return 1
    return 1 if failed else 0
