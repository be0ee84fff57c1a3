"""Writing frames (RGB uint8, all one size) to a GIF, MP4 or WebM, one frame at a time.

GIF: each frame its own palette of the colours it uses (Pillow's GIF encoder), so a
frame of at most 256 colours (the tab's colour table entries it uses, the background,
the text and the NaN colour) is stored exactly. MP4 (H.264) and WebM (VP9) through
imageio-ffmpeg, yuv420p: colour at half resolution, hence even sizes and values drawn
at least 2 px wide.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np
from PIL import GifImagePlugin, Image

FORMATS = {".gif": "gif", ".mp4": "mp4", ".webm": "webm"}
INSTALL = 'pip install "tb-convfilters[video]"'
# ffmpeg settings: near-lossless, so colours stay close to the tab's (see docs/video.md)
FFMPEG = {
    "mp4": ("libx264", ["-crf", "10", "-preset", "medium", "-tune", "stillimage"]),
    "webm": ("libvpx-vp9", ["-crf", "10", "-b:v", "0", "-row-mt", "1"]),
}


def check_output(out: str | os.PathLike, fps: float) -> str:
    """The format of `out` from its extension; ValueError naming what is allowed, ImportError
    naming the extra when the encoder is missing."""
    ext = os.path.splitext(os.fspath(out))[1].lower()
    if ext not in FORMATS:
        raise ValueError(
            f"out={os.fspath(out)!r}: unknown extension {ext or '(none)'!r}; "
            f"expected one of: {', '.join(FORMATS)}"
        )
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 60:
        raise ValueError(f"fps={fps!r} must be a number in (0, 60]")
    fmt = FORMATS[ext]
    if fmt != "gif":
        _ffmpeg()
    return fmt


def _ffmpeg() -> Any:
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise ImportError(
            f"writing MP4 and WebM needs imageio-ffmpeg: {INSTALL} (import failed with: {e})"
        ) from e
    return imageio_ffmpeg


def gif_palette(frame: np.ndarray, keep: Iterable[tuple[int, int, int]] = ()) -> tuple:
    """(indices uint8 (h, w), palette (n <= 256, 3) uint8) of an RGB frame: exact when it has
    at most 256 colours; else its least used colours (but never those of `keep`) take the
    nearest kept one."""
    packed = (frame[..., 0].astype(np.uint32) << 16) | (frame[..., 1].astype(np.uint32) << 8)
    packed |= frame[..., 2]
    colours, inverse, counts = np.unique(packed.ravel(), return_inverse=True, return_counts=True)
    rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], 1)
    if len(colours) > 256:
        priority = counts.astype(np.float64)
        for c in keep:
            priority[colours == ((c[0] << 16) | (c[1] << 8) | c[2])] = np.inf
        kept = np.sort(np.argsort(-priority, kind="stable")[:256])
        d = ((rgb[:, None, :].astype(np.int64) - rgb[None, kept, :]) ** 2).sum(-1)
        inverse = np.argmin(d, axis=1)[inverse]
        rgb = rgb[kept]
    return inverse.reshape(frame.shape[:2]).astype(np.uint8), rgb.astype(np.uint8)


def _gif_image(frame: np.ndarray, keep: Iterable[tuple[int, int, int]]) -> Image.Image:
    indices, palette = gif_palette(frame, keep)
    im = Image.fromarray(indices, "P")
    im.putpalette(palette.tobytes(), rawmode="RGB")
    return im


def _write_gif(frames: Iterator[np.ndarray], f: BinaryIO, fps: float, keep: Any) -> int:
    """A looping GIF, each frame written as it comes (local colour tables)."""
    ms = round(1000 / fps)
    count = 0
    for frame in frames:
        im = _gif_image(frame, keep)
        if count == 0:
            header, _ = GifImagePlugin.getheader(im, info={"loop": 0, "duration": ms})
            f.write(b"".join(header))
        f.write(b"".join(GifImagePlugin.getdata(im, duration=ms, include_color_table=True)))
        count += 1
    f.write(b";")
    return count


def write(
    frames: Iterator[np.ndarray],
    out: str | os.PathLike,
    fmt: str,
    size: tuple[int, int],
    fps: float,
    count: int,
    *,
    progress: bool = False,
    keep: Iterable[tuple[int, int, int]] = (),
) -> None:
    """Writes `count` frames of `size` (height, width) to `out` through a temporary file
    beside it, renamed when complete (a failure leaves no partial `out`)."""
    from tqdm import tqdm

    out = os.fspath(out)
    stem, ext = os.path.splitext(out)
    part = f"{stem}.partial{ext}"
    bar = tqdm(total=count, unit="frame", desc="animate", disable=not progress or None)
    keep = [tuple(int(v) for v in c) for c in keep]

    def counted() -> Iterator[np.ndarray]:
        for frame in frames:
            yield frame
            bar.update(1)

    try:
        if fmt == "gif":
            with open(part, "wb") as f:
                _write_gif(counted(), f, fps, keep)
        else:
            codec, params = FFMPEG[fmt]
            writer = _ffmpeg().write_frames(
                part,
                (size[1], size[0]),
                fps=fps,
                codec=codec,
                pix_fmt_in="rgb24",
                pix_fmt_out="yuv420p",
                macro_block_size=1,
                output_params=params,
                ffmpeg_log_level="error",
            )
            writer.send(None)
            try:
                for frame in counted():
                    writer.send(np.ascontiguousarray(frame))
            finally:
                writer.close()
        os.replace(part, out)
    except BaseException:
        if os.path.exists(part):
            os.remove(part)
        raise
    finally:
        bar.close()
