"""Patterns and projections in the Filters dashboard, in a real TensorBoard and Chromium.

Synthetic images are logged with ``Writer.patterns`` next to the same layer's
kernel; the test reads the drawn pixels back and compares them with the logged
images, checks the filter labels, the step slider, zoom and run comparison,
and that hovering an image shows its filter's kernel tile and statistics.
"""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
import pytest
from browser_support import (
    canvas_pixels,
    expected_diverging,
    geometry,
    grid_selector,
    lut_of,
    nearest_entry,
    pixel_at,
)
from support import http_get, load_npy, plugin_frame, tensorboard

import tb_convfilters

STEPS = (0, 5)
KERNEL = "conv2/kernel"
PATTERN = "conv2/pattern"
PROJECTION = "conv2/projection"
FILTERS = [0, 2, 5, 7, 11, 14]
PROJ_FILTERS = [2, 5, 2, 5]  # two inputs x filters 2 and 5, input-major
KEPT = [1, 4, 9]  # conv3/kernel logged with max_filters=KEPT
PARTIAL_FILTERS = [4, 9, 3]  # conv3/pattern: 3 was not among the kept kernel filters


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("patterns") / "logs"
    rng = np.random.default_rng(11)
    images = {}
    with tb_convfilters.Writer(logdir / "vis") as w:
        for step in STEPS:
            w.kernel(KERNEL, rng.normal(size=(3, 3, 3, 16)).astype(np.float32), step=step)
            images["vis", step] = rng.random((6, 12, 12, 3)).astype(np.float32)
            w.patterns(PATTERN, images["vis", step], step=step, filters=FILTERS)
            proj = rng.random((4, 10, 10, 1)).astype(np.float32)
            w.patterns(PROJECTION, proj, step=step, filters=PROJ_FILTERS, kind="projection")
        w.kernel("conv3/kernel", rng.normal(size=(3, 3, 2, 12)), step=5, max_filters=KEPT)
        w.patterns("conv3/pattern", rng.random((3, 8, 8, 1)), step=5, filters=PARTIAL_FILTERS)
    with tb_convfilters.Writer(logdir / "vis2") as w:
        for step in STEPS:
            images["vis2", step] = rng.random((6, 12, 12, 3)).astype(np.float32)
            w.patterns(PATTERN, images["vis2", step], step=step, filters=FILTERS)
    with tensorboard(logdir, load_fast="false") as base:
        yield base, images


def served(base: str, route: str, **params) -> bytes:
    status, body, _ = http_get(
        f"{base}/data/plugin/convfilters/{route}?" + urllib.parse.urlencode(params)
    )
    assert status == 200, body[:300]
    return body


def open_view(page, base: str, state: str):
    page.goto(f"{base}/#convfilters&cf=" + urllib.parse.quote(state, safe=""))
    return plugin_frame(page)


def drawn_images(frame, canvas, n: int, h: int, w: int) -> np.ndarray:
    """RGB drawn at the centre of every value of `n` image tiles: (n, h, w, 3)."""
    px = canvas_pixels(frame, canvas)
    g = geometry(canvas)
    out = np.zeros((n, h, w, 3), np.int32)
    for i, y, x in np.ndindex(n, h, w):
        r, c = divmod(i, g["cols"])
        out[i, y, x] = px[pixel_at(g, r, c, y, x)][:3]
    return out


def overlay_of(frame, run: str):
    return frame.wait_for_selector(f'.panel[data-run="{run}"] canvas.grid-overlay[data-labels]')


def no_problems(page):
    bad = [
        p
        for p in page.console_problems
        if "Content Security Policy" in p or "Refused to" in p or p.startswith("pageerror")
    ]
    assert not bad, bad


