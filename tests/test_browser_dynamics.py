"""The Dynamics view in a real TensorBoard and Debian's Chromium.

Planted with the Writer: every filter of conv1 moves by a known update ratio each logged
step, but filter 3 stays constant from step 3 on (the doctor's ``stalled``, first_step 3);
conv2 is logged at every other step. The test checks that every cell of the update-ratio
raster is the colour of the ``dynamics`` route's value on the documented log scale, that
the ``stalled`` finding is drawn at filter 3 and step 3, that clicking a cell moves the
step slider and opens that filter, that the rotation view's cells follow the ``rotation``
route (grey where a layer was not logged), and that the gradient norms logged with
``log_kernels(..., grads=...)`` are drawn on their scale.
"""

from __future__ import annotations

import json
import math
import urllib.parse

import numpy as np
import pytest
from browser_support import canvas_pixels, grid_selector, lut_of
from support import array, http_get, plugin_frame, served_json, tensorboard

from tb_convfilters import Writer

TAG, TAG2 = "conv1/kernel", "conv2/kernel"
STEPS = tuple(range(8))
FILTERS = 8
STALLED, STALL_FROM = 3, 3
RATES = [0.02 * (1 + f / 8) for f in range(FILTERS)]  # each filter's update ratio per step
STALLED_RGB = (0, 121, 107)  # findings.js PROBLEM_STYLE.stalled
MISSING = (160, 160, 160)
MAGENTA = (255, 0, 255)
RING = 2


def planted(rng, w, rates):
    """Each filter of `w` (.., O) moved by rates[f] * its norm in a random direction."""
    out = w.astype(np.float64).copy()
    for f, r in enumerate(rates):
        u = rng.normal(size=w.shape[:-1])
        out[..., f] += r * np.linalg.norm(w[..., f]) * u / np.linalg.norm(u)
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import torch

    from tb_convfilters.torch import log_kernels

    logdir = tmp_path_factory.mktemp("dynview") / "logs"
    rng = np.random.default_rng(5)
    w1 = rng.normal(size=(3, 3, 2, FILTERS)).astype(np.float32)
    w2 = rng.normal(size=(3, 3, FILTERS, 4)).astype(np.float32)
    with Writer(logdir / "a") as w:
        for step in STEPS:
            w.kernel(TAG, w1, step, layout="HWIO")
            if step % 2 == 0:
                w.kernel(TAG2, w2, step, layout="HWIO")
            w1 = planted(
                rng,
                w1,
                [0.0 if f == STALLED and step >= STALL_FROM else r for f, r in enumerate(RATES)],
            )
            w2 = planted(rng, w2, [0.05] * 4)
    # run "g": a PyTorch conv logged with gradients at steps 0 and 2, without at step 1
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3))
    with Writer(logdir / "g") as w:
        for step in range(3):
            grad = torch.from_numpy(rng.normal(size=(4, 2, 3, 3)).astype(np.float32)) * 10.0**step
            log_kernels(w, model, step, grads={"0": grad} if step != 1 else False)
    # run "bad": conv1's shape changed between its steps, so its dynamics cannot be computed
    with Writer(logdir / "bad") as w:
        for step, n in enumerate((8, 9)):
            w.kernel(TAG, rng.normal(size=(3, 3, 2, n)).astype(np.float32), step, layout="HWIO")
    with tensorboard(logdir, load_fast="false") as base:
        yield base


def entry(t):
    """colormap.js lutIndex of t in [0, 1]: Math.round(t * 256), clamped."""
    return 0 if t <= 0 else 256 if t >= 1 else int(math.floor(t * 256 + 0.5))


def ratio_colour(v, table):
    if not (v >= 0) or v == np.inf:
        return MAGENTA
    t = (np.clip(np.log10(np.float64(v)) if v > 0 else -np.inf, -6, 0) + 6) / 6
    return tuple(table[entry(t)])


