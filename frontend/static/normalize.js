// Colour limits chosen at view time (pure, DOM-free).
//
// Signed colormaps get symmetric limits [-L, L] with L the p-th percentile of
// |v|; other colormaps get [P(100 - p), P(p)]. Percentiles use numpy's default
// "linear" definition over the finite values; NaN/Inf are counted, not used.
// Float32 groups of HIST_MIN values or more get the same percentile from a
// histogram of their bit patterns (integer passes) instead of a selection over
// all of them.

import display from "./display.json" with { type: "json" };
import { cellStrides, denseRange } from "./layout.js";

// Scales and the default percentile come from display.json (see colormap.js).
export const MODES = Object.keys(display.scales);
export const MODE_LABELS = display.scales;
export const DEFAULT_PERCENTILE = display.default_percentile;

/**
 * Rearranges a[lo..hi] so that a[k] is the k-th smallest and nothing after it is
 * smaller (iterative quickselect, Hoare partition: linear on repeated values too).
 */
function select(a, k, lo, hi) {
  while (hi > lo) {
    const x = a[lo];
    const y = a[(lo + hi) >> 1];
    const z = a[hi];
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : (x < z ? x : y < z ? z : y);
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i++] = a[j];
        a[j--] = t;
      }
    }
    // [lo, j] <= pivot, (j, i) == pivot, [i, hi] >= pivot
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return;
  }
}

/** numpy "linear" rank h = (n - 1) * p / 100 of percentile p (clamped to 0..100). */
function rank(n, p) {
  return ((n - 1) * Math.min(Math.max(p, 0), 100)) / 100;
}

// Exact percentiles of float32 values from their bit patterns. Every float32 has an
// order-preserving 32-bit key: |v| keeps the bits without the sign; v flips the
// sign bit of positives and every bit of negatives. A histogram of the keys' top
// bits finds the bin holding the wanted rank; the values of that bin, collected
// in the same pass (big groups: bins guessed from a sample) or else by a second
// one, are then selected. Bits are read through an Int32Array: V8 turns
// Uint32Array reads into doubles.

/** Groups of at least this many float32 values take their percentile from a histogram... */
const HIST_MIN = 1 << 10;
/** ...of the keys' top 12 bits; from BIG values on, of their top 16 bits, in one pass. */
const BIG = 1 << 15;
const SHIFT = 20;
const BIG_SHIFT = 16;
const SAMPLE = 1 << 14;
let binCounts = null;

/** [and, flip, sign]: key(u) = (u & and) ^ (((u >> 31) & flip) | sign). */
function keyMasks(absolute) {
  return absolute ? [0x7fffffff, 0, 0] : [-1, -1, 0x80000000 | 0];
}

/**
 * Bins [b1, b2] that likely hold the value at fraction q (0..1) of the finite
 * values of bits[start, end), from a strided sample; cap: room to collect them.
 */
function guessBins(bits, start, end, absolute, q) {
  const [and, flip, sign] = keyMasks(absolute);
  const stride = Math.max(1, Math.floor((end - start) / SAMPLE)) | 1;
  const bins = new Int32Array(Math.ceil((end - start) / stride));
  let s = 0;
  for (let i = start; i < end; i += stride) {
    const u = bits[i];
    if ((u & 0x7f800000) !== 0x7f800000) bins[s++] = ((u & and) ^ (((u >> 31) & flip) | sign)) >>> BIG_SHIFT;
  }
  if (s === 0) return null;
  const margin = 4 * Math.sqrt(s * q * (1 - q)) + 2;
  const lo = Math.max(0, Math.floor(q * (s - 1) - margin));
  const hi = Math.min(s - 1, Math.ceil(q * (s - 1) + margin) + 1);
  select(bins, lo, 0, s - 1);
  select(bins, hi, lo, s - 1);
  const b1 = bins[lo];
  const b2 = bins[hi];
  let inside = 0;
  for (let j = 0; j < s; j++) if (bins[j] >= b1 && bins[j] <= b2) inside++;
  return { b1, b2, cap: Math.ceil(inside * stride * 1.5) + 1024 };
}

