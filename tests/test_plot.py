"""tb_convfilters.plot colours every value as the dashboard's own JavaScript does.

The dashboard's colormap.js / normalize.js / layout.js run in node on the same
arrays and settings; their colour of every (cell, y, x) must equal the pixel of
plot.image, and of the Figure plot.grid renders. Both read frontend/static/display.json.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from tb_convfilters import Writer, plot  # noqa: E402
from tb_convfilters._dashboard import colormaps as display

STATIC = Path(__file__).resolve().parent.parent / "frontend" / "static"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")

# For every cell of the dashboard's grid: the colour of each tile pixel (null: separator).
DASHBOARD = """
import { readFileSync } from "node:fs";
import { canonicalize } from "%(static)s/layout.js";
import { cellLimits } from "%(static)s/normalize.js";
import { colorOf, isSigned, lut } from "%(static)s/colormap.js";
const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const values = Float32Array.from(job.values, (v) => v === null ? NaN : v);
const header = { kind: job.kind, layout: job.layout, shape: job.shape };
const grid = canonicalize(header, {});
const signed = isSigned(job.colormap);
const lim = cellLimits(grid, values, { mode: job.mode, p: job.p, signed });
const table = lut(job.colormap, { dark: job.dark });
const out = [];
for (let r = 0; r < grid.rows; r++) {
  for (let c = 0; c < grid.cols; c++) {
    const cell = r * grid.cols + c;
    if (cell >= grid.cells) continue;
    const tile = [];
    for (let y = 0; y < grid.th; y++) {
      for (let x = 0; x < grid.tw; x++) {
        const xo = grid.xOff[x];
        const v = values[grid.cellBase[cell] + grid.yOff[y] + xo];
        tile.push(xo < 0 ? null : colorOf(v, lim.lo[cell], lim.hi[cell], table));
      }
    }
    out.push({ r, c, tile });
  }
}
console.log(JSON.stringify({
  th: grid.th, tw: grid.tw, cols: grid.cols, blocks: grid.blocks, blockCols: grid.blockCols,
  cells: out,
}));
"""


def dashboard_colors(tmp_path, array, layout, kind, colormap, mode, p, dark=False):
    script = tmp_path / "dashboard.mjs"
    script.write_text(DASHBOARD % {"static": STATIC.as_uri()})
    job = tmp_path / "job.json"
    flat = [None if not np.isfinite(v) else float(v) for v in array.ravel()]
    job.write_text(json.dumps({"values": flat, "layout": layout, "kind": kind,
                               "shape": list(array.shape), "colormap": colormap,
                               "mode": mode, "p": p, "dark": dark}))
    done = subprocess.run([NODE, str(script), str(job)], capture_output=True, text=True,
                          check=True, timeout=120)
    return json.loads(done.stdout)


def check_same_pixels(dash, img, kind):
    """Every value's colour where the dashboard's grid puts it (a strip, or filter blocks)."""
    th, tw = dash["th"], dash["tw"]
    per_line = dash["blockCols"] if dash["blocks"] else 0
    rows = 1 + max(cell["r"] for cell in dash["cells"])
    assert plot.block_columns(kind, rows, dash["cols"], th, tw) == per_line
    compared = 0
    for cell in dash["cells"]:
        if per_line:
            gap = plot._BLOCK_GAP
            top = (cell["r"] // per_line) * (th + gap)
            left = (cell["r"] % per_line) * (dash["cols"] * (tw + 1) - 1 + gap)
            left += cell["c"] * (tw + 1)
        else:
            top, left = cell["r"] * (th + 1), cell["c"] * (tw + 1)
        for i, want in enumerate(cell["tile"]):
            y, x = divmod(i, tw)
            got = img[top + y, left + x]
            if want is None:
                assert got[3] == 0, (cell["r"], cell["c"], y, x)
                continue
            assert list(got) == [*want, 255], (cell["r"], cell["c"], y, x, list(got), want)
            compared += 1
    return compared


def kernel(shape, seed=0):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    a.flat[3] = np.nan
    a.flat[7] = np.inf
    a.flat[11] = 5.0  # an outlier beyond the percentile limits
    return a


@pytest.mark.parametrize(
    "layout,shape,kind",
    [
        ("HWIO", (3, 3, 4, 6), "kernel"),
        ("OIHW", (5, 2, 3, 3), "kernel"),
        ("DHWIO", (2, 3, 3, 2, 3), "kernel"),
        ("HWIM", (3, 3, 4, 2), "kernel"),
        ("IO", (7, 5), "kernel"),
        ("NHWC", (2, 5, 4, 7), "activation"),
        ("NCW", (1, 5, 9), "activation"),
    ],
)
@pytest.mark.parametrize("colormap,mode", [("diverging", "layer"), ("sequential", "filter"),
                                           ("grey", "tile"), ("diverging", "filter")])
def test_pixels_equal_the_dashboards_colours(tmp_path, layout, shape, kind, colormap, mode):
    array = kernel(shape, seed=len(layout) + len(mode))
    if kind == "activation":
        array = np.abs(array)
    p = 98.0
    dash = dashboard_colors(tmp_path, array, layout, kind, colormap, mode, p)
    img = plot.image(array, layout, colormap=colormap, scale=mode, percentile=p)
    shown = array[0] if kind == "activation" else array
    assert check_same_pixels(dash, img, kind) == shown.size
    # and the rendered Figure shows those colours at every value's centre
    fig = plot.grid(array, layout, colormap=colormap, scale=mode, percentile=p, pixels=6)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rendered = np.asarray(canvas.buffer_rgba())
    ax = fig.axes[0]
    h = rendered.shape[0]
    ys, xs = np.nonzero(img[..., 3] == 255)
    centres = ax.transData.transform(np.stack([xs, ys], axis=1).astype(float))
    for (cx, cy), y, x in zip(centres, ys, xs, strict=True):
        got = rendered[int(h - cy), int(cx)]
        assert list(got[:3]) == list(img[y, x, :3]), (y, x)


def test_dark_table_and_large_float32_layer(tmp_path):
    # >= 1024 float32 values: the dashboard takes percentiles from a bit histogram
    array = kernel((3, 3, 16, 32), seed=3)
    dash = dashboard_colors(tmp_path, array, "HWIO", "kernel", "diverging", "layer", 99.5,
                            dark=True)
    img = plot.image(array, "HWIO", dark=True)
    assert check_same_pixels(dash, img, "kernel") == array.size


def test_defaults_come_from_the_shared_settings():
    settings = json.loads((STATIC / "display.json").read_text())
    assert display.settings() == settings
    assert display.default_percentile() == settings["default_percentile"]
    for name in settings["colormaps"]:
        table = display.lut(name)
        assert table.shape == (settings["lut_size"], 3)
        assert list(table[0]) == settings["stops"][name][0]
        assert list(table[-1]) == settings["stops"][name][-1]


def test_grid_from_logs_reads_the_logged_tensor(tmp_path):
    array = kernel((3, 3, 2, 4))
    with Writer(str(tmp_path / "run")) as writer:
        writer.kernel("conv/kernel", np.zeros_like(array), 1, layout="HWIO")
        writer.kernel("conv/kernel", array, 2, layout="HWIO")
    fig = plot.grid_from_logs(str(tmp_path), "run", "conv/kernel", scale="filter")
    shown = fig.axes[0].images[0].get_array()
    assert np.array_equal(np.asarray(shown), plot.image(array, "HWIO", scale="filter"))
    assert "step 2" in fig.axes[0].get_title()
    first = plot.grid_from_logs(str(tmp_path), "run", "conv/kernel", step=1)
    assert np.asarray(first.axes[0].images[0].get_array())[0, 0, 3] == 255
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    with pytest.raises(LookupError, match="step 5"):
        plot.grid_from_logs(str(tmp_path), "run", "conv/kernel", step=5)


def test_bad_arguments_name_what_is_allowed():
    a = np.zeros((3, 3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="colormap='jet'.*diverging"):
        plot.grid(a, colormap="jet")
    with pytest.raises(ValueError, match="scale='steps'.*tile, filter, layer"):
        plot.grid(a, scale="steps")
    with pytest.raises(ValueError, match="does not match"):
        plot.grid(a, "OIW")
    with pytest.raises(ValueError, match="filters entries \\[9\\]"):
        plot.grid(a, filters=[0, 9])
    img = plot.image(a, filters=2)
    assert img.shape[0] == 2 * 4 - 1


def test_few_input_channels_draw_as_a_square_of_labelled_filter_blocks():
    conv1 = np.random.default_rng(1).normal(size=(3, 3, 1, 16)).astype(np.float32)
    img = plot.image(conv1)  # 16 blocks of one 3x3 tile, 4 x 4, blocks 3 px apart
    assert img.shape[:2] == (4 * 3 + 3 * 3, 4 * 3 + 3 * 3)
    fig = plot.grid(conv1, filters=[2, 5, 7, 11])
    assert [t.get_text() for t in fig.axes[0].texts] == ["2", "5", "7", "11"]
