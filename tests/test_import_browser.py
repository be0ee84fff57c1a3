"""A folder of PyTorch checkpoints imported with ``tb-convfilters import``, shown by a real
TensorBoard in Debian's Chromium: the step slider holds the imported steps, and the kernel
grid draws the saved weights (OIHW: a row per output filter, a tile per input channel)."""

from __future__ import annotations

import urllib.parse

import numpy as np
from browser_support import expected_diverging, grid_selector, lut_of, tile_pixels
from support import plugin_frame, tensorboard

from tb_convfilters import cli

TAG = "conv1/weight"
PLANTED = (2, 1, 0, 2)  # (filter, input channel, row, column) of the planted weight


def test_imported_checkpoints_are_drawn_step_by_step(tmp_path, page):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(3, 4, 3))
    folder = tmp_path / "ckpts"
    folder.mkdir()
    saved = {}
    for epoch in (10, 20, 30):
        with torch.no_grad():
            model.conv1.weight.mul_(0.9)
            # twice the largest other weight: it sets the colour scale but leaves the rest
            # spread over the table
            model.conv1.weight[PLANTED] = 0
            model.conv1.weight[PLANTED] = 2 * model.conv1.weight.abs().max()
        torch.save(model.state_dict(), folder / f"epoch_{epoch}.pt")
        saved[epoch] = model.conv1.weight.detach().numpy().copy()
    logdir = tmp_path / "logs"
    assert cli.main(["import", str(folder), "--logdir", str(logdir), "--quiet"]) == 0

    with tensorboard(logdir) as base:
        state = urllib.parse.quote(f"run=ckpts&tag={TAG}&step=10", safe="")
        page.goto(f"{base}/#convfilters&cf={state}")
        frame = plugin_frame(page)
        canvas = frame.wait_for_selector(grid_selector("ckpts", TAG, 10), timeout=30000)
        slider = frame.locator("#step-slider")
        assert slider.get_attribute("max") == "2"  # three imported steps
        table = lut_of(frame, "diverging")
        top = len(table) - 1
        for position, epoch in enumerate((10, 20, 30)):
            slider.fill(str(position))
            frame.wait_for_selector(grid_selector("ckpts", TAG, epoch))
            assert str(epoch) in frame.locator("#step-label").inner_text()
            tiles = saved[epoch].astype(np.float64)  # OIHW is (rows, cols, H, W) already
            drawn = tile_pixels(frame, canvas, tiles.shape)
            assert np.abs(drawn - expected_diverging(tiles, table)).max() <= 1, epoch
            assert drawn[PLANTED] == top, "the planted weight is the top colour"
        assert not [p for p in page.console_problems if p.startswith("pageerror")]
