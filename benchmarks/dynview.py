"""Figure dynview: the Dynamics view draws a 512-filter x 100-interval raster.

In headless Chromium (Playwright, Debian's /usr/bin/chromium) a page imports the
dashboard's own ``DynamicsView`` (``frontend/static/dynview.js``) and draws a
``dynamics`` answer of 101 logged steps of 512 filters (update ratios spread over
1e-6..1 in base64 float32, as the route sends them) with 20 doctor findings marked:
decoding, colouring on the log scale, the markers and ``putImageData``, timed from the
call until two animation frames later (the canvas painted). Target: <= 100 ms, the
ratio printed is that time / 100 ms (best of N).
"""

from __future__ import annotations

import base64
import json

import numpy as np

from benchmarks.common import Result, log, scratch_dir
from benchmarks.render import bench_page

FILTERS, INTERVALS = 512, 100
BUDGET_MS = 100.0


def answer(rng: np.random.Generator) -> tuple[dict, list[dict]]:
    ratios = (10.0 ** rng.uniform(-6, 0, (INTERVALS, FILTERS))).astype("<f4")
    steps = list(range(0, 100 * (INTERVALS + 1), 100))
    blob = {
        "dtype": "float32",
        "shape": [INTERVALS, FILTERS],
        "data": base64.b64encode(ratios.tobytes()).decode(),
    }
    ans = {
        "run": "run",
        "tag": "conv/kernel",
        "layout": "HWIO",
        "shape": [3, 3, 64, FILTERS],
        "steps": steps,
        "updates": steps,
        "intervals": [100] * INTERVALS,
        "filters": list(range(FILTERS)),
        "update_ratio": blob,
        "grad_norm": None,
    }
    findings = [
        {
            "run": "run",
            "tag": "conv/kernel",
            "filter": int(f),
            "problem": "stalled",
            "first_step": steps[int(i)],
            "detail": {},
        }
        for f, i in zip(
            rng.choice(FILTERS, 20, replace=False), rng.integers(0, INTERVALS, 20), strict=True
        )
    ]
    return ans, findings


def run(quick: bool) -> list[Result]:
    rounds = 5 if quick else 15
    ans, findings = answer(np.random.default_rng(0))
    with (
        scratch_dir("dynview") as data,
        bench_page(data, "benchmarks/dynview_page/bench.html") as page,
    ):
        page.evaluate("([a, f]) => window.bench.draw(a, f, 3)", [ans, findings])  # JIT
        got = page.evaluate("([a, f, n]) => window.bench.draw(a, f, n)", [ans, findings, rounds])
    log(json.dumps(got))
    return [
        Result(
            "dynview.raster_512x100",
            got["frame"] / BUDGET_MS,
            "<= 1",
            f"{FILTERS} filters x {INTERVALS} intervals, {got['marks']} findings marked "
            f"({got['width']}x{got['height']} px): {got['frame']:.1f} ms to the painted frame "
            f"({got['call']:.1f} ms in DynamicsView.showRatios) of a {BUDGET_MS:.0f} ms budget "
            f"(best of {rounds})",
            {"frame_ms": round(got["frame"], 2), "call_ms": round(got["call"], 2)},
        )
    ]
