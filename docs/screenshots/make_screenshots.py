"""Regenerates the README screenshots from a real TensorBoard and Debian's Chromium.

    .venv/bin/python docs/screenshots/make_screenshots.py [NAME ...]

Logs synthetic but filter-like data (oriented Gabor kernels sharpening out of
noise over training steps, their feature maps, a second layer, a compared run,
a run with planted problems for the filter doctor, patterns of a layer, the
planted bars' dataset examples, a small PyTorch CNN's training dynamics with a stalled
filter),
starts ``tensorboard`` on it and saves one PNG per main view next to this file
(only the named ones, e.g. ``doctor patterns``, when names are given).
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np

import tb_convfilters

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
from support import CHROMIUM, CHROMIUM_ARGS, plugin_frame, tensorboard  # noqa: E402
from test_browser_examples import FIELD, KERNEL, bars, sobel  # noqa: E402

STEPS = (0, 100, 200, 400, 800)


def gabor_bank(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3, n) HWIO kernels: oriented stripes, colour-tuned, plus a few blobs."""
    y, x = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    out = np.zeros((size, size, 3, n), np.float32)
    for f in range(n):
        theta = rng.uniform(0, np.pi)
        freq = rng.uniform(1.5, 4)
        phase = rng.uniform(0, 2 * np.pi)
        u = x * np.cos(theta) + y * np.sin(theta)
        envelope = np.exp(-(x**2 + y**2) / 0.5)
        pattern = np.cos(2 * np.pi * freq * u / 2 + phase) * envelope
        colour = rng.normal(size=3)
        colour /= np.linalg.norm(colour)
        out[:, :, :, f] = pattern[:, :, None] * colour * 0.4
    return out


def correlate(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """NHWC 'valid' correlation of images with an HWIO kernel, then ReLU."""
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(images, (kh, kw), axis=(1, 2))
    return np.maximum(np.einsum("nhwcij,ijco->nhwo", windows, kernel), 0).astype(np.float32)


def sick_run(logdir: Path) -> None:
    """A run with planted problems: dead, duplicate, mirrored, exploding filters, a frozen layer."""
    r = np.random.default_rng(3)
    target = gabor_bank(16, 7, r)
    noise = r.normal(scale=0.3, size=target.shape).astype(np.float32)
    frozen = r.normal(scale=0.15, size=(3, 3, 16, 32)).astype(np.float32)
    images = r.normal(scale=0.5, size=(512, 20, 20, 3)).astype(np.float32)
    with tb_convfilters.Writer(logdir / "sick") as w:
        for i, step in enumerate(STEPS):
            a = 1 - np.exp(-i / 1.2)
            k = (a * target + (1 - a) * noise).astype(np.float32)
            k[..., 4] = 0  # dead
            k[..., 9] = k[..., 2] * 0.8  # duplicate of 2
            k[..., 13] = -k[..., 6]  # mirror of 6
            k[..., 11] *= 3.0**i  # exploding
            w.kernel("conv1/kernel", k, step=step, layout="HWIO")
            w.kernel("conv2/kernel", frozen, step=step, layout="HWIO")  # never trained
            # firing judged on 512 inputs (the dead filter 4 never fires), 4 maps stored
            w.activation("conv1/activation", correlate(images, k), step=step, max_samples=4)


def patterns_run(logdir: Path) -> None:
    """A layer's kernels and patterns of some of its filters (the same Gabors at 48 x 48)."""
    kernels = gabor_bank(16, 7, np.random.default_rng(5))
    big = gabor_bank(16, 48, np.random.default_rng(5))
    kept = [0, 1, 2, 3, 5, 6, 8, 10, 11, 12, 14, 15]
    images = np.moveaxis(big[..., kept], -1, 0)
    images = np.clip(0.5 + images / (2.2 * np.abs(images).max()), 0, 1).astype(np.float32)
    with tb_convfilters.Writer(logdir / "vis") as w:
        w.kernel("conv1/kernel", kernels, step=800, layout="HWIO")
        w.patterns(
            "conv1/pattern",
            images,
            step=800,
            filters=kept,
            description="Patterns: the input each filter responds to most",
        )


def examples_run(logdir: Path) -> None:
    """The planted bars: Sobel-x and Sobel-y (the kernel `sobel/kernel`) over images holding
    one thin bar each, with their dataset examples (the vertical bars top Sobel-x, the
    horizontal ones Sobel-y)."""
    x = bars(n=48, size=20, seed=3)
    with tb_convfilters.Writer(logdir / "bars") as w:
        w.kernel("sobel/kernel", KERNEL, 0, layout="HWIO")
        w.activation("sobel/activation", sobel(x), 0, inputs=x, examples=9, receptive_field=FIELD)


def dynamics_run(logdir: Path) -> None:
    """30 logged steps of a small PyTorch CNN (kernels, gradient norms, optimizer updates):
    updates shrinking as the learning rate decays, filter 17 of conv2 stalled from step
    1200, filter 40 with one exploding update at step 2000."""
    import torch

    from tb_convfilters.torch import log_kernels

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 32, 5)
            self.conv2 = torch.nn.Conv2d(32, 64, 3)

    r = np.random.default_rng(11)
    net = Net()
    targets = {
        name: r.normal(size=c.weight.shape) * float(c.weight.detach().abs().mean()) * 2
        for name, c in (("conv1", net.conv1), ("conv2", net.conv2))
    }
    with tb_convfilters.Writer(logdir / "dynamics") as w:
        for t in range(30):
            step = 100 * t
            grads = {}
            for name, conv in (("conv1", net.conv1), ("conv2", net.conv2)):
                weight = conv.weight.detach().numpy()
                n = weight.shape[0]
                rate = (
                    (0.2 if name == "conv1" else 0.08)
                    * 0.88**t
                    * np.exp(r.normal(scale=0.3, size=n))
                )
                if name == "conv2":
                    rate[17] = 0.0 if t >= 12 else rate[17]
                    rate[40] *= 30 if t == 20 else 1
                g = r.normal(size=weight.shape) * (rate * 4)[:, None, None, None]
                if name == "conv2" and t >= 12:
                    g[17] *= 1e-4  # no gradient reaches it
                grads[name] = torch.from_numpy(g.astype(np.float32))
                log_kernels(w, net, step, modules=[name], grads={name: grads[name]}, updates=step)
                norms = np.linalg.norm(weight.reshape(n, -1), axis=1)
                # each filter heads for its own target (plus noise): layers rotate, then settle
                u = targets[name] - weight + 0.3 * r.normal(size=weight.shape) * norms.mean()
                u /= np.linalg.norm(u.reshape(n, -1), axis=1)[:, None, None, None]
                with torch.no_grad():
                    conv.weight += torch.from_numpy(
                        (u * (rate * norms)[:, None, None, None]).astype(np.float32)
                    )


