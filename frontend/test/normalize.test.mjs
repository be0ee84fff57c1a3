import assert from "node:assert/strict";
import { test } from "node:test";
import { normal } from "./random.mjs";
import { canonicalize, KERNEL_LAYOUTS, subGrid } from "../static/layout.js";
import {
  cellLimits, cellSize, DEFAULT_PERCENTILE, forEachValue, groupsOf, limitsFromStats, limitsOf,
  MODES, percentile, percentileInPlace,
} from "../static/normalize.js";

function near(a, b, eps = 1e-9) {
  assert.ok(Math.abs(a - b) <= eps * Math.max(1, Math.abs(b)), `${a} != ${b}`);
}

test("percentile matches numpy's linear interpolation", () => {
  // np.percentile([1, 2, 3, 4, 10], [0, 50, 90, 99.5, 100])
  const v = [10, 3, 1, 4, 2];
  near(percentile(v, 0), 1);
  near(percentile(v, 50), 3);
  near(percentile(v, 90), 7.6);
  near(percentile(v, 99.5), 9.88);
  near(percentile(v, 100), 10);
  assert.ok(Number.isNaN(percentile([], 50)));
  // np.percentile(np.arange(1000) ** 2 % 997, 37.3)
  const big = Array.from({ length: 1000 }, (_, i) => (i * i) % 997);
  near(percentile(big, 37.3), 356);
});

test("non-finite values are ignored for limits", () => {
  assert.deepEqual(limitsOf([NaN, 1, -2, Infinity], 100, true), [-2, 2]);
  assert.deepEqual(limitsOf([NaN, 1, -2, Infinity], 100, false), [-2, 1]);
  assert.deepEqual(limitsOf([NaN], 99, true), [0, 0]);
});

test("a single outlier does not set the layer's limits at p99.5", () => {
  const v = new Float32Array(10000).map((_, i) => Math.sin(i));
  v[17] = 1000;
  const [lo, hi] = limitsOf(v, 99.5, true);
  assert.ok(hi < 1.01 && lo === -hi);
  assert.equal(limitsOf(v, 100, true)[1], 1000);
});

// OIHW 2 filters x 2 channels of 1x2 tiles:
// filter 0: ch0 [1, -1], ch1 [4, 2]; filter 1: ch0 [0.5, 0], ch1 [NaN, -8]
const HEADER = { kind: "kernel", layout: "OIHW", shape: [2, 2, 1, 2] };
const VALUES = new Float32Array([1, -1, 4, 2, 0.5, 0, NaN, -8]);

test("per tile, per filter and per layer limits", () => {
  const g = canonicalize(HEADER);
  const tile = cellLimits(g, VALUES, { mode: "tile", p: 100 });
  assert.deepEqual(Array.from(tile.hi), [1, 4, 0.5, 8]);
  assert.deepEqual(Array.from(tile.lo), [-1, -4, -0.5, -8]);
  assert.deepEqual(Array.from(tile.nonfinite), [0, 0, 0, 1]);
  const filter = cellLimits(g, VALUES, { mode: "filter", p: 100 });
  assert.deepEqual(Array.from(filter.hi), [4, 4, 8, 8]);
  const layer = cellLimits(g, VALUES, { mode: "layer", p: 100 });
  assert.deepEqual(Array.from(layer.hi), [8, 8, 8, 8]);
  assert.deepEqual(layer.range, [-8, 8]);
  const seq = cellLimits(g, VALUES, { mode: "layer", p: 100, signed: false });
  assert.deepEqual(Array.from(seq.lo), [-8, -8, -8, -8]);
  assert.deepEqual(Array.from(seq.hi), [4, 4, 4, 4]);
  const fixed = cellLimits(g, VALUES, { mode: "steps", fixed: [-3, 3] });
  assert.deepEqual(Array.from(fixed.hi), [3, 3, 3, 3]);
});

test("per filter is per cell for depthwise kernels and activations", () => {
  const dw = canonicalize({ kind: "kernel", layout: "HWIM", shape: [1, 1, 2, 2] });
  assert.equal(groupsOf(dw, "filter").count, 4);
  const act = canonicalize({ kind: "activation", layout: "NCHW", shape: [1, 5, 2, 2] });
  assert.equal(groupsOf(act, "filter").count, 5);
  assert.equal(groupsOf(canonicalize(HEADER), "filter").count, 2);
});

