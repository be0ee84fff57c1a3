// Canonical grid geometry of a logged tensor (pure, DOM-free).
//
// Every layout of tb_convfilters/layouts.py becomes a grid of `rows` x `cols`
// cells, each cell a tile of `th` x `tw` pixels. The flat (C-order) offset of
// cell (r, c), tile pixel (y, x) is always additive:
//     cellBase[r * cols + c] + yOff[y] + xOff[x]     (cellBase = rowBase[r] + colBase[c])
// (xOff[x] is -1 on the 1-px separators between the D slices of 3D tiles).
// That keeps the renderer one tight loop whatever the layout.

export const KERNEL_LAYOUTS = [
  "WIO", "OIW", "HWIO", "OIHW", "DHWIO", "OIDHW", "WIM", "HWIM",
  "WOI", "HWOI", "DHWOI", "IOW", "IOHW", "IODHW", "IO", "OI",
];
export const ACTIVATION_LAYOUTS = ["NWC", "NCW", "NHWC", "NCHW", "NDHWC", "NCDHW"];
export const IMAGE_KINDS = ["pattern", "projection"];

/** C-order strides (in elements) of `shape`. */
export function strides(shape) {
  const out = new Array(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    out[i] = s;
    s *= shape[i];
  }
  return out;
}

function axis(layout, shape, st, letter) {
  const i = layout.indexOf(letter);
  return i < 0 ? { n: 1, s: 0 } : { n: shape[i], s: st[i] };
}

function range(n, f) {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = f(i);
  return out;
}

/** yOff/xOff of D?H?W spatial axes: D slices side by side with a 1-px separator. */
function spatial(layout, shape, st) {
  const d = axis(layout, shape, st, "D");
  const h = axis(layout, shape, st, "H");
  const w = axis(layout, shape, st, "W");
  const tw = d.n * w.n + (d.n - 1);
  const xOff = range(tw, (x) => {
    const slice = Math.floor(x / (w.n + 1));
    const within = x - slice * (w.n + 1);
    return within === w.n ? -1 : slice * d.s + within * w.s;
  });
  return { th: h.n, tw, yOff: range(h.n, (y) => y * h.s), xOff, depth: d.n, width: w.n };
}

/** Kernels with at most this many input channels per filter draw as a grid of filter blocks. */
export const BLOCK_CHANNELS = 3;

/** Number of columns that makes `count` tiles of th x tw pixels a near-square grid. */
export function squareColumns(count, th, tw) {
  const ideal = Math.sqrt((count * th) / Math.max(tw, 1));
  return Math.min(count, Math.max(1, Math.round(ideal)));
}

function labels(kept, n) {
  return Array.isArray(kept) && kept.length === n ? kept.slice() : null;
}

/**
 * The grid of one tensor.
 *
 * header: {kind, layout, shape, filters?, channels?, image_shape?} (the step header).
 * opts.sample: sample index for activations/images' N axis (default 0).
 * opts.rgb: draw 3-channel kernels (and 3-channel images) as one colour tile.
 *
 * Returns {rows, cols, th, tw, rowBase, colBase, yOff, xOff, cells, rgb,
 * chanOff (rgb only: offsets of the 3 colour channels), samples, filterOf(r, c),
 * channelOf(r, c), filterLabel(f), channelLabel(ch), nFilters, nChannels, kind, layout}.
 * `cells` is the number of valid cells in row-major order (activation grids
 * may leave the last row incomplete).
 */
export function canonicalize(header, opts = {}) {
  const { layout, shape } = header;
  const kind = header.kind || "kernel";
  if (!Array.isArray(shape) || typeof layout !== "string" || shape.length !== layout.length) {
    throw new Error(`layout ${JSON.stringify(layout)} does not match shape ${JSON.stringify(shape)}`);
  }
  const st = strides(shape);
  if (kind === "activation" || IMAGE_KINDS.includes(kind)) return sampleGrid(header, st, opts, kind);
  if (!KERNEL_LAYOUTS.includes(layout)) throw new Error(`unknown kernel layout ${JSON.stringify(layout)}`);
  return kernelGrid(header, st, opts);
}