def write_logs(logdir: Path) -> None:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:40, 0:40] / 40
    images = np.stack(
        [
            np.stack([np.sin(8 * xx + 3 * yy), np.cos(6 * yy), np.sin(5 * (xx - yy))], -1),
            np.stack([np.cos(10 * np.hypot(xx - 0.5, yy - 0.5))] * 3, -1),
        ]
    ).astype(np.float32)
    for run, seed in (("resnet_lr0.1", 1), ("resnet_lr0.01", 2)):
        r = np.random.default_rng(seed)
        target1 = gabor_bank(32, 7, r)
        target1[..., 9] = 0  # a dead filter
        target1[..., 21] = target1[..., 4] * 1.3  # a near-duplicate
        noise1 = r.normal(scale=0.3, size=target1.shape).astype(np.float32)
        target2 = r.normal(scale=0.15, size=(3, 3, 32, 64)).astype(np.float32)
        noise2 = r.normal(scale=0.2, size=target2.shape).astype(np.float32)
        with tb_convfilters.Writer(logdir / run) as w:
            for i, step in enumerate(STEPS):
                a = 1 - np.exp(-i / (1.2 if seed == 1 else 2.5))
                k1 = (a * target1 + (1 - a) * noise1).astype(np.float32)
                k1[..., 9] = 0
                k2 = (a * target2 + (1 - a) * noise2).astype(np.float32)
                w.kernel(
                    "conv1/kernel",
                    k1,
                    step=step,
                    layout="HWIO",
                    description="7x7 stem convolution (RGB input)",
                )
                w.kernel("conv2/kernel", k2, step=step, layout="HWIO")
                w.activation(
                    "conv1/activation",
                    correlate(images, k1),
                    step=step,
                    layout="NHWC",
                    max_samples=2,
                )
    sick_run(logdir)
    patterns_run(logdir)
    examples_run(logdir)
    dynamics_run(logdir)
    big = rng.normal(scale=0.05, size=(3, 3, 512, 512)).astype(np.float16)
    with tb_convfilters.Writer(logdir / "wide") as w:
        w.kernel(
            "block4/conv/kernel",
            big,
            step=0,
            layout="HWIO",
            description="3x3x512x512: 262,144 tiles",
        )


def shoot(base: str, page, name: str, state: str, action=None) -> None:
    page.goto("about:blank")  # a new hash alone would not reload TensorBoard
    page.goto(f"{base}/#convfilters&cf=" + urllib.parse.quote(state, safe=""))
    frame = plugin_frame(page)
    frame.wait_for_selector("canvas.main-grid[data-step]", timeout=60000)
    page.wait_for_timeout(800)
    if action:
        action(frame)
        page.wait_for_timeout(1200)
    page.screenshot(path=str(HERE / f"{name}.png"))
    print("saved", name)


