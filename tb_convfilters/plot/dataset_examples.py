"""Dataset examples drawn as the dashboard draws them: per filter a row of its top inputs.

>>> from tb_convfilters import plot
>>> fig = plot.examples("logs", "train", "conv2/activation", filters=[3, 17])

The pixel rule is `example_pixels` (and `example_overlay` where the receptive field
is unknown); the dashboard's JavaScript uses the same definition.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tb_convfilters import reader
from tb_convfilters._record.examples import Examples

OVERLAY_ALPHA = 160  # the map's alpha where it reaches the example's value


def _js_round(x: np.ndarray) -> np.ndarray:
    """JavaScript's Math.round (halves up), not numpy's halves to even."""
    return np.floor(x + 0.5)


def _spatial(layout: str) -> str:
    """The spatial letters of an input layout (with or without N), in order."""
    return "".join(letter for letter in layout if letter in "DHW")


def _as_cdhw(array: np.ndarray, layout: str) -> np.ndarray:
    """One input (`layout` without N) as (C, D, H, W), missing axes of length 1."""
    letters = layout.replace("N", "")
    missing = [letter for letter in "CDHW" if letter not in letters]
    arr = array.reshape(array.shape + (1,) * len(missing))
    have = letters + "".join(missing)
    return arr.transpose([have.index(letter) for letter in "CDHW"])


def _middle_slice(dhw: np.ndarray) -> np.ndarray:
    """(D, H, W, ...) -> (H, W, ...): the middle D slice, as the dashboard draws 3-D inputs."""
    return dhw[dhw.shape[0] // 2]


def example_pixels(
    crop: Any,
    layout: str,
    value_range: Sequence[float],
    *,
    start: Sequence[int] | None = None,
    input_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """An example's crop as RGBA uint8 ``(H, W, 4)`` (3-D: the middle D slice; 1-D:
    ``1 x W``); the rule the dashboard draws crops with.

    Each value is scaled by the probe inputs' `value_range` ``(lo, hi)``:
    ``t = clip((x - lo) / (hi - lo), 0, 1)`` (``hi == lo``: 0.5; NaN: 0); 3 channels
    are RGB ``round(255 t)``, 1 channel grey, any other count the mean over channels
    as grey (rounding halves up, as JavaScript's Math.round). Where `start` (the
    input index of the crop's first pixel per spatial axis) and `input_shape` (the
    input's spatial size) are given, pixels outside the input are transparent.

    Args:
      crop: one crop, axes as `layout` without N (e.g. ``HWC``).
      layout: the probe inputs' layout, e.g. ``NHWC`` (N optional).
      value_range: ``(lo, hi)``, e.g. ``Examples.input_range``.
    """
    arr = _as_cdhw(np.asarray(crop, dtype=np.float64), layout)
    lo, hi = (float(v) for v in value_range)
    if arr.shape[0] != 3 and arr.shape[0] != 1:
        arr = arr.mean(axis=0, keepdims=True)
    if hi > lo:
        with np.errstate(invalid="ignore"):
            t = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    else:
        t = np.full(arr.shape, 0.5)
    level = _js_round(255 * np.nan_to_num(t, nan=0.0)).astype(np.uint8)
    rgb = np.repeat(level, 3, axis=0) if level.shape[0] == 1 else level
    alpha = np.full(arr.shape[1:], 255, np.uint8)  # (D, H, W)
    if start is not None and input_shape is not None:
        spatial = _spatial(layout)
        if len(start) != len(spatial) or len(input_shape) != len(spatial):
            raise ValueError(
                f"start={list(start)} and input_shape={list(input_shape)} need one entry per "
                f"spatial axis of {layout!r}"
            )
        inside = np.ones(arr.shape[1:], bool)
        for letter, first, n in zip(spatial, start, input_shape, strict=True):
            axis = "DHW".index(letter)
            index = first + np.arange(arr.shape[1 + axis])
            shape = [1, 1, 1]
            shape[axis] = -1
            inside &= ((index >= 0) & (index < n)).reshape(shape)
        alpha = np.where(inside, alpha, 0).astype(np.uint8)
    dhwc = np.concatenate([np.moveaxis(rgb, 0, -1), alpha[..., None]], axis=-1)
    return _middle_slice(dhwc)


def example_overlay(
    example_map: Any, value: float, input_layout: str, input_shape: Sequence[int]
) -> np.ndarray:
    """RGBA uint8 ``(H, W, 4)`` of an example's map laid over its whole input (where the
    receptive field is unknown): input pixel i along each axis shows map position
    ``floor(i * map_n / input_n)`` in red, ``(255, 0, 0, round(160 * clip(m / v, 0, 1)))``
    with `value` v the example's own value; ``v <= 0``: transparent (no overlay).

    `input_shape`: the input's spatial size (its axes in `input_layout` order).
    """
    m = np.asarray(example_map, dtype=np.float64)
    spatial = _spatial(input_layout)
    if m.ndim != len(spatial) or len(input_shape) != len(spatial):
        raise ValueError(
            f"a map of shape {m.shape} and input_shape={list(input_shape)} need one axis per "
            f"spatial axis of {input_layout!r}"
        )
    picks = [
        np.floor(np.arange(n) * m.shape[i] / n).astype(np.int64) for i, n in enumerate(input_shape)
    ]
    up = m[np.ix_(*picks)] if picks else m
    v = float(value)
    if v > 0 and math.isfinite(v):
        with np.errstate(invalid="ignore"):
            share = np.nan_to_num(np.clip(up / v, 0.0, 1.0), nan=0.0)
        alpha = _js_round(OVERLAY_ALPHA * share).astype(np.uint8)
    else:
        alpha = np.zeros(up.shape, np.uint8)
    rgba = np.zeros((*up.shape, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = alpha
    full = {letter: n for letter, n in zip(spatial, rgba.shape, strict=False)}
    dhw = rgba.reshape(full.get("D", 1), full.get("H", 1), full.get("W", 1), 4)
    return _middle_slice(dhw)


def _checkerboard(shape: tuple[int, ...]) -> np.ndarray:
    """Two greys (#8a8a8a, #a8a8a8) in squares of one pixel, behind transparent pixels."""
    y, x = np.indices(shape)
    return np.where((y + x) % 2, 0xA8, 0x8A) / 255.0


def _pick(ex: Examples, filters: int | Sequence[int] | None) -> list[int]:
    """Rows of `ex` to draw: all, the first N, or these activation channels."""
    channels = [int(c) for c in ex.channels]
    if filters is None:
        return list(range(len(channels)))
    if isinstance(filters, int) and not isinstance(filters, bool):
        if filters < 1:
            raise ValueError(f"filters={filters!r} must be a positive count or a list of channels")
        return list(range(min(filters, len(channels))))
    picked = list(filters)
    bad = [f for f in picked if isinstance(f, bool) or f not in channels]
    if bad or not picked:
        shown = channels if len(channels) <= 12 else f"{len(channels)} channels"
        raise ValueError(
            f"filters entries {bad or picked} are not channels with examples; they are {shown}"
        )
    return [channels.index(f) for f in picked]


def examples(
    logdir_or_examples: str | os.PathLike | Examples,
    run: str | None = None,
    tag: str | None = None,
    step: int | None = None,
    *,
    filters: int | Sequence[int] | None = None,
    figure: Figure | None = None,
    title: str | None = None,
    pixels: int = 8,
) -> Figure:
    """A matplotlib Figure: per filter a row of its dataset examples, best first.

    Each tile is the part of the input the example's maximum sees (its receptive field;
    pixels past the input's border transparent), titled with its input index and value;
    where the field is unknown, the whole input with the example's map over it in red.
    Colours follow `example_pixels` (the dashboard's rule).

    Args:
      logdir_or_examples: a log directory (then `run` and `tag`, the activation's tag,
        and `step`, default the latest) or what ``reader.examples`` returned.
      filters: draw only the first N rows, or these activation channels.
      figure: draw into this Figure (else a new one, `pixels` screen pixels per value).
      title: the Figure's title (default: run, tag and step).
    """
    if isinstance(logdir_or_examples, Examples):
        ex = logdir_or_examples
    else:
        if run is None or tag is None:
            raise ValueError("plot.examples(logdir, run, tag): give the run and the tag")
        ex = reader.examples(logdir_or_examples, run, tag, step)
        title = title if title is not None else f"{run} · {ex.tag} · step {ex.step}"
    if ex.inputs is None or ex.input_layout is None:
        raise ValueError(
            f"{ex.tag!r} step {ex.step} has no stored probe inputs, so no crops to draw; "
            "log the activation with inputs= (or sample_inputs= in the callbacks)"
        )
    rows = _pick(ex, filters)
    k = ex.indices.shape[1]
    value_range = ex.input_range or (float(np.nanmin(ex.inputs)), float(np.nanmax(ex.inputs)))
    spatial_axes = [i for i, letter in enumerate(ex.input_layout[1:]) if letter in "DHW"]
    input_shape = [ex.inputs.shape[1 + i] for i in spatial_axes]
    crops = ex.crops
    tiles = []
    for r in rows:
        line = []
        for j in range(k):
            if ex.field is None:
                base = example_pixels(crops[r, j], ex.input_layout, value_range)
                over = example_overlay(ex.maps[r, j], ex.values[r, j], ex.input_layout, input_shape)
            else:
                start = [b[0] for b in ex.field.box(ex.positions[r, j])]
                base = example_pixels(
                    crops[r, j], ex.input_layout, value_range, start=start, input_shape=input_shape
                )
                over = None
            line.append((base, over))
        tiles.append(line)
    th, tw = tiles[0][0][0].shape[:2]
    if figure is None:
        dpi = 100
        width = k * max(tw * pixels / dpi, 0.9) + 0.8
        height = len(rows) * (max(th * pixels / dpi, 0.6) + 0.3) + 0.6
        figure = Figure(figsize=(width, height), dpi=dpi)
    axes = figure.subplots(len(rows), k, squeeze=False)
    for i, r in enumerate(rows):
        for j in range(k):
            ax = axes[i, j]
            base, over = tiles[i][j]
            # past the input's border is transparent: a grey checkerboard, as in the tab
            ax.imshow(
                _checkerboard(base.shape[:2]),
                cmap="gray",
                vmin=0,
                vmax=1,
                interpolation="nearest",
                resample=False,
            )
            ax.imshow(base, interpolation="nearest", resample=False)
            if over is not None:
                ax.imshow(over, interpolation="nearest", resample=False)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"#{ex.indices[r, j]} {ex.values[r, j]:.3g}", fontsize=6, pad=2)
            if j == 0:
                ax.set_ylabel(f"filter {int(ex.channels[r])}", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    return figure