/**
 * Counts the key bins (key >>> shift) of the float32 bits[start, end) into
 * binCounts (NaN/Inf left out) and collects the values of bins [b1, b2] into
 * `picked` (up to its length). Returns {bad: NaN/Inf count, got: values in [b1, b2]}.
 */
function histogram(bits, values, start, end, absolute, shift, b1, b2, picked) {
  binCounts = binCounts || new Int32Array(1 << 16);
  const counts = binCounts;
  counts.fill(0, 0, 2 ** (32 - shift));
  const cap = picked ? picked.length : 0;
  let got = 0;
  let i = start;
  // unrolled, one loop per key: V8 then keeps back-to-back increments of one
  // counter from serialising the loop
  if (absolute) {
    for (; i + 3 < end; i += 4) {
      const ka = (bits[i] & 0x7fffffff) >>> shift;
      const kb = (bits[i + 1] & 0x7fffffff) >>> shift;
      const kc = (bits[i + 2] & 0x7fffffff) >>> shift;
      const kd = (bits[i + 3] & 0x7fffffff) >>> shift;
      counts[ka]++;
      counts[kb]++;
      counts[kc]++;
      counts[kd]++;
      if (ka >= b1 && ka <= b2 && got++ < cap) picked[got - 1] = values[i];
      if (kb >= b1 && kb <= b2 && got++ < cap) picked[got - 1] = values[i + 1];
      if (kc >= b1 && kc <= b2 && got++ < cap) picked[got - 1] = values[i + 2];
      if (kd >= b1 && kd <= b2 && got++ < cap) picked[got - 1] = values[i + 3];
    }
  } else {
    for (; i + 3 < end; i += 4) {
      const a = bits[i];
      const b = bits[i + 1];
      const c = bits[i + 2];
      const d = bits[i + 3];
      const ka = (a ^ ((a >> 31) | 0x80000000)) >>> shift;
      const kb = (b ^ ((b >> 31) | 0x80000000)) >>> shift;
      const kc = (c ^ ((c >> 31) | 0x80000000)) >>> shift;
      const kd = (d ^ ((d >> 31) | 0x80000000)) >>> shift;
      counts[ka]++;
      counts[kb]++;
      counts[kc]++;
      counts[kd]++;
      if (ka >= b1 && ka <= b2 && got++ < cap) picked[got - 1] = values[i];
      if (kb >= b1 && kb <= b2 && got++ < cap) picked[got - 1] = values[i + 1];
      if (kc >= b1 && kc <= b2 && got++ < cap) picked[got - 1] = values[i + 2];
      if (kd >= b1 && kd <= b2 && got++ < cap) picked[got - 1] = values[i + 3];
    }
  }
  const [and, flip, sign] = keyMasks(absolute);
  for (; i < end; i++) {
    const u = bits[i];
    const k = ((u & and) ^ (((u >> 31) & flip) | sign)) >>> shift;
    counts[k]++;
    if (k >= b1 && k <= b2 && got++ < cap) picked[got - 1] = values[i];
  }
  if (absolute) for (let j = 0; j < Math.min(got, cap); j++) picked[j] = Math.abs(picked[j]);
  // NaN and +-Inf have bins of their own at the ends of the key range
  let bad = 0;
  const nonfinite = absolute ? [[0x7f800000 >>> shift, 2 ** (31 - shift)]]
    : [[0, 0x00800000 >>> shift], [0xff800000 >>> shift, 2 ** (32 - shift)]];
  for (const [from, to] of nonfinite) {
    for (let b = from; b < to; b++) {
      bad += counts[b];
      counts[b] = 0;
    }
  }
  return { bad, got };
}

/**
 * numpy-"linear" percentiles `ps` (the first one is the likeliest to be found in
 * one pass) of the finite float32 values[start, end) (of |v| if `absolute`);
 * bits: the same memory as an Int32Array. Returns {values: NaN each if none, bad}.
 */
