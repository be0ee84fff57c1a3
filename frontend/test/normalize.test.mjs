import assert from "node:assert/strict";
import { test } from "node:test";
import { canonicalize } from "../static/layout.js";
import { cellLimits, groupsOf, limitsFromStats, limitsOf, percentile } from "../static/normalize.js";

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
