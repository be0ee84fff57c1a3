"""Walking skeleton of the Filters dashboard in a real TensorBoard and Chromium.

Kernels are written with the real Writer; TensorBoard serves them; the test
reads back the dashboard's canvas pixels and checks them against the tensor
the server hands out for the exact step, coloured independently here.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from browser_support import (
    canvas_pixels,
    expected_diverging,
    grid_selector,
    lut_of,
    tile_pixels,
)
from support import http_get, load_npy, plugin_frame, tensorboard

import tb_convfilters

RUN = "train"
TAG = "conv1/kernel"
STEPS = (0, 3, 7)


@pytest.fixture(scope="module", params=["false", "true"], ids=["load_fast=false", "load_fast=true"])
def served(request, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("skeleton") / "logs"
    rng = np.random.default_rng(5)
    with tb_convfilters.Writer(logdir / RUN) as w:
        for step in STEPS:
            # HWIO: 3x3 tiles, 2 input channels, 4 filters; values differ at every step
            w.kernel(
                TAG, rng.normal(size=(3, 3, 2, 4)).astype(np.float32), step=step, layout="HWIO"
            )
    with tensorboard(logdir, load_fast=request.param) as base:
        yield base


def served_tensor(base: str, step: int) -> np.ndarray:
    status, body, headers = http_get(
        f"{base}/data/plugin/convfilters/tensor?run={RUN}&tag=conv1%2Fkernel&step={step}"
    )
    assert status == 200, body[:300]
    assert headers["X-Convfilters-Step"] == str(step)
    assert json.loads(headers["X-Convfilters-Header"])["layout"] == "HWIO"
    return load_npy(body)


def test_grid_renders_and_slider_moves_to_exact_steps(served, page):
    page.goto(f"{served}/#convfilters")
    frame = plugin_frame(page)
    canvas = frame.wait_for_selector(grid_selector(RUN, TAG, STEPS[-1]), timeout=30000)
    assert canvas.get_attribute("data-run") == RUN
    table = lut_of(frame, "diverging")

    pixels = canvas_pixels(frame, canvas)
    assert len({tuple(p) for p in pixels.reshape(-1, 4)}) > 10, "the grid is blank"

    slider = frame.locator("#step-slider")
    assert slider.get_attribute("max") == str(len(STEPS) - 1)
    slider.focus()
    for index in (1, 0):
        slider.press("ArrowLeft")
        step = STEPS[index]
        frame.wait_for_selector(grid_selector(RUN, TAG, step), timeout=15000)
        assert frame.locator("#step-label").inner_text().startswith(str(step))
        kernel = served_tensor(served, step)  # HWIO
        # canonical grid: rows = filters (O), cols = input channels (I), tiles H x W
        tiles = np.transpose(kernel, (3, 2, 0, 1))
        got = tile_pixels(frame, canvas, tiles.shape)
        want = expected_diverging(tiles, table, percentile=99.5)
        # nearest table entry of every drawn pixel vs the entry the served value maps to
        assert np.abs(got - want).max() <= 1, (got, want)

    assert not [
        p
        for p in page.console_problems
        if "Content Security Policy" in p or "Refused to" in p or p.startswith("pageerror")
    ], page.console_problems


def test_empty_logdir_shows_guidance_then_reload_shows_new_filters(tmp_path, page):
    logdir = tmp_path / "logs"
    (logdir / "fresh").mkdir(parents=True)
    with tensorboard(logdir, load_fast="false") as base:
        page.goto(f"{base}/#convfilters")
        frame = plugin_frame(page)
        empty = frame.wait_for_selector("#empty", timeout=30000)
        assert "No filters logged yet" in empty.inner_text() and "README" in empty.inner_text()
        with tb_convfilters.Writer(logdir / "fresh") as w:
            w.kernel("late/kernel", np.ones((1, 1, 2, 2), np.float32), step=4, layout="HWIO")

        def reloaded():  # TensorBoard re-reads the logdir every second (--reload_interval=1)
            frame.locator("#reload").click()
            return frame.query_selector(grid_selector("fresh", "late/kernel", 4))

        deadline = time.monotonic() + 30
        while not reloaded():
            assert time.monotonic() < deadline, "the new kernel never appeared"
            page.wait_for_timeout(500)
        assert frame.query_selector("#empty") is None