function histPercentiles(bits, values, start, end, absolute, ps) {
  const big = end - start >= BIG;
  const shift = big ? BIG_SHIFT : SHIFT;
  const guess = big ? guessBins(bits, start, end, absolute, Math.min(Math.max(ps[0], 0), 100) / 100) : null;
  const picked = guess ? new Float64Array(Math.min(guess.cap, end - start)) : null;
  const { bad, got } = guess
    ? histogram(bits, values, start, end, absolute, shift, guess.b1, guess.b2, picked)
    : histogram(bits, values, start, end, absolute, shift, 1, 0, null);
  const m = end - start - bad;
  const counts = binCounts;
  const out = ps.map((p) => {
    if (m === 0) return NaN;
    const h = rank(m, p);
    const k = Math.floor(h);
    const next = k + 1 < m && h !== k;
    // the bins b1 of rank k and b2 of rank k (or k + 1)
    let below = 0;
    let b1 = 0;
    while (below + counts[b1] <= k) below += counts[b1++];
    let b2 = b1;
    let upto = below + counts[b1];
    while (next && upto <= k + 1) upto += counts[++b2];
    let sel;
    let n;
    let i;
    if (guess && guess.b1 <= b1 && b2 <= guess.b2 && got <= picked.length) {
      sel = picked;
      n = got;
      i = k;
      for (let b = 0; b < guess.b1; b++) i -= counts[b];
    } else {
      sel = new Float64Array(upto - below);
      n = collect(bits, values, start, end, absolute, shift, b1, b2, sel);
      i = k - below;
    }
    select(sel, i, 0, n - 1);
    const a = sel[i];
    if (!next) return a;
    let b = Infinity;
    for (let q = i + 1; q < n; q++) if (sel[q] < b) b = sel[q];
    return a + (h - k) * (b - a);
  });
  return { values: out, bad };
}

/** Collects the values (|v| if `absolute`) of key bins [b1, b2] into out; returns how many. */
function collect(bits, values, start, end, absolute, shift, b1, b2, out) {
  const [and, flip, sign] = keyMasks(absolute);
  let j = 0;
  for (let i = start; i < end; i++) {
    const u = bits[i];
    const k = ((u & and) ^ (((u >> 31) & flip) | sign)) >>> shift;
    if (k >= b1 && k <= b2) out[j++] = absolute ? Math.abs(values[i]) : values[i];
  }
  return j;
}

/**
 * The p-th percentile (0..100, numpy "linear") of the first `n` entries of
 * `scratch`, which it may reorder. NaN when n == 0.
 */