function kernelGrid(header, st, opts) {
  const { layout, shape } = header;
  const I = axis(layout, shape, st, "I");
  const O = axis(layout, shape, st, "O");
  const M = axis(layout, shape, st, "M");
  const depthwise = layout.includes("M");
  let sp = spatial(layout, shape, st);
  let rowsAx, colsAx, nChannels;
  if (depthwise) {
    rowsAx = I; // filter i*M + m reads input channel i
    colsAx = M;
    nChannels = I.n;
  } else {
    rowsAx = O;
    colsAx = I;
    nChannels = I.n;
  }
  let colBaseFn = (c) => c * colsAx.s;
  let cols = colsAx.n;
  const img = header.image_shape;
  if ((layout === "IO" || layout === "OI") && Array.isArray(img) && img.length === 3
      && img[0] * img[1] * img[2] === I.n) {
    const [h, w, c] = img;
    cols = c;
    colBaseFn = (ch) => ch * I.s;
    sp = { th: h, tw: w, yOff: range(h, (y) => y * w * c * I.s), xOff: range(w, (x) => x * c * I.s) };
    nChannels = c;
  }
  const rows = rowsAx.n;
  const filterLabels = labels(header.filters, depthwise ? I.n : O.n);
  const channelLabels = depthwise ? labels(header.filters, I.n) : labels(header.channels, I.n);
  const nFilters = depthwise ? I.n * M.n : O.n;
  const rgb = Boolean(opts.rgb) && !depthwise && cols === 3;
  // each row (a filter's channels, or a depthwise input channel's filters) is one block;
  // few of them per row: blocks sit side by side in a grid (near-square unless the
  // view fits it to its area, render.js fitBlocks) instead of a strip
  const perBlock = rgb ? 1 : cols;
  const blocks = perBlock <= BLOCK_CHANNELS && rows > 1;
  const blockCols = blocks ? squareColumns(rows, sp.th, perBlock * sp.tw) : 1;
  const grid = {
    kind: "kernel",
    layout,
    rows,
    cols: rgb ? 1 : cols,
    th: sp.th,
    tw: sp.tw,
    rowBase: range(rows, (r) => r * rowsAx.s),
    colBase: rgb ? new Int32Array(1) : range(cols, colBaseFn),
    yOff: sp.yOff,
    xOff: sp.xOff,
    cells: rows * (rgb ? 1 : cols),
    blocks,
    blockCols,
    rgb,
    chanOff: rgb ? range(3, colBaseFn) : null,
    samples: 1,
    nFilters,
    nChannels,
    canRgb: !depthwise && cols === 3,
    filterOf: depthwise ? (r, c) => r * M.n + c : (r) => r,
    channelOf: depthwise ? (r) => r : (r, c) => c,
    filterLabel: depthwise
      ? (f) => {
        const i = Math.floor(f / M.n);
        return String((filterLabels ? filterLabels[i] : i) * M.n + (f % M.n));
      }
      : (f) => String(filterLabels ? filterLabels[f] : f),
    channelLabel: (ch) => String(channelLabels ? channelLabels[ch] : ch),
  };
  return withCells(grid);
}

