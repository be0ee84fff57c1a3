"""The Spectra view in a real TensorBoard and Debian's Chromium: the histogram and the
over-steps raster show the ``spectra`` routes' counts (every cell's pixels in the
sequential table's colour of its count), they follow the step, and the detail view's
badge shows the planted orientation and frequency of the filter."""

from __future__ import annotations

import json
import math
import urllib.parse

import numpy as np
import pytest
from browser_support import canvas_pixels, grid_selector, lut_of
from support import plugin_frame, served_json, tensorboard

from tb_convfilters import Writer

TAG = "conv1/kernel"
STEPS = (0, 5, 10)
N = 7
# filter j at step i: the wave vector WAVES[(j + i) % 6] in bins of 1/7, the last i filters
# (0, 1) instead: the coverage moves to low frequencies at 0 degrees
WAVES = [(0, 1), (1, 0), (1, 1), (2, -1), (0, 3), (3, 3)]
BANDS, BINS = 5, 8
CELL, GAP = 22, 1  # spectra.js HIST_CELL, HIST_GAP
RW, RH, RGAP, GUTTER = 5, 4, 2, 5  # RASTER_W, RASTER_H, RASTER_BAND_GAP, RASTER_GUTTER


def grating(ky, kx):
    y, x = np.mgrid[0:N, 0:N]
    return np.cos(2 * np.pi * (ky * y + kx * x) / N + 0.4)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("spectra") / "logs"
    with Writer(logdir / "a") as w:
        for i, step in enumerate(STEPS):
            waves = [WAVES[(j + i) % 6] if j < 6 - i else (0, 1) for j in range(6)]
            k = np.stack([grating(*w) for w in waves], -1)[:, :, None]
            w.kernel(TAG, np.concatenate([k, -0.5 * k], 2).astype(np.float32), step)
    with tensorboard(logdir, load_fast="false") as base:
        yield base


def colour(count, most, table):
    """colormap.js colorOf(count, 0, most): entry round(count / most * 256)."""
    if most <= 0:
        return tuple(table[128])
    return tuple(table[int(math.floor(count / most * 256 + 0.5))])


def open_view(page, base, state):
    page.goto(f"{base}/#convfilters&cf=" + urllib.parse.quote(state, safe=""))
    frame = plugin_frame(page)
    frame.wait_for_selector(grid_selector("a", TAG), timeout=30000)
    frame.click("#spectra summary")
    return frame


def check_histogram(frame, answer, table):
    hist = frame.wait_for_selector(f'#spectra-histogram[data-step="{answer["step"]}"]')
    assert json.loads(hist.get_attribute("data-counts")) == answer["counts"]
    px = canvas_pixels(frame, hist)
    most = max(max(row) for row in answer["counts"])
    for band in range(BANDS):
        for b in range(BINS):
            y = (BANDS - 1 - band) * (CELL + GAP) + CELL // 2
            x = b * (CELL + GAP) + CELL // 2
            want = colour(answer["counts"][band][b], most, table)
            assert tuple(px[y, x, :3]) == want and px[y, x, 3] == 255, (band, b)


def test_histogram_raster_and_badge_show_the_routes(served, page):
    frame = open_view(page, served, f"run=a&tag={TAG}&step=10")
    table = lut_of(frame, "sequential")
    last = served_json(served, "spectra", run="a", tag=TAG, step=10)
    check_histogram(frame, last, table)
    # planted: at step 10 (i = 2) filter j has WAVES[(j + 2) % 6]; 6 filters, none flat
    assert sum(map(sum, last["counts"])) == 6 and last["flat"] == 0

    over = served_json(served, "spectra_steps", run="a", tag=TAG)
    raster = frame.wait_for_selector('#spectra-raster[data-shown="2"]')
    assert json.loads(raster.get_attribute("data-steps")) == list(STEPS)
    px = canvas_pixels(frame, raster)
    most = max(max(max(r) for r in s["counts"]) for s in over["steps"])
    for i, s in enumerate(over["steps"]):
        for band in range(BANDS):
            for b in range(BINS):
                x = GUTTER + band * (BINS * RW + RGAP) + b * RW + RW // 2
                want = colour(s["counts"][band][b], most, table)
                assert tuple(px[i * RH + RH // 2, x, :3]) == want, (i, band, b)
    assert px[2 * RH + 1, 1, 3] == 255 and px[1, 1, 3] == 0  # the shown step is marked

    # the badge of filter 2 at step 10: WAVES[4] = (0, 3): 0 degrees, 3/7 cycles per pixel
    frame.click('#health-table tbody tr[data-filter="2"]')
    badge = frame.wait_for_selector("#detail-spectrum:not([hidden])")
    assert float(badge.get_attribute("data-orientation")) == 0.0
    assert float(badge.get_attribute("data-frequency")) == pytest.approx(3 / N)
    assert badge.inner_text() == "spectrum: 0° · 0.429 cycles/px"
    assert last["orientation"][2] == 0.0 and last["frequency"][2] == pytest.approx(3 / N)

    # the slider's step: the histogram follows, the raster marks step 0
    frame.evaluate(
        """() => { const s = document.querySelector('input[type=range]');
                   s.value = 0; s.dispatchEvent(new Event('input', {bubbles: true})); }"""
    )
    first = served_json(served, "spectra", run="a", tag=TAG, step=0)
    assert first["counts"] != last["counts"]
    check_histogram(frame, first, table)
    frame.wait_for_selector('#spectra-raster[data-shown="0"]')
    # filter 2 at step 0: WAVES[2] = (1, 1): 45 degrees
    frame.wait_for_selector('#detail-spectrum[data-orientation="45"]')
    bad = [p for p in page.console_problems if "Refused" in p or p.startswith("pageerror")]
    assert not bad, bad
