"""The Filters dashboard in a real TensorBoard and Debian's Chromium.

One TensorBoard process serves every test of this module; each test opens a
fresh page. Pixels are read back from the canvases and compared with the
tensors the server hands out, coloured independently here with numpy.
"""

from __future__ import annotations

import time
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
from support import http_get, load_npy, plugin_frame, tensorboard

import tb_convfilters

STEPS = (0, 10, 20)
KERNEL = "conv1/kernel"
ACTIVATION = "conv1/activation"
XSS_TAG = "<img src=x onerror=alert(1)>"
BIG = "big/kernel"
HUGE = "huge/kernel"
DEAD = 4  # filter of run alpha that is all zeros


def kernels(seed: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for step in STEPS:
        k = rng.normal(size=(3, 3, 3, 6)).astype(np.float32)  # HWIO: 6 filters, 3 input channels
        k[..., DEAD] = 0
        out[step] = k
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("dashboard") / "logs"
    rng = np.random.default_rng(0)
    with tb_convfilters.Writer(logdir / "alpha") as w:
        for step, k in kernels(1).items():
            w.kernel(KERNEL, k, step=step, layout="HWIO", description="<b>first</b> conv")
            w.activation(
                ACTIVATION,
                rng.random((2, 8, 8, 6)).astype(np.float32) - 0.3,
                step=step,
                layout="NHWC",
                max_samples=2,
            )
        w.kernel(XSS_TAG, rng.normal(size=(3, 3, 1, 2)).astype(np.float32), step=0, layout="HWIO")
    with tb_convfilters.Writer(logdir / "beta") as w:
        for step, k in kernels(2).items():
            if step != 10:  # beta lacks step 10: the shared slider must not show a neighbour
                w.kernel(KERNEL, k, step=step, layout="HWIO")
    with tb_convfilters.Writer(logdir / "gamma") as w:
        big = rng.normal(size=(3, 3, 512, 512)).astype(np.float16)
        w.kernel(BIG, big, step=0, layout="HWIO")
        w.kernel(HUGE, np.zeros((3, 3, 512, 640), np.float32), step=0, layout="HWIO")
    with tensorboard(logdir, load_fast="false", extra=("--convfilters_max_tensor_mb=10",)) as base:
        yield base


def served_tensor(base: str, run: str, tag: str, step: int) -> np.ndarray:
    query = urllib.parse.urlencode({"run": run, "tag": tag, "step": step})
    status, body, headers = http_get(f"{base}/data/plugin/convfilters/tensor?{query}")
    assert status == 200, body[:300]
    assert headers["X-Convfilters-Step"] == str(step)
    return load_npy(body)


def hwio_tiles(kernel: np.ndarray) -> np.ndarray:
    """(rows = O, cols = I, H, W) from an HWIO kernel."""
    return np.transpose(kernel, (3, 2, 0, 1)).astype(np.float64)


def open_view(page, base: str, state: str = ""):
    """Opens the dashboard (optionally with a state in TensorBoard's URL) and returns its frame."""
    suffix = "&cf=" + urllib.parse.quote(state, safe="") if state else ""
    page.goto(f"{base}/#convfilters{suffix}")
    return plugin_frame(page)


def no_problems(page):
    bad = [
        p
        for p in page.console_problems
        if "Content Security Policy" in p
        or "Refused to" in p
        or p.startswith(("pageerror", "dialog"))
    ]
    assert not bad, bad


def test_slider_shows_exact_steps_and_normalization_changes_pixels(served, page):
    frame = open_view(page, served, f"run=alpha&tag={KERNEL}")
    canvas = frame.wait_for_selector(grid_selector("alpha", KERNEL, 20), timeout=30000)
    table = lut_of(frame, "diverging")
    frame.locator("#step-slider").fill("1")
    frame.wait_for_selector(grid_selector("alpha", KERNEL, 10))
    tiles = hwio_tiles(served_tensor(served, "alpha", KERNEL, 10))
    layer = tile_pixels(frame, canvas, tiles.shape)
    assert np.abs(layer - expected_diverging(tiles, table)).max() <= 1
    assert (layer[DEAD] == (len(table) - 1) // 2).all(), "a zero filter is neutral"

    frame.locator("#norm-select").select_option("tile")
    frame.wait_for_selector('canvas.main-grid[data-mode="tile"][data-step="10"]')
    per_tile = tile_pixels(frame, canvas, tiles.shape)
    assert (per_tile != layer).any(), "per-tile scaling drew the same pixels as per-layer"
    for r, c in np.ndindex(*tiles.shape[:2]):
        want = expected_diverging(tiles[r, c], table)
        assert np.abs(per_tile[r, c] - want).max() <= 1, (r, c)

    # play walks through the steps (10 -> 20 -> 0 ...) and pause stops it
    frame.locator("#play").click()
    frame.wait_for_selector(grid_selector("alpha", KERNEL, 20))
    frame.wait_for_selector(grid_selector("alpha", KERNEL, 0))
    frame.locator("#play").click()
    frame.locator("#step-slider").fill("1")
    frame.wait_for_selector(grid_selector("alpha", KERNEL, 10))

    # percentile 50: half of each tile's values saturate
    frame.locator("#pct-input").fill("50")
    frame.locator("#pct-input").dispatch_event("change")
    frame.wait_for_function("() => location.hash.includes('pct=50')")
    frame.wait_for_function(
        "n => Number(document.querySelector('canvas.main-grid').dataset.rendered) > n",
        arg=int(canvas.get_attribute("data-rendered")) - 1,
    )
    page.wait_for_timeout(200)
    p50 = tile_pixels(frame, canvas, tiles.shape)
    for r, c in np.ndindex(*tiles.shape[:2]):
        if r == DEAD:
            continue
        want = expected_diverging(tiles[r, c], table, percentile=50)
        assert np.abs(p50[r, c] - want).max() <= 1, (r, c)
    no_problems(page)


def test_compared_runs_share_the_slider_and_never_show_a_neighbour(served, page):
    frame = open_view(page, served, f"run=alpha&tag={KERNEL}&cmp=beta&norm=runs")
    alpha = frame.wait_for_selector(grid_selector("alpha", KERNEL, 20), timeout=30000)
    beta = frame.wait_for_selector(grid_selector("beta", KERNEL, 20))
    slider = frame.locator("#step-slider")
    assert slider.get_attribute("max") == "2"  # the union of both runs' steps
    # one colour scale for both (fixed over the compared runs)
    labels = frame.locator(".colorbar-labels")
    assert labels.nth(0).get_attribute("data-hi") == labels.nth(1).get_attribute("data-hi")

    slider.fill("0")
    frame.wait_for_selector(grid_selector("alpha", KERNEL, 0))
    frame.wait_for_selector(grid_selector("beta", KERNEL, 0))
    limit = float(labels.nth(0).get_attribute("data-hi"))
    table = lut_of(frame, "diverging")
    for run, canvas in (("alpha", alpha), ("beta", beta)):
        tiles = hwio_tiles(served_tensor(served, run, KERNEL, 0))
        got = tile_pixels(frame, canvas, tiles.shape)
        assert np.abs(got - expected_diverging(tiles, table, limit=limit)).max() <= 1, run

    slider.fill("1")  # step 10: alpha has it, beta does not
    frame.wait_for_selector(grid_selector("alpha", KERNEL, 10))
    frame.wait_for_function(
        "() => document.querySelector('canvas.main-grid[data-run=\"beta\"]').dataset.step === ''"
    )
    status = frame.locator('section.panel[data-run="beta"] .panel-status').inner_text()
    assert "no step 10" in status
    no_problems(page)


def test_diff_of_a_run_with_itself_is_neutral_and_drift_is_listed(served, page):
    frame = open_view(page, served, f"run=alpha&tag={KERNEL}&diff=run&base=alpha&step=10")
    canvas = frame.wait_for_selector(
        'canvas.main-grid[data-view="diff-run"][data-step="10"]', timeout=30000
    )
    got = tile_pixels(frame, canvas, (6, 3, 3, 3))
    assert (got == (len(lut_of(frame, "diverging")) - 1) // 2).all()

    frame.locator("#diff-select").select_option("first")
    frame.wait_for_selector('canvas.main-grid[data-view="diff-first"][data-step="10"]')
    tiles = hwio_tiles(
        served_tensor(served, "alpha", KERNEL, 10) - served_tensor(served, "alpha", KERNEL, 0)
    )
    got = tile_pixels(frame, canvas, tiles.shape)
    assert np.abs(got - expected_diverging(tiles, lut_of(frame, "diverging"))).max() <= 1
    # the health table lists drift (cosine distance to step 0) and flags the dead filter
    frame.wait_for_selector("#health-table th[data-key=drift]")
    dead_row = frame.locator(f'#health-table tr[data-filter="{DEAD}"]')
    assert "dead" in dead_row.inner_text()
    no_problems(page)


def test_health_row_click_highlights_and_sorting_by_norm_reorders(served, page):
    frame = open_view(page, served, f"run=alpha&tag={KERNEL}")
    canvas = frame.wait_for_selector(grid_selector("alpha", KERNEL, 20), timeout=30000)
    frame.wait_for_selector("#health-table tbody tr")
    frame.locator('#health-table tr[data-filter="2"]').click()
    highlight = frame.locator(
        ".main-grid + .grid-highlight, .grid-wrap:has(canvas.main-grid) .grid-highlight"
    ).first
    highlight.wait_for(state="visible")
    g = geometry(canvas)
    box = highlight.bounding_box()
    cbox = canvas.bounding_box()
    assert abs((box["y"] - cbox["y"]) - (block_origin(g, 2)[1] - 2)) <= 1.5
    frame.wait_for_function("() => location.hash.includes('sel=2')")
    assert frame.locator("#detail .detail-title").inner_text() == "filter 2"

    frame.locator("#sort-select").select_option("norm")
    frame.wait_for_function("() => location.hash.includes('sort=norm')")
    page.wait_for_timeout(300)
    k = served_tensor(served, "alpha", KERNEL, 20)
    norms = np.sqrt((k.astype(np.float64) ** 2).sum(axis=(0, 1, 2)))
    order = np.argsort(-norms, kind="stable")
    table = lut_of(frame, "diverging")
    tiles = hwio_tiles(k)
    got = tile_pixels(frame, canvas, tiles.shape)
    want = expected_diverging(tiles, table)[order]
    assert np.abs(got - want).max() <= 1, "rows are not sorted by norm"
    assert (got[-1] == (len(table) - 1) // 2).all(), "the dead filter sorts last"
    no_problems(page)


def test_activation_click_shows_the_kernel_slices_of_the_same_layer(served, page):
    frame = open_view(page, served, f"run=alpha&tag={ACTIVATION}&sample=1")
    canvas = frame.wait_for_selector(grid_selector("alpha", ACTIVATION, 20), timeout=30000)
    assert frame.locator("#sample-input").input_value() == "1"
    g = geometry(canvas)
    assert g["rows"] * g["cols"] >= 6 and g["cols"] in (2, 3)
    # channel 4 = grid cell (row 4 // cols, col 4 % cols); the pixels are sample 1 of the activation
    act = served_tensor(served, "alpha", ACTIVATION, 20)
    r, c = divmod(4, g["cols"])
    px = canvas_pixels(frame, canvas)
    table = lut_of(frame, "diverging")
    want = expected_diverging(act[1].transpose(2, 0, 1), table)  # (C, H, W), per layer of sample 1
    y, x = pixel_at(g, r, c, 2, 5)
    got = ((px[y, x, :3] - table) ** 2).sum(-1).argmin()
    assert abs(int(got) - int(want[4, 2, 5])) <= 1
    canvas.click(position={"x": x, "y": y})
    slices = frame.wait_for_selector(
        grid_selector("alpha", KERNEL, 20).replace("main-grid", "kernel-slices")
    )
    assert frame.locator("#detail .detail-title").inner_text() == "channel 4"
    assert slices.get_attribute("data-rows") is not None
    assert "filter 4" in frame.locator(".detail-kernel-title").inner_text()
    no_problems(page)


def test_big_kernel_renders_and_zooms_quickly(served, page):
    start = time.monotonic()
    frame = open_view(page, served, f"run=gamma&tag={BIG}")
    canvas = frame.wait_for_selector(grid_selector("gamma", BIG, 0), timeout=60000)
    frame.wait_for_function("() => document.querySelectorAll('#health-table tbody tr').length > 0")
    loaded = time.monotonic() - start
    print(f"big kernel: grid and health table in {loaded:.1f} s")
    assert canvas.get_attribute("data-rows") == "512" and canvas.get_attribute("data-cols") == "512"
    assert frame.evaluate("document.querySelectorAll('canvas').length") < 12, "no per-tile DOM"
    px = canvas_pixels(frame, canvas)
    assert len({tuple(p) for p in px[::7, ::7].reshape(-1, 4)}) > 20
    # keyboard zoom redraws within a frame or two, not seconds
    fitted = float(canvas.get_attribute("data-zoom"))
    canvas.focus()
    t0 = time.monotonic()
    presses = 0
    while float(canvas.get_attribute("data-zoom")) < 4 and presses < 12:
        before = int(canvas.get_attribute("data-rendered"))
        canvas.press("+")
        presses += 1
        frame.wait_for_function(
            "n => Number(document.querySelector('canvas.main-grid').dataset.rendered) > n",
            arg=before,
        )
    zoom_time = (time.monotonic() - t0) / presses
    print(f"big kernel: {zoom_time * 1000:.0f} ms per zoom step")
    assert float(canvas.get_attribute("data-zoom")) >= 4 > fitted
    # the values under the cursor are the served float16 values
    big = served_tensor(served, "gamma", BIG, 0)
    g = geometry(canvas)
    r = int((g["pan_y"] + 40) // g["pitch_y"])  # a tile near the top-left of the window
    c = int((g["pan_x"] + 40) // g["pitch_x"])
    y, x = pixel_at(g, r, c, 1, 2)
    canvas.hover(position={"x": x, "y": y})
    tip = frame.locator(".grid-tooltip").first
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert f"filter {r}, channel {c}" in text
    value = float(text.split("x 2:")[1].split()[0])
    assert value == pytest.approx(float(big[1, 2, c, r]), rel=1e-3, abs=1e-6)
    assert loaded < 30 and zoom_time < 5, (loaded, zoom_time)
    no_problems(page)


def test_server_errors_are_shown(served, page):
    frame = open_view(page, served, f"run=gamma&tag={HUGE}")
    status = frame.locator('section.panel[data-run="gamma"] .panel-status')
    status.wait_for(state="visible", timeout=30000)
    frame.wait_for_function(
        "() => document.querySelector('section.panel .panel-status').textContent"
        ".includes('over the limit')"
    )
    assert "convfilters_max_tensor_mb" in status.inner_text()
    # 640 filters of 18432 bytes are over 10 MiB: the first 568 fit (tests/test_browser_limits.py)
    assert status.locator("button.cap-offer").inner_text() == "Show the first 568 filters"


def test_dark_mode_follows_tensorboard(served, browser):
    context = browser.new_context(viewport={"width": 1200, "height": 900}, color_scheme="dark")
    page = context.new_page()
    try:
        page.goto(
            f"{served}/#convfilters&cf=" + urllib.parse.quote(f"run=alpha&tag={KERNEL}", safe="")
        )
        assert page.evaluate("document.body.classList.contains('dark-mode')")
        frame = plugin_frame(page)
        canvas = frame.wait_for_selector(grid_selector("alpha", KERNEL, 20), timeout=30000)
        frame.wait_for_function("() => document.body.dataset.theme === 'dark'")
        bg = frame.evaluate("getComputedStyle(document.body).backgroundColor")
        assert bg == "rgb(32, 33, 36)"
        dark = lut_of(frame, "diverging", dark=True)
        got = tile_pixels(frame, canvas, (6, 3, 3, 3))
        px = canvas_pixels(frame, canvas)
        y, x = pixel_at(geometry(canvas), DEAD, 0, 0, 0)
        assert tuple(px[y, x, :3]) == tuple(dark[(len(dark) - 1) // 2]), "zero is the dark neutral"
        assert got.shape == (6, 3, 3, 3)
    finally:
        context.close()


def test_url_state_restores_the_view_on_reload(served, page):
    frame = open_view(page, served)
    frame.wait_for_selector("canvas.main-grid[data-step]", timeout=30000)
    frame.locator("#run-select").select_option("alpha")
    frame.locator("#tag-select").select_option(KERNEL)
    frame.wait_for_selector(grid_selector("alpha", KERNEL, 20))
    frame.wait_for_selector('#step-slider[max="2"]')
    frame.locator("#cmap-select").select_option("grey")
    frame.locator("#norm-select").select_option("filter")
    frame.locator("#step-slider").fill("1")
    frame.wait_for_selector(grid_selector("alpha", KERNEL, 10))
    page.wait_for_function(
        "() => location.hash.includes('cmap%3Dgrey') && location.hash.includes('step%3D10')"
    )
    assert page.url.split("#")[1].startswith("convfilters&cf=")
    shared = page.url
    page.goto("about:blank")
    page.goto(shared)
    frame = plugin_frame(page)
    canvas = frame.wait_for_selector(grid_selector("alpha", KERNEL, 10), timeout=30000)
    assert frame.locator("#cmap-select").input_value() == "grey"
    assert frame.locator("#norm-select").input_value() == "filter"
    assert canvas.get_attribute("data-mode") == "filter"
    grey = lut_of(frame, "grey")
    px = canvas_pixels(frame, canvas)
    y, x = pixel_at(geometry(canvas), 0, 0, 0, 0)
    assert ((px[y, x, :3] - grey) ** 2).sum(-1).min() == 0, "drawn with the grey table"
    no_problems(page)


def test_hostile_tag_is_text_and_runs_nothing(served, page):
    frame = open_view(page, served, "run=alpha&tag=" + urllib.parse.quote(XSS_TAG, safe=""))
    frame.wait_for_selector("canvas.main-grid[data-step]", timeout=30000)
    assert frame.evaluate("document.querySelector('#tag-select').value") == XSS_TAG
    options = frame.evaluate(
        "Array.from(document.querySelectorAll('#tag-select option'), o => o.textContent)"
    )
    assert XSS_TAG in options
    assert frame.evaluate("document.querySelectorAll('img').length") == 0
    canvas = frame.locator("canvas.main-grid").first
    assert canvas.get_attribute("data-tag") == XSS_TAG
    # the description is Markdown shown as text, never markup
    frame.locator("#tag-select").select_option(KERNEL)
    frame.wait_for_function(
        "() => document.querySelector('#tag-description').textContent === '<b>first</b> conv'"
    )
    assert frame.evaluate("document.querySelectorAll('#tag-description b').length") == 0
    page.wait_for_timeout(300)
    no_problems(page)


def test_downloads_png_of_the_view_and_npy_of_the_tensor(served, page, tmp_path):
    frame = open_view(page, served, f"run=alpha&tag={KERNEL}&step=10")
    frame.wait_for_selector(grid_selector("alpha", KERNEL, 10), timeout=30000)
    with page.expect_download() as info:
        frame.locator('section.panel[data-run="alpha"] button.npy').click()
    path = tmp_path / "k.npy"
    info.value.save_as(path)
    assert info.value.suggested_filename.endswith("_10.npy")
    np.testing.assert_array_equal(np.load(path), served_tensor(served, "alpha", KERNEL, 10))
    with page.expect_download() as info:
        frame.locator('section.panel[data-run="alpha"] button.png').click()
    png = tmp_path / "view.png"
    info.value.save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_problems(page)