export function percentileInPlace(scratch, n, p) {
  if (n === 0) return NaN;
  if (n >= HIST_MIN && scratch instanceof Float32Array) {
    const bits = new Int32Array(scratch.buffer, scratch.byteOffset, n);
    return histPercentiles(bits, scratch, 0, n, false, [p]).values[0];
  }
  const h = rank(n, p);
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

const ONE_CHANNEL = [0];

/**
 * Copies the finite values (|v| if `absolute`) of cells [start, end) into
 * `scratch` (unless null) and counts each cell's NaN/Inf into `nonfinite`;
 * returns the number copied. Visits values in forEachValue's order.
 */
function gather(grid, values, start, end, scratch, absolute, nonfinite) {
  const chans = grid.rgb ? grid.chanOff : ONE_CHANNEL;
  const { cellBase, yOff, xOff, th, tw } = grid;
  let n = 0;
  for (let cell = start; cell < end; cell++) {
    let bad = 0;
    for (let k = 0; k < chans.length; k++) {
      for (let y = 0; y < th; y++) {
        const row = cellBase[cell] + chans[k] + yOff[y];
        for (let x = 0; x < tw; x++) {
          const xo = xOff[x];
          if (xo < 0) continue;
          const v = values[row + xo];
          if (!Number.isFinite(v)) bad++;
          else if (scratch) scratch[n++] = absolute ? Math.abs(v) : v;
        }
      }
    }
    nonfinite[cell] = bad;
  }
  return n;
}

/**
 * [lo, hi] of a whole layer stored as float32 values[start, end) (any order),
 * straight from its bit patterns; null for `fixed` limits. Also returns the
 * number of NaN/Inf values.
 */
function layerLimits(values, start, end, p, signed, fixed) {
  const bits = new Int32Array(values.buffer, values.byteOffset, values.length);
  if (fixed) {
    let bad = 0;
    for (let i = start; i < end; i++) if ((bits[i] & 0x7f800000) === 0x7f800000) bad++;
    return { limits: fixed, bad };
  }
  const { values: [a, b], bad } = histPercentiles(bits, values, start, end, signed, signed ? [p] : [p, 100 - p]);
  if (bad === end - start) return { limits: [0, 0], bad };
  return { limits: signed ? [-a, a] : [b, a], bad };
}

// Limits are remembered per values array (a loaded tensor is not modified), so
// going back to a step, as scrubbing does, does not compute them again.
const remembered = new WeakMap();
const REMEMBER = 4;

/** What cellLimits' result depends on besides the values, or null (irregular grid). */
function limitsKey(grid, mode, p, signed, fixed) {
  const strides = cellStrides(grid);
  if (!strides) return null;
  return [mode, p, signed, fixed, grid.kind, grid.rows, grid.cols, grid.cells, grid.cellBase[0],
    strides.rowStride, strides.colStride, grid.yOff, grid.xOff, grid.rgb && grid.chanOff].join("|");
}

/**
 * Per-cell limits of `values` laid out by `grid`.
 *
 * mode: "tile" | "filter" | "layer"; "steps"/"runs" use `fixed` = [lo, hi]
 * when given (else they fall back to per layer).
 * Returns {lo, hi: Float32Array(rows*cols), nonfinite: Uint32Array(rows*cols),
 * range: [min lo, max hi] over valid cells, mode}; the same object for the same
 * values array and arguments, so do not modify it.
 */
export function cellLimits(grid, values, { mode = "layer", p = DEFAULT_PERCENTILE, signed = true, fixed = null } = {}) {
  const key = ArrayBuffer.isView(values) ? limitsKey(grid, mode, p, signed, fixed) : null;
  const known = key && remembered.get(values);
  if (known && known.has(key)) return known.get(key);
  const result = computeLimits(grid, values, mode, p, signed, fixed);
  if (key) {
    const map = known || new Map();
    if (map.size >= REMEMBER) map.delete(map.keys().next().value);
    map.set(key, result);
    remembered.set(values, map);
  }
  return result;
}

function computeLimits(grid, values, mode, p, signed, fixed) {
  const cells = grid.rows * grid.cols;
  const lo = new Float32Array(cells);
  const hi = new Float32Array(cells);
  const nonfinite = new Uint32Array(cells);
  const isFixed = (mode === "steps" || mode === "runs") && fixed;
  const groups = groupsOf(grid, MODES.includes(mode) && mode !== "steps" && mode !== "runs" ? mode : "layer");
  // one group over a block of float32 values: no copy, no per-cell pass unless NaN/Inf
  const dense = groups.count === 1 && values instanceof Float32Array ? denseRange(grid) : null;
  const whole = dense && dense.end <= values.length ? dense : null;
  const Scratch = values instanceof Float32Array ? Float32Array : Float64Array;
  const scratch = isFixed || whole ? null : new Scratch(groups.size * cellSize(grid));
  let rlo = Infinity;
  let rhi = -Infinity;
  for (let g = 0; g < groups.count; g++) {
    const start = groups.start(g);
    const end = groups.end(g);
    let a;
    let b;
    if (whole) {
      const { limits, bad } = layerLimits(values, whole.start, whole.end, p, signed, isFixed ? fixed : null);
      [a, b] = limits;
      if (bad) gather(grid, values, start, end, null, false, nonfinite);
    } else {
      const n = gather(grid, values, start, end, scratch, signed, nonfinite);
      [a, b] = isFixed ? fixed : limitsOfScratch(scratch, n, p, signed);
    }
    for (let c = start; c < end; c++) {
      lo[c] = a;
      hi[c] = b;
    }
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
