"""Figure tab: the Filters tab in Chromium against a real ``tensorboard`` (both loaders).

A log of one run: a 3x3x512x512 float32 kernel (9.4 MB a step) among small kernels
(3x3x16x32 ... 3x3x64x64), a few steps each. Measured inside the dashboard's iframe
from its performance marks (``frontend/static/marks.js``):

* tab open: the iframe requested (its navigation start) -> the first grid drawn, the
  tab opened again (the dashboard's files kept by the browser: they are served under
  their version) and on a first visit (the browser's cache emptied before);
* tag switch to the 512x512 layer, nothing of it fetched before ("cold": the tab's
  tensors and statistics forgotten first) -> its grid drawn; the same once the
  neighbouring tags were prefetched ("warm");
* back to a small layer (cold) -> its grid drawn;
* a step change on the 512x512 layer -> the grid of that step;
* the floor, in the same page and rounds: fetch + decode + limits + draw of the same
  tensor onto a canvas of the size the dashboard drew, with the dashboard's modules.
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from benchmarks.common import Result, http_get, log, scratch_dir, tensorboard

PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tab_page", "probe.js")
RUN = "train"
BIG = "layer3/kernel"
SMALL = "layer2/kernel"
SHAPES = {
    "layer1/kernel": (3, 3, 3, 16),
    "layer2/kernel": (3, 3, 16, 32),
    BIG: (3, 3, 512, 512),
    "layer4/kernel": (3, 3, 32, 64),
    "layer5/kernel": (3, 3, 64, 64),
}


def write_log(logdir: str, steps: int) -> None:
    import tb_convfilters

    rng = np.random.default_rng(0)
    with tb_convfilters.Writer(os.path.join(logdir, RUN)) as w:
        for step in range(steps):
            for tag, shape in SHAPES.items():
                w.kernel(tag, (rng.standard_normal(shape) * 0.05).astype(np.float32), step=step)


def wait_indexed(base: str, steps: int) -> None:
    import json

    url = f"{base}/data/plugin/convfilters/steps?run={RUN}&tag=layer5%2Fkernel"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if len(json.loads(http_get(url))) == steps:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError("the log was not indexed")


def measure(base: str, rounds: int, steps: int) -> dict:
    from playwright.sync_api import sync_playwright
    from support import plugin_frame  # tests/support.py: on the path once tensorboard() ran

    from benchmarks.render import CHROMIUM, CHROMIUM_ARGS

    probe = open(PROBE).read()
    keys = ("open", "open_cold", "big", "big_warm", "small", "step", "floor")
    out: dict[str, list] = {k: [] for k in keys}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        cdp = page.context.new_cdp_session(page)
        for r in range(rounds + 1):  # round 0 warms up (JIT, page cache)
            # a first visit (the browser's cache emptied), then the tab opened again
            cdp.send("Network.clearBrowserCache")
            page.goto("about:blank")
            page.goto(f"{base}/#convfilters")
            cold = plugin_frame(page).evaluate(probe, {"op": "first"})
            page.goto("about:blank")
            page.goto(f"{base}/#convfilters")
            frame = plugin_frame(page)
            first = frame.evaluate(probe, {"op": "first"})
            frame.evaluate(probe, {"op": "forget"})
            big = frame.evaluate(
                probe, {"op": "switch", "tag": BIG, "health": True, "settle": 300}
            )
            floor = frame.evaluate(
                probe, {"op": "floor", "run": RUN, "tag": BIG, "step": steps - 1}
            )
            frame.evaluate(probe, {"op": "forget"})
            small = frame.evaluate(probe, {"op": "switch", "tag": SMALL, "settle": 300})
            warm = frame.evaluate(probe, {"op": "switch", "tag": BIG, "settle": 1500})
            before = steps - 2  # the step before the last: prefetched
            step = frame.evaluate(
                probe, {"op": "step", "tag": BIG, "index": before, "step": before, "settle": 300}
            )
            if r:
                out["open"].append(first)
                out["open_cold"].append(cold)
                out["big"].append(big)
                out["floor"].append(floor)
                out["small"].append(small)
                out["big_warm"].append(warm)
                out["step"].append(step)
        browser.close()
    if errors:
        raise RuntimeError(f"dashboard errors: {errors}")
    return out


def phases(marks: list[dict]) -> str:
    """The first time each phase was marked, in ms from the start: "steps 12, loaded 40, ..."."""
    seen: dict[str, float] = {}
    for m in marks:
        if m["name"] != "switch":
            seen.setdefault(m["name"], m["t"])
    return ", ".join(f"{name} {t:.0f}" for name, t in seen.items())


def figures(loader: str, m: dict) -> list[Result]:
    """The four rows of one loader from its rounds `m` (best of the rounds, medians beside)."""

    def best(key: str, field: str = "grid") -> float:
        return min(x[field] for x in m[key])

    def med(key: str) -> float:
        return statistics.median(x["grid"] for x in m[key])

    for key in ("open_cold", "open", "big", "small", "step", "big_warm"):
        log(f"{loader} {key}: " + " ".join(f"{x['grid']:.0f}" for x in m[key]) + " ms")
    log(f"{loader} floor: " + " ".join(f"{x['total']:.0f}" for x in m["floor"]) + " ms")
    log(f"{loader} switch to {BIG}: " + phases(min(m["big"], key=lambda x: x["grid"])["marks"]))
    log(f"{loader} switch to {SMALL}: " + phases(min(m["small"], key=lambda x: x["grid"])["marks"]))
    log(f"{loader} tab open: " + phases(min(m["open"], key=lambda x: x["grid"])["marks"]))
    log(f"{loader} first visit: " + phases(min(m["open_cold"], key=lambda x: x["grid"])["marks"]))
    f0 = min(m["floor"], key=lambda f: f["total"])
    floor = f0["total"]
    name = loader.lower()
    how = f", {loader} loader"
    big, small, step, first = best("big"), best("small"), best("step"), best("open")
    cold = best("open_cold")
    return [
        Result(
            f"tab.switch_512_vs_floor_{name}",
            big / floor,
            "<= 2",
            f"tag switch to 3x3x512x512, nothing of it fetched: {big:.0f} ms "
            f"(median {med('big'):.0f}) vs fetch+draw {floor:.0f} ms "
            f"(fetch {f0['fetch']:.0f}, draw {f0['draw']:.0f} at "
            f"{f0['width']}x{f0['height']} px); health table {best('big', 'health'):.0f} ms; "
            f"prefetched {best('big_warm'):.0f} ms{how}",
            {
                "switch_ms": round(big, 1),
                "floor_ms": round(floor, 1),
                "prefetched_ms": round(best("big_warm"), 1),
                "health_ms": round(best("big", "health"), 1),
            },
        ),
        Result(
            f"tab.switch_small_vs_50ms_{name}",
            small / 50,
            "<= 1",
            f"tag switch back to 3x3x16x32, nothing of it fetched: {small:.0f} ms "
            f"(median {med('small'):.0f}){how}",
            {"switch_ms": round(small, 1)},
        ),
        Result(
            f"tab.step_vs_floor_{name}",
            step / floor,
            None,
            f"step change on the 512x512 layer (the step before, prefetched): {step:.0f} ms "
            f"(median {med('step'):.0f}){how}",
            {"step_ms": round(step, 1)},
        ),
        Result(
            f"tab.open_vs_300ms_{name}",
            first / 300,
            "<= 1",
            f"iframe requested -> first grid: {first:.0f} ms (median {med('open'):.0f}); "
            f"a first visit (the browser's cache empty) {cold:.0f} ms "
            f"(median {med('open_cold'):.0f}){how}",
            {"open_ms": round(first, 1), "first_visit_ms": round(cold, 1)},
        ),
    ]


def run(quick: bool) -> list[Result]:
    rounds = 3 if quick else 7
    steps = 5 if quick else 10
    results = []
    with scratch_dir("tab") as root:
        logdir = os.path.join(root, "logs")
        log(f"writing {steps} steps of {len(SHAPES)} layers (one 3x3x512x512)")
        write_log(logdir, steps)
        for load_fast in ("false", "true"):
            with tensorboard(logdir, load_fast) as (base, _proc):
                wait_indexed(base, steps)
                m = measure(base, rounds, steps)
            results.extend(figures("Rust" if load_fast == "true" else "Python", m))
    return results
