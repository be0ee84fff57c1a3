"""plot.examples draws each filter's dataset examples as the dashboard draws them.

The pixel rule (``plot.example_pixels``) is checked on hand-computed pixels; the
Figure on a real logdir written by ``Writer.activation(inputs=, receptive_field=)``.
"""

from __future__ import annotations

import numpy as np
import pytest

from tb_convfilters import ReceptiveField, Writer, reader


def _logdir(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 8, 8, 3)).astype(np.float32)
    x[0, 0, 0, 0], x[1, 0, 0, 1] = -5.0, 7.0  # the probe inputs' range: [-5, 7]
    a = rng.normal(size=(6, 4, 4, 5)).astype(np.float32)
    field = ReceptiveField((-1, -1), (2, 2), (3, 3))
    with Writer(tmp_path / "run") as w:
        w.activation("known/act", a, 1, inputs=x, examples=3, receptive_field=field)
        w.activation("unknown/act", a, 1, inputs=x, examples=3)
        w.activation("gray/act", a, 1, inputs=x[..., :1], examples=2, receptive_field=field)
    return x, a, field


def test_input_range_is_the_stored_probe_inputs_range(tmp_path):
    x, _, _ = _logdir(tmp_path)
    ex = reader.examples(tmp_path, "run", "known/act")
    assert ex.input_range == (-5.0, 7.0)
    assert reader.examples(tmp_path, "run", "gray/act").input_range == (
        float(x[..., :1].min()),
        float(x[..., :1].max()),
    )


pytest.importorskip("matplotlib")
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from tb_convfilters import plot  # noqa: E402


def test_example_pixels_rgb_by_hand():
    crop = np.array([[[-1.0, 1.0, 3.0], [5.0, 0.5, -2.0]]])  # H=1, W=2, C=3
    out = plot.example_pixels(crop, "NHWC", (-1.0, 3.0))
    assert out.dtype == np.uint8 and out.shape == (1, 2, 4)
    # t = (x + 1) / 4 clipped: 0, .5, 1 | 1 (5 clipped), .375, 0 (-2 clipped)
    assert out.tolist() == [[[0, 128, 255, 255], [255, 96, 0, 255]]]


def test_example_pixels_round_halves_up_as_javascript():
    crop = np.array([[[126.5], [127.5], [np.nan]]])  # H=1, W=3, C=1: grey
    out = plot.example_pixels(crop, "HWC", (0.0, 255.0))
    assert out[0, :, :3].tolist() == [[127] * 3, [128] * 3, [0] * 3]  # numpy rounds 126.5 to 126


def test_example_pixels_flat_range_grey_and_mean_of_other_channel_counts():
    flat = plot.example_pixels(np.array([[[4.0, -9.0]]]), "NCHW", (2.0, 2.0))  # C=1 H=1 W=2
    assert flat.tolist() == [[[128, 128, 128, 255], [128, 128, 128, 255]]]
    two = np.array([[[0.0]], [[10.0]]])  # CHW, C=2: the mean 5 of [0, 10] -> t .5
    assert plot.example_pixels(two, "CHW", (0.0, 10.0)).tolist() == [[[128, 128, 128, 255]]]
    four = np.zeros((1, 1, 4))
    four[..., 0] = 4.0  # mean 1 of [0, 4] -> t .25 -> 63.75 -> 64
    assert plot.example_pixels(four, "HWC", (0.0, 4.0))[0, 0].tolist() == [64, 64, 64, 255]


def test_example_pixels_outside_the_input_transparent():
    crop = np.ones((3, 3, 1))
    # rows from input row -1 (outside), columns from input column 1 of 3 (column 3 outside)
    out = plot.example_pixels(crop, "NHWC", (0.0, 1.0), start=(-1, 1), input_shape=(8, 3))
    assert out[..., 3].tolist() == [[0, 0, 0], [255, 255, 0], [255, 255, 0]]
    assert (out[..., :3] == 255).all()


def test_example_pixels_3d_draw_the_middle_slice_as_the_dashboard():
    crop = np.arange(24.0).reshape(3, 2, 4, 1)  # D=3, H=2, W=4, C=1
    out = plot.example_pixels(crop, "NDHWC", (0.0, 23.0))
    assert out.shape == (2, 4, 4)
    assert out[..., 0].tolist() == np.floor(255 * crop[1, ..., 0] / 23 + 0.5).tolist()
    assert plot.example_pixels(np.arange(5.0)[:, None], "NWC", (0, 4)).shape == (1, 5, 4)


