"""A layer over its logged steps as frames: the Filters tab's colours, one scale for all.

>>> from tb_convfilters import plot
>>> anim = plot.animate("logs", "train", "conv1/kernel")         # a FuncAnimation
>>> from IPython.display import HTML; HTML(anim.to_jshtml())      # in a notebook
>>> plot.animation.save("logs", "train", "conv1/kernel", "evolution.gif")

Each frame is one logged step: the grid drawn as `plot.image` draws it (the tab's colour
tables, from ``display.json``), each value a square of `scale` pixels, with the step above
it; several runs are drawn side by side, each at its latest step up to the frame's.
Colour limits are by default fixed over every logged step (the tab's "fixed over steps":
the percentile of every filter's extreme value over the steps, from the stored
statistics), over every shown run's steps when there are several (the tab's "fixed over
compared runs"); ``norm="layer"`` / ``"filter"`` / ``"tile"`` scale each frame on its own.
``align=True`` puts every other run's filters in the first run's matched order
(`tb_convfilters.compare.align` at each run's last step, one order for every frame).
Frames are drawn one at a time from the event files (`Frames[k]`); `save` streams them
to a GIF (Pillow, exact colours), MP4 or WebM (``pip install "tb-convfilters[video]"``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tb_convfilters import plot, reader
from tb_convfilters._dashboard import colormaps
from tb_convfilters._record import encoding

__all__ = ["NORMS", "Frames", "animate", "frames", "save"]

NORMS = ("steps", "runs", "layer", "filter", "tile")
DRAWN_KINDS = ("kernel", "activation")
# The tab's panel background (app.js) and a text colour on it, light and dark.
BACKGROUND = {False: (255, 255, 255), True: (32, 33, 36)}
TEXT = {False: (0, 0, 0), True: (232, 234, 237)}
LINE = 16  # px per label line
PAD = 8  # px around and between panels
DEFAULT_WIDTH = 960  # px the default scale fits the panels in
MAX_SCALE = 16


@dataclass
class _Series:
    """One run's records of the tag: where each step is, its header and its extremes."""

    run: str
    tag: str
    where: dict[int, tuple[str, int]] = field(default_factory=dict)
    headers: dict[int, dict] = field(default_factory=dict)
    extremes: dict[int, np.ndarray | None] = field(default_factory=dict)  # (filters, 2) min, max
    steps: list[int] = field(default_factory=list)

    def at_or_before(self, step: int) -> int | None:
        i = int(np.searchsorted(self.steps, step, side="right"))
        return self.steps[i - 1] if i else None

    def array(self, step: int) -> np.ndarray:
        path, offset = self.where[step]
        return reader._entry_at(self.run, self.tag, path, offset).array()


def _extremes(header: dict, blobs: Sequence[bytes]) -> np.ndarray | None:
    names = header.get("stats") or []
    if "min" not in names or "max" not in names:
        return None
    m = encoding.decode_stats(header, blobs[encoding.STATS])
    return m[:, [names.index("min"), names.index("max")]].astype(np.float64)


def _scan(logdir: str | os.PathLike, run: str, tag: str) -> _Series:
    """Pass one: `run`'s records of `tag` (the last written of a step wins), nothing decoded
    but headers and statistics; NotFoundError naming the tags the run has."""
    paths = reader._pick_runs(logdir, run)[run]
    series, tags = _Series(run, tag), set()
    for entry, path, offset in reader._scan(run, paths, None):
        tags.add(entry.tag)
        if entry.tag != tag:
            continue
        blobs = entry.value.tensor.string_val
        try:
            header = encoding.decode_blobs_header(blobs)
            extremes = _extremes(header, blobs)
        except encoding.RecordError as e:
            where = f"run {run!r}, tag {tag!r}, step {entry.step}"
            raise encoding.RecordError(f"{where}: {e}") from None
        series.where[entry.step] = (path, offset)
        series.headers[entry.step] = header
        series.extremes[entry.step] = extremes
    if not series.where:
        raise reader.NotFoundError(
            f"tag {tag!r} not found in run {run!r}; its tags: {', '.join(sorted(tags)) or '(none)'}"
        )
    kinds = {h.get("kind") for h in series.headers.values()}
    if not kinds <= set(DRAWN_KINDS):
        raise ValueError(
            f"tag {tag!r} holds {', '.join(sorted(map(str, kinds)))} records; "
            f"animations draw kinds {', '.join(DRAWN_KINDS)}"
        )
    series.steps = sorted(series.where)
    return series


