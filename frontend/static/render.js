// Drawing a grid into an RGBA pixel buffer (pure, DOM-free).
//
// Only the visible window (width x height device pixels, panned by panX/panY)
// is computed, so cost follows the canvas size, not the tensor size: a
// 512 x 512 grid of 3x3 tiles draws as fast as an 8 x 3 one.

import { LUT_SIZE, NONFINITE } from "./colormap.js";

/** Tile pitch and total size (device px) of `grid` at `zoom` px per tensor value. */
export function geometry(grid, zoom) {
  const gap = zoom >= 2 ? 1 : 0;
  const tileW = grid.tw * zoom;
  const tileH = grid.th * zoom;
  return {
    zoom,
    gap,
    tileW,
    tileH,
    pitchX: tileW + gap,
    pitchY: tileH + gap,
    width: Math.ceil(grid.cols * (tileW + gap) - gap),
    height: Math.ceil(grid.rows * (tileH + gap) - gap),
  };
}

/** Largest zoom (<= maxZoom, integer when >= 1) at which `grid` is at most `width` px wide. */
export function fitZoom(grid, width, maxZoom = 24) {
  const fit = (width - (grid.cols - 1)) / (grid.cols * grid.tw);
  if (fit >= 1) return Math.max(1, Math.min(maxZoom, Math.floor(fit)));
  // below 2 px per value there are no gaps between tiles
  return Math.max(Math.min(1, width / (grid.cols * grid.tw)), 1 / 16);
}

/** Maps a device-pixel position to the cell / tile pixel under it, or null. */
export function hitTest(grid, view, sx, sy) {
  const g = geometry(grid, view.zoom);
  const wx = sx + view.panX;
  const wy = sy + view.panY;
  if (wx < 0 || wy < 0 || wx >= g.width || wy >= g.height) return null;
  const c = Math.floor(wx / g.pitchX);
  const row = Math.floor(wy / g.pitchY);
  const inX = wx - c * g.pitchX;
  const inY = wy - row * g.pitchY;
  if (c >= grid.cols || row >= grid.rows || inX >= g.tileW || inY >= g.tileH) return null;
  const r = view.rowOrder ? view.rowOrder[row] : row;
  if (r * grid.cols + c >= grid.cells) return null;
  const tx = Math.min(grid.tw - 1, Math.floor(inX / view.zoom));
  const ty = Math.min(grid.th - 1, Math.floor(inY / view.zoom));
  const xo = grid.xOff[tx];
  return {
    row,
    r,
    c,
    tx,
    ty,
    cell: r * grid.cols + c,
    offset: xo < 0 ? -1 : grid.cellBase[r * grid.cols + c] + grid.yOff[ty] + xo,
  };
}

/** Device-pixel rectangle of display row `row`, column `c` (before panning). */
export function cellRect(grid, zoom, row, c) {
  const g = geometry(grid, zoom);
  return { x: c * g.pitchX, y: row * g.pitchY, w: g.tileW, h: g.tileH };
}

function axisMap(n, pan, pitch, tile, zoom, count, tiles) {
  // per screen position: cell index (or -1) and pixel within the tile
  const cell = new Int32Array(n).fill(-1);
  const pix = new Int32Array(n);
  for (let s = 0; s < n; s++) {
    const w = s + pan;
    if (w < 0) continue;
    const i = Math.floor(w / pitch);
    if (i >= count) continue;
    const within = w - i * pitch;
    if (within >= tile) continue;
    cell[s] = i;
    pix[s] = Math.min(tiles - 1, Math.floor(within / zoom));
  }
  return { cell, pix };
}

/**
 * Fills `out` (RGBA bytes, width x height) with the visible part of the grid.
 *
 * values: the flat tensor (any typed array); limits: {lo, hi} per cell;
 * table: colormap LUT; view: {zoom, panX, panY, rowOrder?}; bg: [r, g, b] outside
 * the grid; sep: [r, g, b] of the 1-px gaps between tiles (default bg).
 */
export function renderGrid(out, width, height, grid, values, limits, table, view, bg, sep = bg) {
  const g = geometry(grid, view.zoom);
  const xs = axisMap(width, view.panX, g.pitchX, g.tileW, view.zoom, grid.cols, grid.tw);
  const ys = axisMap(height, view.panY, g.pitchY, g.tileH, view.zoom, grid.rows, grid.th);
  const colOff = new Int32Array(width);
  for (let sx = 0; sx < width; sx++) {
    const c = xs.cell[sx];
    if (c < 0) continue;
    const xo = grid.xOff[xs.pix[sx]];
    if (xo < 0) xs.cell[sx] = -1;
    else colOff[sx] = xo;
  }
  const { lo, hi } = limits;
  const top = LUT_SIZE - 1;
  const [br, bgG, bb] = bg;
  const [gr, gg, gb] = sep;
  const [nr, ng, nb] = NONFINITE;
  const chans = grid.rgb ? grid.chanOff : null;
  let p = 0;
  for (let sy = 0; sy < height; sy++) {
    const row = ys.cell[sy];
    const r = row < 0 ? -1 : view.rowOrder ? view.rowOrder[row] : row;
    const rowOff = r < 0 ? 0 : grid.yOff[ys.pix[sy]];
    const cellBase = grid.cellBase;
    const cellRow = r * grid.cols;
    for (let sx = 0; sx < width; sx++, p += 4) {
      const c = xs.cell[sx];
      const cell = cellRow + c;
      if (r < 0 || c < 0 || cell >= grid.cells) {
        // a separator if inside the grid's extent, else background
        const inside = cell < grid.cells && ((sy + view.panY) < g.height) && ((sx + view.panX) < g.width)
          && (sy + view.panY) >= 0 && (sx + view.panX) >= 0;
        out[p] = inside ? gr : br;
        out[p + 1] = inside ? gg : bgG;
        out[p + 2] = inside ? gb : bb;
        out[p + 3] = 255;
        continue;
      }
      const l = lo[cell];
      const span = hi[cell] - l;
      const off = cellBase[cell] + rowOff + colOff[sx];
      out[p + 3] = 255;
      if (chans) {
        let bad = false;
        for (let k = 0; k < 3; k++) {
          const v = values[off + chans[k]];
          if (!Number.isFinite(v)) bad = true;
          const t = span > 0 ? (v - l) / span : 0.5;
          out[p + k] = t <= 0 ? 0 : t >= 1 ? 255 : Math.round(t * 255);
        }
        if (bad) {
          out[p] = nr;
          out[p + 1] = ng;
          out[p + 2] = nb;
        }
        continue;
      }
      const v = values[off];
      if (!Number.isFinite(v)) {
        out[p] = nr;
        out[p + 1] = ng;
        out[p + 2] = nb;
        continue;
      }
      let i;
      if (span > 0) {
        const t = (v - l) / span;
        i = t <= 0 ? 0 : t >= 1 ? top : Math.round(t * top);
      } else {
        i = top >> 1;
      }
      i *= 3;
      out[p] = table[i];
      out[p + 1] = table[i + 1];
      out[p + 2] = table[i + 2];
    }
  }
  return out;
}

/** A horizontal colour bar (RGBA bytes, width x height) of `table`. */
export function renderColorbar(out, width, height, table) {
  const top = LUT_SIZE - 1;
  for (let x = 0; x < width; x++) {
    const i = Math.round((x / Math.max(width - 1, 1)) * top) * 3;
    for (let y = 0; y < height; y++) {
      const p = (y * width + x) * 4;
      out[p] = table[i];
      out[p + 1] = table[i + 1];
      out[p + 2] = table[i + 2];
      out[p + 3] = 255;
    }
  }
  return out;
}
