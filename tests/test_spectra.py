"""tb_convfilters.spectra against planted ground truth and a brute-force DFT.

Planted kernels: gratings ``cos(2 pi f (x cos t + y sin t))`` on the DFT's bin grid (the
wave vector ``(ky, kx) / n``, so ``f = hypot(ky, kx) / n`` and ``t = atan2(ky, kx)``), a
Gaussian blob (frequency 0, no orientation) and checkerboards (the Nyquist bin).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tb_convfilters import Writer, reader, spectra

# (ky, kx) wave vectors in bins: orientations 0, 90, 45, 135, 63.4, 161.6, ... and several radii
WAVES = [(0, 1), (0, 2), (0, 3), (1, 0), (2, 0), (1, 1), (1, -1), (2, 1), (-1, 3), (3, 3), (2, -3)]


def grating(n: int, ky: int, kx: int, phase: float = 0.3) -> np.ndarray:
    """cos(2 pi f (x cos t + y sin t) + phase) on an n x n kernel, f and t of (ky, kx) / n."""
    t = math.atan2(ky, kx)
    f = math.hypot(ky, kx) / n
    y, x = np.mgrid[0:n, 0:n]
    return np.cos(2 * np.pi * f * (x * math.cos(t) + y * math.sin(t)) + phase)


def planted(n: int, ky: int, kx: int) -> tuple[float, float]:
    return math.degrees(math.atan2(ky, kx)) % 180, math.hypot(ky, kx) / n


def brute_power(slice2d: np.ndarray) -> np.ndarray:
    """|DFT|^2 by the definition, unshifted."""
    h, w = slice2d.shape
    out = np.zeros((h, w))
    for u in range(h):
        for v in range(w):
            s = 0j
            for y in range(h):
                for x in range(w):
                    s += slice2d[y, x] * np.exp(-2j * np.pi * (u * y / h + v * x / w))
            out[u, v] = abs(s) ** 2
    return out


@pytest.mark.parametrize("n", [7, 8, 11])
def test_planted_gratings_hwio_and_oihw(n):
    rng = np.random.default_rng(n)
    waves = [(ky, kx) for ky, kx in WAVES if max(abs(ky), abs(kx)) * 2 < n]
    # filter j: grating j on each of 3 input channels, each with its own amplitude and phase
    hwio = np.zeros((n, n, 3, len(waves)))
    for j, (ky, kx) in enumerate(waves):
        for c in range(3):
            hwio[:, :, c, j] = rng.uniform(0.5, 2) * grating(n, ky, kx, rng.uniform(0, 6))
    want = np.array([planted(n, *w) for w in waves])
    for kernel, layout in ((hwio, "HWIO"), (hwio.transpose(3, 2, 0, 1), "OIHW")):
        orientation, frequency = spectra.dominant(kernel, layout)
        np.testing.assert_allclose(orientation, want[:, 0], atol=1e-9)
        np.testing.assert_allclose(frequency, want[:, 1], atol=1e-12)


def test_planted_orientations_on_the_stated_axes():
    n = 8
    vertical_stripes = grating(n, 0, 2)  # varies along the width only
    assert np.allclose(vertical_stripes, vertical_stripes[0:1, :])
    o, f = spectra.dominant(np.stack([vertical_stripes, vertical_stripes.T])[:, None], "OIHW")
    assert o.tolist() == [0.0, 90.0] and f.tolist() == [0.25, 0.25]


def test_gaussian_blob_is_frequency_zero_without_orientation():
    y, x = np.mgrid[0:7, 0:7]
    blob = np.exp(-((y - 3) ** 2 + (x - 3) ** 2) / (2 * 1.2**2))
    # a colour blob: the same blob, opposite signs in two channels (mean-free over channels)
    kernel = np.stack([np.stack([blob, blob, blob]), np.stack([blob, -blob, 0 * blob])])
    o, f = spectra.dominant(kernel, "OIHW")
    assert f.tolist() == [0.0, 0.0]
    assert np.isnan(o).all()
    # the mean-subtracted power still has the blob's low frequencies, and no DC
    p = spectra.power(kernel, "OIHW")
    assert p[0, 3, 3] == pytest.approx(0, abs=1e-20)
    assert p[0, 3, 4] == p[0].max() or p[0, 4, 3] == p[0].max()


def test_checkerboard_is_nyquist_at_45_degrees():
    y, x = np.mgrid[0:8, 0:8]
    board = (-1.0) ** (x + y)  # the bin (-1/2, -1/2): 45 degrees, sqrt(2)/2 cycles per pixel
    o, f = spectra.dominant(board[:, :, None, None], "HWIO")
    assert o.tolist() == [45.0] and f[0] == pytest.approx(math.sqrt(0.5))
    # odd sizes have no Nyquist bin: a 3x3 board peaks at its highest diagonal bins, (1/3, 1/3)
    o, f = spectra.dominant(board[:3, :3, None, None], "HWIO")
    assert o[0] in (45.0, 135.0) and f[0] == pytest.approx(math.hypot(1, 1) / 3)


def test_power_equals_the_definition_and_sums_channels():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(5, 4, 2, 3))  # HWIO, non-square
    per = spectra.power(kernel, "HWIO", per_channel=True)
    total = spectra.power(kernel, "HWIO")
    assert per.shape == (3, 2, 5, 4) and total.shape == (3, 5, 4)
    for o in range(3):
        for i in range(2):
            s = kernel[:, :, i, o] - kernel[:, :, i, o].mean()
            want = np.fft.fftshift(brute_power(s))
            np.testing.assert_allclose(per[o, i], want, atol=1e-9)
        np.testing.assert_allclose(total[o], per[o].sum(0), atol=1e-12)
    fy, fx = spectra.frequencies(total.shape)
    assert fy[np.argmin(abs(fy))] == 0 and len(fy) == 5 and len(fx) == 4
    # the brute-force peak of each filter is `dominant`'s (no ties in random kernels)
    o_, f_ = spectra.dominant(kernel, "HWIO")
    for o in range(3):
        full = sum(brute_power(kernel[:, :, i, o]) for i in range(2))
        u, v = np.unravel_index(np.argmax(full), full.shape)
        vy, vx = np.fft.fftfreq(5)[u], np.fft.fftfreq(4)[v]
        assert f_[o] == pytest.approx(math.hypot(vy, vx))
        if f_[o] > 0:
            assert o_[o] == pytest.approx(math.degrees(math.atan2(vy, vx)) % 180)


def test_zero_padding_interpolates_near_the_planted_values():
    n = 7
    waves = [(0, 2), (2, 0), (2, 2), (3, 1)]
    kernel = np.stack([grating(n, *w, phase=0) for w in waves])[:, None]
    o, f = spectra.dominant(kernel, "OIHW", size=64)
    want = np.array([planted(n, *w) for w in waves])
    # the peak moves off the planted frequency by less than half a bin of the kernel (1/2n)
    assert np.all(abs(f - want[:, 1]) < 1 / (2 * n)), (f, want[:, 1])
    assert np.all(abs((o - want[:, 0] + 90) % 180 - 90) < 10), (o, want[:, 0])
    assert spectra.power(kernel, "OIHW", size=(64, 32)).shape == (4, 64, 32)


def test_depthwise_and_transposed_layouts():
    n = 7
    g = [grating(n, 0, 1), grating(n, 1, 0), grating(n, 1, 1), grating(n, 2, -1)]
    # HWIM with I=2, M=2: filter i*M + m is g[i*2 + m]
    hwim = np.stack([np.stack(g[0:2], -1), np.stack(g[2:4], -1)], -2)
    assert hwim.shape == (n, n, 2, 2)
    want = np.array([planted(n, *w) for w in [(0, 1), (1, 0), (1, 1), (2, -1)]])
    o, f = spectra.dominant(hwim, "HWIM")
    np.testing.assert_allclose(np.c_[o, f], want, atol=1e-9)
    # transposed: O is the filter axis (HWOI: Keras, IOHW: PyTorch)
    hwoi = np.stack(g, -1)[:, :, :, None]  # (n, n, O=4, I=1)
    for kernel, layout in ((hwoi, "HWOI"), (hwoi.transpose(3, 2, 0, 1), "IOHW")):
        o, f = spectra.dominant(kernel, layout)
        np.testing.assert_allclose(np.c_[o, f], want, atol=1e-9)


def test_undefined_filters_and_dtypes():
    k = np.zeros((3, 3, 1, 3), np.float16)
    k[..., 1] = 1
    k[0, 0, 0, 2] = np.nan
    o, f = spectra.dominant(k, "HWIO")
    assert np.isnan(f[[0, 2]]).all() and f[1] == 0 and np.isnan(o).all()
    cov = spectra.coverage(k, "HWIO")
    assert cov.undefined == 2 and cov.flat == 1 and cov.counts.sum() == 0


@pytest.mark.parametrize(
    ("kernel", "layout", "words"),
    [
        (np.zeros((3, 2, 4)), "WIO", "need 2-D kernels"),
        (np.zeros((3, 3, 3, 2, 4)), "DHWIO", "need 2-D kernels"),
        (np.zeros((3, 3, 2)), "HWIO", "does not match a kernel of shape (3, 3, 2)"),
        (np.zeros((3, 3, 2, 2)), "NHWC", "not a kernel layout"),
        (np.zeros((4, 4)), "IO", "need 2-D kernels"),
    ],
)
def test_errors_name_the_value(kernel, layout, words):
    with pytest.raises(ValueError, match="layout=") as e:
        spectra.dominant(kernel, layout)
    assert words in str(e.value)


def test_bad_knobs_are_named():
    k = np.zeros((3, 3, 1, 1))
    with pytest.raises(ValueError, match=r"size=2 must be .* at least 3x3"):
        spectra.power(k, "HWIO", size=2)
    with pytest.raises(ValueError, match="orientation_bins=0"):
        spectra.coverage(k, orientation_bins=0)
    with pytest.raises(ValueError, match=r"frequency_edges=\[0, 0.5\] must rise"):
        spectra.coverage(k, frequency_edges=[0, 0.5])


def test_coverage_bins_the_planted_filters():
    n = 8
    waves = [(0, 1), (0, 3), (1, 0), (2, 2), (2, -2), (4, 4), (1, 2)]
    kernel = np.stack([grating(n, *w) for w in waves] + [np.ones((n, n))])[:, None]
    cov = spectra.coverage(kernel, "OIHW")
    # (band, orientation bin) by hand: bands [0, .125, .25, .375, .5, .75), bins of 22.5 deg
    # (0,1): f .125 -> band 1, 0 deg -> bin 0; (0,3): .375 -> 3, 0; (1,0): .125 -> 1, 90 -> 4;
    # (2,2): .354 -> 2, 45 -> 2; (2,-2): .354 -> 2, 135 -> 6; (4,4): .707 -> 4, 45 -> 2;
    # (1,2): .280 -> 2, 26.6 -> 1
    want = np.zeros((5, 8), int)
    for band, b in [(1, 0), (3, 0), (1, 4), (2, 2), (2, 6), (4, 2), (2, 1)]:
        want[band, b] += 1
    np.testing.assert_array_equal(cov.counts, want)
    assert cov.flat == 1 and cov.undefined == 0
    np.testing.assert_allclose(cov.orientation_edges, np.arange(9) * 22.5 - 11.25)
    # an orientation just below 180 wraps into bin 0
    near = np.stack([grating(64, -1, 31)])[:, None]  # 178.2 degrees
    assert spectra.coverage(near, "OIHW").counts[:, 0].sum() == 1


def test_over_steps_reads_each_logged_step(tmp_path):
    n = 7
    kernels = {
        0: np.stack([grating(n, 0, 1), grating(n, 1, 1)], -1)[:, :, None],
        5: np.stack([grating(n, 2, 0), np.ones((n, n))], -1)[:, :, None],
        9: np.stack([grating(n, 3, 3), grating(n, 1, -2)], -1)[:, :, None],
    }
    with Writer(tmp_path / "run") as w:
        for step, k in kernels.items():
            w.kernel("conv1/kernel", k.astype(np.float32), step=step)
        w.activation("conv1/act", np.ones((1, 4, 4, 2), np.float32), step=0)
    series = spectra.over_steps(tmp_path, "run", "conv1/kernel")
    assert series.steps == [0, 5, 9]
    for i, k in enumerate(kernels.values()):
        cov = spectra.coverage(k, "HWIO")
        np.testing.assert_array_equal(series.counts[i], cov.counts)
        assert series.flat[i] == cov.flat and series.filters[i] == 2
    assert series.flat.tolist() == [0, 1, 0]
    with pytest.raises(reader.NotFoundError, match="nope"):
        spectra.over_steps(tmp_path, "run", "nope")
    with pytest.raises(ValueError, match="activations, not kernels"):
        spectra.over_steps(tmp_path, "run", "conv1/act")


def test_over_steps_with_a_corrupt_record_raises_naming_it(tmp_path):
    k = grating(7, 0, 1)[:, :, None, None].astype(np.float32)
    with Writer(tmp_path / "run") as w:
        w.kernel("conv1/kernel", k, step=0)
    (path,) = (tmp_path / "run").glob("*tfevents*")
    data = path.read_bytes()
    at = data.find(k.tobytes())
    path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])
    # the framing CRC no longer matches: the reader stops before the record, as TensorBoard
    with pytest.raises(reader.NotFoundError):
        spectra.over_steps(tmp_path, "run", "conv1/kernel")


def test_trained_conv1_differs_from_its_random_init_as_expected(tmp_path):
    """A conv1 (16 filters, 5x5) trained to tell vertical from horizontal bars (2 px wide,
    in noise) against its random init, both logged and read back by `over_steps`.

    Coverage stated: the random init (Kaiming uniform, white) spreads over orientations
    and lies mostly at high frequencies (at most 6 of 16 filters in the band
    [0.125, 0.25) at 0 or 90 degrees); trained, at least 12 of 16 are bar detectors:
    frequency 1/5 (the lowest bin of a 5x5 kernel, the bars' profile) at 0 degrees
    (vertical bars, varying along the width) or 90 (horizontal), and the mean
    frequency falls by more than 0.1 cycles per pixel.
    """
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def bars(n):
        x = rng.normal(0, 0.3, size=(n, 1, 12, 12)).astype(np.float32)
        y = rng.integers(0, 2, n)
        for i in range(n):
            p = rng.integers(2, 9)
            if y[i] == 0:
                x[i, 0, :, p : p + 2] += 1
            else:
                x[i, 0, p : p + 2, :] += 1
        return torch.tensor(x), torch.tensor(y)

    conv, head = torch.nn.Conv2d(1, 16, 5), torch.nn.Linear(16, 2)
    params = [*conv.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2, weight_decay=1e-3)
    with Writer(tmp_path / "bars") as w:
        w.kernel("conv1/weight", conv.weight.detach().numpy(), step=0, layout="OIHW")
        for _ in range(300):
            x, y = bars(64)
            loss = torch.nn.functional.cross_entropy(head(torch.relu(conv(x)).amax((2, 3))), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        w.kernel("conv1/weight", conv.weight.detach().numpy(), step=300, layout="OIHW")
    assert loss.item() < 0.05  # it learned the task
    series = spectra.over_steps(tmp_path, "bars", "conv1/weight")
    assert series.steps == [0, 300]
    bar_detectors = series.counts[:, 1, [0, 4]].sum(axis=1)  # band [.125, .25), 0 or 90 deg
    assert bar_detectors[0] <= 6 and bar_detectors[1] >= 12, series.counts
    k0, k1 = (reader.read(tmp_path, "bars", "conv1/weight", s) for s in (0, 300))
    f0, f1 = (spectra.dominant(k, "OIHW")[1] for k in (k0, k1))
    assert np.nanmean(f0) - np.nanmean(f1) > 0.1, (f0, f1)
