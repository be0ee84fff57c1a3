import assert from "node:assert/strict";
import { test } from "node:test";
import { describe } from "../static/gridview.js";
import { canonicalize } from "../static/layout.js";
import { hitTest } from "../static/render.js";

test("the tooltip of an RGB image names its filter and lists the three channel values", () => {
  // 6 images of 12x12x3 in a 2-column grid; image 3 is cell (1, 1)
  const grid = canonicalize({ kind: "pattern", layout: "NHWC", shape: [6, 12, 12, 3], filters: [0, 2, 5, 7, 11, 14] });
  const values = new Float32Array(6 * 12 * 12 * 3).map((_, i) => i / 10000);
  const zoom = 6;
  const pitch = 12 * zoom + 1;
  const hit = hitTest(grid, { zoom, panX: 0, panY: 0, rowOrder: null }, pitch + 6 * zoom + 1, pitch + 4 * zoom + 1);
  const off = 3 * 432 + 4 * 36 + 6 * 3;
  assert.equal(hit.offset, off);
  const lines = describe(grid, hit, values, null);
  assert.equal(lines[0], "filter 7 (image 4 of 6, pattern)");
  assert.equal(lines[1], `y 4, x 6: (${[0, 1, 2].map((k) => Number(values[off + k].toPrecision(5))).join(", ")})`);
});
