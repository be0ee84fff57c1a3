"""The dashboard on a series longer than the stats route returns by default (500 steps)."""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
from support import PREFIX, http_get, plugin_frame, tensorboard

import tb_convfilters
from tb_convfilters._serving import plugin

STEPS = plugin.DEFAULT_STATS_STEPS + 100


def test_health_table_shows_a_step_the_capped_stats_reply_left_out(tmp_path, page):
    k = np.random.default_rng(5).standard_normal((3, 3, 2, 4)).astype(np.float32)
    with tb_convfilters.Writer(tmp_path / "logs" / "run") as w:
        for step in range(STEPS):
            w.kernel("k", k * (step + 1), step, layout="HWIO")
    with tensorboard(tmp_path / "logs") as base:
        status, body, _ = http_get(base + PREFIX + "stats?run=run&tag=k")
        reply = json.loads(body)
        assert status == 200 and reply["capped"] and reply["total_steps"] == STEPS
        returned = {s["step"] for s in reply["steps"]}
        assert len(returned) == plugin.DEFAULT_STATS_STEPS and STEPS - 1 in returned
        left_out = next(s for s in range(STEPS) if s not in returned)

        state = urllib.parse.quote(f"run=run&tag=k&step={left_out}", safe="")
        page.goto(f"{base}/#convfilters&cf={state}")
        frame = plugin_frame(page)
        summary = frame.locator(".health-summary")
        frame.wait_for_function(
            "s => document.querySelector('.health-summary')?.textContent.includes(s)",
            arg=f"4 filters at step {left_out}",
            timeout=30000,
        )
        assert frame.locator("#health-table tbody tr[data-filter]").count() == 4
        assert "no statistics" not in summary.inner_text()
        assert not [p for p in page.console_problems if p.startswith("pageerror")]
