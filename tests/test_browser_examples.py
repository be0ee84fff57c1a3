"""Issue 28: dataset examples in the Filters tab, in a real TensorBoard and Chromium.

Planted bars: Sobel-x and Sobel-y (fixed filters, logged as the kernel `sobel/kernel`)
over small gray images that each hold one thin bar, their activation `sobel/activation`
with examples; the strips drawn must be the crops the reader cuts, with the pixel rule
of examplepixels.js, beside their filter's row of the kernel grid (also sorted); the
step slider changes them; the detail view shows the filter's examples on their whole
inputs.
"""

from __future__ import annotations

import urllib.parse

import numpy as np
import pytest
from browser_support import block_origin, canvas_pixels, geometry, grid_selector
from scipy.ndimage import correlate
from support import plugin_frame, tensorboard

import tb_convfilters
from tb_convfilters import reader
from tb_convfilters._record.receptive_field import ReceptiveField

TAG = "sobel/activation"
KERNEL_TAG = "sobel/kernel"
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
# HWIO: filter 0 Sobel-x, filter 1 Sobel-y twice over (the larger norm: sorted first)
KERNEL = np.stack([SOBEL_X, 2 * SOBEL_X.T], -1)[:, :, None, :]


def bars(n: int = 10, size: int = 12, seed: int = 0) -> np.ndarray:
    """`n` gray images (N, H, W, 1), each with one thin vertical or horizontal bar."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.02, (n, size, size, 1)).astype(np.float32)
    for i in range(n):
        at, lo = rng.integers(1, size - 1), rng.integers(0, size // 2)
        if i % 2:
            x[i, at, lo : lo + size // 2, 0] = 1
        else:
            x[i, lo : lo + size // 2, at, 0] = 1
    return x


def sobel(x: np.ndarray) -> np.ndarray:
    """The activation of KERNEL (Sobel-x, 2 Sobel-y) with zero "same" padding: (N, H, W, 2)."""
    out = np.zeros((*x.shape[:3], 2), np.float32)
    for i in range(len(x)):
        for f in range(2):
            out[i, ..., f] = correlate(x[i, ..., 0], KERNEL[:, :, 0, f], mode="constant")
    return out


FIELD = ReceptiveField.identity(2).through((3, 3), (1, 1), (1, 1), (1, 1))


def write_demo(logdir) -> None:
    """Two steps of the planted bars (step 1: the second half of the probe set dimmed)."""
    x = bars()
    act = sobel(x)
    with tb_convfilters.Writer(logdir / "bars") as w:
        w.kernel(KERNEL_TAG, KERNEL, 0, layout="HWIO")
        w.activation(TAG, act, 0, inputs=x, examples=4, receptive_field=FIELD)
        later = act.copy()
        later[: len(x) // 2] *= 0.1
        w.kernel(KERNEL_TAG, KERNEL, 1, layout="HWIO")
        w.activation(TAG, later, 1, inputs=x, examples=4, receptive_field=FIELD)


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("examples") / "logs"
    write_demo(logdir)
    with tensorboard(logdir, load_fast="false") as base:
        yield base, logdir


def expected_strip(ex, f: int) -> list[np.ndarray]:
    """RGBA pixels of filter `f`'s crops by the rule of examplepixels.js (1 channel: gray)."""
    lo, hi = float(ex.inputs.min()), float(ex.inputs.max())
    out = []
    for j in range(ex.indices.shape[1]):
        t = np.clip((ex.crops[f, j, ..., 0].astype(np.float64) - lo) / (hi - lo), 0, 1)
        g = np.round(255 * t).astype(np.int32)
        rgba = np.stack([g, g, g, np.full_like(g, 255)], -1)
        for axis, (start, size) in enumerate(ex.field.box(ex.positions[f, j])):
            for p in range(size):
                if not 0 <= start + p < ex.inputs.shape[1 + axis]:
                    index = [slice(None), slice(None)]
                    index[axis] = p
                    rgba[tuple(index)] = 0
        out.append(rgba)
    return out


def strip_canvas(frame, f: int):
    return frame.locator(f'canvas.examples-strip[data-filter="{f}"]').first


def drawn_strip(frame, f: int, k: int) -> list[np.ndarray]:
    canvas = strip_canvas(frame, f)
    canvas.wait_for()
    px = canvas_pixels(frame, canvas)
    scale = int(canvas.get_attribute("data-scale"))
    tile, gap = int(canvas.get_attribute("data-tile")), int(canvas.get_attribute("data-gap"))
    n = tile // scale
    out = []
    for j in range(k):
        x0 = j * (tile + gap)
        centres = np.arange(n) * scale + scale // 2
        out.append(px[np.ix_(centres, x0 + centres)])
    return out


def open_view(page, base: str, state: str):
    page.goto(f"{base}/#convfilters&cf=" + urllib.parse.quote(state, safe=""))
    return plugin_frame(page)


