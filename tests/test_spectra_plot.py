"""plot.spectra and plot.spectra_from_logs: the counts drawn are spectra.coverage's, in the
dashboard's sequential table (display.json) from 0 to the most."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from tb_convfilters import Writer, plot, spectra  # noqa: E402
from tb_convfilters._dashboard import colormaps  # noqa: E402


def grating(ky, kx, n=8):
    y, x = np.mgrid[0:n, 0:n]
    return np.cos(2 * np.pi * (ky * y + kx * x) / n)


KERNEL = np.stack([grating(0, 1), grating(0, 1), grating(1, 1), grating(4, 4)], -1)[:, :, None]


def test_coverage_pixels_are_the_sequential_table():
    counts = np.array([[0, 1], [2, 4]])
    table = colormaps.lut("sequential")
    px = plot.coverage_pixels(counts)
    # c / 4 of the way: entries 0, 64, 128, 256 of the 257
    assert [tuple(px[i, j]) for i, j in np.ndindex(2, 2)] == [
        tuple(table[k]) for k in (0, 64, 128, 256)
    ]


def test_spectra_figure_draws_the_coverage():
    fig = plot.spectra(KERNEL, "HWIO")
    ax = fig.axes[0]
    img = ax.images[0].get_array()
    cov = spectra.coverage(KERNEL, "HWIO")
    np.testing.assert_array_equal(img, plot.coverage_pixels(cov.counts))
    assert cov.counts[1, 0] == 2  # two gratings of frequency 1/8 at 0 degrees
    texts = {t.get_text() for t in ax.texts}
    assert texts == {"2", "1"}
    fig.savefig(__import__("io").BytesIO(), format="png")


def test_spectra_from_logs_draws_every_step(tmp_path):
    with Writer(tmp_path / "r") as w:
        w.kernel("c/kernel", KERNEL.astype(np.float32), 0)
        w.kernel("c/kernel", KERNEL[..., :2].astype(np.float32), 3)
    fig = plot.spectra_from_logs(tmp_path, "r", "c/kernel", step=0)
    left, right = fig.axes[:2]
    series = spectra.over_steps(tmp_path, "r", "c/kernel")
    np.testing.assert_array_equal(
        left.images[0].get_array(), plot.coverage_pixels(series.counts[0])
    )
    raster = series.counts.reshape(2, -1)
    np.testing.assert_array_equal(right.images[0].get_array(), plot.coverage_pixels(raster))
    assert "step 0" in left.get_title()
    with pytest.raises(ValueError, match=r"step=7 is not logged .* steps: \[0, 3\]"):
        plot.spectra_from_logs(tmp_path, "r", "c/kernel", step=7)
