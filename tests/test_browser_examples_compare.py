"""Issue 28 with runs side by side: each panel shows its own run's dataset examples, and
an aligned run's strips follow its rows into the matched order.

Run `bars` is test_browser_examples' planted Sobel pair (filter 0 Sobel-x, filter 1
2*Sobel-y); run `swapped` holds the same two filters the other way round (filter 0
2*Sobel-y, filter 1 Sobel-x), its activation channels swapped to match and computed on
other probe inputs (another seed), its examples ranked by the Writer from its own
activation. Aligned to `bars`, `swapped`'s row 0 is its filter 1 (Sobel-x), and the strip
beside it must be that filter's examples.
"""

from __future__ import annotations

import numpy as np
import pytest
from browser_support import block_origin, canvas_pixels, geometry, grid_selector, tile_pixels
from support import tensorboard
from test_browser_examples import (
    FIELD,
    KERNEL,
    KERNEL_TAG,
    TAG,
    bars,
    expected_strip,
    open_view,
    sobel,
    write_demo,
)

import tb_convfilters
from tb_convfilters import reader

RUNS = ("bars", "swapped")
SWAP = [1, 0]  # swapped's filter f is bars' filter SWAP[f]


def write_swapped(logdir) -> None:
    x = bars(seed=1)
    act = sobel(x)[..., SWAP]
    with tb_convfilters.Writer(logdir / "swapped") as w:
        for step in (0, 1):
            w.kernel(KERNEL_TAG, KERNEL[..., SWAP], step, layout="HWIO")
            w.activation(TAG, act, step, inputs=x, examples=4, receptive_field=FIELD)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("examples_compare") / "logs"
    write_demo(logdir)
    write_swapped(logdir)
    with tensorboard(logdir, load_fast="false") as base:
        yield base, logdir


def test_the_planted_runs_differ(logged):
    """The two runs' examples are not each other's: a strip drawn from the wrong run fails."""
    _, logdir = logged
    a, b = (reader.examples(logdir, run, TAG, 0) for run in RUNS)
    assert not np.array_equal(a.inputs, b.inputs)
    for f in (0, 1):
        # swapped's channel SWAP[f] detects what bars' channel f does, on other inputs
        assert not np.array_equal(a.crops[f], b.crops[SWAP[f]])
        assert not np.array_equal(a.crops[f], b.crops[f])
    # the planted detectors: bars' channel 0 (Sobel-x) and swapped's channel 1 fire on
    # vertical bars (even inputs), the others on horizontal ones
    assert set(a.indices[0] % 2) == {0} and set(b.indices[1] % 2) == {0}
    assert set(a.indices[1] % 2) == {1} and set(b.indices[0] % 2) == {1}


def panel(frame, run: str):
    return frame.locator(f'.panel[data-run="{run}"]')


