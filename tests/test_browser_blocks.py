"""Kernels with few input channels draw as a near-square grid of labelled filter blocks.

Real event files written by the Writer, one real TensorBoard, Debian's Chromium. The
pixels are read back from the canvases and compared with the served tensors,
coloured here with numpy; block positions come from the canvas's recorded geometry,
checked against the layout it promises (4 x 4 blocks for 16 one-channel filters).
"""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
import pytest
from browser_support import (
    block_origin,
    canvas_pixels,
    expected_diverging,
    geometry,
    grid_selector,
    lut_of,
    pixel_at,
    tile_pixels,
)
from PIL import Image
from support import http_get, load_npy, plugin_frame, tensorboard

import tb_convfilters

STEPS = (0, 10, 20)
CONV1 = "conv1/kernel"  # the demo's conv1: 16 filters x 1 input channel of 5x5
RGB = "rgb/kernel"  # 9 filters x 3 input channels of 3x3
DEPTHWISE = "dw/depthwise_kernel"  # HWIM: 8 input channels x 1
DEAD = 6  # conv1 filter of run alpha that is all zeros
KEPT = [1, 4, 5, 7, 9, 11, 12, 14, 15]  # conv1 filters logged in run kept


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("blocks") / "logs"
    rng = np.random.default_rng(14)
    with tb_convfilters.Writer(logdir / "alpha") as w:
        for step in STEPS:
            k = rng.normal(size=(5, 5, 1, 16)).astype(np.float32)
            k[..., DEAD] = 0
            # distinct norms, so sorting by norm is a real permutation
            k *= np.linspace(0.5, 2.0, 16, dtype=np.float32)[::-1][np.argsort(rng.random(16))]
            w.kernel(CONV1, k, step=step, layout="HWIO")
            rgb = rng.normal(size=(3, 3, 3, 9)).astype(np.float32)
            w.kernel(RGB, rgb, step=step, layout="HWIO")
            dw = rng.normal(size=(3, 3, 8, 1)).astype(np.float32)
            w.kernel(DEPTHWISE, dw, step=step, layout="HWIM")
    with tb_convfilters.Writer(logdir / "beta") as w:
        for step in STEPS:
            w.kernel(CONV1, rng.normal(size=(5, 5, 1, 16)).astype(np.float32), step=step)
    with tb_convfilters.Writer(logdir / "kept") as w:
        k = rng.normal(size=(5, 5, 1, 16)).astype(np.float32)
        w.kernel(CONV1, k, step=0, layout="HWIO", max_filters=KEPT)
    with tensorboard(logdir, load_fast="false") as base:
        yield base


def served_tensor(base: str, run: str, tag: str, step: int) -> np.ndarray:
    query = urllib.parse.urlencode({"run": run, "tag": tag, "step": step})
    status, body, _ = http_get(f"{base}/data/plugin/convfilters/tensor?{query}")
    assert status == 200, body[:300]
    return load_npy(body)


def open_view(page, base: str, state: str):
    page.goto(f"{base}/#convfilters&cf=" + urllib.parse.quote(state, safe=""))
    return plugin_frame(page)


def overlay(frame, run: str):
    return frame.locator(f'.panel[data-run="{run}"] canvas.grid-overlay').element_handle()


def tiles_of(kernel: np.ndarray) -> np.ndarray:
    """(filters, channels, H, W) of an HWIO kernel."""
    return np.transpose(kernel, (3, 2, 0, 1)).astype(np.float64)


def no_errors(page):
    bad = [p for p in page.console_problems if p.startswith("pageerror") or "Refused" in p]
    assert not bad, bad


