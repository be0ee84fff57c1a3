// Drawing a grid into an RGBA pixel buffer (pure, DOM-free).
//
// Only the visible window (width x height device pixels, panned by panX/panY)
// is computed, so cost follows the canvas size, not the tensor size: a
// 512 x 512 grid of 3x3 tiles draws as fast as an 8 x 3 one.
//
// Pixels are written as one 32-bit word each (RGBA bytes in memory order, through
// an Int32Array: V8 reads Uint32Array words above 2^31 as doubles), in strips of
// screen columns so that the tensor lines a strip reads stay in cache. With one
// pair of limits for every cell, float32 values are coloured by a table indexed
// by the top bits of their bit pattern (bucketTable): integer work only, and the
// same colours as scaling each value.

import { LUT_SIZE, NONFINITE } from "./colormap.js";
import { denseRange } from "./layout.js";

/**
 * Geometry (device px) of `grid` at `zoom` px per tensor value. Every grid row is
 * a block of `cols` tiles (a kernel filter's input channels); `grid.blockCols`
 * blocks sit side by side on each line (1: the rows stacked, a strip). Tiles of a
 * block are `gap` apart; blocks are `space` apart, with a `band` px strip above
 * each for its label (block layouts only). Display slot k (the k-th block in
 * display order) sits on line floor(k / blockCols), column k % blockCols.
 */
export function geometry(grid, zoom, band = 0) {
  const gap = zoom >= 2 ? 1 : 0;
  const tileW = grid.tw * zoom;
  const tileH = grid.th * zoom;
  const pitchX = tileW + gap;
  const pitchY = tileH + gap;
  const blockCols = grid.blockCols || 1;
  const blocks = blockCols > 1;
  const lines = blocks ? Math.ceil(grid.rows / blockCols) : grid.rows;
  const blockW = grid.cols * pitchX - gap;
  // blocks: clearly further apart than the tiles of one block (1 px when tiles touch)
  const space = !blocks ? gap : gap ? Math.max(3, Math.min(12, Math.round(Math.min(tileW, tileH) / 6))) : 1;
  const labelBand = blocks ? band : 0;
  const blockPitchX = blockW + space;
  const blockPitchY = labelBand + tileH + space;
  return {
    zoom,
    gap,
    tileW,
    tileH,
    pitchX,
    pitchY,
    blockCols,
    lines,
    blockW,
    space,
    band: labelBand,
    blockPitchX,
    blockPitchY,
    width: Math.ceil(blockCols * blockPitchX - space),
    height: Math.ceil(lines * blockPitchY - space),
  };
}

/** Largest zoom (<= maxZoom, integer when >= 1) at which `grid` is at most `width` px wide. */
export function fitZoom(grid, width, maxZoom = 24) {
  for (let z = Math.floor(maxZoom); z >= 1; z--) if (geometry(grid, z).width <= width) return z;
  // below 2 px per value there are no gaps between tiles
  let z = Math.min(1, width / geometry(grid, 1).width);
  while (z > 1 / 16 && geometry(grid, z).width > width) z *= 0.97;
  return Math.max(z, 1 / 16);
}

/**
 * The number of block columns and the zoom that show block grid `grid` largest in
 * `width` x `height` px: for each number of block columns, the largest zoom (at most
 * `maxZoom`) that fits the width, shrunk to fit the height but not below `least`
 * (then the grid scrolls). The largest zoom wins, then the least height.
 * `band(zoom)`: the label band's height at that zoom. Returns {blockCols, zoom, height}.
 */
export function fitBlocks(grid, width, height, maxZoom, least, band = () => 0) {
  let best = null;
  for (let c = 1; c <= grid.rows; c++) {
    // as many lines as one column fewer: only wider
    if (c > 1 && Math.ceil(grid.rows / c) === Math.ceil(grid.rows / (c - 1))) continue;
    const g = { ...grid, blockCols: c };
    let z = fitZoom(g, width, maxZoom);
    while (z > 1 && z > least && geometry(g, z, band(z)).height > height) z--;
    const h = geometry(g, z, band(z)).height;
    if (!best || z > best.zoom || (z === best.zoom && h < best.height)) best = { blockCols: c, zoom: z, height: h };
  }
  return best;
}

