"""Helpers (no tests) for reading the Filters dashboard's canvases from Playwright tests."""

from __future__ import annotations

import base64
import json

import numpy as np


def grid_selector(run: str, tag: str, step: int | None = None) -> str:
    sel = f"canvas.main-grid[data-run={json.dumps(run)}][data-tag={json.dumps(tag)}]"
    return sel + (f'[data-step="{step}"]' if step is not None else "")


def lut_of(frame, name: str, dark: bool = False) -> np.ndarray:
    """The dashboard's own colour table (LUT_SIZE x 3) of colormap `name`."""
    values = frame.evaluate(
        """async ([name, dark]) => {
            const m = await import(new URL("static/colormap.js", document.baseURI).href);
            return Array.from(m.lut(name, {dark}));
        }""",
        [name, dark],
    )
    return np.array(values, dtype=np.int32).reshape(-1, 3)


def canvas_pixels(frame, canvas) -> np.ndarray:
    """RGBA pixels (height, width, 4) of a canvas (sent as base64: fast for big canvases)."""
    data = canvas.evaluate(
        """c => {
            const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            let s = "";
            for (let i = 0; i < d.length; i += 0x8000) {
                s += String.fromCharCode.apply(null, d.subarray(i, i + 0x8000));
            }
            return {w: c.width, h: c.height, b64: btoa(s)};
        }"""
    )
    raw = np.frombuffer(base64.b64decode(data["b64"]), dtype=np.uint8)
    return raw.astype(np.int32).reshape(data["h"], data["w"], 4)


def geometry(canvas) -> dict:
    """A grid canvas's geometry from its dataset (render.js geometry, device px)."""
    attrs = canvas.evaluate("c => Object.assign({}, c.dataset)")
    zoom = float(attrs["zoom"])
    gap = int(attrs["gap"])
    pitch_x = int(attrs["tileW"]) * zoom + gap
    pitch_y = int(attrs["tileH"]) * zoom + gap
    cols = int(attrs["cols"])
    return {
        "zoom": zoom,
        "pitch_x": pitch_x,
        "pitch_y": pitch_y,
        "pan_x": float(attrs["panX"]),
        "pan_y": float(attrs["panY"]),
        "rows": int(attrs["rows"]),
        "cols": cols,
        # block layouts: `block_cols` filter blocks (a grid row each) to a line
        "block_cols": int(attrs.get("blockCols", 1)),
        "block_pitch_x": float(attrs.get("blockPitchX", cols * pitch_x)),
        "block_pitch_y": float(attrs.get("blockPitchY", pitch_y)),
        "band": float(attrs.get("band", 0)),
    }


def pixel_at(g: dict, r: int, c: int, y: int, x: int) -> tuple[int, int]:
    """(row, column) of the canvas pixel at the centre of value (y, x) of tile c of display slot r.

    A display slot is a grid row (a kernel filter) in display order: a strip's r-th row, or
    the r-th block of a block layout (row-major, ``block_cols`` blocks to a line).
    """
    z = g["zoom"]
    line, bx = divmod(r, g["block_cols"])
    sx = bx * g["block_pitch_x"] + c * g["pitch_x"] + x * z + z / 2 - g["pan_x"]
    sy = line * g["block_pitch_y"] + g["band"] + y * z + z / 2 - g["pan_y"]
    return int(sy), int(sx)


def block_origin(g: dict, r: int) -> tuple[float, float]:
    """Canvas (x, y) of the top-left corner of display slot r's first tile (see pixel_at)."""
    line, bx = divmod(r, g["block_cols"])
    return (
        bx * g["block_pitch_x"] - g["pan_x"],
        line * g["block_pitch_y"] + g["band"] - g["pan_y"],
    )


def nearest_entry(rgb: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the table entry nearest to each colour (..., 3 or 4)."""
    d = ((rgb[..., None, :3] - table) ** 2).sum(-1)
    return d.argmin(-1)


def tile_pixels(
    frame, canvas, shape: tuple[int, int, int, int], table_name: str = "diverging"
) -> np.ndarray:
    """Table index drawn for every value of a (rows, cols, h, w) grid."""
    table = lut_of(frame, table_name)
    px = canvas_pixels(frame, canvas)
    g = geometry(canvas)
    rows, cols, h, w = shape
    assert (g["rows"], g["cols"]) == (rows, cols)
    out = np.zeros((*shape, 4), dtype=np.int32)
    for r, c, y, x in np.ndindex(*shape):
        out[r, c, y, x] = px[pixel_at(g, r, c, y, x)]
    return nearest_entry(out, table)


def expected_diverging(
    values: np.ndarray, table: np.ndarray, percentile: float = 99.5, limit: float | None = None
) -> np.ndarray:
    """Table index of each value with symmetric per-layer limits (numpy's percentile)."""
    v = values.astype(np.float64)
    if limit is None:
        limit = float(np.percentile(np.abs(v[np.isfinite(v)]), percentile))
    top = len(table) - 1
    t = np.clip((v + limit) / (2 * limit), 0, 1) if limit > 0 else np.full(v.shape, 0.5)
    return np.rint(t * top).astype(np.int64)