test("fixed limits from stats: percentile over filters and steps of each filter's extremes", () => {
  const stats = {
    names: ["norm", "mean", "std", "min", "max", "zero_frac", "nonfinite"],
    steps: [
      { step: 0, values: [[1, 0, 1, -1, 2, 0, 0], [1, 0, 1, -0.5, 0.5, 0, 0]] },
      { step: 1, error: "unreadable" },
      { step: 2, values: [[1, 0, 1, -3, 1, 0, 0], [1, 0, 1, null, null, 0, 1]] },
    ],
  };
  assert.deepEqual(limitsFromStats([stats], 100, true), [-3, 3]);
  assert.deepEqual(limitsFromStats([stats], 100, false), [-3, 2]);
  const other = { names: stats.names, steps: [{ step: 0, values: [[1, 0, 1, -10, 10, 0, 0]] }] };
  assert.deepEqual(limitsFromStats([stats, other], 100, true), [-10, 10]);
  assert.equal(limitsFromStats([{ names: stats.names, steps: [] }], 99, true), null);
});

// The simple cellLimits (sorting a copy of each group) that the fast paths
// must match bit for bit.
function simplePercentile(scratch, n, p) {
  if (n === 0) return NaN;
  const sorted = Float64Array.from(scratch.subarray(0, n)).sort();
  const h = ((n - 1) * Math.min(Math.max(p, 0), 100)) / 100;
  const k = Math.floor(h);
  const a = sorted[k];
  return k + 1 >= n || h === k ? a : a + (h - k) * (sorted[k + 1] - a);
}

function simpleLimits(grid, values, { mode = "layer", p = DEFAULT_PERCENTILE, signed = true, fixed = null } = {}) {
  const cells = grid.rows * grid.cols;
  const lo = new Float32Array(cells);
  const hi = new Float32Array(cells);
  const nonfinite = new Uint32Array(cells);
  const isFixed = (mode === "steps" || mode === "runs") && fixed;
  const groups = groupsOf(grid, MODES.includes(mode) && mode !== "steps" && mode !== "runs" ? mode : "layer");
  const scratch = new Float64Array(groups.size * cellSize(grid));
  let rlo = Infinity;
  let rhi = -Infinity;
  for (let g = 0; g < groups.count; g++) {
    const start = groups.start(g);
    const end = groups.end(g);
    let n = 0;
    for (let cell = start; cell < end; cell++) {
      forEachValue(grid, cell, cell + 1, (off) => {
        const v = values[off];
        if (!Number.isFinite(v)) nonfinite[cell]++;
        else scratch[n++] = signed ? Math.abs(v) : v;
      });
    }
    let [a, b] = [0, 0];
    if (isFixed) [a, b] = fixed;
    else if (n && signed) [a, b] = [-simplePercentile(scratch, n, p), simplePercentile(scratch, n, p)];
    else if (n) [b, a] = [simplePercentile(scratch, n, p), simplePercentile(scratch, n, 100 - p)];
    lo.fill(a, start, end);
    hi.fill(b, start, end);
    if (end > start) {
      rlo = Math.min(rlo, a);
      rhi = Math.max(rhi, b);
    }
  }
  return { lo, hi, nonfinite, range: grid.cells ? [rlo, rhi] : [0, 0] };
}

function sameLimits(got, want, what) {
  for (const k of ["lo", "hi", "nonfinite"]) {
    // == : the sign of a zero limit is arbitrary (and draws the same)
    const i = got[k].findIndex((x, j) => !(x === want[k][j]));
    assert.equal(i, -1, `${what}: ${k}[${i}] ${got[k][i]} != ${want[k][i]}`);
  }
  assert.ok(got.range[0] === want.range[0] && got.range[1] === want.range[1], `${what}: range`);
}

// HWIO 3x3x64x64 (36864 values): big enough for the one-pass histogram of a layer
const BIG = { kind: "kernel", layout: "HWIO", shape: [3, 3, 64, 64] };
const BIG_N = 3 * 3 * 64 * 64;

/** Big layers that stress the histogram: ties, zeros, NaN/Inf, one value, samples that mislead. */
function bigCases() {
  const cases = { normal: normal(BIG_N, 0.02), ints: normal(BIG_N, 3).map(Math.round) };
  cases.sparse = normal(BIG_N).map((v, i) => (i % 5 ? 0 : v)); // mostly zero, like ReLU output
  cases.constant = new Float32Array(BIG_N).fill(-0.25);
  const odd = normal(BIG_N, 1e-3, 7);
  for (let i = 0; i < BIG_N; i += 3) odd[i] *= 1e6; // the strided sample sees only these
  cases.misleading = odd;
  const crowd = normal(BIG_N, 1, 9);
  for (let i = 0; i < BIG_N; i++) if (i % 3) crowd[i] = 2.5; // far more values in a guessed bin than sampled
  cases.crowded = crowd;
  for (const v of [cases.normal, cases.ints, cases.sparse]) {
    v[10] = NaN;
    v[20] = Infinity;
    v[BIG_N - 1] = -Infinity;
    v[30] = -0;
  }
  cases.allNaN = new Float32Array(BIG_N).fill(NaN);
  return cases;
}

