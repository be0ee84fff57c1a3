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

/** Screen rows and columns of the window: what each shows, and gap colours. */
function frameOf(width, height, grid, view, bgWord, sepWord) {
  const g = geometry(grid, view.zoom);
  const xs = axisMap(width, view.panX, g.pitchX, g.tileW, view.zoom, grid.cols, grid.tw);
  const ys = axisMap(height, view.panY, g.pitchY, g.tileH, view.zoom, grid.rows, grid.th);
  // columns: tile column (-1 if no value: gap, slice separator, outside) and offset in the tile
  const colCell = xs.cell;
  const colOff = new Int32Array(width);
  const sepFill = new Int32Array(width); // what a gap shows in a row inside the grid
  const bgFill = new Int32Array(width).fill(bgWord);
  for (let sx = 0; sx < width; sx++) {
    const wx = sx + view.panX;
    sepFill[sx] = wx >= 0 && wx < g.width ? sepWord : bgWord;
    if (colCell[sx] < 0) continue;
    const xo = grid.xOff[xs.pix[sx]];
    if (xo < 0) colCell[sx] = -1;
    else colOff[sx] = xo;
  }
  // rows: source row (-1 if none), offset in the tile, how many of its cells exist, gap fill
  const rowR = new Int32Array(height).fill(-1);
  const rowOff = new Int32Array(height);
  const rowValid = new Int32Array(height);
  const rowFill = new Array(height);
  for (let sy = 0; sy < height; sy++) {
    const wy = sy + view.panY;
    const inside = wy >= 0 && wy < g.height;
    const row = ys.cell[sy];
    if (row < 0) {
      rowFill[sy] = inside ? sepFill : bgFill;
      continue;
    }
    const r = view.rowOrder ? view.rowOrder[row] : row;
    rowR[sy] = r;
    rowOff[sy] = grid.yOff[ys.pix[sy]];
    rowValid[sy] = Math.min(grid.cols, grid.cells - r * grid.cols);
    rowFill[sy] = inside && r * grid.cols - 1 < grid.cells ? sepFill : bgFill;
  }
  return { colCell, colOff, rowR, rowOff, rowValid, rowFill, bg: bgWord };
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
  const { colCell, colOff, rowR, rowOff, rowValid, rowFill, bg } = f;
  for (let x0 = 0; x0 < width; x0 += STRIP) {
    const x1 = Math.min(width, x0 + STRIP);
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

/** Float32 values of a dense grid with one pair of limits, coloured by bucketTable. */
function drawBuckets(px, width, height, grid, table, values, f, dense) {
  const bits = new Int32Array(values.buffer, values.byteOffset, values.length);
  const { colCell, colOff, rowR, rowOff, rowValid, rowFill, bg } = f;
  const { rowStride, colStride } = dense;
  const cols = grid.cols;
  const b0 = grid.cellBase[0];
  const colAdd = new Int32Array(width);
  for (let sx = 0; sx < width; sx++) colAdd[sx] = colCell[sx] < 0 ? -1 : colCell[sx] * colStride + colOff[sx];
  for (let x0 = 0; x0 < width; x0 += STRIP) {
    const x1 = Math.min(width, x0 + STRIP);
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
  const [br, bgG, bb] = bg;
  const [gr, gg, gb] = sep;
  const [nr, ng, nb] = NONFINITE;
  const chans = grid.chanOff;
  let p = 0;
  for (let sy = 0; sy < height; sy++) {
    const row = ys.cell[sy];
    const r = row < 0 ? -1 : view.rowOrder ? view.rowOrder[row] : row;
    const rowOff = r < 0 ? 0 : grid.yOff[ys.pix[sy]];
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
      const off = grid.cellBase[cell] + rowOff + colOff[sx];
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