def test_patterns_draw_the_logged_images_labelled_by_filter(logged, page):
    base, images = logged
    frame = open_view(page, base, f"run=vis&tag={PATTERN}&step=0&cmp=vis2")
    canvas = frame.wait_for_selector(grid_selector("vis", PATTERN, 0), timeout=30000)
    other = frame.wait_for_selector(grid_selector("vis2", PATTERN, 0))
    for run, c in (("vis", canvas), ("vis2", other)):
        want = np.rint(images[run, 0].astype(np.float64) * 255)
        assert np.abs(drawn_images(frame, c, 6, 12, 12) - want).max() <= 1, run
        over = overlay_of(frame, run)
        assert json.loads(over.get_attribute("data-labels")) == [str(f) for f in FILTERS]
        # each tile's label box is drawn in its top-left corner, not elsewhere
        px = canvas_pixels(frame, over)
        g = geometry(c)
        for i in range(6):
            r, col = divmod(i, g["cols"])
            y, x = int(r * g["pitch_y"] + 2), int(col * g["pitch_x"] + 2)
            assert px[y, x, 3] > 0, (run, i)
            assert px[int(y + g["pitch_y"] / 2), int(x + g["pitch_x"] / 2), 3] == 0

    # the tooltip names the real filter and the exact logged values
    g = geometry(canvas)
    r, c = divmod(3, g["cols"])
    y, x = pixel_at(g, r, c, 4, 6)
    canvas.hover(position={"x": x, "y": y})
    tip = frame.locator('.panel[data-run="vis"] .grid-tooltip')
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert "filter 7 (image 4 of 6, pattern)" in text
    values = [float(v) for v in text.split("y 4, x 6: (")[1].split(")")[0].split(",")]
    np.testing.assert_allclose(values, images["vis", 0][3, 4, 6], rtol=1e-4)

    # the shared step slider moves both runs to the exact step
    frame.locator("#step-slider").fill("1")
    frame.wait_for_selector(grid_selector("vis", PATTERN, 5))
    frame.wait_for_selector(grid_selector("vis2", PATTERN, 5))
    for run, c in (("vis", canvas), ("vis2", other)):
        want = np.rint(images[run, 5].astype(np.float64) * 255)
        assert np.abs(drawn_images(frame, c, 6, 12, 12) - want).max() <= 1, run

    # zoom in: bigger tiles, same pixels, the compared run follows
    before = float(canvas.get_attribute("data-zoom"))
    canvas.focus()
    canvas.press("+")
    frame.wait_for_function(
        "z => Number(document.querySelectorAll('canvas.main-grid')[1].dataset.zoom) > z",
        arg=before,
    )
    assert float(canvas.get_attribute("data-zoom")) > before
    g = geometry(canvas)
    px = canvas_pixels(frame, canvas)
    checked = 0
    for i, y, x in np.ndindex(6, 12, 12):
        sy, sx = pixel_at(g, *divmod(i, g["cols"]), y, x)
        if 0 <= sy < px.shape[0] and 0 <= sx < px.shape[1]:  # the part still in view
            want = np.rint(images["vis", 5][i, y, x].astype(np.float64) * 255)
            assert np.abs(px[sy, sx, :3] - want).max() <= 1, (i, y, x)
            checked += 1
    assert checked > 100
    no_problems(page)


def test_projections_are_grey_and_labelled_per_input(logged, page):
    base, _ = logged
    frame = open_view(page, base, f"run=vis&tag={PROJECTION}")
    canvas = frame.wait_for_selector(grid_selector("vis", PROJECTION, 5), timeout=30000)
    proj = load_npy(served(base, "tensor", run="vis", tag=PROJECTION, step=5))
    grey = lut_of(frame, "grey")
    got = nearest_entry(drawn_images(frame, canvas, 4, 10, 10), grey)
    want = np.rint(proj[..., 0].astype(np.float64) * (len(grey) - 1))
    assert np.abs(got - want).max() <= 1
    labels = overlay_of(frame, "vis").get_attribute("data-labels")
    assert json.loads(labels) == [str(f) for f in PROJ_FILTERS]
    assert "no per-filter statistics" in frame.locator("#health").inner_text()
    no_problems(page)


