// Colour limits chosen at view time (pure, DOM-free).
//
// Signed colormaps get symmetric limits [-L, L] with L the p-th percentile of
// |v|; other colormaps get [P(100 - p), P(p)]. Percentiles use numpy's default
// "linear" definition over the finite values; NaN/Inf are counted, not used.

export const MODES = ["tile", "filter", "layer", "steps", "runs"];
export const MODE_LABELS = {
  tile: "per tile",
  filter: "per filter",
  layer: "per layer",
  steps: "fixed over steps",
  runs: "fixed over compared runs",
};
export const DEFAULT_PERCENTILE = 99.5;

function swap(a, i, j) {
  const t = a[i];
  a[i] = a[j];
  a[j] = t;
}

/** Rearranges a[lo..hi] so that a[k] is the k-th smallest (iterative quickselect). */
function select(a, k, lo, hi) {
  while (hi > lo) {
    const mid = (lo + hi) >> 1;
    if (a[mid] < a[lo]) swap(a, mid, lo);
    if (a[hi] < a[lo]) swap(a, hi, lo);
    if (a[mid] < a[hi]) swap(a, mid, hi); // a[hi] is now the median of three
    const pivot = a[hi];
    let i = lo;
    for (let j = lo; j < hi; j++) {
      if (a[j] < pivot) swap(a, i++, j);
    }
    swap(a, i, hi);
    if (i === k) return;
    if (i < k) lo = i + 1;
    else hi = i - 1;
  }
}

/**
 * The p-th percentile (0..100, numpy "linear") of the first `n` entries of
 * `scratch`, which it reorders. NaN when n == 0.
 */
export function percentileInPlace(scratch, n, p) {
  if (n === 0) return NaN;
  const h = ((n - 1) * Math.min(Math.max(p, 0), 100)) / 100;
  const k = Math.floor(h);
  select(scratch, k, 0, n - 1);
  const a = scratch[k];
  if (k + 1 >= n || h === k) return a;
  let b = Infinity;
  for (let i = k + 1; i < n; i++) if (scratch[i] < b) b = scratch[i];
  return a + (h - k) * (b - a);
}

/** The p-th percentile of the finite values of an array-like. */
export function percentile(values, p) {
  const scratch = new Float64Array(values.length);
  let n = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isFinite(v)) scratch[n++] = v;
  }
  return percentileInPlace(scratch, n, p);
}

/** [lo, hi] of finite `values` (array-like) for percentile p, symmetric if `signed`. */
export function limitsOf(values, p, signed) {
  const n0 = values.length;
  const scratch = new Float64Array(n0);
  let n = 0;
  for (let i = 0; i < n0; i++) {
    const v = values[i];
    if (Number.isFinite(v)) scratch[n++] = signed ? Math.abs(v) : v;
  }
  return limitsOfScratch(scratch, n, p, signed);
}

function limitsOfScratch(scratch, n, p, signed) {
  if (n === 0) return [0, 0];
  if (signed) {
    const l = percentileInPlace(scratch, n, p);
    return [-l, l];
  }
  const hi = percentileInPlace(scratch, n, p);
  const lo = percentileInPlace(scratch, n, 100 - p);
  return [lo, hi];
}

/**
 * Which cells share limits. Groups are contiguous runs of row-major cells:
 * returns {count, size, start(g), end(g)} (size = most cells in a group).
 */
export function groupsOf(grid, mode) {
  const cells = grid.cells;
  if (mode === "tile" || (mode === "filter" && !grid.rowFilters)) {
    return { count: cells, size: 1, start: (g) => g, end: (g) => g + 1 };
  }
  if (mode === "filter") {
    const cols = grid.cols;
    return { count: grid.rows, size: cols, start: (g) => g * cols, end: (g) => Math.min(cells, (g + 1) * cols) };
  }
  return { count: 1, size: cells, start: () => 0, end: () => cells };
}