def limits_over_steps(
    extremes: Sequence[np.ndarray], percentile: float, signed: bool
) -> tuple[float, float] | None:
    """The tab's fixed limits (normalize.js ``limitsFromStats``) from per-filter (min, max)
    rows of every step: the percentile of each filter's largest |value| (signed), else of
    the minima and of the maxima; None without statistics. float32, as the tab keeps them."""
    rows = [m for m in extremes if m is not None and len(m)]
    if not rows:
        return None
    both = np.concatenate(rows)
    both = both[np.isfinite(both).all(axis=1)]  # the route sends NaN/Inf as null: skipped
    if not len(both):
        return None
    if signed:
        high = colormaps._percentile(np.sort(np.abs(both).max(axis=1)), percentile)
        return float(np.float32(-high)), float(np.float32(high))
    lo = colormaps._percentile(np.sort(both[:, 0]), 100 - percentile)
    hi = colormaps._percentile(np.sort(both[:, 1]), percentile)
    return float(np.float32(lo)), float(np.float32(hi))


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def _apply_match(array: np.ndarray, layout: str, match: Any) -> np.ndarray:
    """`array` with its filters (and chained input channels) in the base run's order, as
    the tab's ``alignTensor`` (align.js); depthwise kernels move whole input channels."""
    if "M" in layout:
        m = array.shape[layout.index("M")]
        perm = np.asarray(match.permutation)[::m] // m
        return np.take(array, perm, axis=layout.index("I"))
    out = np.take(array, np.asarray(match.permutation), axis=layout.index("O"))
    if match.channel_permutation is not None:
        out = np.take(out, np.asarray(match.channel_permutation), axis=layout.index("I"))
    return out


