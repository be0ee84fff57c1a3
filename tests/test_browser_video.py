"""The tab's "Export video" in Debian's Chromium: a playable WebM, one frame per step.

A real TensorBoard serves a run of four logged steps; the button records them
(canvas.captureStream + MediaRecorder) and offers the file. Its bytes start with the
EBML magic, and imageio (ffmpeg) decodes at least one frame per step.
"""

from __future__ import annotations

import urllib.parse

import numpy as np
import pytest
from support import plugin_frame, tensorboard

import tb_convfilters

iio = pytest.importorskip("imageio.v3")
pytest.importorskip("imageio_ffmpeg")

TAG = "conv/kernel"
STEPS = [0, 5, 10, 20]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("video") / "logs"
    rng = np.random.default_rng(30)
    base = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    with tb_convfilters.Writer(logdir / "a") as w:
        for k, step in enumerate(STEPS):
            w.kernel(TAG, base * (1 + k), step)
    with tensorboard(logdir, load_fast="false") as url:
        yield url


def test_export_video_records_every_step_as_a_playable_webm(page, served, tmp_path):
    page.goto(f"{served}/#convfilters&cf=" + urllib.parse.quote(f"run=a&tag={TAG}", safe=""))
    frame = plugin_frame(page)
    frame.locator("#export-video").click()
    link = frame.locator("#export-download")
    link.wait_for(state="visible", timeout=60_000)
    assert frame.locator("#export-status").inner_text() == f"{len(STEPS)} steps recorded"
    assert link.get_attribute("download") == "a-conv_kernel.webm"
    with page.expect_download() as download:
        link.click()
    path = tmp_path / "export.webm"
    download.value.save_as(path)
    assert download.value.suggested_filename == "a-conv_kernel.webm"
    data = path.read_bytes()
    assert len(data) > 100
    assert data[:4] == bytes.fromhex("1A45DFA3")  # EBML: a WebM / Matroska file
    frames = list(iio.imiter(path, plugin="FFMPEG"))
    assert len(frames) >= len(STEPS)
    assert frames[0].shape[0] % 2 == 0 and frames[0].shape[1] % 2 == 0
    # the first and last steps differ: the scale is fixed, the weights grew fourfold
    assert not np.array_equal(frames[0], frames[-1])