/** Device-pixel rectangle of display slot `slot`, tile column `c` (before panning). */
export function cellRect(grid, zoom, slot, c, band = 0) {
  const g = geometry(grid, zoom, band);
  const x = (slot % g.blockCols) * g.blockPitchX + c * g.pitchX;
  const y = Math.floor(slot / g.blockCols) * g.blockPitchY + g.band;
  return { x, y, w: g.tileW, h: g.tileH };
}

/** Device-pixel rectangle of display slot `slot`'s block (its label band above it excluded). */
export function blockRect(grid, zoom, slot, band = 0) {
  const g = geometry(grid, zoom, band);
  const r = cellRect(grid, zoom, slot, 0, band);
  return { x: r.x, y: r.y, w: g.blockW, h: g.tileH };
}

/** Maps a device-pixel position to the cell / tile pixel under it, or null. */
export function hitTest(grid, view, sx, sy) {
  const g = geometry(grid, view.zoom, view.band || 0);
  const wx = sx + view.panX;
  const wy = sy + view.panY;
  if (wx < 0 || wy < 0 || wx >= g.width || wy >= g.height) return null;
  const bx = Math.floor(wx / g.blockPitchX);
  const line = Math.floor(wy / g.blockPitchY);
  const inBlockX = wx - bx * g.blockPitchX;
  const inY = wy - line * g.blockPitchY - g.band;
  const c = Math.floor(inBlockX / g.pitchX);
  const inX = inBlockX - c * g.pitchX;
  if (bx >= g.blockCols || c >= grid.cols || inY < 0 || inX >= g.tileW || inY >= g.tileH) return null;
  const row = line * g.blockCols + bx;
  if (row >= grid.rows) return null;
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

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const TOP = LUT_SIZE - 1;
/** Screen columns per strip. */
const STRIP = 64;

/** The opaque pixel word of [r, g, b]. */
function word([r, g, b]) {
  return LITTLE_ENDIAN ? (255 << 24) | (b << 16) | (g << 8) | r : (r << 24) | (g << 16) | (b << 8) | 255;
}

function tableWords(table) {
  const out = new Int32Array(LUT_SIZE);
  for (let i = 0; i < LUT_SIZE; i++) out[i] = word([table[3 * i], table[3 * i + 1], table[3 * i + 2]]);
  return out;
}

// The entry of a finite v is round(t * TOP) clamped, t = (v - lo) / (hi - lo)
// (colormap.js lutIndex). With x = t * TOP it is computed here as
//     x < 0.5 ? 0 : x >= TOP ? TOP : (x + 0.5) | 0
// which is the same entry for every x: for 0.5 <= x < TOP, x + 0.5 is exact or
// rounds within [1, 1.5), so truncating it is Math.round(x).

/** The LUT entry of finite `v` for limits lo, lo + span (MID when span <= 0). */
function entryOf(v, lo, span) {
  if (!(span > 0)) return TOP >> 1;
  const x = ((v - lo) / span) * TOP;
  return x < 0.5 ? 0 : x >= TOP ? TOP : (x + 0.5) | 0;
}

// Buckets of float32 bit patterns. key = bits ^ ((bits >> 31) & 0x7fffffff) orders
// the patterns like their values (as int32); bucket key >> BUCKET_BITS holds
// BUCKET neighbouring values (9 mantissa bits of resolution).
const BUCKET_BITS = 14;
const BUCKET = 1 << BUCKET_BITS;
const HALF = 1 << (31 - BUCKET_BITS);
const WORDS = 2 * HALF;
const PER_EXPONENT = 1 << (23 - BUCKET_BITS);
const keyBits = new Int32Array(1);
const keyFloat = new Float32Array(keyBits.buffer);
let buckets = null;

function valueOfKey(key) {
  keyBits[0] = key < 0 ? key ^ 0x7fffffff : key;
  return keyFloat[0];
}

/**
 * Per bucket: its colour word when all its values get one colour (negative: on a
 * little-endian machine alpha 255 is the top byte), else (threshold << 9) | entry:
 * keys whose low BUCKET_BITS are >= threshold get entry + 1. The LUT's words
 * follow at index WORDS. Null if a bucket spans more than two colours (limits
 * narrow for their magnitude). A sign and exponent whose whole range gets one
 * colour (most of them) is filled at once.
 */
function bucketTable(lo, hi, words, bad) {
  buckets = buckets || new Int32Array(WORDS + LUT_SIZE);
  buckets.set(words, WORDS);
  const span = hi - lo;
  for (let e = 0; e < 512; e++) {
    const k0 = e << 23;
    const b0 = (k0 >> BUCKET_BITS) + HALF;
    const first = valueOfKey(k0);
    if (first - first !== 0) {
      buckets.fill(bad, b0, b0 + PER_EXPONENT); // exponent 255: NaN and +-Inf
      continue;
    }
    const a = entryOf(first, lo, span);
    if (a === entryOf(valueOfKey(k0 + 0x7fffff), lo, span)) {
      buckets.fill(words[a], b0, b0 + PER_EXPONENT);
      continue;
    }
    for (let b = 0; b < PER_EXPONENT; b++) {
      const k = k0 + b * BUCKET;
      const c = entryOf(valueOfKey(k), lo, span);
      const z = entryOf(valueOfKey(k + BUCKET - 1), lo, span);
      if (z === c) {
        buckets[b0 + b] = words[c];
        continue;
      }
      if (z !== c + 1) return null;
      let below = 0; // the last key offset with entry c, then the first with c + 1
      let above = BUCKET - 1;
      while (above - below > 1) {
        const m = (below + above) >> 1;
        if (entryOf(valueOfKey(k + m), lo, span) === c) below = m;
        else above = m;
      }
      buckets[b0 + b] = (above << 9) | c;
    }
  }
  return buckets;
}

/**
 * What each screen column and row of the window shows. Columns: the block
 * column (-1 outside the grid), the tile column within the block (-1 on a gap)
 * and the offset in the tile. The window is cut into parts, runs of columns of
 * one block column; per part and screen row: the source grid row (-1 if none),
 * the offset in the tile, how many of its cells exist and what gaps show.
 * Gaps between the tiles of a block show `sep`; between blocks (and outside
 * the grid) `bg`. A strip (blockCols 1) shows `sep` everywhere inside the grid.
 */
function frameOf(width, height, grid, view, bgWord, sepWord) {
  const g = geometry(grid, view.zoom, view.band || 0);
  const blocks = g.blockCols > 1;
  const colBlock = new Int32Array(width).fill(-1);
  const colCell = new Int32Array(width).fill(-1);
  const colOff = new Int32Array(width);
  const sepFill = new Int32Array(width).fill(bgWord); // what a gap shows in a row of tiles
  const bgFill = new Int32Array(width).fill(bgWord);
  for (let sx = 0; sx < width; sx++) {
    const wx = sx + view.panX;
    if (wx < 0 || wx >= g.width) continue;
    const bx = Math.floor(wx / g.blockPitchX);
    if (bx >= g.blockCols) continue;
    colBlock[sx] = bx;
    const inBlock = wx - bx * g.blockPitchX;
    if (inBlock >= g.blockW) {
      if (!blocks) sepFill[sx] = sepWord;
      continue;
    }
    sepFill[sx] = sepWord;
    const c = Math.floor(inBlock / g.pitchX);
    const within = inBlock - c * g.pitchX;
    if (within >= g.tileW) continue;
    const xo = grid.xOff[Math.min(grid.tw - 1, Math.floor(within / view.zoom))];
    if (xo < 0) continue;
    colCell[sx] = c;
    colOff[sx] = xo;
  }
  // per screen row: the block line and the pixel row in its tiles (-1: band or gap)
  const lineOf = new Int32Array(height).fill(-1);
  const pixOf = new Int32Array(height).fill(-1);
  for (let sy = 0; sy < height; sy++) {
    const wy = sy + view.panY;
    if (wy < 0 || wy >= g.height) continue;
    const line = Math.floor(wy / g.blockPitchY);
    const inY = wy - line * g.blockPitchY - g.band;
    lineOf[sy] = line;
    if (inY >= 0 && inY < g.tileH) pixOf[sy] = Math.min(grid.th - 1, Math.floor(inY / view.zoom));
  }
  const parts = [];
  for (let x0 = 0; x0 < width;) {
    let x1 = x0 + 1;
    while (x1 < width && colBlock[x1] === colBlock[x0]) x1++;
    const bx = colBlock[x0];
    const rowR = new Int32Array(height).fill(-1);
    const rowOff = new Int32Array(height);
    const rowValid = new Int32Array(height);
    const rowFill = new Array(height).fill(bgFill);
    for (let sy = 0; bx >= 0 && sy < height; sy++) {
      const line = lineOf[sy];
      if (line < 0) continue;
      const slot = line * g.blockCols + bx;
      if (slot >= grid.rows) continue;
      const pix = pixOf[sy];
      if (pix < 0) {
        // the gap below a strip's row is a separator; a block's band and margins are background
        if (!blocks) rowFill[sy] = sepFill;
        continue;
      }
      const r = view.rowOrder ? view.rowOrder[slot] : slot;
      rowR[sy] = r;
      rowOff[sy] = grid.yOff[pix];
      rowValid[sy] = Math.min(grid.cols, grid.cells - r * grid.cols);
      rowFill[sy] = sepFill;
    }
    parts.push({ x0, x1, rowR, rowOff, rowValid, rowFill });
    x0 = x1;
  }
  return { colCell, colOff, parts, bg: bgWord };
}

function uniform(limits, cells) {
  const { lo, hi } = limits;
  for (let c = 1; c < cells; c++) if (lo[c] !== lo[0] || hi[c] !== hi[0]) return false;
  return true;
}

/** Every pixel straight from its value (any values, any limits, any grid). */
function drawDirect(px, width, height, grid, values, limits, words, bad, f) {
  const { cellBase, cols } = grid;
  const { lo, hi } = limits;
  const { colCell, colOff, bg } = f;
  for (const { x0: p0, x1: p1, rowR, rowOff, rowValid, rowFill } of f.parts) {
    for (let x0 = p0; x0 < p1; x0 += STRIP) {
      const x1 = Math.min(p1, x0 + STRIP);
      for (let sy = 0, p = 0; sy < height; sy++, p += width) {
        const r = rowR[sy];
        const fill = rowFill[sy];
        const first = r * cols;
        const valid = rowValid[sy];
        const ro = rowOff[sy];
        for (let sx = x0; sx < x1; sx++) {
          const c = r < 0 ? -1 : colCell[sx];
          if (c < 0 || c >= valid) {
            px[p + sx] = c < 0 ? fill[sx] : bg;
            continue;
          }
          const cell = first + c;
          const v = values[cellBase[cell] + ro + colOff[sx]];
          const l = lo[cell];
          px[p + sx] = v - v !== 0 ? bad : words[entryOf(v, l, hi[cell] - l)];
        }
      }
    }
  }
}

/** Float32 values of a dense grid with one pair of limits, coloured by bucketTable. */
function drawBuckets(px, width, height, grid, table, values, f, dense) {
  const bits = new Int32Array(values.buffer, values.byteOffset, values.length);
  const { colCell, colOff, bg } = f;
  const { rowStride, colStride } = dense;
  const cols = grid.cols;
  const b0 = grid.cellBase[0];
  const colAdd = new Int32Array(width);
  for (let sx = 0; sx < width; sx++) colAdd[sx] = colCell[sx] < 0 ? -1 : colCell[sx] * colStride + colOff[sx];
  for (const { x0: p0, x1: p1, rowR, rowOff, rowValid, rowFill } of f.parts) {
    for (let x0 = p0; x0 < p1; x0 += STRIP) {
      const x1 = Math.min(p1, x0 + STRIP);
      for (let sy = 0, p = 0; sy < height; sy++, p += width) {
        const r = rowR[sy];
        const fill = rowFill[sy];
        const base = b0 + r * rowStride + rowOff[sy];
        const valid = r < 0 ? -1 : rowValid[sy];
        for (let sx = x0; sx < x1; sx++) {
          const a = colAdd[sx];
          if (a < 0 || valid < cols) {
            // a gap, a row of gaps, or the last row of a grid ending before its last column
            const c = r < 0 ? -1 : colCell[sx];
            if (c < 0 || c >= valid) {
              px[p + sx] = c < 0 ? fill[sx] : bg;
              continue;
            }
          }
          const u = bits[base + a];
          const key = u ^ ((u >> 31) & 0x7fffffff);
          const w = table[(key >> BUCKET_BITS) + HALF];
          px[p + sx] = w < 0 ? w : table[WORDS + (w & 511) + ((key & (BUCKET - 1)) >= w >> 9 ? 1 : 0)];
        }
      }
    }
  }
}

/**
 * Fills `out` (RGBA bytes, width x height) with the visible part of the grid.
 *
 * values: the flat tensor (any typed array); limits: {lo, hi} per cell;
 * table: colormap LUT; view: {zoom, panX, panY, rowOrder?}; bg: [r, g, b] outside
 * the grid; sep: [r, g, b] of the 1-px gaps between tiles (default bg).
 */
export function renderGrid(out, width, height, grid, values, limits, table, view, bg, sep = bg) {
  if (grid.rgb) return renderRgb(out, width, height, grid, values, limits, view, bg, sep);
  const n = width * height;
  const aligned = out.byteOffset % 4 === 0;
  const px = aligned ? new Int32Array(out.buffer, out.byteOffset, n) : new Int32Array(n);
  const f = frameOf(width, height, grid, view, word(bg), word(sep));
  const words = tableWords(table);
  const bad = word(NONFINITE);
  const dense = values instanceof Float32Array && LITTLE_ENDIAN ? denseRange(grid) : null;
  const byBucket = dense && dense.end <= values.length && uniform(limits, grid.cells)
    ? bucketTable(limits.lo[0], limits.hi[0], words, bad) : null;
  if (byBucket) {
    drawBuckets(px, width, height, grid, byBucket, values, f, dense);
  } else {
    drawDirect(px, width, height, grid, values, limits, words, bad, f);
  }
  if (!aligned) out.set(new Uint8Array(px.buffer));
  return out;
}

/** renderGrid for RGB grids: three values per pixel, each scaled to a byte. */
function renderRgb(out, width, height, grid, values, limits, view, bg, sep) {
  const f = frameOf(width, height, grid, view, word(bg), word(sep));
  const { colCell, colOff } = f;
  const { lo, hi } = limits;
  const chans = grid.chanOff;
  const bytes = new Uint8Array(new Int32Array([word(bg), word(sep)]).buffer);
  const [nr, ng, nb] = NONFINITE;
  for (const { x0, x1, rowR, rowOff, rowValid, rowFill } of f.parts) {
    for (let sy = 0; sy < height; sy++) {
      const r = rowR[sy];
      const fill = rowFill[sy];
      for (let sx = x0, p = (sy * width + x0) * 4; sx < x1; sx++, p += 4) {
        const c = r < 0 ? -1 : colCell[sx];
        if (c < 0 || c >= rowValid[sy]) {
          // a gap (its fill is the background's or the separator's word) or a missing cell
          const k = c < 0 && fill[sx] !== f.bg ? 4 : 0;
          out[p] = bytes[k];
          out[p + 1] = bytes[k + 1];
          out[p + 2] = bytes[k + 2];
          out[p + 3] = 255;
          continue;
        }
        const cell = r * grid.cols + c;
        const l = lo[cell];
        const span = hi[cell] - l;
        const off = grid.cellBase[cell] + rowOff[sy] + colOff[sx];
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
        out[p + 3] = 255;
      }
    }
  }
  return out;
}

const images = new WeakMap();

/**
 * An ImageData of width x height for canvas context `ctx`, the same one on every
 * call with that size: a fresh one costs a new, zeroed buffer per frame. Its
 * pixels are whatever was drawn last (renderGrid writes every one).
 */
export function imageFor(ctx, width, height) {
  let img = images.get(ctx);
  if (!img || img.width !== width || img.height !== height) {
    img = ctx.createImageData(width, height);
    images.set(ctx, img);
  }
  return img;
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
