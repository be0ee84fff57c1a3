"""Issue 17 in the browser: "Align to <base run>" and the Similarity (CKA) view.

Run b is a permuted copy of run a (every layer's filters permuted, the next layer's
input channels permuted to match, noise 1e-3), written as real event files and served
by a real TensorBoard to Debian's Chromium. Aligned, b's grid draws a's pixels (up to
noise), tiles keep b's own indices, each row shows its matched cosine, and b − a is noise.
"""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
import pytest
from browser_support import geometry, grid_selector, pixel_at, tile_pixels
from support import plugin_frame, tensorboard

import tb_convfilters
from tb_convfilters._record.record import make_record

C1, C2 = "c1/kernel", "c2/kernel"
rng = np.random.default_rng(17)
K1 = rng.normal(size=(3, 3, 1, 8)).astype(np.float32)
K2 = rng.normal(size=(3, 3, 8, 6)).astype(np.float32)
P1, P2 = rng.permutation(8), rng.permutation(6)
NOISE = 1e-3


def permuted_copy():
    b1 = np.empty_like(K1)
    b1[..., P1] = K1
    b2 = np.empty_like(K2)
    b2[..., P2] = K2
    b2c = np.empty_like(b2)
    b2c[:, :, P1] = b2
    return [b + NOISE * rng.normal(size=b.shape).astype(np.float32) for b in (b1, b2c)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("align") / "logs"
    maps = rng.normal(size=(4, 6, 6, 8)).astype(np.float32)
    for run, (k1, k2), m in (("a", (K1, K2), maps), ("b", permuted_copy(), maps[..., P1])):
        with tb_convfilters.Writer(logdir / run) as w:
            for step in (0, 10):
                w.kernel(C1, k1, step)
                w.kernel(C2, k2, step)
                rec = make_record(m * (1 + step), kind="activation", layout="NHWC",
                                  extra={"samples_digest": "same-inputs"})
                w.write_record("c1/activation", rec, step)
    with tensorboard(logdir, load_fast="false") as base:
        yield base


def open_view(page, base: str, state: str):
    page.goto(f"{base}/#convfilters&cf=" + urllib.parse.quote(state, safe=""))
    return plugin_frame(page)


def test_aligned_view_draws_the_base_order_with_original_labels(page, served):
    frame = open_view(page, served, "run=a&tag=c2/kernel&cmp=b&align=1&base=a&step=10")
    canvas_a = frame.locator(grid_selector("a", C2, 10))
    canvas_b = frame.locator(grid_selector("b", C2, 10))
    canvas_a.wait_for()
    canvas_b.wait_for()
    over = frame.locator('.panel[data-run="b"] canvas.grid-overlay')
    frame.wait_for_function(
        "() => { const o = document.querySelector('.panel[data-run=\"b\"] canvas.grid-overlay');"
        " return o && o.dataset.rowNotes; }"
    )
    notes = json.loads(over.get_attribute("data-row-notes"))
    assert notes == ["cos 1.00"] * 6
    title = frame.locator('.panel[data-run="b"] .panel-title').inner_text()
    assert "aligned to a: mean cosine 1" in title and "input channels too" in title
    assert frame.locator("#align-toggle").is_checked()
    assert "Align to a" in frame.locator("label:has(#align-toggle)").inner_text()

    # the pixels: b's aligned grid is a's grid, up to the noise
    shape = (6, 8, 3, 3)
    drawn_a = tile_pixels(frame, canvas_a.element_handle(), shape)
    drawn_b = tile_pixels(frame, canvas_b.element_handle(), shape)
    assert np.abs(drawn_a - drawn_b).max() <= 2

    # hover: b's own indices, and the match
    g = geometry(canvas_b.element_handle())
    y, x = pixel_at(g, 2, 5, 1, 1)
    canvas_b.hover(position={"x": x, "y": y})
    tip = frame.locator('.panel[data-run="b"] .grid-tooltip')
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert f"filter {P2[2]}, channel {P1[5]}" in text
    assert "matched to a's filter 2, cosine 1" in text
    assert not page.console_problems


def test_unaligned_grids_differ_and_the_aligned_difference_is_noise(page, served):
    frame = open_view(page, served, "run=a&tag=c2/kernel&cmp=b&step=10")
    canvas_a = frame.locator(grid_selector("a", C2, 10))
    canvas_b = frame.locator(grid_selector("b", C2, 10))
    canvas_b.wait_for()
    canvas_a.wait_for()
    shape = (6, 8, 3, 3)
    drawn_a = tile_pixels(frame, canvas_a.element_handle(), shape)
    drawn_b = tile_pixels(frame, canvas_b.element_handle(), shape)
    assert np.abs(drawn_a - drawn_b).max() > 50  # without alignment: unrelated grids

    def diff_value(state: str) -> float:
        f = open_view(page, served, state)
        c = f.locator(grid_selector("b", C2, 10) + '[data-view="diff-run"]')
        c.wait_for()
        page.wait_for_timeout(300)
        g = geometry(c.element_handle())
        values = []
        for r, col in ((0, 0), (3, 4), (5, 7)):
            y, x = pixel_at(g, r, col, 1, 1)
            c.hover(position={"x": x, "y": y})
            tip = f.locator('.panel[data-run="b"] .grid-tooltip')
            tip.wait_for(state="visible")
            values.append(abs(float(tip.inner_text().split("x 1:")[1].split()[0])))
        return max(values)

    assert diff_value("run=a&tag=c2/kernel&cmp=b&diff=run&base=a&step=10") > 0.05
    assert diff_value("run=a&tag=c2/kernel&cmp=b&diff=run&base=a&align=1&step=10") < 10 * NOISE


def test_similarity_view_shows_cka_on_a_fixed_scale(page, served):
    frame = open_view(page, served, "run=a&tag=c1/kernel&cmp=b&step=10")
    frame.locator(grid_selector("b", C1, 10)).wait_for()
    frame.locator("#similarity summary").click()
    frame.locator("#similarity td.cka-cell").first.wait_for()
    tables = frame.locator("#similarity .similarity-table-wrap")
    assert tables.count() == 2
    assert "a vs b at each step" in tables.nth(1).inner_text()
    between = tables.nth(1).locator("td.cka-cell")
    values = [float(between.nth(i).get_attribute("data-value")) for i in range(between.count())]
    assert values == pytest.approx([1.0, 1.0])
    cell = between.first
    assert "CKA 1" in cell.get_attribute("title")
    settle = tables.nth(0).locator("td.cka-cell")
    assert [float(settle.nth(i).get_attribute("data-value")) for i in range(2)] == pytest.approx(
        [1.0, 1.0]  # scaling the maps by 1 + step leaves linear CKA at 1
    )
    # the colour scale is fixed: a value of 1 has the colour of 1 in the legend
    swatch = frame.locator("#similarity .cka-swatch").last
    assert cell.evaluate("e => getComputedStyle(e).backgroundColor") == swatch.evaluate(
        "e => getComputedStyle(e).backgroundColor"
    )
    assert not page.console_problems
