"""The filter doctor in the Filters dashboard, in a real TensorBoard and Debian's Chromium.

A run is logged with planted problems (a zero filter, a copied one, a negated
one, one growing x12 per step, a layer that never changes, a channel that
never fires); the test checks that the findings list shows exactly what the
``findings`` route says, that badges are drawn on those tiles (their pixels on
the overlay canvas), that clicking a finding opens that tag, step and filter,
and that "only flagged" in the health table keeps only flagged rows.
"""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
import pytest
from browser_support import canvas_pixels, geometry, grid_selector
from support import http_get, plugin_frame, tensorboard

import tb_convfilters
from tb_convfilters import doctor

STEPS = (0, 10, 20, 30)
KERNEL = "conv1/kernel"
FROZEN = "conv2/kernel"
ACTIVATION = "conv1/activation"
# filter -> problem planted in run "sick", conv1/kernel (HWIO 3x3, 4 channels, 8 filters)
PLANTED = {3: "dead", 5: "duplicate", 6: "mirrored", 7: "exploding"}
DEAD_CHANNEL = 2
OTHER_DEAD = 4  # run "other": one zero filter
UNSURE_TAG, UNSURE = "conv2/activation", 1  # run "other": a silent channel on 4 inputs only


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("findings") / "logs"
    rng = np.random.default_rng(3)
    base1 = rng.normal(size=(3, 3, 4, 8)).astype(np.float32)
    base2 = rng.normal(size=(3, 3, 8, 6)).astype(np.float32)
    with tb_convfilters.Writer(logdir / "sick") as w:
        for i, step in enumerate(STEPS):
            k = base1 + 0.05 * rng.normal(size=base1.shape).astype(np.float32)
            k[..., 3] = 0
            k[..., 5] = k[..., 1]
            k[..., 6] = -k[..., 2]
            k[..., 7] = base1[..., 7] * np.float32(12.0**i)
            w.kernel(KERNEL, k, step=step, layout="HWIO")
            w.kernel(FROZEN, base2, step=step, layout="HWIO")  # identical at every step
            # firing judged on enough inputs; 4 maps stored
            act = rng.random((doctor.DEAD_MIN_INPUTS, 6, 6, 8)).astype(np.float32) - 0.2
            act[..., DEAD_CHANNEL] = -1
            w.activation(ACTIVATION, act, step=step, layout="NHWC", max_samples=4)
    with tb_convfilters.Writer(logdir / "other") as w:
        for step in STEPS:
            k = rng.normal(size=(3, 3, 4, 8)).astype(np.float32)
            k[..., OTHER_DEAD] = 0
            w.kernel(KERNEL, k, step=step, layout="HWIO")
            act = rng.random((4, 5, 5, 3)).astype(np.float32)
            act[..., UNSURE] = -1
            w.activation(UNSURE_TAG, act, step=step, layout="NHWC")
    with tensorboard(logdir, load_fast="false") as base:
        yield base


def route_findings(base: str, run: str) -> list[dict]:
    status, body, _ = http_get(
        f"{base}/data/plugin/convfilters/findings?" + urllib.parse.urlencode({"run": run})
    )
    assert status == 200, body[:300]
    return json.loads(body)["findings"]


def open_view(page, base: str, state: str):
    page.goto(f"{base}/#convfilters&cf=" + urllib.parse.quote(state, safe=""))
    return plugin_frame(page)


def listed(frame, run: str) -> list[tuple]:
    return [
        tuple(x)
        for x in frame.evaluate(
            """run => Array.from(
                document.querySelectorAll(`.findings-run[data-run="${run}"] li.finding`),
                li => [li.dataset.tag, li.dataset.filter, li.dataset.problem,
                       Number(li.dataset.firstStep)])""",
            run,
        )
    ]


def problem_colours(frame) -> dict[str, tuple[int, int, int]]:
    styles = frame.evaluate(
        """async () => {
            const m = await import(new URL("static/findings.js", document.baseURI).href);
            return m.PROBLEM_STYLE;
        }"""
    )
    return {p: tuple(s["color"]) for p, s in styles.items()}


def overlay(frame, run: str):
    return frame.wait_for_selector(
        f'.panel[data-run="{run}"] canvas.grid-overlay[data-badges]:not([data-badges="[]"])'
    )


def health_flags(frame) -> dict[int, list[str]]:
    """The flags of every health table row that has some."""
    flags = frame.evaluate(
        """() => Object.fromEntries(
            Array.from(document.querySelectorAll('#health-table tbody tr[data-filter]'), tr => [
                tr.dataset.filter,
                Array.from(tr.querySelectorAll('.flag'), s => s.dataset.problem)]))"""
    )
    return {int(f): p for f, p in flags.items() if p}