def test_example_overlay_by_hand():
    m = np.array([[1.0, 2.0], [0.0, -1.0]])
    out = plot.example_overlay(m, 2.0, "NHWC", (4, 3))
    # rows floor(i * 2 / 4) = 0 0 1 1, columns floor(j * 2 / 3) = 0 0 1; alpha round(160 m / 2)
    assert out[..., 3].tolist() == [[80, 80, 160], [80, 80, 160], [0, 0, 0], [0, 0, 0]]
    assert (out[..., 0] == 255).all() and (out[..., 1:3] == 0).all()
    assert (plot.example_overlay(m, 0.0, "NHWC", (4, 3))[..., 3] == 0).all()


def _brute_top(a, k):
    """Per channel: (index, value, position) of the k inputs with the largest maxima."""
    out = []
    for c in range(a.shape[-1]):
        per = [(-a[i, ..., c].max(), i) for i in range(len(a))]
        rows = []
        for neg, i in sorted(per)[:k]:
            pos = np.unravel_index(np.argmax(a[i, ..., c]), a.shape[1:-1])
            rows.append((i, -neg, pos))
        out.append(rows)
    return out


def _images(fig):
    return [[im.get_array() for im in ax.get_images()] for ax in fig.axes]


def test_examples_figure_from_a_logdir(tmp_path):
    x, a, field = _logdir(tmp_path)
    fig = plot.examples(tmp_path, "run", "known/act", filters=[3, 1])
    FigureCanvasAgg(fig).draw()
    top = _brute_top(a, 3)
    drawn = _images(fig)
    assert len(drawn) == 6
    for row, c in enumerate([3, 1]):
        for j, (i, value, pos) in enumerate(top[c]):
            ax = fig.axes[row * 3 + j]
            assert ax.get_title() == f"#{i} {value:.3g}"
            start = [s + p * jp for s, p, jp in zip(field.start, pos, field.jump, strict=True)]
            crop = np.zeros((3, 3, 3), np.float32)
            for y in range(3):
                for xx in range(3):
                    yy, xc = start[0] + y, start[1] + xx
                    if 0 <= yy < 8 and 0 <= xc < 8:
                        crop[y, xx] = x[i, yy, xc]
            _, img = drawn[row * 3 + j]  # the checkerboard, then the crop
            want = plot.example_pixels(crop, "NHWC", (-5.0, 7.0), start=start, input_shape=(8, 8))
            np.testing.assert_array_equal(img, want)
    assert fig.axes[0].get_ylabel() == "filter 3"
    assert "known/act" in fig._suptitle.get_text()


def test_examples_figure_unknown_field_lays_the_map_over_the_input(tmp_path):
    x, a, _ = _logdir(tmp_path)
    ex = reader.examples(tmp_path, "run", "unknown/act")
    fig = plot.examples(ex, filters=2)
    top = _brute_top(a, 3)
    drawn = _images(fig)
    assert len(drawn) == 6
    for c in range(2):
        for j, (i, value, _) in enumerate(top[c]):
            _, base, over = drawn[c * 3 + j]  # the checkerboard, the input, the map
            np.testing.assert_array_equal(base, plot.example_pixels(x[i], "NHWC", (-5.0, 7.0)))
            want = plot.example_overlay(a[i, ..., c], value, "NHWC", (8, 8))
            np.testing.assert_array_equal(over, want)


def test_examples_errors_name_the_bad_value(tmp_path):
    _logdir(tmp_path)
    with pytest.raises(ValueError, match=r"filters entries \[7\]"):
        plot.examples(tmp_path, "run", "known/act", filters=[7])
    with pytest.raises(ValueError, match="run and the tag"):
        plot.examples(tmp_path)
    rng = np.random.default_rng(1)
    with Writer(tmp_path / "bare") as w:
        w.activation("a", rng.normal(size=(4, 3, 3, 2)), 0, examples=2)
    with pytest.raises(ValueError, match="no stored probe inputs"):
        plot.examples(tmp_path, "bare", "a")