def hover_card(frame, canvas, index: int):
    g = geometry(canvas)
    r, c = divmod(index, g["cols"])
    y, x = pixel_at(g, r, c, 2, 2)
    canvas.hover(position={"x": x, "y": y})
    canvas.hover(position={"x": x + 1, "y": y})
    return frame.wait_for_selector('.panel[data-run="vis"] .grid-tooltip .hover-card')


def test_hovering_a_pattern_shows_its_kernel_tile_and_stats(logged, page):
    base, _ = logged
    frame = open_view(page, base, f"run=vis&tag={PATTERN}")
    canvas = frame.wait_for_selector(grid_selector("vis", PATTERN, 5), timeout=30000)
    card = hover_card(frame, canvas, FILTERS.index(5))
    frame.wait_for_selector('.grid-tooltip .hover-card[data-filter="5"] canvas.hover-kernel')
    card = frame.locator('.grid-tooltip .hover-card[data-filter="5"]')
    assert card.get_attribute("data-tag") == KERNEL and card.get_attribute("data-step") == "5"
    assert "conv2/kernel, filter 5 at step 5" in card.inner_text()

    # the tile: filter 5's three input-channel slices on the per-layer diverging scale
    kernel = load_npy(served(base, "tensor", run="vis", tag=KERNEL, step=5))  # HWIO
    tile = frame.locator("canvas.hover-kernel").element_handle()
    assert tile.get_attribute("data-tag") == KERNEL and tile.get_attribute("data-step") == "5"
    g = geometry(tile)
    table = lut_of(frame, "diverging")
    limit = float(np.percentile(np.abs(kernel.astype(np.float64)), 99.5))
    want = expected_diverging(kernel[..., 5].transpose(2, 0, 1), table, limit=limit)  # (I, H, W)
    px = canvas_pixels(frame, tile)
    for ch, y, x in np.ndindex(3, 3, 3):
        r, c = divmod(ch, g["cols"])
        got = nearest_entry(px[pixel_at(g, r, c, y, x)], table)
        assert abs(int(got) - int(want[ch, y, x])) <= 1, (ch, y, x)

    # the stats are the stored statistics of kernel filter 5 at that step
    stats = json.loads(served(base, "stats", run="vis", tag=KERNEL))
    row = next(s for s in stats["steps"] if s["step"] == 5)["values"][5]
    shown = card.locator(".hover-stats span").evaluate_all(
        "xs => Object.fromEntries(xs.map(x => [x.dataset.stat, Number(x.dataset.value)]))"
    )
    for name in ("norm", "mean", "std", "zero_frac", "nonfinite"):
        assert shown[name] == pytest.approx(row[stats["names"].index(name)]), name
    assert shown["norm"] == pytest.approx(np.linalg.norm(kernel[..., 5].astype(np.float64)))

    # a kernel logged with max_filters: images map through the original indices
    frame = open_view(page, base, "run=vis&tag=conv3/pattern")
    canvas = frame.wait_for_selector(grid_selector("vis", "conv3/pattern", 5), timeout=30000)
    conv3 = load_npy(served(base, "tensor", run="vis", tag="conv3/kernel", step=5))
    hover_card(frame, canvas, PARTIAL_FILTERS.index(9))
    frame.wait_for_selector('.grid-tooltip .hover-card[data-filter="9"] .hover-stats')
    norm = frame.locator('.hover-card[data-filter="9"] span[data-stat="norm"]')
    assert float(norm.get_attribute("data-value")) == pytest.approx(
        np.linalg.norm(conv3[..., KEPT.index(9)].astype(np.float64)), rel=1e-5
    )
    hover_card(frame, canvas, PARTIAL_FILTERS.index(3))
    missing = frame.wait_for_selector(".grid-tooltip .hover-card:has-text('has no filter 3')")
    assert "not among the logged filters" in missing.inner_text()
    no_problems(page)