def no_problems(page):
    bad = [
        p
        for p in page.console_problems
        if "Content Security Policy" in p or "Refused to" in p or p.startswith("pageerror")
    ]
    assert not bad, bad


def test_findings_list_and_badges_match_the_route(served, page):
    frame = open_view(page, served, f"run=sick&tag={KERNEL}&cmp=other")
    canvas = frame.wait_for_selector(grid_selector("sick", KERNEL, 30), timeout=30000)
    frame.wait_for_selector('.findings-run[data-run="other"] li.finding')
    frame.wait_for_selector('.findings-run[data-run="sick"] li.finding')

    # the list is the route's findings, per run, grouped by tag
    sick = route_findings(served, "sick")
    want = [
        (
            f["tag"],
            "layer" if f["filter"] is None else str(f["filter"]),
            f["problem"],
            f["first_step"],
        )
        for f in sick
    ]
    assert listed(frame, "sick") == want
    planted = {(KERNEL, str(f), p) for f, p in PLANTED.items()} | {
        (ACTIVATION, str(DEAD_CHANNEL), "dead"),
        (FROZEN, "layer", "frozen"),
    }
    assert {x[:3] for x in want} == planted
    tags = frame.evaluate(
        """() => Array.from(
            document.querySelectorAll('.findings-run[data-run="sick"] .findings-tag'),
            d => d.dataset.tag)"""
    )
    assert tags == [ACTIVATION, KERNEL, FROZEN]
    assert listed(frame, "other") == [
        (KERNEL, str(OTHER_DEAD), "dead", 0),
        (UNSURE_TAG, str(UNSURE), "suspected_dead", 0),
    ]
    # judged on 4 inputs: listed as suspected, drawn unlike "dead", with a note saying why
    unsure = frame.locator(f'li.finding[data-tag="{UNSURE_TAG}"]')
    assert "never > 0 on the 4 inputs judged (too few to be sure)" in unsure.inner_text()
    sure = frame.locator(f'li.finding[data-tag="{ACTIVATION}"]')
    assert f"on the {doctor.DEAD_MIN_INPUTS} inputs judged, 4 steps" in sure.inner_text()
    look = "c => [getComputedStyle(c).backgroundColor, getComputedStyle(c).fontStyle]"
    assert sure.locator(".chip").evaluate(look) == ["rgb(66, 66, 66)", "normal"]
    assert unsure.locator(".chip").evaluate(look) == ["rgb(189, 189, 189)", "italic"]
    note = frame.locator('.findings-run[data-run="other"] .findings-unsure').inner_text()
    assert note.startswith("1 suspected dead: judged on too few inputs")
    assert not frame.locator('.findings-run[data-run="sick"] .findings-unsure').count()

    # badges: one per flagged filter, on its grid row, in its problem's colour
    colours = problem_colours(frame)
    for run, flagged in (("sick", PLANTED), ("other", {OTHER_DEAD: "dead"})):
        over = overlay(frame, run)
        badges = json.loads(over.get_attribute("data-badges"))
        assert [(b["filter"], b["problems"], b["row"]) for b in badges] == [
            (str(f), [p], f) for f, p in sorted(flagged.items())
        ]
        px = canvas_pixels(frame, over)
        g = geometry(frame.query_selector(grid_selector(run, KERNEL, 30)))
        for row in range(8):
            y = int(row * g["pitch_y"] + g["pitch_y"] / 2 - g["pan_y"])
            edge = px[y, 0]  # the left edge of the row's frame
            if row in flagged:
                assert tuple(edge[:3]) == colours[flagged[row]] and edge[3] == 255, (run, row)
            else:
                assert edge[3] == 0, (run, row, edge)
    legend = frame.locator('.panel[data-run="sick"] .panel-legend .legend-item')
    assert sorted(legend.evaluate_all("xs => xs.map(x => x.dataset.problem)")) == sorted(
        PLANTED.values()
    )
    assert canvas.get_attribute("data-step") == "30"

    # health table: the doctor's flags; "only flagged" keeps just those rows
    rows = frame.locator("#health-table tbody tr[data-filter]")
    frame.wait_for_selector("#health-table td.flags span.flag")
    assert rows.count() == 8
    flags = health_flags(frame)
    assert flags == {f: [p] for f, p in PLANTED.items()}
    frame.locator("#health-flagged-only").check()
    frame.wait_for_function(
        "() => document.querySelectorAll('#health-table tbody tr[data-filter]').length === 4"
    )
    shown = rows.evaluate_all("trs => trs.map(tr => Number(tr.dataset.filter))")
    assert sorted(shown) == sorted(PLANTED)
    frame.locator("#health-flagged-only").uncheck()
    frame.wait_for_function(
        "() => document.querySelectorAll('#health-table tbody tr[data-filter]').length === 8"
    )
    no_problems(page)


