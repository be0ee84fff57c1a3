"""The tab at the speed of its data, in Chromium against a real ``tensorboard``.

* Runs still being indexed when the tab opened show up without a reload: the first
  `tags` answer says so (``X-Convfilters-Indexing: 1``) and the dashboard asks again
  within a second, not at its 30 s poll. The index's build is held back for run "b"
  until the test lets it go (a launcher patches the index).
* A tag switch draws the grid before the health table is filled (the dashboard's
  performance marks, ``frontend/static/marks.js``), also when the statistics of the
  tag are at hand already (a second visit), and the side views follow.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from browser_support import grid_selector
from support import PREFIX, http_get, plugin_frame, tensorboard

import tb_convfilters

# TensorBoard whose plugin index reads run "b" only once the file $CF_GATE exists.
GATED_INDEX = (
    "import os, sys, time\n"
    "from tb_convfilters._serving import index\n"
    "real = index.Index._refresh_run\n"
    "def gated(self, run, listing, dirty):\n"
    "    if any(os.sep + 'b' + os.sep in path for path, _ in listing):\n"
    "        while not os.path.exists(os.environ['CF_GATE']):\n"
    "            time.sleep(0.05)\n"
    "    return real(self, run, listing, dirty)\n"
    "index.Index._refresh_run = gated\n"
    "from tensorboard.main import run_main\n"
    "sys.exit(run_main())\n"
)
TAG = "conv/kernel"


def write_run(logdir, run: str, tags: dict[str, tuple], steps: int = 3) -> None:
    rng = np.random.default_rng(len(run))
    with tb_convfilters.Writer(logdir / run) as w:
        for step in range(steps):
            for tag, shape in tags.items():
                w.kernel(tag, rng.standard_normal(shape).astype(np.float32), step, layout="HWIO")


RUNS = "() => Array.from(document.querySelectorAll('#run-select option'), o => o.value).join()"


def run_options(frame) -> str:
    return frame.evaluate(RUNS)


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_runs_indexed_after_the_tab_opened_appear_without_a_reload(tmp_path, page, load_fast):
    logdir = tmp_path / "logs"
    for run in ("a", "b"):
        write_run(logdir, run, {TAG: (3, 3, 2, 4)})
    gate = tmp_path / "gate"
    command = [sys.executable, "-c", GATED_INDEX]
    env = {"CF_GATE": str(gate)}
    with tensorboard(logdir, load_fast=load_fast, command=command, env=env) as base:
        status, body, headers = http_get(base + PREFIX + "tags")
        assert status == 200 and headers.get("X-Convfilters-Indexing") == "1"
        assert set(json.loads(body)) == {"a"}, "run b is listed before it is indexed"
        page.goto(f"{base}/#convfilters")
        frame = plugin_frame(page)
        frame.wait_for_selector(grid_selector("a", TAG, 2), timeout=30000)
        assert run_options(frame) == "a"
        reloads = frame.evaluate("() => performance.getEntriesByType('navigation').length")
        gate.touch()
        # well before the 30 s poll: the dashboard asks `tags` again while the header is there
        frame.wait_for_function(f"() => ({RUNS})() === 'a,b'", timeout=8000)
        assert frame.evaluate("() => performance.getEntriesByType('navigation').length") == reloads
        frame.locator("#run-select").select_option("b")
        frame.wait_for_selector(grid_selector("b", TAG, 2), timeout=15000)
        status, _, headers = http_get(base + PREFIX + "tags")
        assert "X-Convfilters-Indexing" not in headers
        assert not [p for p in page.console_problems if p.startswith("pageerror")]


MARKS = """() => Array.from(performance.getEntriesByType('mark'))
    .filter(m => m.name.startsWith('convfilters:'))
    .map(m => ({name: m.name.slice(12), t: m.startTime, ...(m.detail || {})}))"""


def switch_marks(frame, tag: str, filters: int) -> list[dict]:
    """Switches the Tag select to `tag`: the marks of `tag` (and those of no tag) from its
    switch until its health table and sparklines are in."""
    t0 = frame.evaluate("() => performance.now()")
    frame.locator("#tag-select").select_option(tag)
    frame.wait_for_function(
        """([t0, tag]) => {
            // after the switch to `tag` (the tag shown before may still be finishing)
            const all = performance.getEntriesByType('mark');
            const switched = all.filter(m => m.startTime >= t0 && m.name === 'convfilters:switch'
                && m.detail && m.detail.tag === tag);
            if (!switched.length) return false;
            const since = switched[switched.length - 1].startTime;
            const done = (name) => all.some(m => m.startTime >= since
                && m.name === 'convfilters:' + name && m.detail && m.detail.tag === tag);
            const c = document.querySelector('canvas.main-grid');
            const q = (s) => document.querySelector('#health-table ' + s);
            return c && c.dataset.tag === tag && done('health') && done('sparklines')
                && q('tbody tr') && !q('.spark-slot');
        }""",
        arg=[t0, tag],
        timeout=30000,
    )
    assert frame.locator("#health-table tbody tr[data-filter]").count() == min(filters, 200)
    marks = [m for m in frame.evaluate(MARKS) if m["t"] >= t0]
    # the tag shown before may still be finishing its side views when the select changes
    switch = max(i for i, m in enumerate(marks) if m["name"] == "switch" and m.get("tag") == tag)
    return [m for m in marks[switch:] if m.get("tag", tag) == tag]


def test_a_tag_switch_draws_the_grid_before_the_health_table(tmp_path, page):
    logdir = tmp_path / "logs"
    wide, small = "b_wide/kernel", "a_small/kernel"
    write_run(logdir, "run", {small: (3, 3, 2, 4), wide: (3, 3, 4, 512)}, steps=4)
    with tensorboard(logdir) as base:
        page.goto(f"{base}/#convfilters")
        frame = plugin_frame(page)
        frame.wait_for_selector(grid_selector("run", small, 3), timeout=30000)
        frame.wait_for_selector("#health-table tbody tr[data-filter]")
        # the first visit, then a second one with the tensor and statistics at hand
        for visit in (1, 2):
            marks = switch_marks(frame, wide, 512)
            names = [m["name"] for m in marks]
            grid = names.index("grid")
            assert marks[grid]["tag"] == wide and marks[grid]["step"] == "3", marks
            assert "health" in names[grid:], (visit, names)
            assert "health" not in names[:grid], f"visit {visit}: health before grid: {names}"
            assert names.index("sparklines") > names.index("health"), names
            if visit == 1:
                switch_marks(frame, small, 4)
        assert not [p for p in page.console_problems if p.startswith("pageerror")]