function sampleGrid(header, st, opts, kind) {
  const { layout, shape } = header;
  const known = kind === "activation" ? ACTIVATION_LAYOUTS : ["NHWC"];
  if (!known.includes(layout)) throw new Error(`unknown ${kind} layout ${JSON.stringify(layout)}`);
  const N = axis(layout, shape, st, "N");
  const C = axis(layout, shape, st, "C");
  const sample = Math.min(Math.max(0, Math.floor(opts.sample || 0)), N.n - 1);
  const base = sample * N.s;
  const sp = spatial(layout, shape, st);
  const images = kind !== "activation";
  // activations: one tile per channel; images: one tile per sample (filter), channels = colour
  const count = images ? N.n : C.n;
  const rgb = images ? C.n === 3 : false;
  const cols = squareColumns(count, sp.th, sp.tw);
  const rows = Math.ceil(count / cols);
  const step = images ? N.s : C.s;
  const cellBase = images ? 0 : base;
  const filterLabels = labels(header.filters, count);
  return withCells({
    kind,
    layout,
    rows,
    cols,
    th: sp.th,
    tw: sp.tw,
    rowBase: range(rows, (r) => cellBase + r * cols * step),
    colBase: range(cols, (c) => c * step),
    yOff: sp.yOff,
    xOff: sp.xOff,
    cells: count,
    rgb,
    chanOff: rgb ? range(3, (c) => c * C.s) : null,
    samples: images ? 1 : N.n,
    sample: images ? 0 : sample,
    nFilters: count,
    nChannels: images ? C.n : 1,
    canRgb: false,
    filterOf: (r, c) => r * cols + c,
    channelOf: (r, c) => r * cols + c,
    filterLabel: (f) => String(filterLabels ? filterLabels[f] : f),
    channelLabel: (ch) => String(ch),
  });
}

/**
 * Adds cellBase[cell] = rowBase[r] + colBase[c] (row-major cells) and filter ranges.
 * `blockCols` (how the grid is drawn, render.js geometry): every grid row is a block
 * of `cols` tiles, `blockCols` blocks to a line; 1 (the default) stacks the rows.
 * `blocks`: whether the grid may be drawn so (kernels with few channels per filter).
 */
function withCells(grid) {
  grid.blocks = Boolean(grid.blocks);
  grid.blockCols = grid.blockCols || 1;
  const { rows, cols, rowBase, colBase } = grid;
  const cellBase = new Int32Array(rows * cols);
  for (let r = 0, k = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++, k++) cellBase[k] = rowBase[r] + colBase[c];
  }
  grid.cellBase = cellBase;
  // a filter is a whole row for (non-depthwise) kernels, one cell otherwise
  grid.rowFilters = grid.kind === "kernel" && !grid.layout.includes("M");
  return grid;
}

/** The common difference of `list` (0 for one entry), or NaN if it is not arithmetic. */
function stepOf(list) {
  const s = list.length > 1 ? list[1] - list[0] : 0;
  for (let i = 2; i < list.length; i++) if (list[i] - list[i - 1] !== s) return NaN;
  return s;
}

/** [count, stride] axes of a tile row's xOff: W, or D slices of W split by -1. */
function xAxes(xOff) {
  const runs = [[]];
  for (const x of xOff) {
    if (x < 0) runs.push([]);
    else runs[runs.length - 1].push(x);
  }
  const w = runs[0].length;
  const inner = stepOf(runs[0]);
  if (!w || runs.some((run) => run.length !== w || (w > 1 && stepOf(run) !== inner))) return null;
  return [[w, inner], [runs.length, stepOf(runs.map((run) => run[0]))]];
}

const stridesOf = new WeakMap();

/**
 * {rowStride, colStride} when cell (r, c) starts at cellBase[0] + r * rowStride +
 * c * colStride for every cell (true of every canonical grid), else null.
 * Remembered per grid object (grids are not modified).
 */
export function cellStrides(grid) {
  if (!stridesOf.has(grid)) stridesOf.set(grid, regularCells(grid));
  return stridesOf.get(grid);
}

function regularCells(grid) {
  const { rows, cols, cells, cellBase } = grid;
  if (!cells) return null;
  const b0 = cellBase[0];
  const colStride = cols > 1 ? cellBase[1] - b0 : 0;
  const rowStride = rows > 1 ? cellBase[cols] - b0 : 0;
  for (let r = 0; r < rows; r++) {
    const n = Math.min(cols, cells - r * cols);
    for (let c = 0, k = r * cols; c < n; c++, k++) {
      if (cellBase[k] !== b0 + r * rowStride + c * colStride) return null;
    }
  }
  return { rowStride, colStride };
}

