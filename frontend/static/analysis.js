// Per-filter analysis: diffs, drift, near-duplicates, health flags, orders
// (pure, DOM-free).

import { filterCells, filterCount } from "./layout.js";
import { forEachValue } from "./normalize.js";

/** Filters summed side by side in filterDots. */
const BLOCK = 16;

/** a - b elementwise (Float64Array if either is, else Float32Array). */
export function difference(a, b) {
  if (a.length !== b.length) {
    throw new Error(`cannot subtract tensors of ${a.length} and ${b.length} values`);
  }
  const Out = a instanceof Float64Array || b instanceof Float64Array ? Float64Array : Float32Array;
  const out = new Out(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] - b[i];
  return out;
}

/**
 * Dot products and squared norms of every filter of two tensors with one grid.
 * Each filter sums its values in forEachValue's order, but BLOCK filters go
 * together (neighbours in memory for TF layouts) and without a call per value:
 * this runs for every step the dashboard shows.
 */
function filterDots(grid, a, b) {
  const n = filterCount(grid);
  const dot = new Float64Array(n);
  const na = new Float64Array(n);
  const nb = new Float64Array(n);
  const chans = grid.rgb ? grid.chanOff : [0];
  const { cellBase, yOff, xOff, th, tw } = grid;
  const [first, last] = filterCells(grid, 0);
  const span = last - first; // cells per filter; filter f starts at cell f * span
  for (let f0 = 0; f0 < n; f0 += BLOCK) {
    const f1 = Math.min(n, f0 + BLOCK);
    for (let j = 0; j < span; j++) {
      for (let k = 0; k < chans.length; k++) {
        for (let ty = 0; ty < th; ty++) {
          for (let tx = 0; tx < tw; tx++) {
            const xo = xOff[tx];
            if (xo < 0) continue;
            const at = chans[k] + yOff[ty] + xo;
            for (let f = f0; f < f1; f++) {
              const off = cellBase[f * span + j] + at;
              const u = a[off];
              const v = b[off];
              if (Number.isFinite(u) && Number.isFinite(v)) {
                dot[f] += u * v;
                na[f] += u * u;
                nb[f] += v * v;
              }
            }
          }
        }
      }
    }
  }
  return { dot, na, nb };
}

/**
 * Per-filter cosine distance 1 - cos(now_f, first_f) in [0, 2]; 0 when both
 * filters are zero, 1 when only one is.
 */
export function cosineDrift(grid, now, first) {
  const { dot, na, nb } = filterDots(grid, now, first);
  const out = new Float64Array(dot.length);
  for (let f = 0; f < dot.length; f++) {
    if (na[f] === 0 && nb[f] === 0) out[f] = 0;
    else if (na[f] === 0 || nb[f] === 0) out[f] = 1;
    else out[f] = 1 - Math.max(-1, Math.min(1, dot[f] / Math.sqrt(na[f] * nb[f])));
  }
  return out;
}

/** Filter vectors (finite values, NaN as 0) as rows of a Float64Array matrix. */
function filterMatrix(grid, values) {
  const n = filterCount(grid);
  const [s0, e0] = filterCells(grid, 0);
  let dim = 0;
  forEachValue(grid, s0, e0, () => { dim++; });
  const m = new Float64Array(n * dim);
  for (let f = 0; f < n; f++) {
    const [start, end] = filterCells(grid, f);
    let k = f * dim;
    forEachValue(grid, start, end, (off) => {
      const v = values[off];
      m[k++] = Number.isFinite(v) ? v : 0;
    });
  }
  return { m, n, dim };
}

function normalizeRows(m, n, dim) {
  for (let f = 0; f < n; f++) {
    let s = 0;
    for (let k = f * dim; k < (f + 1) * dim; k++) s += m[k] * m[k];
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let k = f * dim; k < (f + 1) * dim; k++) m[k] *= inv;
  }
}

/** A deterministic pseudo-random +-1 sequence (xorshift32). */
function signs(count, seed = 0x9e3779b9) {
  const out = new Int8Array(count);
  let x = seed >>> 0;
  for (let i = 0; i < count; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 1 ? 1 : -1;
  }
  return out;
}