test("histogram percentiles of big layers equal the quickselect over a copy", () => {
  const grid = canonicalize(BIG);
  for (const [name, values] of Object.entries(bigCases())) {
    for (const signed of [true, false]) {
      for (const p of [99.5, 100, 50, 0, 99.99, 98.6, 12.34]) {
        const opts = { mode: "layer", p, signed };
        sameLimits(cellLimits(grid, values, opts), simpleLimits(grid, values, opts), `${name} ${signed} p${p}`);
      }
    }
    const fixed = { mode: "steps", fixed: [-1, 2] };
    sameLimits(cellLimits(grid, values, fixed), simpleLimits(grid, values, fixed), `${name} fixed`);
  }
});

test("every mode, layout and number type gives the simple limits", () => {
  const sizes = { D: 2, H: 3, W: 2, I: 40, O: 30, M: 5 };
  const values = normal(2 * 3 * 2 * 40 * 30 * 5, 0.1, 3);
  values[7] = NaN;
  values[100] = -Infinity;
  for (const layout of KERNEL_LAYOUTS) {
    const shape = [...layout].map((l) => sizes[l]);
    const n = shape.reduce((a, b) => a * b, 1);
    const grid = canonicalize({ kind: "kernel", layout, shape });
    // per-filter groups of >= 1024 values take the small histogram
    const grids = [grid, subGrid(grid, Array.from({ length: grid.cells }, (_, i) => grid.cells - 1 - i))];
    for (const g of grids) {
      for (const typed of [values.slice(0, n), Float64Array.from(values.slice(0, n))]) {
        for (const mode of ["tile", "filter", "layer"]) {
          for (const signed of [true, false]) {
            const opts = { mode, p: 99, signed };
            const what = `${layout} ${g === grid ? "" : "sub "}${typed.constructor.name} ${mode} ${signed}`;
            sameLimits(cellLimits(g, typed, opts), simpleLimits(g, typed, opts), what);
          }
        }
      }
    }
  }
  // per-filter groups of 1024 values: the small histogram
  const act = canonicalize({ kind: "activation", layout: "NCHW", shape: [2, 7, 32, 32] }, { sample: 1 });
  const relu = normal(2 * 7 * 32 * 32, 1, 5).map((v) => Math.max(v, 0));
  for (const mode of ["filter", "layer"]) {
    sameLimits(cellLimits(act, relu, { mode, p: 90 }), simpleLimits(act, relu, { mode, p: 90 }), `activation ${mode}`);
  }
});

test("percentileInPlace: a histogram for float32 arrays, numpy's answer either way", () => {
  const values = normal(5000, 1, 11).map((v) => Math.round(v * 8) / 8); // many ties
  for (const p of [0, 0.1, 25, 50, 99.5, 100]) {
    const want = simplePercentile(Float64Array.from(values), values.length, p);
    assert.equal(percentileInPlace(values.slice(), values.length, p), want, `float32 p${p}`);
    assert.equal(percentileInPlace(Float64Array.from(values), values.length, p), want, `float64 p${p}`);
  }
  assert.equal(percentileInPlace(new Float32Array([3, 1, 2, 9]), 3, 50), 2, "only the first n");
});

test("limits are remembered per values array and arguments", () => {
  const grid = canonicalize(BIG);
  const values = normal(BIG_N, 0.02, 4);
  const first = cellLimits(grid, values, { mode: "layer" });
  assert.equal(cellLimits(grid, values, { mode: "layer" }), first, "same array, same arguments");
  assert.notEqual(cellLimits(grid, values, { mode: "layer", p: 90 }), first);
  assert.notEqual(cellLimits(grid, values, { mode: "filter" }), first);
  const other = canonicalize({ kind: "kernel", layout: "OIHW", shape: [64, 64, 3, 3] });
  assert.notEqual(cellLimits(other, values, { mode: "layer" }), first, "another grid of the same values");
  const fresh = cellLimits(grid, new Float32Array(values.buffer), { mode: "layer" });
  assert.notEqual(fresh, first, "a new array is measured anew");
  assert.deepEqual(fresh.hi, first.hi);
});