def main(names: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    def want(name: str) -> bool:
        return not names or name in names

    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp) / "logs"
        write_logs(logdir)
        with tensorboard(logdir, load_fast="false") as base, sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1400, "height": 860})

            def click_filter(frame):
                canvas = frame.locator("canvas.main-grid").first
                g = canvas.evaluate("c => Object.assign({}, c.dataset)")
                pitch = int(g["tileH"]) * float(g["zoom"]) + int(g["gap"])
                canvas.click(position={"x": 8, "y": 4 * pitch + 6})

            if want("grid"):
                shoot(
                    base, page, "grid", "run=resnet_lr0.1&tag=conv1/kernel&step=800", click_filter
                )
            if want("rgb"):
                shoot(
                    base, page, "rgb", "run=resnet_lr0.1&tag=conv1/kernel&step=800&rgb=1&sort=norm"
                )
            if want("compare"):
                shoot(
                    base,
                    page,
                    "compare",
                    "run=resnet_lr0.1&tag=conv1/kernel&step=200&cmp=resnet_lr0.01",
                )
            if want("diff"):
                shoot(
                    base,
                    page,
                    "diff",
                    "run=resnet_lr0.1&tag=conv1/kernel&step=800&diff=first&sort=drift",
                )

            def click_channel(frame):
                frame.locator("canvas.main-grid").first.click(position={"x": 40, "y": 40})

            if want("activations"):
                shoot(
                    base,
                    page,
                    "activations",
                    "run=resnet_lr0.1&tag=conv1/activation&step=800&cmap=sequential&norm=filter",
                    click_channel,
                )
            if want("big"):
                shoot(base, page, "big", "run=wide&tag=block4/conv/kernel&step=0")

            def open_finding(frame):
                frame.wait_for_selector("li.finding")
                frame.locator('li.finding[data-problem="exploding"]').click()

            if want("doctor"):
                tall = browser.new_page(viewport={"width": 1400, "height": 1150})
                shoot(base, tall, "doctor", "run=sick&tag=conv1/kernel&norm=filter", open_finding)

            def hover_pattern(frame):
                canvas = frame.locator("canvas.main-grid").first
                g = canvas.evaluate("c => Object.assign({}, c.dataset)")
                pitch = int(g["tileW"]) * float(g["zoom"]) + int(g["gap"])
                for dx in (0, 1):  # the kernel loads on the first hover, shows on the next
                    canvas.hover(position={"x": 1.5 * pitch + dx, "y": 0.6 * pitch})
                    frame.wait_for_timeout(800)

            if want("patterns"):
                shoot(base, page, "patterns", "run=vis&tag=conv1/pattern", hover_pattern)

            def open_examples(frame):
                frame.locator(".examples[data-mode='rows'][data-state='drawn']").wait_for()
                frame.locator("canvas.main-grid").first.click(position={"x": 3, "y": 3})
                frame.locator(".examples-detail .examples-input").first.wait_for()
                frame.locator(".examples-title").first.hover()

            if want("examples"):
                tall = browser.new_page(viewport={"width": 1400, "height": 1250})
                shoot(base, tall, "examples", "run=bars&tag=sobel/kernel&ex=1", open_examples)

            def open_spectra(frame):
                frame.click("#spectra summary")
                frame.wait_for_selector("#spectra-raster[data-shown]")
                frame.locator("#health-table tbody tr[data-filter='4']").click()
                frame.wait_for_selector("#detail-spectrum:not([hidden])")
                frame.locator("#spectra").scroll_into_view_if_needed()

            if want("spectra"):
                tall = browser.new_page(viewport={"width": 1400, "height": 1250})
                shoot(
                    base,
                    tall,
                    "spectra",
                    "run=resnet_lr0.1&tag=conv1/kernel&step=800",
                    open_spectra,
                )

            def open_dynamics(frame):
                frame.click("#dynamics summary")
                canvas = frame.wait_for_selector(
                    "#dynamics-ratio[data-marks]:not([data-marks='[]'])"
                )
                ds = canvas.evaluate("c => Object.assign({}, c.dataset)")
                mark = next(m for m in json.loads(ds["marks"]) if m["problem"] == "stalled")
                x = int(ds["left"]) + mark["col"] * int(ds["cw"]) + 1
                y = int(ds["top"]) + mark["row"] * int(ds["ch"]) + int(ds["ch"]) // 2
                canvas.click(position={"x": x, "y": y})
                frame.wait_for_selector("#detail:not([hidden]) .detail-title")
                frame.wait_for_timeout(800)
                frame.locator("#dynamics-ratio").hover(position={"x": x, "y": y})

            if want("dynamics"):
                tall = browser.new_page(viewport={"width": 1400, "height": 1400})
                shoot(base, tall, "dynamics", "run=dynamics&tag=conv2/weight", open_dynamics)
            if want("dark"):
                dark = browser.new_page(
                    viewport={"width": 1400, "height": 860}, color_scheme="dark"
                )
                shoot(
                    base, dark, "dark", "run=resnet_lr0.1&tag=conv2/kernel&step=400", click_filter
                )
            browser.close()


if __name__ == "__main__":
    main(sys.argv[1:])