/**
 * For every filter: its most similar other filter (cosine similarity) when
 * that similarity is >= `threshold`, else -1; and the similarity.
 * Big layers are screened on a random projection to `sketch` dimensions and
 * only candidate pairs are checked exactly, so 512 filters x 4608 values stay
 * well under a second.
 */
export function nearDuplicates(grid, values, { threshold = 0.98, sketch = 64 } = {}) {
  const { m, n, dim } = filterMatrix(grid, values);
  normalizeRows(m, n, dim);
  const partner = new Int32Array(n).fill(-1);
  const similarity = new Float64Array(n);
  const exact = (i, j) => {
    let s = 0;
    for (let k = 0; k < dim; k++) s += m[i * dim + k] * m[j * dim + k];
    return s;
  };
  let screen = exact;
  let screenThreshold = threshold;
  if (dim > sketch * 2 && n * n * dim > 2e7) {
    const sg = signs(dim * sketch);
    const p = new Float64Array(n * sketch);
    for (let f = 0; f < n; f++) {
      for (let k = 0; k < dim; k++) {
        const v = m[f * dim + k];
        if (v === 0) continue;
        const row = k * sketch;
        for (let j = 0; j < sketch; j++) p[f * sketch + j] += v * sg[row + j];
      }
    }
    normalizeRows(p, n, sketch);
    screen = (i, j) => {
      let s = 0;
      for (let k = 0; k < sketch; k++) s += p[i * sketch + k] * p[j * sketch + k];
      return s;
    };
    screenThreshold = threshold - 0.25; // a projection to 64 dims rarely errs by that much
  }
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      if (screen(i, j) < screenThreshold) continue;
      const s = screen === exact ? screen(i, j) : exact(i, j);
      if (s >= threshold) {
        if (s > similarity[i] || partner[i] < 0) { similarity[i] = s; partner[i] = j; }
        if (s > similarity[j] || partner[j] < 0) { similarity[j] = s; partner[j] = i; }
      }
    }
  }
  return { partner, similarity };
}

function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

export const DEAD_FRACTION = 0.99;
export const EXPLODING_RATIO = 10;

/**
 * Flags of every filter from one step's stats rows ({names, values}):
 * "dead" (near-zero weights / a unit never active), "exploding" (NaN/Inf or a
 * norm over EXPLODING_RATIO x the layer's median), "duplicate" (from
 * `duplicates`, optional). Returns an array of arrays of strings.
 */
export function healthFlags(names, rows, kind, duplicates = null) {
  const col = (name) => names.indexOf(name);
  const iNorm = col("norm");
  const iZero = col("zero_frac");
  const iBad = col("nonfinite");
  const norms = rows.map((r) => (r[iNorm] === null ? NaN : r[iNorm]));
  const med = median(norms);
  return rows.map((r, f) => {
    const flags = [];
    const norm = r[iNorm];
    const zero = r[iZero];
    if ((zero !== null && zero >= DEAD_FRACTION) || (kind === "kernel" && norm !== null && norm <= 1e-12)) {
      flags.push("dead");
    }
    if ((r[iBad] !== null && r[iBad] > 0) || norm === null
      || (med > 0 && norm > EXPLODING_RATIO * med)) {
      flags.push("exploding");
    }
    if (duplicates && duplicates.partner[f] >= 0) flags.push("duplicate");
    return flags;
  });
}

/** Row order putting the largest `metric` first (NaN last); stable. */
export function orderBy(metric) {
  const idx = Array.from(metric, (_, i) => i);
  const key = (i) => (Number.isFinite(metric[i]) ? metric[i] : -Infinity);
  idx.sort((a, b) => key(b) - key(a) || a - b);
  return Int32Array.from(idx);
}

/** One stats column over steps: [{step, value}] (steps with errors left out). */
export function series(stats, name, filter) {
  const i = stats.names.indexOf(name);
  const out = [];
  for (const s of stats.steps) {
    if (!s.values || !s.values[filter]) continue;
    out.push({ step: s.step, value: s.values[filter][i] });
  }
  return out;
}