def test_clicking_a_finding_opens_its_tag_step_and_filter(served, page):
    frame = open_view(page, served, f"run=sick&tag={FROZEN}")
    frame.wait_for_selector(grid_selector("sick", FROZEN, 30), timeout=30000)
    entry = frame.locator(f'li.finding[data-tag="{KERNEL}"][data-problem="exploding"]')
    entry.click()
    canvas = frame.wait_for_selector(grid_selector("sick", KERNEL, 10))  # first seen at step 10
    assert frame.locator("#tag-select").input_value() == KERNEL
    frame.wait_for_function("() => location.hash.includes('sel=7')")
    assert frame.locator("#detail .detail-title").inner_text() == "filter 7"
    assert "exploding since step 10" in frame.locator("#detail-findings").inner_text()
    note = frame.locator("#findings-note").inner_text()
    assert "filter 7" in note and "step 10, where it was first seen" in note
    # the selection outline sits on row 7
    highlight = frame.locator(".grid-wrap:has(canvas.main-grid) .grid-highlight").first
    highlight.wait_for(state="visible")
    g = geometry(canvas)
    top = highlight.bounding_box()["y"] - canvas.bounding_box()["y"]
    assert abs(top - (7 * g["pitch_y"] - g["pan_y"] - 2)) <= 1.5
    # at step 10 the exploding flag is current; step 0 shows it faded (found later)
    frame.wait_for_selector('#health-table tr[data-filter="7"] .flag-exploding:not(.later)')
    frame.locator("#step-slider").fill("0")
    frame.wait_for_selector(grid_selector("sick", KERNEL, 0))
    frame.wait_for_selector('#health-table tr[data-filter="7"] .flag-exploding.later')

    # a dead activation channel: its tag, step 0, channel 2 outlined and opened
    frame.locator(f'li.finding[data-tag="{ACTIVATION}"]').click()
    act = frame.wait_for_selector(grid_selector("sick", ACTIVATION, 0))
    frame.wait_for_function(
        "() => document.querySelector('#detail .detail-title').textContent === 'channel 2'"
    )
    badges = json.loads(overlay(frame, "sick").get_attribute("data-badges"))
    g = geometry(act)
    assert badges == [
        {
            "filter": str(DEAD_CHANNEL),
            "problems": ["dead"],
            "row": DEAD_CHANNEL // g["cols"],
            "col": DEAD_CHANNEL % g["cols"],
            "cols": 1,
        }
    ]

    # a frozen layer: its tag at the finding's step, with a banner on the grid
    frame.locator("li.finding[data-problem=frozen]").click()
    frame.wait_for_selector(grid_selector("sick", FROZEN, 10))
    banner = frame.locator('.panel[data-run="sick"] .panel-banner')
    banner.wait_for(state="visible")
    assert banner.get_attribute("data-problem") == "frozen"
    assert "identical at steps 0 and 30" in banner.inner_text()
    assert "whole layer is frozen" in frame.locator("#findings-note").inner_text()
    assert frame.locator("li.finding.active").get_attribute("data-problem") == "frozen"
    no_problems(page)


def test_without_the_doctor_the_health_table_says_its_flags_are_per_step(served, page):
    page.route(
        "**/findings?*",
        lambda route: route.fulfill(
            status=500, content_type="application/json", body='{"error": "doctor down"}'
        ),
    )
    frame = open_view(page, served, f"run=sick&tag={KERNEL}&step=20")
    frame.wait_for_selector(grid_selector("sick", KERNEL, 20), timeout=30000)
    error = frame.locator('.findings-run[data-run="sick"] .findings-error')
    error.wait_for()
    assert "doctor down" in error.inner_text()
    frame.wait_for_function(
        """() => {
            const t = document.querySelector('#health-flag-note').textContent;
            return t.includes('did not answer') && !t.includes('pending');
        }"""
    )
    note = frame.locator("#health-flag-note").inner_text()
    assert "did not answer (doctor down)" in note and "from step 20 alone" in note
    flags = health_flags(frame)
    # this step's checks: no "mirrored" and no history, unlike the doctor
    assert flags == {
        1: ["duplicate"],
        3: ["dead"],
        5: ["duplicate"],
        7: ["exploding"],
    }
    assert frame.locator("canvas.grid-overlay").get_attribute("data-badges") == "[]"
    no_problems(page)
