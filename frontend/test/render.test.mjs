import assert from "node:assert/strict";
import { test } from "node:test";
import { LUT_SIZE, MID, NONFINITE, lut } from "../static/colormap.js";
import { canonicalize, subGrid } from "../static/layout.js";
import { cellLimits } from "../static/normalize.js";
import { fitZoom, geometry, hitTest, renderGrid } from "../static/render.js";

const BG = [1, 2, 3];
const SEP = [4, 5, 6];

function draw(grid, values, view, mode = "layer") {
  const g = geometry(grid, view.zoom);
  const w = view.width || g.width;
  const h = view.height || g.height;
  const out = new Uint8ClampedArray(w * h * 4);
  const limits = cellLimits(grid, values, { mode, p: 100 });
  renderGrid(out, w, h, grid, values, limits, lut("diverging"), view, BG, SEP);
  const at = (x, y) => Array.from(out.slice((y * w + x) * 4, (y * w + x) * 4 + 3));
  return { at, w, h };
}

const table = lut("diverging");
const entry = (i) => [table[i * 3], table[i * 3 + 1], table[i * 3 + 2]];

test("tiles, 1-px separators and exact colours at zoom 3", () => {
  // OIHW 2 filters x 2 channels x 1x2: filter 0 = [[-2, 0], [2, 1]], filter 1 = [[NaN, 0], [0, 0]]
  const grid = canonicalize({ kind: "kernel", layout: "OIHW", shape: [2, 2, 1, 2] });
  const values = new Float32Array([-2, 0, 2, 1, NaN, 0, 0, 0]);
  const { at, w, h } = draw(grid, values, { zoom: 3, panX: 0, panY: 0 });
  assert.equal(w, 2 * 6 + 1);
  assert.equal(h, 2 * 3 + 1);
  assert.deepEqual(at(0, 0), entry(0)); // -2 -> the negative end
  assert.deepEqual(at(4, 2), entry(MID)); // 0 -> neutral
  assert.deepEqual(at(6, 0), SEP); // separator column between channels
  assert.deepEqual(at(7, 0), entry(LUT_SIZE - 1)); // +2
  assert.deepEqual(at(11, 1), entry(Math.round(0.75 * (LUT_SIZE - 1)))); // +1
  assert.deepEqual(at(0, 3), SEP); // separator row between filters
  assert.deepEqual(at(1, 4), NONFINITE);
});

test("panning shifts the window and outside the grid is background", () => {
  const grid = canonicalize({ kind: "kernel", layout: "OIHW", shape: [1, 1, 1, 2] });
  const values = new Float32Array([-1, 1]);
  const { at } = draw(grid, values, { zoom: 4, panX: 4, panY: 0, width: 8, height: 4 });
  assert.deepEqual(at(0, 0), entry(LUT_SIZE - 1));
  assert.deepEqual(at(5, 0), BG);
});

test("hitTest inverts the geometry, including sorted rows", () => {
  const grid = canonicalize({ kind: "kernel", layout: "OIHW", shape: [3, 2, 2, 2] });
  const view = { zoom: 5, panX: 0, panY: 0, rowOrder: Int32Array.from([2, 0, 1]) };
  const g = geometry(grid, 5);
  const hit = hitTest(grid, view, g.pitchX + 6, 1);
  assert.deepEqual([hit.row, hit.r, hit.c, hit.ty, hit.tx], [0, 2, 1, 0, 1]);
  assert.equal(hit.offset, 2 * 8 + 1 * 4 + 0 + 1);
  assert.equal(hitTest(grid, view, 10, 1), null, "separator");
  assert.equal(hitTest(grid, view, 1000, 1), null, "outside");
});

test("a 3x3x512x512 kernel draws a 1400x900 window quickly", () => {
  const grid = canonicalize({ kind: "kernel", layout: "HWIO", shape: [3, 3, 512, 512] });
  const values = new Float32Array(3 * 3 * 512 * 512).map((_, i) => Math.sin(i));
  const t0 = performance.now();
  const limits = cellLimits(grid, values, { mode: "layer" });
  const out = new Uint8ClampedArray(1400 * 900 * 4);
  renderGrid(out, 1400, 900, grid, values, limits, table, { zoom: 2, panX: 300, panY: 300 }, BG, SEP);
  const ms = performance.now() - t0;
  assert.ok(ms < 3000, `${ms} ms`);
  assert.ok(fitZoom(grid, 1400) < 1);
});

test("a sub-grid keeps its cells' values", () => {
  const grid = canonicalize({ kind: "kernel", layout: "OIHW", shape: [2, 4, 1, 1] });
  const sub = subGrid(grid, [4, 5, 6, 7]);
  assert.deepEqual([sub.rows, sub.cols], [2, 2]);
  assert.deepEqual(Array.from(sub.cellBase), [4, 5, 6, 7]);
  assert.equal(sub.filterOf(1, 1), 1);
  assert.equal(sub.channelOf(1, 0), 2);
});