/**
 * {start, end, rowStride, colStride} when the values of all of `grid`'s cells
 * (every colour channel) are exactly values[start..end), each once, and its
 * cells are regular (cellStrides); else null. Such a layer can be read in
 * memory order.
 */
export function denseRange(grid) {
  const strides = grid.th ? cellStrides(grid) : null;
  const xs = xAxes(grid.xOff);
  if (!strides || !xs) return null;
  const { rows, cols, cells } = grid;
  const { rowStride, colStride } = strides;
  const axes = cells === rows * cols ? [[rows, rowStride], [cols, colStride]]
    : rowStride === cols * colStride ? [[cells, colStride]] : null;
  if (!axes) return null;
  axes.push([grid.th, stepOf(grid.yOff)], ...xs);
  if (grid.rgb) axes.push([grid.chanOff.length, stepOf(grid.chanOff)]);
  // a mixed-radix number system with digits (count, stride) covers [0, size) once
  const used = axes.filter(([n]) => n > 1).sort((a, b) => a[1] - b[1]);
  let size = 1;
  for (const [n, stride] of used) {
    if (stride !== size) return null;
    size *= n;
  }
  const start = grid.cellBase[0] + grid.yOff[0] + grid.xOff[0] + (grid.rgb ? grid.chanOff[0] : 0);
  return { start, end: start + size, rowStride, colStride };
}

/** Cells [start, end) (row-major) that hold filter `f`. */
export function filterCells(grid, f) {
  return grid.rowFilters ? [f * grid.cols, (f + 1) * grid.cols] : [f, f + 1];
}

/** Number of filters drawn (rows of a kernel grid, else cells). */
export function filterCount(grid) {
  return grid.rowFilters ? grid.rows : grid.cells;
}

/** The display row and column of filter `f`'s first cell. */
export function filterCell(grid, f) {
  const [start] = filterCells(grid, f);
  return { r: Math.floor(start / grid.cols), c: start % grid.cols };
}

/** The label of grid row `r`'s block: the (original) index of its first filter. */
export function blockLabel(grid, r) {
  return grid.filterLabel(grid.filterOf(r, 0));
}

/**
 * A grid of some cells of `grid` (e.g. one filter's tiles) rearranged
 * near-square; `origin[i]` is the source cell of cell i.
 */
export function subGrid(grid, cells) {
  const n = cells.length;
  const cols = squareColumns(n, grid.th, grid.tw);
  const rows = Math.ceil(n / cols);
  const cellBase = new Int32Array(rows * cols);
  cells.forEach((cell, i) => { cellBase[i] = grid.cellBase[cell]; });
  const origin = Int32Array.from(cells);
  const src = (r, c) => {
    const cell = origin[r * cols + c];
    return [Math.floor(cell / grid.cols), cell % grid.cols];
  };
  return {
    ...grid,
    rows,
    cols,
    cells: n,
    cellBase,
    rowBase: new Int32Array(rows),
    colBase: new Int32Array(cols),
    origin,
    blocks: false,
    blockCols: 1,
    rowFilters: false,
    filterOf: (r, c) => grid.filterOf(...src(r, c)),
    channelOf: (r, c) => grid.channelOf(...src(r, c)),
  };
}

/** Flat offsets of every value of cell (r, c) (rgb: of every colour channel too). */
export function cellOffsets(grid, r, c) {
  const out = [];
  const chans = grid.rgb ? grid.chanOff : [0];
  const base = grid.cellBase[r * grid.cols + c];
  for (const ch of chans) {
    for (let y = 0; y < grid.th; y++) {
      for (let x = 0; x < grid.tw; x++) {
        if (grid.xOff[x] >= 0) out.push(base + ch + grid.yOff[y] + grid.xOff[x]);
      }
    }
  }
  return out;
}

/** Flat offset of tile pixel (y, x) of cell (r, c), or -1 on a slice separator. */
export function offsetOf(grid, r, c, y, x) {
  const xo = grid.xOff[x];
  return xo < 0 ? -1 : grid.cellBase[r * grid.cols + c] + grid.yOff[y] + xo;
}
