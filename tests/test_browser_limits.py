"""A tensor over --convfilters_max_tensor_mb: the dashboard offers, and draws, a partial view.

The limit is 2097 bytes (0.002 MiB). WIDE is 48 filters of 144 bytes (6912 bytes):
14 filters fit. DEEP is 2 filters of 32 channels x 100 bytes: even one filter is too
big, so the view also keeps only the first 20 input channels.
"""

from __future__ import annotations

import json
import urllib.parse

import numpy as np
import pytest
from browser_support import expected_diverging, geometry, grid_selector, lut_of, tile_pixels
from support import http_get, load_npy, plugin_frame, tensorboard

import tb_convfilters

WIDE = "wide/kernel"
DEEP = "deep/kernel"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("limits") / "logs"
    rng = np.random.default_rng(7)
    kernels = {
        WIDE: rng.normal(size=(3, 3, 4, 48)).astype(np.float32),
        DEEP: rng.normal(size=(5, 5, 32, 2)).astype(np.float32),
    }
    with tb_convfilters.Writer(logdir / "run") as w:
        for tag, k in kernels.items():
            w.kernel(tag, k, step=0, layout="HWIO")
    with tensorboard(logdir, extra=("--convfilters_max_tensor_mb=0.002",)) as base:
        yield base, kernels


def fetch(base: str, tag: str, **caps: int) -> tuple[int, bytes, dict]:
    query = urllib.parse.urlencode({"run": "run", "tag": tag, "step": 0, **caps})
    return http_get(f"{base}/data/plugin/convfilters/tensor?{query}")


def open_capped(page, base: str, tag: str, button: str):
    """Opens `tag`, checks the 413 message and its offer, clicks it; returns (frame, canvas)."""
    page.goto(f"{base}/#convfilters&cf=" + urllib.parse.quote(f"run=run&tag={tag}", safe=""))
    frame = plugin_frame(page)
    status = frame.locator('section.panel[data-run="run"] .panel-status')
    offer = status.locator("button.cap-offer")
    offer.wait_for(state="visible", timeout=30000)
    assert "over the limit" in status.inner_text()
    assert offer.inner_text() == button
    assert frame.locator(".panel-partial").is_hidden()
    offer.click()
    canvas = frame.wait_for_selector(grid_selector("run", tag, 0), timeout=30000)
    return frame, canvas


def test_413_offers_the_first_filters_that_fit(served, page):
    base, kernels = served
    status, body, _ = fetch(base, WIDE)
    assert status == 413, body[:300]
    status, body, headers = fetch(base, WIDE, max_filters=14)
    assert status == 200, body[:300]
    view = load_npy(body)
    np.testing.assert_array_equal(view, kernels[WIDE][..., :14])
    assert json.loads(headers["X-Convfilters-Header"])["filters"] == list(range(14))
    assert fetch(base, WIDE, max_filters=15)[0] == 413, "14 is the most that fits"

    frame, canvas = open_capped(page, base, WIDE, "Show the first 14 filters")
    partial = frame.locator(".panel-partial")
    assert partial.is_visible()
    assert "filters 0–13 of 48" in partial.inner_text()
    assert frame.locator(".panel-status button.cap-offer").count() == 0
    g = geometry(canvas)
    assert (g["rows"], g["cols"]) == (14, 4)
    tiles = np.transpose(view, (3, 2, 0, 1)).astype(np.float64)  # (O, I, H, W)
    got = tile_pixels(frame, canvas, tiles.shape)
    want = expected_diverging(tiles, lut_of(frame, "diverging"))
    assert np.abs(got - want).max() <= 1

    # the tooltip names the original filter of the last tile drawn
    x = 1 * g["pitch_x"] + g["pitch_x"] / 2 - g["pan_x"]
    y = 13 * g["pitch_y"] + g["pitch_y"] / 2 - g["pan_y"]
    canvas.hover(position={"x": x, "y": y})
    tip = frame.locator(".grid-tooltip").first
    tip.wait_for(state="visible")
    assert "filter 13, channel 1" in tip.inner_text()
    assert not [p for p in page.console_problems if p.startswith("pageerror")]


def test_413_caps_channels_when_one_filter_is_too_big(served, page):
    base, kernels = served
    status, body, _ = fetch(base, DEEP, max_filters=1)
    assert status == 413, "one filter alone is over the limit"
    status, body, _ = fetch(base, DEEP, max_filters=1, max_channels=20)
    assert status == 200, body[:300]
    view = load_npy(body)
    np.testing.assert_array_equal(view, kernels[DEEP][:, :, :20, :1])

    frame, canvas = open_capped(
        page, base, DEEP, "Show the first 1 filter (first 20 input channels)"
    )
    text = frame.locator(".panel-partial").inner_text()
    assert "filters 0–0 of 2" in text and "input channels 0–19 of 32" in text
    g = geometry(canvas)
    assert (g["rows"], g["cols"]) == (1, 20)
    tiles = np.transpose(view, (3, 2, 0, 1)).astype(np.float64)
    got = tile_pixels(frame, canvas, tiles.shape)
    assert np.abs(got - expected_diverging(tiles, lut_of(frame, "diverging"))).max() <= 1