def open_view(page, base, run, tag, step=None):
    state = f"run={run}&tag={tag}" + ("" if step is None else f"&step={step}")
    page.goto(f"{base}/#convfilters&cf=" + urllib.parse.quote(state, safe=""))
    frame = plugin_frame(page)
    frame.wait_for_selector(grid_selector(run, tag), timeout=30000)
    frame.click("#dynamics summary")
    return frame


def cell_centre(ds, row, col):
    cw, ch = int(ds["cw"]), int(ds["ch"])
    return int(ds["top"]) + row * ch + ch // 2, int(ds["left"]) + col * cw + cw // 2


def no_problems(page):
    bad = [p for p in page.console_problems if "Refused" in p or p.startswith("pageerror")]
    assert not bad, bad


def test_raster_findings_click_and_rotation_follow_the_routes(served, page):
    frame = open_view(page, served, "a", TAG, 7)
    table = lut_of(frame, "sequential")
    answer = served_json(served, "dynamics", run="a", tag=TAG)
    ratios = array(answer["update_ratio"])
    assert ratios.shape == (len(STEPS) - 1, FILTERS)
    # the planted ratios (float32 rounding aside); filter 3 exactly 0 from step 3
    moving = np.array(RATES)[None, :].repeat(len(STEPS) - 1, 0)
    moving[STALL_FROM:, STALLED] = 0
    np.testing.assert_allclose(ratios, moving, rtol=1e-3, atol=1e-7)
    assert (ratios[STALL_FROM:, STALLED] == 0).all()

    # findings are drawn once they arrive
    canvas = frame.wait_for_selector(
        "#dynamics-ratio[data-marks]:not([data-marks='[]'])", timeout=30000
    )
    ds = canvas.evaluate("c => Object.assign({}, c.dataset)")
    assert json.loads(ds["steps"]) == list(STEPS) and json.loads(ds["filters"]) == answer["filters"]
    assert (int(ds["rows"]), int(ds["cols"])) == (FILTERS, len(STEPS) - 1)
    px = canvas_pixels(frame, canvas)
    for row in range(FILTERS):
        for col in range(len(STEPS) - 1):
            y, x = cell_centre(ds, row, col)
            want = ratio_colour(ratios[col, row], table)
            assert tuple(px[y, x, :3]) == want and px[y, x, 3] == 255, (row, col)

    # the doctor's stalled finding: filter 3, its first_step 3, drawn at (row 3, column 3)
    stalled = [
        f
        for f in served_json(served, "findings", run="a")["findings"]
        if f["tag"] == TAG and f["problem"] == "stalled"
    ]
    assert [(f["filter"], f["first_step"]) for f in stalled] == [(STALLED, STALL_FROM)]
    marks = json.loads(ds["marks"])
    assert {
        "problem": "stalled",
        "filter": STALLED,
        "row": STALLED,
        "col": STALL_FROM,
        "step": STALL_FROM,
    } in marks
    cw, ch, left, top = (int(ds[k]) for k in ("cw", "ch", "left", "top"))
    x0, y0 = left + STALL_FROM * cw, top + STALLED * ch
    for y, x in [
        (y0 - 1, x0 + 1),
        (y0 + ch, x0 + 1),
        (y0 + 1, x0 - 1),
        (y0 + 1, x0 + cw + RING - 1),
        (y0 + 1, 0),
    ]:  # the ring on each side and the left gutter's mark
        assert tuple(px[y, x, :3]) == STALLED_RGB, (y, x)
    assert tuple(px[y0 + ch // 2, x0 + cw // 2, :3]) == tuple(table[0])  # a ratio of 0: darkest
    chip = frame.locator('#dynamics-markers .dynamics-marker[data-problem="stalled"]')
    assert chip.get_attribute("data-filter") == str(STALLED)
    assert "filter 3 from step 3" in chip.inner_text()
    # the shown step (7) is the last: no interval column marked; the colour bar's band is drawn
    assert ds["shown"] == "7"
    assert frame.locator("#dynamics-grad-note").inner_text().startswith("No gradient norms logged")

    # hover names the filter, the interval and the value
    y, x = cell_centre(ds, 5, 2)
    canvas.hover(position={"x": x, "y": y})
    title = canvas.get_attribute("title")
    assert title.startswith("filter 5, step 2 → 3: update ratio ") and "0.03" in title

    # a click on (filter 5, interval 2 -> 3): the slider goes to step 2, filter 5 opens
    canvas.click(position={"x": x, "y": y})
    frame.wait_for_selector(grid_selector("a", TAG, 2))
    assert frame.locator("#step-slider").input_value() == "2"
    frame.wait_for_function("() => location.hash.includes('sel=5')")
    assert frame.locator("#detail .detail-title").inner_text() == "filter 5"
    frame.wait_for_selector('#dynamics-ratio[data-shown="2"]')

    # rotation: rows conv1, conv2; a column per step; grey where conv2 was not logged
    rot = served_json(served, "rotation", run="a")
    values = array(rot["rotation"])
    assert rot["tags"] == [TAG, TAG2] and rot["steps"] == list(STEPS)
    rcanvas = frame.wait_for_selector("#dynamics-rotation")
    rds = rcanvas.evaluate("c => Object.assign({}, c.dataset)")
    assert json.loads(rds["tags"]) == rot["tags"]
    rpx = canvas_pixels(frame, rcanvas)
    for row in range(2):
        for col in range(len(STEPS)):
            y, x = cell_centre(rds, row, col)
            v = values[row, col]
            want = MISSING if np.isnan(v) else tuple(table[entry(float(v))])
            assert tuple(rpx[y, x, :3]) == want, (row, col)
    assert np.isnan(values[1, 1]) and not np.isnan(values[1, 2]) and values[0, 7] > 0
    # a click on (conv2, step 4) shows conv2 at step 4
    y, x = cell_centre(rds, 1, 4)
    rcanvas.click(position={"x": x, "y": y})
    frame.wait_for_selector(grid_selector("a", TAG2, 4))
    assert frame.locator("#tag-select").input_value() == TAG2
    no_problems(page)


def test_gradient_norms_are_drawn_where_logged(served, page):
    tag = "0/weight"
    frame = open_view(page, served, "g", tag)
    table = lut_of(frame, "sequential")
    answer = served_json(served, "dynamics", run="g", tag=tag)
    grads = array(answer["grad_norm"])
    assert grads.shape == (3, 4) and np.isnan(grads[1]).all()
    canvas = frame.wait_for_selector("#dynamics-grad")
    ds = canvas.evaluate("c => Object.assign({}, c.dataset)")
    logs = np.log10(grads[np.isfinite(grads)].astype(np.float64))
    lo, hi = logs.min(), logs.max()
    assert json.loads(ds["limits"]) == pytest.approx([lo, hi])
    px = canvas_pixels(frame, canvas)
    for row in range(4):
        for col in range(3):
            y, x = cell_centre(ds, row, col)
            v = grads[col, row]
            want = (
                MISSING
                if np.isnan(v)
                else tuple(table[entry((np.log10(np.float64(v)) - lo) / (hi - lo))])
            )
            assert tuple(px[y, x, :3]) == want, (row, col)
    no_problems(page)


def test_a_series_the_routes_cannot_read_is_said_not_drawn(served, page):
    status, body, _ = http_get(f"{served}/data/plugin/convfilters/dynamics?run=bad&tag={TAG}")
    assert status == 422, body[:300]
    error = json.loads(body)["error"]
    frame = open_view(page, served, "bad", TAG)
    frame.wait_for_function(
        "() => document.querySelector('#dynamics-status').textContent.includes('Rotation of bad')"
    )
    text = frame.locator("#dynamics-status").inner_text()
    assert f"Dynamics of {TAG}: {error}" in text
    assert frame.locator("#dynamics-ratio-part canvas").count() == 0
    assert frame.locator("#dynamics-rotation-part canvas").count() == 0
    frame.wait_for_selector(grid_selector("bad", TAG, 1))  # the grid still shows the steps
    no_problems(page)