class Frames(Sequence):
    """The frames of a layer over its steps: ``frames[k]`` is the RGB uint8 image of
    ``frames.steps[k]``, read and drawn when asked for (one at a time).

    ``limits`` are the fixed (lo, hi) of every frame (None: each frame its own,
    ``norm``); ``scale`` the pixels per value; ``origins[i]`` the (top, left) pixel
    of run ``runs[i]``'s grid in a frame (``plot.image``'s pixel (y, x) is the square
    ``origin + scale * (y, x)``)."""

    def __init__(
        self,
        series: list[_Series],
        tag: str,
        steps: list[int],
        *,
        norm: str,
        limits: tuple[float, float] | None,
        colormap: str,
        percentile: float,
        scale: int | None,
        max_width: int,
        sample: int,
        dark: bool,
        matches: dict[str, Any],
    ) -> None:
        self._series, self.tag, self.steps = series, tag, steps
        self.runs = [s.run for s in series]
        self.norm, self.limits, self.colormap, self.percentile = norm, limits, colormap, percentile
        self.sample, self.dark, self._matches = sample, dark, matches
        self._table = colormaps.lut(colormap, dark=dark)
        self._font = _font(12)
        # each run's grid size in values: the largest over its steps (shapes rarely change)
        sizes = [self._grid_size(s) for s in series]
        if scale is None:
            fit = (max_width - PAD * (len(series) + 1)) // max(1, sum(w for _, w in sizes))
            scale = max(2, min(MAX_SCALE, fit - fit % 2))
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise ValueError(f"scale={scale!r} must be a positive int (pixels per value)")
        self.scale = scale
        longest = max(steps, key=lambda step: len(str(step)))
        widths = []
        for s, (_, w) in zip(series, sizes, strict=True):
            labels = [self._run_label(s.run, 0, None), self._run_label(s.run, 0, longest)]
            widths.append(_even(max(w * scale, *map(self._text_width, labels))))
        self.origins = []
        x = PAD
        for width in widths:
            self.origins.append((PAD + 2 * LINE, x))
            x += width + PAD
        height = PAD + 2 * LINE + max(h for h, _ in sizes) * scale + PAD
        top = self._text_width(self._title(longest))
        self.size = (_even(height), _even(max(x, top + 2 * PAD)))

    def _grid_size(self, s: _Series) -> tuple[int, int]:
        h = w = 1
        for shape in {tuple(hd["shape"]) for hd in s.headers.values()}:
            layout = s.headers[s.steps[-1]]["layout"]
            zeros = np.zeros(shape, np.float32)
            img = plot.image(
                zeros, layout, limits=(0, 1), sample=min(self.sample, _samples(shape, layout) - 1)
            )
            h, w = max(h, img.shape[0]), max(w, img.shape[1])
        return h, w

    def _text_width(self, text: str) -> int:
        return math.ceil(ImageDraw.Draw(Image.new("1", (1, 1))).textlength(text, font=self._font))

    def _title(self, step: int) -> str:
        return f"step {step}    {self.tag}"

    @staticmethod
    def _run_label(run: str, step: int, shown: int | None) -> str:
        if shown is None:
            return f"{run}: nothing logged yet"
        return run if shown == step else f"{run} (step {shown})"

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, k: int) -> np.ndarray:  # type: ignore[override]
        if not -len(self) <= k < len(self):
            raise IndexError(f"frame {k} of {len(self)}")
        step = self.steps[k]
        frame = np.empty((*self.size, 3), np.uint8)
        frame[:] = BACKGROUND[self.dark]
        text = Image.new("1", (self.size[1], self.size[0]))
        draw = ImageDraw.Draw(text)
        draw.fontmode = "1"  # no anti-aliasing: two colours, exact in a GIF palette
        draw.text((PAD, PAD), self._title(step), fill=1, font=self._font)
        for s, (top, left) in zip(self._series, self.origins, strict=True):
            shown = s.at_or_before(step)
            label = self._run_label(s.run, step, shown)
            draw.text((left, top - LINE), label, fill=1, font=self._font)
            if shown is None:
                continue
            img = self._panel(s, shown)
            img = img.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
            h, w = img.shape[:2]
            region = frame[top : top + h, left : left + w]
            region[:] = np.where(img[..., 3:] > 0, img[..., :3], region)
        frame[np.asarray(text, bool)] = TEXT[self.dark]
        return frame

    def _panel(self, s: _Series, step: int) -> np.ndarray:
        header = s.headers[step]
        array = s.array(step)
        layout = header["layout"]
        if s.run in self._matches:
            array = _apply_match(array, layout, self._matches[s.run])
        g = plot.tiles(array, layout, sample=self.sample)
        if self.limits is not None:
            lo = np.full(g.values.shape[:2], self.limits[0])
            hi = np.full(g.values.shape[:2], self.limits[1])
        else:
            lo, hi = plot.cell_limits(
                g, colormap=self.colormap, scale=self.norm, percentile=self.percentile
            )
        return plot._compose(g, lo, hi, self._table)

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(len(self)):
            yield self[k]


def _even(n: int) -> int:
    return n + n % 2


def _samples(shape: Sequence[int], layout: str) -> int:
    return shape[layout.index("N")] if "N" in layout and "O" not in layout else 1


