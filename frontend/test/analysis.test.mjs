import assert from "node:assert/strict";
import { test } from "node:test";
import { cosineDrift, difference, healthFlags, nearDuplicates, orderBy, series } from "../static/analysis.js";
import { canonicalize, filterCells, filterCount, KERNEL_LAYOUTS } from "../static/layout.js";
import { forEachValue } from "../static/normalize.js";

test("difference subtracts elementwise and refuses mismatched sizes", () => {
  const d = difference(new Float32Array([1, 2, 3]), new Float32Array([1, 0, 5]));
  assert.ok(d instanceof Float32Array);
  assert.deepEqual(Array.from(d), [0, 2, -2]);
  assert.ok(difference(new Float64Array(1), new Float32Array(1)) instanceof Float64Array);
  assert.throws(() => difference(new Float32Array(2), new Float32Array(3)), /2 and 3/);
});

// OIHW: 3 filters x 2 channels x 1x2
const grid = canonicalize({ kind: "kernel", layout: "OIHW", shape: [3, 2, 1, 2] });

test("cosine drift per filter: 0 unchanged, 1 orthogonal, 2 flipped", () => {
  const first = new Float32Array([1, 0, 0, 0, /* f1 */ 1, 1, 1, 1, /* f2 */ 0, 0, 3, 0]);
  const now = new Float32Array([2, 0, 0, 0, /* f1 */ 0, 1, -1, 0, /* f2 */ 0, 0, -1, 0]);
  const drift = Array.from(cosineDrift(grid, now, first));
  assert.ok(Math.abs(drift[0]) < 1e-12);
  assert.ok(Math.abs(drift[1] - 1) < 1e-12);
  assert.ok(Math.abs(drift[2] - 2) < 1e-12);
  assert.deepEqual(Array.from(cosineDrift(grid, new Float32Array(12), new Float32Array(12))), [0, 0, 0]);
});

test("near-duplicate filters are paired, others are not", () => {
  const v = new Float32Array([1, 2, 3, 4, /* f1 = 2 f0 */ 2, 4, 6, 8, /* f2 */ 4, -3, 2, -1]);
  const { partner, similarity } = nearDuplicates(grid, v);
  assert.deepEqual(Array.from(partner), [1, 0, -1]);
  assert.ok(similarity[0] > 0.999);
});

test("the sketched screen finds duplicates in a big layer", () => {
  const n = 64;
  const dim = 9 * 256;
  const big = canonicalize({ kind: "kernel", layout: "OIHW", shape: [n, 256, 3, 3] });
  const values = new Float32Array(n * dim);
  let x = 12345;
  for (let i = 0; i < values.length; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    values[i] = x / 2147483648 - 0.5;
  }
  // filter 40 = filter 3 * 1.5 + tiny noise
  for (let k = 0; k < dim; k++) values[40 * dim + k] = 1.5 * values[3 * dim + k] + 1e-4 * Math.sin(k);
  const { partner } = nearDuplicates(big, values);
  assert.equal(partner[3], 40);
  assert.equal(partner[40], 3);
  assert.equal(Array.from(partner).filter((p) => p >= 0).length, 2);
});

test("health flags: dead, exploding, duplicate", () => {
  const names = ["norm", "mean", "std", "min", "max", "zero_frac", "nonfinite"];
  const rows = [
    [1, 0, 1, -1, 1, 0, 0],
    [0, 0, 0, 0, 0, 1, 0],
    [50, 0, 1, -1, 1, 0, 0],
    [1, 0, 1, -1, 1, 0, 0.1],
    [1.2, 0, 1, -1, 1, 0, 0],
  ];
  const flags = healthFlags(names, rows, "kernel", { partner: Int32Array.from([4, -1, -1, -1, 0]) });
  assert.deepEqual(flags, [["duplicate"], ["dead"], ["exploding"], ["exploding"], ["duplicate"]]);
  const act = healthFlags(names, [[1, 0, 1, 0, 1, 0.995, 0], [1, 0, 1, 0, 1, 0.5, 0]], "activation");
  assert.deepEqual(act, [["dead"], []]);
});

test("orderBy sorts descending with NaN last, series reads a stats column", () => {
  assert.deepEqual(Array.from(orderBy([1, NaN, 3, 2])), [2, 3, 0, 1]);
  const stats = { names: ["norm", "mean"], steps: [{ step: 0, values: [[1, 2]] }, { step: 5, error: "x" }, { step: 9, values: [[3, 4]] }] };
  assert.deepEqual(series(stats, "mean", 0), [{ step: 0, value: 2 }, { step: 9, value: 4 }]);
});

test("kernel tags of the same layer: <layer>/kernel first, then <layer>/weight", async () => {
  const { kernelTagsFor } = await import("../static/detail.js");
  const tags = { r: {
    "block1/conv/activation": { kind: "activation" },
    "block1/conv/weight": { kind: "kernel" },
    "block1/conv/kernel": { kind: "kernel" },
    "block1/other/kernel": { kind: "kernel" },
    "block1/conv/deeper/kernel": { kind: "kernel" },
  } };
  assert.deepEqual(kernelTagsFor(tags, "r", "block1/conv/activation"), ["block1/conv/kernel", "block1/conv/weight"]);
  assert.deepEqual(kernelTagsFor(tags, "nope", "block1/conv/activation"), []);
});

/** cosineDrift as one forEachValue pass per filter: the sums the fast one must equal. */
function simpleDrift(grid, now, first) {
  return Array.from({ length: filterCount(grid) }, (_, f) => {
    const [start, end] = filterCells(grid, f);
    let d = 0;
    let x = 0;
    let y = 0;
    forEachValue(grid, start, end, (off) => {
      const u = now[off];
      const v = first[off];
      if (Number.isFinite(u) && Number.isFinite(v)) {
        d += u * v;
        x += u * u;
        y += v * v;
      }
    });
    if (x === 0 && y === 0) return 0;
    if (x === 0 || y === 0) return 1;
    return 1 - Math.max(-1, Math.min(1, d / Math.sqrt(x * y)));
  });
}

test("cosine drift sums each filter in forEachValue order, whatever the layout", () => {
  const sizes = { D: 2, H: 3, W: 2, I: 3, O: 37, M: 2 };
  for (const layout of KERNEL_LAYOUTS) {
    for (const rgb of [false, true]) {
      const shape = [...layout].map((l) => sizes[l]);
      const n = shape.reduce((a, b) => a * b, 1);
      const g = canonicalize({ kind: "kernel", layout, shape }, { rgb });
      const now = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 1.7) * (i % 11));
      const first = Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.3));
      now[4] = NaN;
      first[9] = Infinity;
      assert.deepEqual(Array.from(cosineDrift(g, now, first)), simpleDrift(g, now, first), `${layout} rgb ${rgb}`);
    }
  }
});