def test_one_channel_filters_draw_as_a_labelled_block_grid_using_the_width(served, page, tmp_path):
    frame = open_view(page, served, f"run=alpha&tag={CONV1}")
    canvas = frame.wait_for_selector(grid_selector("alpha", CONV1, 20), timeout=30000)
    g = geometry(canvas)
    assert (g["rows"], g["cols"]) == (16, 1)
    assert 3 <= g["block_cols"] <= 6, "a grid of blocks, not a strip"
    assert g["band"] > 0, "a band for the labels above each block"
    # the grid opens at a zoom that uses the available width (the panel's)
    box = canvas.bounding_box()
    room = frame.evaluate(
        "() => document.querySelector('canvas.main-grid').parentElement.parentElement.clientWidth"
    )
    assert 0.8 * room <= box["width"] <= room, (box, room)
    assert box["height"] < 1.3 * box["width"], "near-square, not a tall column"
    # ... and shows all of it: the last block is on the canvas
    tile = 5 * g["zoom"]
    assert block_origin(g, 15)[1] + tile <= box["height"]

    # every value at its place: filter f in block f (line f // 4, column f % 4)
    tiles = tiles_of(served_tensor(served, "alpha", CONV1, 20))
    table = lut_of(frame, "diverging")
    got = tile_pixels(frame, canvas, tiles.shape)
    assert np.abs(got - expected_diverging(tiles, table)).max() <= 1
    assert (got[DEAD] == (len(table) - 1) // 2).all(), "the zero filter is neutral"
    # between blocks and in the label bands: the page background
    px = canvas_pixels(frame, canvas)
    x0, y0 = block_origin(g, 1)
    white = (255, 255, 255)
    assert tuple(px[int(y0 + tile / 2), int(x0 - 2), :3]) == white, "space left of block 1"
    assert tuple(px[int(y0 - 3), int(x0 + tile / 2), :3]) == white, "label band"

    # labels: each block's filter index, written in the band above it
    over = overlay(frame, "alpha")
    assert json.loads(over.get_attribute("data-block-labels")) == [str(f) for f in range(16)]
    ink = canvas_pixels(frame, over)
    for slot in (0, 5, 15):
        x, y = block_origin(g, slot)
        band = ink[int(y - g["band"]) : int(y), int(x) : int(x + tile)]
        assert (band[..., 3] > 0).sum() > 10, f"no label over block {slot}"
        assert (ink[int(y) + 2 : int(y + tile) - 2, int(x) + 2 : int(x + tile) - 2, 3] == 0).all()

    # hover and click a tile of block 9: its filter, value, detail view, outline
    step20 = served_tensor(served, "alpha", CONV1, 20)
    y, x = pixel_at(g, 9, 0, 3, 1)
    canvas.hover(position={"x": x, "y": y})
    tip = frame.locator('.panel[data-run="alpha"] .grid-tooltip')
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert "filter 9, channel 0" in text
    assert float(text.split("x 1:")[1].split()[0]) == pytest.approx(float(step20[3, 1, 0, 9]), 1e-5)
    canvas.click(position={"x": x, "y": y})
    frame.wait_for_function("() => location.hash.includes('sel=9')")
    assert frame.locator("#detail .detail-title").inner_text() == "filter 9"
    outline = frame.locator(".grid-wrap:has(canvas.main-grid) .grid-highlight").first
    outline.wait_for(state="visible")
    ob = outline.bounding_box()
    bx, by = block_origin(g, 9)
    assert abs(ob["x"] - box["x"] - (bx - 2)) <= 1.5 and abs(ob["y"] - box["y"] - (by - 2)) <= 1.5
    assert abs(ob["width"] - (tile + 4)) <= 1.5

    # a health row selects and outlines its block too
    frame.locator('#health-table tr[data-filter="14"]').click()
    frame.wait_for_function("() => location.hash.includes('sel=14')")
    page.wait_for_timeout(200)
    ob = outline.bounding_box()
    box = canvas.bounding_box()  # clicking the table row may scroll the page
    bx, by = block_origin(geometry(canvas), 14)
    assert abs(ob["x"] - box["x"] - (bx - 2)) <= 1.5 and abs(ob["y"] - box["y"] - (by - 2)) <= 1.5

    # PNG: the grid as shown, block labels included
    with page.expect_download() as info:
        frame.locator('section.panel[data-run="alpha"] button.png').click()
    info.value.save_as(tmp_path / "grid.png")
    png = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB")).astype(np.int32)
    g = geometry(canvas)
    shown = canvas_pixels(frame, canvas)[..., :3]
    assert png.shape == shown.shape
    x, y = block_origin(g, 0) if g["pan_y"] <= 0 else block_origin(g, 15)
    labelled = png[int(y - g["band"]) : int(y), int(x) : int(x + tile)]
    assert (labelled.sum(-1) < 600).sum() > 10, "the label is in the PNG"
    assert (png[int(y) + 2 : int(y + tile) - 2] == shown[int(y) + 2 : int(y + tile) - 2]).all()
    no_errors(page)


def test_sorting_moves_whole_blocks_and_their_labels_and_badges(served, page):
    frame = open_view(page, served, f"run=alpha&tag={CONV1}&sort=norm")
    canvas = frame.wait_for_selector(grid_selector("alpha", CONV1, 20), timeout=30000)
    k = served_tensor(served, "alpha", CONV1, 20)
    order = np.argsort(-np.sqrt((k.astype(np.float64) ** 2).sum(axis=(0, 1, 2))), kind="stable")
    over = overlay(frame, "alpha")
    frame.wait_for_function(
        "want => document.querySelector('.panel canvas.grid-overlay').dataset.blockLabels === want",
        arg=json.dumps([str(f) for f in order], separators=(",", ":")),
    )
    table = lut_of(frame, "diverging")
    tiles = tiles_of(k)
    got = tile_pixels(frame, canvas, tiles.shape)
    assert np.abs(got - expected_diverging(tiles, table)[order]).max() <= 1, "blocks not sorted"
    assert order[-1] == DEAD and (got[-1] == (len(table) - 1) // 2).all()

    # the dead filter's badge frames its block, wherever sorting put it
    frame.wait_for_function(
        "() => JSON.parse(document.querySelector('.panel canvas.grid-overlay').dataset.badges"
        " || '[]').length > 0",
        timeout=30000,
    )
    badges = json.loads(over.get_attribute("data-badges"))
    dead = [b for b in badges if b["filter"] == str(DEAD)]
    assert dead and dead[0]["problems"][0] == "dead" and dead[0]["row"] == 15
    colour = frame.evaluate(
        """async () => {
            const m = await import(new URL("static/findings.js", document.baseURI).href);
            return m.PROBLEM_STYLE.dead.color;
        }"""
    )
    g = geometry(canvas)
    x, y = block_origin(g, 15)
    ink = canvas_pixels(frame, over)
    edge = ink[int(y + 5 * g["zoom"] / 2), int(x) + 1]
    assert tuple(edge[:3]) == tuple(colour) and edge[3] == 255
    no_errors(page)


def test_compare_and_a_chosen_zoom_survive_in_the_url(served, page):
    frame = open_view(page, served, f"run=alpha&tag={CONV1}&cmp=beta&step=10")
    alpha = frame.wait_for_selector(grid_selector("alpha", CONV1, 10), timeout=30000)
    beta = frame.wait_for_selector(grid_selector("beta", CONV1, 10))
    table = lut_of(frame, "diverging")
    for run, canvas in (("alpha", alpha), ("beta", beta)):
        assert geometry(canvas)["block_cols"] == geometry(alpha)["block_cols"] > 1
        tiles = tiles_of(served_tensor(served, run, CONV1, 10))
        got = tile_pixels(frame, canvas, tiles.shape)
        assert np.abs(got - expected_diverging(tiles, table)).max() <= 1, run
    fitted = float(alpha.get_attribute("data-zoom"))
    # the user zooms in: both panels follow, and the zoom is part of the link
    alpha.focus()
    alpha.press("+")
    frame.wait_for_function(
        "z => Number(document.querySelector("
        "'canvas.main-grid[data-run=\"beta\"]').dataset.zoom) > z",
        arg=fitted,
    )
    zoomed = float(alpha.get_attribute("data-zoom"))
    assert zoomed > fitted and float(beta.get_attribute("data-zoom")) == zoomed
    page.wait_for_function(f"() => location.hash.includes('zoom%3D{zoomed:g}')")
    # a new step keeps it; a reload of the link opens at it, not at the fitted zoom
    frame.locator("#step-slider").fill("0")
    frame.wait_for_selector(grid_selector("alpha", CONV1, 0))
    assert float(alpha.get_attribute("data-zoom")) == zoomed
    shared = page.url
    page.goto("about:blank")
    page.goto(shared)
    frame = plugin_frame(page)
    alpha = frame.wait_for_selector(grid_selector("alpha", CONV1, 0), timeout=30000)
    assert float(alpha.get_attribute("data-zoom")) == zoomed
    tiles = tiles_of(served_tensor(served, "alpha", CONV1, 0))
    g = geometry(alpha)
    y, x = pixel_at(g, 0, 0, 0, 0)
    px = canvas_pixels(frame, alpha)
    want = expected_diverging(tiles, table)[0, 0, 0, 0]
    assert abs(int(((px[y, x, :3] - table) ** 2).sum(-1).argmin()) - int(want)) <= 1
    # "0" fits again, and the zoom leaves the link
    alpha.focus()
    alpha.press("0")
    page.wait_for_function("() => !location.hash.includes('zoom')")
    assert float(alpha.get_attribute("data-zoom")) == fitted
    no_errors(page)


def test_rgb_depthwise_and_kept_filters_use_blocks_labelled_with_original_indices(served, page):
    frame = open_view(page, served, f"run=alpha&tag={RGB}&rgb=1")
    canvas = frame.wait_for_selector(grid_selector("alpha", RGB, 20), timeout=30000)
    g = geometry(canvas)
    assert (g["rows"], g["cols"]) == (9, 1) and g["block_cols"] > 1
    k = served_tensor(served, "alpha", RGB, 20).astype(np.float64)
    limit = float(np.percentile(np.abs(k), 99.5))
    px = canvas_pixels(frame, canvas)
    for f, y, x in np.ndindex(9, 3, 3):
        want = np.rint(np.clip((k[y, x, :, f] + limit) / (2 * limit), 0, 1) * 255)
        got = px[pixel_at(g, f, 0, y, x)][:3]
        assert np.abs(got - want).max() <= 2, (f, y, x, got, want)
    y, x = pixel_at(g, 4, 0, 1, 1)
    canvas.hover(position={"x": x, "y": y})
    tip = frame.locator(".grid-tooltip").first
    tip.wait_for(state="visible")
    assert "filter 4, RGB" in tip.inner_text()

    # depthwise: one block per input channel
    frame.locator("#tag-select").select_option(DEPTHWISE)
    canvas = frame.wait_for_selector(grid_selector("alpha", DEPTHWISE, 20))
    g = geometry(canvas)
    assert (g["rows"], g["cols"]) == (8, 1) and g["block_cols"] > 1
    dw = served_tensor(served, "alpha", DEPTHWISE, 20)
    got = tile_pixels(frame, canvas, (8, 1, 3, 3))
    tiles = np.transpose(dw, (2, 3, 0, 1)).astype(np.float64)  # (I, M, H, W)
    assert np.abs(got - expected_diverging(tiles, lut_of(frame, "diverging"))).max() <= 1
    y, x = pixel_at(g, 5, 0, 2, 0)
    canvas.hover(position={"x": x, "y": y})
    frame.wait_for_function(
        "() => document.querySelector('.grid-tooltip').innerText.includes('filter 5, channel 5')"
    )

    # a logged subset: blocks labelled with the original filter indices
    frame = open_view(page, served, f"run=kept&tag={CONV1}")
    canvas = frame.wait_for_selector(grid_selector("kept", CONV1, 0), timeout=30000)
    assert geometry(canvas)["block_cols"] > 1
    labels = overlay(frame, "kept").get_attribute("data-block-labels")
    assert json.loads(labels) == [str(f) for f in KEPT]
    g = geometry(canvas)
    y, x = pixel_at(g, 4, 0, 2, 2)
    canvas.click(position={"x": x, "y": y})
    frame.wait_for_function(
        "() => document.querySelector('#detail .detail-title').textContent === 'filter 9'"
    )
    no_errors(page)