def test_examples_mode_draws_the_crops_and_follows_the_slider(page, logged):
    base, logdir = logged
    frame = open_view(page, base, f"run=bars&tag={TAG}&step=0")
    frame.locator("#diff-select").wait_for()
    frame.locator("#diff-select").select_option("examples")
    for step in (0, 1):
        if step == 1:
            frame.locator(".examples[data-step='0'][data-state='drawn']").wait_for()
            page.keyboard.press("Escape")
            slider = frame.locator("#step-slider")
            slider.evaluate("(s) => { s.value = '1'; s.dispatchEvent(new Event('input')); }")
        frame.locator(f".examples[data-step='{step}'][data-state='drawn']").wait_for()
        ex = reader.examples(logdir, "bars", TAG, step)
        for f in (0, 1):
            drawn = drawn_strip(frame, f, 4)
            for got, want in zip(drawn, expected_strip(ex, f), strict=True):
                np.testing.assert_array_equal(got, want)
    first = reader.examples(logdir, "bars", TAG, 0).indices
    assert not np.array_equal(first, ex.indices)  # the slider showed other examples
    # the list sits right of the grid (visible without scrolling), each strip labelled
    grid_box = frame.locator("canvas.main-grid").first.bounding_box()
    for f in (0, 1):
        box = strip_canvas(frame, f).bounding_box()
        assert box["x"] >= grid_box["x"] + grid_box["width"]
        assert box["y"] + box["height"] <= 1000
    labels = frame.locator(".examples-list .examples-label").all_inner_texts()
    assert labels == ["0", "1"]
    # the detail view: the filter's examples on their whole inputs, with index and value
    frame.locator("canvas.main-grid").first.click(position={"x": 3, "y": 3})
    frame.locator(".examples-detail .examples-input").first.wait_for()
    captions = frame.locator(".examples-detail figcaption").all_inner_texts()
    assert len(captions) == 4
    assert captions[0].startswith(f"input #{ex.indices[0, 0]}")
    assert page.console_problems == []


def row_box(frame, slot: int) -> tuple[float, float, float]:
    """css (top, bottom, right) of display slot `slot`'s row of the kernel grid."""
    canvas = frame.locator("canvas.main-grid").first
    box = canvas.bounding_box()
    g = geometry(canvas)
    dpr = frame.evaluate("window.devicePixelRatio")
    assert g["block_cols"] == 1  # stacked: one filter a line
    _, y = block_origin(g, slot)
    height = (g["pitch_y"] - (1 if g["zoom"] >= 2 else 0)) / dpr
    return box["y"] + y / dpr, box["y"] + y / dpr + height, box["x"] + box["width"]


def assert_beside(frame, f: int, slot: int) -> None:
    """Filter `f`'s strip is right of the grid, vertically within the row shown in `slot`."""
    top, bottom, right = row_box(frame, slot)
    box = strip_canvas(frame, f).bounding_box()
    assert box["x"] >= right
    assert top <= box["y"] and box["y"] + box["height"] <= bottom, (f, slot, box, top, bottom)
    for other in range(2):
        if other != slot:
            o_top, o_bottom, _ = row_box(frame, other)
            assert box["y"] >= o_bottom or box["y"] + box["height"] <= o_top


def test_kernel_rows_have_their_strips_beside_them(page, logged):
    base, logdir = logged
    frame = open_view(page, base, f"run=bars&tag={KERNEL_TAG}&step=0&ex=1")
    frame.locator(".examples[data-mode='rows'][data-step='0'][data-state='drawn']").wait_for()
    grid = frame.locator(grid_selector("bars", KERNEL_TAG))
    grid.wait_for()
    for step in (0, 1):
        if step == 1:
            slider = frame.locator("#step-slider")
            slider.evaluate("(s) => { s.value = '1'; s.dispatchEvent(new Event('input')); }")
            frame.locator(
                ".examples[data-mode='rows'][data-step='1'][data-state='drawn']"
            ).wait_for()
        ex = reader.examples(logdir, "bars", TAG, step)
        for f in (0, 1):
            drawn = drawn_strip(frame, f, 4)
            for got, want in zip(drawn, expected_strip(ex, f), strict=True):
                np.testing.assert_array_equal(got, want)
            assert_beside(frame, f, f)
    assert "at step 1" in frame.locator(".examples-title").first.inner_text()
    # sorted by norm: Sobel-y (twice the norm) first; each strip follows its filter's row
    frame.locator("#sort-select").select_option("norm")
    frame.wait_for_function(
        """() => {
            const s = document.querySelector('canvas.examples-strip[data-filter="1"]');
            return s && s.closest(".examples-row").dataset.slot === "0";
        }"""
    )
    page.wait_for_timeout(300)  # the grid's next frame
    assert_beside(frame, 1, 0)
    assert_beside(frame, 0, 1)
    # the detail view of filter 1 (a click on its row, now on top) shows its examples
    box = grid.bounding_box()
    top, bottom, _ = row_box(frame, 0)
    grid.click(position={"x": 3, "y": (top + bottom) / 2 - box["y"]})
    frame.locator(".examples-detail:not([hidden]) .examples-input").first.wait_for()
    assert frame.locator(".examples-detail").get_attribute("data-filter") == "1"
    captions = frame.locator(".examples-detail figcaption").all_inner_texts()
    assert [c.split(" ")[1] for c in captions] == [f"#{i}" for i in ex.indices[1]]
    assert page.console_problems == []
