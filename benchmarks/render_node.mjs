// Per-value colormap cost in isolation (node): renderGrid over a 3x3x512x512
// kernel at zoom 1, after its limits are known. Prints one JSON line.
//
//   node benchmarks/render_node.mjs [rounds]

import { lut } from "../frontend/static/colormap.js";
import { canonicalize } from "../frontend/static/layout.js";
import { cellLimits, DEFAULT_PERCENTILE } from "../frontend/static/normalize.js";
import { geometry, renderGrid } from "../frontend/static/render.js";

const rounds = Number(process.argv[2] || 10);
const shape = [3, 3, 512, 512];
const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
let seed = 1;
for (let i = 0; i < values.length; i++) {
  seed = (seed * 1103515245 + 12345) >>> 0;
  values[i] = (seed / 2 ** 32 - 0.5) * 0.1;
}
const grid = canonicalize({ kind: "kernel", layout: "HWIO", shape });
const g = geometry(grid, 1);
const out = new Uint8ClampedArray(g.width * g.height * 4);
const table = lut("diverging");
const view = { zoom: 1, panX: 0, panY: 0, rowOrder: null };

function best(fn) {
  let b = Infinity;
  for (let r = 0; r < rounds + 1; r++) {
    const t = performance.now();
    fn();
    if (r) b = Math.min(b, performance.now() - t);
  }
  return b;
}

let limits;
const limitsMs = best(() => {
  // a new view each round: cellLimits remembers the limits of an array it has seen
  const fresh = new Float32Array(values.buffer);
  limits = cellLimits(grid, fresh, { mode: "layer", p: DEFAULT_PERCENTILE, signed: true });
});
const renderMs = best(() => renderGrid(out, g.width, g.height, grid, values, limits, table, view, [255, 255, 255]));
console.log(JSON.stringify({
  values: values.length,
  pixels: g.width * g.height,
  render_ms: renderMs,
  render_ns_per_value: (renderMs * 1e6) / values.length,
  limits_ms: limitsMs,
  limits_ns_per_value: (limitsMs * 1e6) / values.length,
  rounds,
}));
