"""Figure 3, render: tensor bytes in memory -> a finished 512x512-filter grid.

In headless Chromium (Playwright, Debian's /usr/bin/chromium) a page imports
the dashboard's own pure modules (``frontend/static``: ``parseNpy``,
``canonicalize``, ``cellLimits`` with the default per-layer 99.5th percentile,
``renderGrid`` into the canvas's reused ``imageFor`` buffer, as the grid view
does) and draws a 3x3x512x512 kernel at zoom 1 (one device pixel per value; the
dashboard draws 1-px gaps from zoom 2 on), against a straightforward per-value
loop in the same page (max |v| -> symmetric scale -> 256-entry LUT -> RGBA ->
``putImageData``) on the same canvas size. Also: frames/s while every animation
frame draws the next of 4 steps (scrubbing), once from the tensors' bytes (limits
computed every frame) and once over the parsed tensors the dashboard's cache
keeps (limits remembered per tensor), and the per-value cost of ``renderGrid``
and ``cellLimits`` in node.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from benchmarks.common import Result, log, scratch_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


class _Handler(SimpleHTTPRequestHandler):
    """Serves the repository, and the scratch directory under ``/data/``."""

    data_dir = ""

    def translate_path(self, path: str) -> str:
        if path.startswith("/data/"):
            return os.path.join(self.data_dir, os.path.basename(path.split("?")[0]))
        return super().translate_path(path)

    def log_message(self, *args) -> None:
        pass


def serve(data_dir: str) -> tuple[ThreadingHTTPServer, str]:
    handler = type("Handler", (_Handler,), {"data_dir": data_dir})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=ROOT))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@contextlib.contextmanager
def bench_page(data_dir: str, page: str) -> Iterator[Any]:
    """A Chromium page on `page` (a path under the checkout, e.g.
    ``benchmarks/render_page/bench.html``) once its title is 'ready', with `data_dir`
    served at ``/data/``; raises the page's errors when the block ends."""
    from playwright.sync_api import sync_playwright

    server, base = serve(data_dir)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            tab = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto(f"{base}/{page}")
            tab.wait_for_function("document.title === 'ready'", timeout=30_000)
            yield tab
            browser.close()
            if errors:
                raise RuntimeError(f"benchmark page errors: {errors}")
    finally:
        server.shutdown()


def node_costs(rounds: int) -> dict | None:
    node = shutil.which("node")
    if node is None:
        return None
    script = os.path.join(ROOT, "benchmarks", "render_node.mjs")
    out = subprocess.run([node, script, str(rounds)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool) -> list[Result]:
    rounds = 5 if quick else 15
    steps = 4
    results = []
    with scratch_dir("render") as data:
        rng = np.random.default_rng(0)
        for s in range(steps):
            k = (rng.standard_normal((3, 3, 512, 512)) * 0.02).astype(np.float32)
            np.save(os.path.join(data, f"step{s}.npy"), k)
        with bench_page(data, "benchmarks/render_page/bench.html") as page:
            urls = [f"/data/step{s}.npy" for s in range(steps)]
            page.evaluate("urls => window.bench.load(urls)", urls)
            page.evaluate("n => window.bench.compare(n)", 2)  # warm-up (JIT)
            times = page.evaluate("n => window.bench.compare(n)", rounds)
            ms = 1500 if quick else 3000
            scrub = page.evaluate("ms => window.bench.scrub(ms, false)", ms)
            rescrub = page.evaluate("ms => window.bench.scrub(ms, true)", ms)

    ours = min(times["ours"], key=lambda t: t["total"])
    naive = min(t["total"] for t in times["naive"])
    parts = {
        k: statistics.median(t[k] for t in times["ours"])
        for k in ("parse", "limits", "render", "put")
    }
    mpx = ours["width"] * ours["height"] / 1e6
    results.append(
        Result(
            "render.grid_vs_naive_loop",
            ours["total"] / naive,
            "<= 0.6",
            f"{ours['width']}x{ours['height']} px ({mpx:.1f} Mpx): dashboard modules "
            f"{ours['total']:.1f} ms vs per-value loop {naive:.1f} ms (best of {rounds}); "
            "median split: " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()),
            {"best_of": rounds, "ours_ms": round(ours["total"], 2), "naive_ms": round(naive, 2)},
        )
    )
    results.append(
        Result(
            "render.scrub_fps",
            scrub["fps"] / 30,
            ">= 1",
            f"{scrub['fps']:.1f} frames/s of a 30 frames/s goal while each frame draws the next "
            f"step's 512x512 grid from its bytes ({scrub['frames']} frames); "
            f"{rescrub['fps']:.1f} frames/s over steps already drawn (limits remembered)",
            {"fps": round(scrub["fps"], 1), "seen_fps": round(rescrub["fps"], 1)},
        )
    )
    costs = node_costs(rounds)
    if costs is None:
        log("node not found: skipping the per-value cost in node")
    else:
        results.append(
            Result(
                "render.colormap_ns_per_value",
                None,
                None,
                f"node: renderGrid {costs['render_ns_per_value']:.1f} ns/value, "
                f"cellLimits (per-layer percentile) {costs['limits_ns_per_value']:.1f} ns/value "
                f"({costs['values']} values, best of {rounds})",
                {
                    "render_ns_per_value": round(costs["render_ns_per_value"], 2),
                    "limits_ns_per_value": round(costs["limits_ns_per_value"], 2),
                },
            )
        )
    return results
