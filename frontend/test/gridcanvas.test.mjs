import assert from "node:assert/strict";
import { test } from "node:test";
import { describe, drawValues } from "../static/gridcanvas.js";
import { canonicalize } from "../static/layout.js";
import { geometry, hitTest } from "../static/render.js";

/** A 2d context that records the text written and its colour. */
function recorder() {
  const calls = [];
  return {
    calls,
    fillStyle: null,
    fillText(text, x, y, maxWidth) {
      calls.push({ text, x, y, maxWidth, colour: this.fillStyle });
    },
  };
}

// two filters of one 2x2 channel: filter o, y, x holds (4 o + 2 y + x) / 8
const grid = canonicalize({ kind: "kernel", layout: "OIHW", shape: [2, 1, 2, 2] });
const values = Float32Array.from({ length: 8 }, (_, i) => i / 8);
const zoom = 32;
const g = geometry(grid, zoom);

test("drawValues writes each value at its pixel's centre, in the row order shown, dark on light pixels", () => {
  const pixels = new Uint8ClampedArray(g.width * g.height * 4); // black, except the top tile's first row
  for (let y = 0; y < zoom; y++) pixels.fill(255, y * g.width * 4, (y * g.width + g.width) * 4);
  const ctx = recorder();
  drawValues(ctx, grid, values, { zoom, panX: 0, panY: 0, rowOrder: [1, 0] }, g, pixels, g.width, g.height);
  assert.equal(ctx.font, "9px sans-serif");
  assert.equal(ctx.calls.length, 8);
  const pitch = 2 * zoom + 1;
  // slot 0 shows filter 1: its value at y 0, x 1 is 5/8, on the light first row
  assert.deepEqual(ctx.calls[1], { text: "0.625", x: zoom + zoom / 2, y: zoom / 2, maxWidth: zoom - 2, colour: "#000" });
  // slot 1 shows filter 0: y 1, x 0 holds 2/8, on black
  assert.deepEqual(ctx.calls[6], { text: "0.25", x: zoom / 2, y: pitch + zoom + zoom / 2, maxWidth: zoom - 2, colour: "#fff" });
});

test("drawValues skips values whose centre is outside the canvas", () => {
  const pixels = new Uint8ClampedArray(g.width * g.height * 4);
  const ctx = recorder();
  // panned down by one pixel row and two tall: y 1 of filter 0 and y 0 of filter 1
  drawValues(ctx, grid, values, { zoom, panX: 0, panY: zoom, rowOrder: null }, g, pixels, g.width, 2 * zoom + 1);
  assert.deepEqual(ctx.calls.map((c) => c.text), ["0.25", "0.375", "0.5", "0.625"]);
});

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
