"""tb-convfilters animate / plot.animate: one frame per logged step, coloured as the tab.

Each value's colour is recomputed by the dashboard's own JavaScript (normalize.js
``limitsFromStats`` over per-filter extremes recomputed here from the logged arrays,
colormap.js ``colorOf`` with display.json's table) and compared with the pixel at the
centre of the value's square in the frames read back with imageio: GIF exactly, MP4 and
WebM (yuv420p) within `VIDEO_TOLERANCE` per channel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
iio = pytest.importorskip("imageio.v3")

from tb_convfilters import Writer, cli, plot  # noqa: E402
from tb_convfilters.plot import animation, video_files  # noqa: E402

STATIC = Path(__file__).resolve().parent.parent / "frontend" / "static"
NODE = shutil.which("node")
TAG = "conv/kernel"
STEPS = [0, 10, 20, 35]
SHAPE = (3, 3, 4, 5)  # HWIO: 5 filters of 4 channels, a strip (more than 3 channels)
# yuv420p: colour at half resolution and 8-bit YUV rounding, near-lossless encoders (crf 10):
# measured at most 4 (MP4) and 5 (WebM) at the values' centres; 8 leaves room for other builds
VIDEO_TOLERANCE = 8

TAB = """
import { readFileSync } from "node:fs";
import { limitsFromStats } from "%(static)s/normalize.js";
import { colorOf, isSigned, lut } from "%(static)s/colormap.js";
const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const signed = isSigned(job.colormap);
const fixed = limitsFromStats(job.stats, job.p, signed);
const lo = Math.fround(fixed[0]);
const hi = Math.fround(fixed[1]);
const table = lut(job.colormap, {});
const color = (v) => colorOf(v === null ? NaN : v, lo, hi, table);
const colors = job.steps.map((vals) => vals.map(color));
console.log(JSON.stringify({ fixed: [lo, hi], colors }));
"""


def planted(seed=0):
    """The kernel at each step: growing, one NaN and one Inf, an outlier at the last step."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(SHAPE).astype(np.float32) * 0.1
    out = {}
    for k, step in enumerate(STEPS):
        a = base * (1 + k) + rng.standard_normal(SHAPE).astype(np.float32) * 0.02
        out[step] = a
    out[STEPS[1]].flat[5] = np.nan
    out[STEPS[2]].flat[8] = np.inf
    out[STEPS[-1]].flat[13] = 3.0
    return out


def write_run(logdir, run, arrays):
    with Writer(os.path.join(logdir, run)) as w:
        for step, a in arrays.items():
            w.kernel(TAG, a, step, layout="HWIO")


def tab_colors(tmp_path, arrays, colormap="diverging"):
    """The tab's fixed-over-steps colour of every value at every step (node)."""
    stats_rows = []
    for a in arrays.values():
        rows = np.moveaxis(a, 3, 0).reshape(a.shape[3], -1).astype(np.float64)
        rows = np.where(np.isfinite(rows), rows, np.nan)
        stats_rows.append({"values": [[float(np.nanmin(r)), float(np.nanmax(r))] for r in rows]})
    job = {
        "stats": [{"names": ["min", "max"], "steps": stats_rows}],
        "p": 99.5,
        "colormap": colormap,
        "steps": [
            [None if not np.isfinite(v) else float(v) for v in a.ravel()] for a in arrays.values()
        ],
    }
    script = tmp_path / "tab.mjs"
    script.write_text(TAB % {"static": STATIC.as_uri()})
    (tmp_path / "job.json").write_text(json.dumps(job))
    done = subprocess.run(
        [NODE, str(script), str(tmp_path / "job.json")], capture_output=True, text=True, check=True
    )
    answer = json.loads(done.stdout)
    colors = np.array(answer["colors"], dtype=np.int64).reshape(len(arrays), *SHAPE, 3)
    return colors, answer["fixed"]


def centres(frames, panel=0):
    """Pixel (row, col) of the centre of each value (h, w, i, o)'s square in a frame."""
    top, left = frames.origins[panel]
    s = frames.scale
    h, w, i, o = np.meshgrid(*map(np.arange, SHAPE), indexing="ij")
    # the strip: grid row o, column i, tiles of 3 x 3 one value apart
    y = top + s * (o * (SHAPE[0] + 1) + h) + s // 2
    x = left + s * (i * (SHAPE[1] + 1) + w) + s // 2
    return y, x