def strip_pixels(canvas, frame, k: int) -> list[np.ndarray]:
    """The k crops a strip canvas draws, one pixel per crop pixel (examplepixels.js's rule)."""
    px = canvas_pixels(frame, canvas)
    scale = int(canvas.get_attribute("data-scale"))
    tile, gap = int(canvas.get_attribute("data-tile")), int(canvas.get_attribute("data-gap"))
    centres = np.arange(tile // scale) * scale + scale // 2
    return [px[np.ix_(centres, j * (tile + gap) + centres)] for j in range(k)]


def assert_strip_is(frame, canvas, ex, f: int) -> None:
    drawn = strip_pixels(canvas, frame, ex.indices.shape[1])
    for got, want in zip(drawn, expected_strip(ex, f), strict=True):
        np.testing.assert_array_equal(got, want)


def row_box(frame, run: str, slot: int) -> tuple[float, float, float]:
    """css (top, bottom, right) of display slot `slot`'s row of `run`'s stacked kernel grid."""
    canvas = panel(frame, run).locator("canvas.main-grid").first
    box = canvas.bounding_box()
    g = geometry(canvas)
    dpr = frame.evaluate("window.devicePixelRatio")
    assert g["block_cols"] == 1  # stacked: one filter a line
    _, y = block_origin(g, slot)
    height = (g["pitch_y"] - (1 if g["zoom"] >= 2 else 0)) / dpr
    return box["y"] + y / dpr, box["y"] + y / dpr + height, box["x"] + box["width"]


def strip_beside(frame, run: str, slot: int):
    """The strip canvas of `run`'s panel beside its grid's slot `slot` (checked by its box)."""
    rows = panel(frame, run).locator(f'.examples-row[data-slot="{slot}"]:not([hidden])')
    assert rows.count() == 1
    canvas = rows.locator("canvas.examples-strip")
    top, bottom, right = row_box(frame, run, slot)
    box = canvas.bounding_box()
    assert box["x"] >= right
    assert top <= box["y"] and box["y"] + box["height"] <= bottom, (run, slot, box, top, bottom)
    return canvas


def kernel_view(page, base: str, extra: str = ""):
    frame = open_view(page, base, f"run=bars&tag={KERNEL_TAG}&cmp=swapped&step=0&ex=1{extra}")
    for run in RUNS:
        panel(frame, run).locator(
            ".examples[data-mode='rows'][data-step='0'][data-state='drawn']"
        ).wait_for()
        frame.locator(grid_selector(run, KERNEL_TAG, 0)).wait_for()
    page.wait_for_timeout(300)  # the grids' next frame places the strips
    return frame


def test_side_by_side_each_panel_shows_its_own_runs_examples(page, logged):
    base, logdir = logged
    frame = kernel_view(page, base)
    for run in RUNS:
        ex = reader.examples(logdir, run, TAG, 0)
        for f in (0, 1):  # unaligned: slot f draws the run's own filter f
            canvas = strip_beside(frame, run, f)
            assert canvas.get_attribute("data-filter") == str(f)
            assert_strip_is(frame, canvas, ex, f)
    assert page.console_problems == []


def test_aligned_run_shows_its_strips_in_the_matched_order(page, logged):
    base, logdir = logged
    frame = kernel_view(page, base, "&align=1&base=bars")
    title = panel(frame, "swapped").locator(".panel-title").inner_text()
    assert "aligned to bars: mean cosine 1" in title
    # swapped's grid now draws bars' grid: its row 0 is its filter 1 (Sobel-x)
    canvases = [frame.locator(grid_selector(run, KERNEL_TAG, 0)).element_handle() for run in RUNS]
    drawn = [tile_pixels(frame, c, (2, 1, 3, 3)) for c in canvases]
    np.testing.assert_array_equal(drawn[0], drawn[1])
    for run, order in (("bars", [0, 1]), ("swapped", SWAP)):
        ex = reader.examples(logdir, run, TAG, 0)
        for slot, f in enumerate(order):
            canvas = strip_beside(frame, run, slot)
            assert canvas.get_attribute("data-filter") == str(f)
            assert_strip_is(frame, canvas, ex, f)
    # each strip is labelled with its filter's own index
    rows = panel(frame, "swapped").locator(".examples-row:not([hidden])")
    by_slot = {
        rows.nth(i).get_attribute("data-slot"): rows.nth(i).locator(".examples-label").inner_text()
        for i in range(rows.count())
    }
    assert by_slot == {"0": "1", "1": "0"}
    assert page.console_problems == []


@pytest.mark.parametrize("extra", ["", "&align=1&base=bars"])
def test_activation_lists_each_runs_channels_labelled(page, logged, extra):
    base, logdir = logged
    frame = open_view(page, base, f"run=bars&tag={TAG}&cmp=swapped&step=0&ex=1{extra}")
    # Align reorders kernels only: an activation's grid, and so its list, stay in channel order
    for run in RUNS:
        box = panel(frame, run).locator(
            ".examples[data-mode='list'][data-step='0'][data-state='drawn']"
        )
        box.wait_for()
        ex = reader.examples(logdir, run, TAG, 0)
        grid_box = panel(frame, run).locator("canvas.main-grid").first.bounding_box()
        assert box.locator(".examples-label").all_inner_texts() == ["0", "1"]
        for c in (0, 1):
            canvas = box.locator(f'canvas.examples-strip[data-filter="{c}"]')
            assert canvas.bounding_box()["x"] >= grid_box["x"] + grid_box["width"]
            assert_strip_is(frame, canvas, ex, c)
    assert "aligned" not in panel(frame, "swapped").locator(".panel-title").inner_text()
    assert page.console_problems == []