/** Number of values in one cell (all colour channels in RGB mode). */
export function cellSize(grid) {
  let w = 0;
  for (let x = 0; x < grid.tw; x++) if (grid.xOff[x] >= 0) w++;
  return w * grid.th * (grid.rgb ? 3 : 1);
}

/**
 * Calls fn(offset) for every value of cells [start, end); returns nothing.
 * Shared by limits, drift and similarity so they agree on what a filter is.
 */
export function forEachValue(grid, start, end, fn) {
  const chans = grid.rgb ? grid.chanOff : [0];
  const { cellBase, yOff, xOff, th, tw } = grid;
  for (let cell = start; cell < end; cell++) {
    const base = cellBase[cell];
    for (const ch of chans) {
      for (let y = 0; y < th; y++) {
        const row = base + ch + yOff[y];
        for (let x = 0; x < tw; x++) {
          const xo = xOff[x];
          if (xo >= 0) fn(row + xo);
        }
      }
    }
  }
}

/**
 * Per-cell limits of `values` laid out by `grid`.
 *
 * mode: "tile" | "filter" | "layer"; "steps"/"runs" use `fixed` = [lo, hi]
 * when given (else they fall back to per layer).
 * Returns {lo, hi: Float32Array(rows*cols), nonfinite: Uint32Array(rows*cols),
 * range: [min lo, max hi] over valid cells, mode}.
 */
export function cellLimits(grid, values, { mode = "layer", p = DEFAULT_PERCENTILE, signed = true, fixed = null } = {}) {
  const cells = grid.rows * grid.cols;
  const lo = new Float32Array(cells);
  const hi = new Float32Array(cells);
  const nonfinite = new Uint32Array(cells);
  const isFixed = (mode === "steps" || mode === "runs") && fixed;
  const groups = groupsOf(grid, MODES.includes(mode) && mode !== "steps" && mode !== "runs" ? mode : "layer");
  const scratch = new Float64Array(isFixed ? 0 : groups.size * cellSize(grid));
  let rlo = Infinity;
  let rhi = -Infinity;
  for (let g = 0; g < groups.count; g++) {
    const start = groups.start(g);
    const end = groups.end(g);
    let n = 0;
    for (let cell = start; cell < end; cell++) {
      let bad = 0;
      forEachValue(grid, cell, cell + 1, (off) => {
        const v = values[off];
        if (!Number.isFinite(v)) bad++;
        else if (!isFixed) scratch[n++] = signed ? Math.abs(v) : v;
      });
      nonfinite[cell] = bad;
    }
    const [a, b] = isFixed ? fixed : limitsOfScratch(scratch, n, p, signed);
    lo.fill(a, start, end);
    hi.fill(b, start, end);
    if (end > start) {
      if (a < rlo) rlo = a;
      if (b > rhi) rhi = b;
    }
  }
  return { lo, hi, nonfinite, range: grid.cells ? [rlo, rhi] : [0, 0], mode };
}

/**
 * Fixed limits from `stats` route replies (one per run): the p-th percentile
 * over every filter and step of each filter's extreme values. No tensor is
 * loaded, so "fixed over steps" costs one small request.
 */
export function limitsFromStats(statsList, p, signed) {
  const extremes = [];
  const mins = [];
  const maxs = [];
  for (const stats of statsList) {
    const iMin = stats.names.indexOf("min");
    const iMax = stats.names.indexOf("max");
    if (iMin < 0 || iMax < 0) continue;
    for (const s of stats.steps) {
      for (const row of s.values || []) {
        const a = row[iMin];
        const b = row[iMax];
        if (a === null || b === null) continue;
        extremes.push(Math.max(Math.abs(a), Math.abs(b)));
        mins.push(a);
        maxs.push(b);
      }
    }
  }
  if (!extremes.length) return null;
  if (signed) {
    const l = percentile(extremes, p);
    return [-l, l];
  }
  return [percentile(mins, 100 - p), percentile(maxs, p)];
}