def read_frames(path):
    if path.suffix == ".gif":
        return iio.imread(path, index=None)[..., :3]
    return np.stack(list(iio.imiter(path, plugin="FFMPEG")))


@pytest.mark.skipif(NODE is None, reason="node is not installed")
@pytest.mark.parametrize("ext", [".gif", ".mp4", ".webm"])
def test_one_frame_per_step_in_the_tabs_colours(tmp_path, ext):
    arrays = planted()
    write_run(str(tmp_path / "logs"), "a", arrays)
    out = tmp_path / f"evolution{ext}"
    assert cli.main(["animate", str(tmp_path / "logs"), "--run", "a", "--tag", TAG,
                     "--out", str(out), "--quiet"]) == 0
    got = read_frames(out)
    assert len(got) == len(STEPS)
    want, fixed = tab_colors(tmp_path, arrays)
    shown = animation.frames(str(tmp_path / "logs"), "a", TAG)
    assert shown.limits == pytest.approx(tuple(fixed), rel=0, abs=0)
    assert got.shape[1:3] == shown.size and shown.size[0] % 2 == 0 == shown.size[1] % 2
    y, x = centres(shown)
    for k in range(len(STEPS)):
        pixels = got[k][y, x].astype(np.int64)
        if ext == ".gif":
            assert np.array_equal(pixels, want[k]), k
            assert np.array_equal(got[k], shown[k])  # the whole frame, label included
        else:
            assert np.abs(pixels - want[k]).max() <= VIDEO_TOLERANCE, k
    # one scale for all frames: the first step's small weights are pale, not full colour
    assert np.abs(want[0].astype(int) - 247).max() < np.abs(want[-1].astype(int) - 247).max()


def test_per_frame_scaling_and_the_step_label(tmp_path):
    arrays = planted()
    write_run(str(tmp_path / "logs"), "a", arrays)
    shown = animation.frames(str(tmp_path / "logs"), "a", TAG, norm="layer", scale=3)
    assert shown.limits is None and shown.scale == 3
    top, left = shown.origins[0]
    for k, a in enumerate(arrays.values()):
        img = plot.image(a, "HWIO", scale="layer")
        big = img.repeat(3, 0).repeat(3, 1)
        region = shown[k][top : top + big.shape[0], left : left + big.shape[1]]
        assert np.array_equal(region[big[..., 3] > 0], big[big[..., 3] > 0][:, :3])
    # the label strip differs between steps (its text), the background is the tab's
    assert not np.array_equal(shown[0][: top - 16], shown[1][: top - 16])
    assert tuple(shown[0][0, 0]) == animation.BACKGROUND[False]


def test_side_by_side_with_an_aligned_run_shows_the_matched_order(tmp_path):
    arrays = planted()
    perm = np.array([3, 0, 4, 1, 2])
    logdir = str(tmp_path / "logs")
    write_run(logdir, "a", arrays)
    write_run(logdir, "b", {s: np.ascontiguousarray(a[..., perm]) for s, a in arrays.items()})
    out = tmp_path / "both.gif"
    assert cli.main(["animate", logdir, "--run", "a", "--run", "b", "--align", "--tag", TAG,
                     "--out", str(out), "--quiet", "--scale", "4"]) == 0
    got = iio.imread(out, index=None)[..., :3]
    aligned = animation.frames(logdir, ["a", "b"], TAG, align=True, scale=4)
    plain = animation.frames(logdir, ["a", "b"], TAG, scale=4)
    assert aligned.norm == "runs" and len(got) == len(STEPS)
    ya, xa = centres(aligned, 0)
    yb, xb = centres(aligned, 1)
    for k in range(len(STEPS)):
        assert np.array_equal(got[k], aligned[k])
        assert np.array_equal(got[k][yb, xb], got[k][ya, xa])  # b's filter i is a's filter i
        unaligned = plain[k]
        assert not np.array_equal(unaligned[yb, xb], unaligned[ya, xa])
        assert np.array_equal(unaligned[yb, xb], unaligned[ya, xa][..., perm, :])


def test_plot_animate_is_a_funcanimation_of_the_same_frames(tmp_path):
    from matplotlib.animation import FuncAnimation

    write_run(str(tmp_path / "logs"), "a", planted())
    anim = plot.animate(str(tmp_path / "logs"), "a", TAG, fps=2)
    assert isinstance(anim, FuncAnimation)
    html = anim.to_jshtml()
    assert html.count("frames[") >= len(STEPS)
    shown = animation.frames(str(tmp_path / "logs"), "a", TAG)
    for k in range(len(STEPS)):
        anim._func(k)
        assert np.array_equal(np.asarray(anim._fig.axes[0].images[0].get_array()), shown[k])