def frames(
    logdir: str | os.PathLike,
    run: str | Sequence[str],
    tag: str,
    *,
    steps: Sequence[int] | None = None,
    norm: str | None = None,
    colormap: str = "diverging",
    percentile: float | None = None,
    scale: int | None = None,
    max_width: int = DEFAULT_WIDTH,
    align: bool = False,
    sample: int = 0,
    dark: bool = False,
) -> Frames:
    """The `Frames` of `tag` in `run` (or runs side by side), one per logged step.

    Args:
      run: a run, or runs drawn side by side (the first is the base of ``align``).
      steps: only these logged steps (default every step any of the runs logged).
      norm: ``steps`` (one scale over the first run's steps; the default for one run),
        ``runs`` (over every shown run's steps; the default for several), or ``layer``,
        ``filter``, ``tile`` (each frame scaled on its own, as the tab's modes).
      colormap, percentile, dark: as the tab's (``plot.grid``'s).
      scale: pixels per value (default: the largest even number up to 16 that fits the
        panels in `max_width` px, at least 2).
      align: draw the other runs' filters in the first run's matched order (kernels).
      sample: the sample of an activation to draw.
    """
    runs = [run] if isinstance(run, str) else list(run)
    if not runs:
        raise ValueError("run= must name at least one run")
    if len(set(runs)) != len(runs):
        raise ValueError(f"runs {runs} repeat a run")
    colormaps.check_colormap(colormap)
    if norm is None:
        norm = "steps" if len(runs) == 1 else "runs"
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r} is unknown; expected one of: {', '.join(NORMS)}")
    p = colormaps.default_percentile() if percentile is None else float(percentile)
    if not 0 < p <= 100:
        raise ValueError(f"percentile={percentile!r} must be in (0, 100]")
    series = [_scan(logdir, r, tag) for r in runs]
    logged = sorted(set().union(*(s.steps for s in series)))
    if steps is None:
        picked = logged
    else:
        picked = sorted(set(steps))
        missing = [s for s in picked if s not in set(logged)]
        if missing or not picked:
            raise reader.NotFoundError(
                f"steps {missing or picked} are not logged steps of {tag!r}; logged: "
                + reader._steps_text(set(logged))
            )
    limits = None
    if norm in ("steps", "runs"):
        shown = series if norm == "runs" else series[:1]
        extremes = [m for s in shown for m in s.extremes.values()]
        limits = limits_over_steps(extremes, p, colormaps.is_signed(colormap))
    matches = {}
    if align:
        if len(runs) < 2:
            raise ValueError("align=True needs a second run to align to the first")
        from tb_convfilters.compare import align as align_runs

        for r in runs[1:]:
            matches[r] = align_runs(logdir, r, runs[0], tags=[tag])[tag]
    for s in series:
        layout = s.headers[s.steps[-1]]["layout"]
        if any(h["layout"] != layout for h in s.headers.values()):
            raise ValueError(f"run {s.run!r} logged {tag!r} in several layouts")
        n = min(_samples(h["shape"], layout) for h in s.headers.values())
        if isinstance(sample, bool) or not isinstance(sample, int) or not 0 <= sample < n:
            raise ValueError(f"sample={sample!r} must be an index below the {n} samples")
    return Frames(
        series,
        tag,
        picked,
        norm=norm,
        limits=limits,
        colormap=colormap,
        percentile=p,
        scale=scale,
        max_width=max_width,
        sample=sample,
        dark=dark,
        matches=matches,
    )


def animate(
    logdir: str | os.PathLike,
    run: str | Sequence[str],
    tag: str,
    *,
    fps: float = 4,
    **options: Any,
) -> Any:
    """A ``matplotlib.animation.FuncAnimation`` of `frames` (`options` are its arguments),
    one frame per step, each drawn when shown; in a notebook
    ``IPython.display.HTML(anim.to_jshtml())``; ``anim.save(...)`` uses matplotlib's writers
    (`save` writes exact colours)."""
    from matplotlib.animation import FuncAnimation
    from matplotlib.figure import Figure

    shown = frames(logdir, run, tag, **options)
    h, w = shown.size
    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    im = ax.imshow(shown[0], interpolation="nearest", resample=False)

    def update(k: int) -> list:
        im.set_data(shown[k])
        return [im]

    anim = FuncAnimation(fig, update, frames=len(shown), interval=1000 / fps, blit=False)
    anim.frames = shown  # type: ignore[attr-defined]
    return anim


def save(
    logdir: str | os.PathLike,
    run: str | Sequence[str],
    tag: str,
    out: str | os.PathLike,
    *,
    fps: float = 4,
    progress: bool = False,
    **options: Any,
) -> Frames:
    """Writes `frames` to `out` (``.gif``, ``.mp4`` or ``.webm``), one frame at a time.

    A GIF holds the exact colours; MP4 (H.264) and WebM (VP9) store colour at half
    resolution (yuv420p): each value is drawn at least 2 px wide. Returns the frames.
    """
    from tb_convfilters.plot import video_files

    fmt = video_files.check_output(out, fps)
    shown = frames(logdir, run, tag, **options)
    if fmt != "gif" and shown.scale < 2:
        raise ValueError(f"scale={shown.scale} is too small for {fmt}: at least 2 px per value")
    keep = [BACKGROUND[shown.dark], TEXT[shown.dark], tuple(colormaps.nonfinite_color())]
    video_files.write(
        iter(shown), out, fmt, shown.size, fps, len(shown), progress=progress, keep=keep
    )
    return shown
