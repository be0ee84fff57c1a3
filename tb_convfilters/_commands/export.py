"""``tb-convfilters export LOGDIR --out DIR``: every logged step as a ``.npy`` file, with an
``index.json`` listing them; dataset examples as ``.npz`` (their arrays, crops cut)."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import urllib.parse

import numpy as np
from tqdm import tqdm

from tb_convfilters import reader
from tb_convfilters._record import encoding, files
from tb_convfilters._record import examples as _examples

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
        "DIR/index.json describing every file (layout, stored dtype, kept filters). Dataset "
        "examples (<tag>/examples) become <step>.npz holding indices, values, positions, "
        "channels, crops (when the probe inputs are stored) and maps (unknown receptive field); "
        "the probe inputs (examples_inputs/<digest>) a .npy."
    )


def examples_npz(header: dict, entry: reader.Entry, inputs: dict[str, reader.Entry]) -> bytes:
    """An examples record as .npz bytes: its arrays, and the crops cut from its probe inputs
    (`inputs`: the run's inputs records by tag) when they are stored."""
    ex = _examples.decode(header, entry.array(), tag=entry.tag, step=entry.step)
    ref = header.get("inputs")
    if ref and ref.get("tag") in inputs:
        found = inputs[ref["tag"]]
        ex.inputs, ex.input_layout = found.array(), found.header()["layout"]
    arrays = {
        "indices": ex.indices,
        "values": ex.values,
        "positions": ex.positions,
        "channels": ex.channels,
    }
    if ex.inputs is not None:
        arrays["crops"] = ex.crops
    if ex.maps is not None:
        arrays["maps"] = ex.maps
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


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

    def export(entry: reader.Entry, inputs: dict[str, reader.Entry] | None) -> None:
        """Writes `entry`; with `inputs` None, examples wait in `pending`, their inputs
        being perhaps later in the run."""
        nonlocal failed
        try:
            header = entry.header()
            if header.get("kind") == "examples":
                if inputs is None:
                    pending.append(entry)
                    return
                data, suffix = examples_npz(header, entry, inputs), "npz"
            else:
                data, suffix = entry.npy_bytes(), "npy"
        except encoding.RecordError as e:
            print(f"tb-convfilters export: skipped: {e}", file=sys.stderr)
            failed += 1
            return
        rel = f"{safe_path(entry.run)}/{safe_path(entry.tag)}/{entry.step}.{suffix}"
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

    try:
        for name in args.run or runs:
            inputs: dict[str, reader.Entry] = {}  # the run's probe inputs, by tag
            pending: list[reader.Entry] = []  # its examples (small), written after the run
            for entry in reader._values(name, runs[name], None):
                seen.setdefault(entry.tag, set()).add(entry.step)
                if entry.tag.startswith(_examples.INPUTS_PREFIX):
                    inputs[entry.tag] = entry
                if (tags and entry.tag not in tags) or (steps and entry.step not in steps):
                    continue
                export(entry, None)
            for entry in pending:
                export(entry, inputs)
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