def test_errors_name_the_bad_value_and_what_exists(tmp_path, monkeypatch, capsys):
    logdir = str(tmp_path / "logs")
    write_run(logdir, "a", planted())
    with Writer(os.path.join(logdir, "a")) as w:
        w.activation("conv/act", np.zeros((1, 4, 4, 2), np.float32), 0)

    def fails(*args):
        assert cli.main(["animate", logdir, *args, "--quiet"]) == 2
        return capsys.readouterr().err

    out = str(tmp_path / "x.gif")
    assert "run 'nope' not found" in fails("--run", "nope", "--tag", TAG, "--out", out)
    assert "runs: a" in fails("--run", "nope", "--tag", TAG, "--out", out)
    err = fails("--run", "a", "--tag", "conv/nope", "--out", out)
    assert "tag 'conv/nope' not found in run 'a'" in err and "conv/act, conv/kernel" in err
    err = fails("--run", "a", "--tag", TAG, "--out", str(tmp_path / "x.avi"))
    assert "'.avi'" in err and ".gif, .mp4, .webm" in err
    assert "--steps" in fails("--run", "a", "--tag", TAG, "--out", out, "--steps", "x")
    err = fails("--run", "a", "--tag", TAG, "--out", out, "--steps", "10,11")
    assert "steps [11]" in err and "0" in err and "35" in err
    assert "fps=0" in fails("--run", "a", "--tag", TAG, "--out", out, "--fps", "0")
    err = fails("--run", "a", "--tag", TAG, "--out", str(tmp_path / "x.mp4"), "--scale", "1")
    assert "scale=1" in err and "at least 2" in err
    assert "second run" in fails("--run", "a", "--tag", TAG, "--out", out, "--align")
    assert "sample=3" in fails("--run", "a", "--tag", "conv/act", "--out", out, "--sample", "3")
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    err = fails("--run", "a", "--tag", TAG, "--out", str(tmp_path / "x.webm"))
    assert 'pip install "tb-convfilters[video]"' in err
    assert not list(tmp_path.glob("x*"))  # nothing written by a failed call
    # --steps picks logged steps; ranges are inclusive
    assert cli.main(["animate", logdir, "--run", "a", "--tag", TAG, "--out", out, "--quiet",
                     "--steps", "10:20,35"]) == 0
    assert len(iio.imread(out, index=None)) == 3


@pytest.mark.parametrize("fault", ["removed", "truncated"])
def test_an_event_file_gone_while_writing_leaves_no_partial_file(tmp_path, fault):
    logdir = tmp_path / "logs"
    write_run(str(logdir), "a", planted())
    shown = animation.frames(str(logdir), "a", TAG)
    (events,) = (logdir / "a").glob("*tfevents*")
    if fault == "removed":
        events.unlink()
    else:
        events.write_bytes(events.read_bytes()[: events.stat().st_size // 2])
    out = tmp_path / "e.gif"
    with pytest.raises((OSError, ValueError)):
        video_files.write(iter(shown), out, "gif", shown.size, 4, len(shown))
    assert not list(tmp_path.glob("e*"))


def test_a_frame_of_more_than_256_colours_keeps_the_protected_ones_exact():
    rng = np.random.default_rng(1)
    frame = np.zeros((40, 40, 3), np.uint8)
    table = plot.colormaps.lut("diverging")
    frame[:] = table[rng.integers(0, len(table), (40, 40))]
    frame[:2] = (255, 255, 255)
    frame[2, :3] = (255, 0, 255)  # NaN: 3 pixels, rarer than most table entries
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 256
    indices, palette = video_files.gif_palette(frame, keep=[(255, 255, 255), (255, 0, 255)])
    assert len(palette) == 256
    back = palette[indices].astype(int)
    assert np.array_equal(back[2, :3], frame[2, :3]) and np.array_equal(back[:2], frame[:2])
    # the dropped table entries take their nearest kept neighbour: a few units off
    assert np.abs(back - frame).max() <= 6
    small = frame[5:10, 5:10]
    i2, p2 = video_files.gif_palette(small)
    assert np.array_equal(p2[i2], small)
