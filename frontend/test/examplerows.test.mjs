import assert from "node:assert/strict";
import { test } from "node:test";
import { CROP_PX, examplesSource, rowPlaces, STRIP_GAP, storedRow, stripSize, stripsWidth } from "../static/examplerows.js";
import { canonicalize } from "../static/layout.js";
import { cellRect } from "../static/render.js";

const TAGS = {
  "c1/kernel": { kind: "kernel", layout: "HWIO", shape: [3, 3, 1, 4] },
  "c1/activation": { kind: "activation", layout: "NHWC", shape: [2, 8, 8, 4], examples: "c1/activation/examples" },
  "c2/weight": { kind: "kernel", layout: "OIHW", shape: [4, 4, 3, 3] },
  "c2/activation": { kind: "activation", layout: "NCHW", shape: [2, 4, 8, 8] },
  "dw/kernel": { kind: "kernel", layout: "HWIM", shape: [3, 3, 4, 1] },
  "dw/activation": { kind: "activation", layout: "NHWC", shape: [2, 8, 8, 4], examples: "dw/activation/examples" },
  "c1/pattern": { kind: "pattern", layout: "NHWC", shape: [4, 8, 8, 3] },
};

test("a kernel shows its layer's activation's examples beside its rows; an activation its own as a list", () => {
  assert.deepEqual(examplesSource("c1/kernel", TAGS), { tag: "c1/activation", rows: true });
  assert.deepEqual(examplesSource("c1/activation", TAGS), { tag: "c1/activation", rows: false });
  assert.deepEqual(examplesSource("dw/kernel", TAGS), { tag: "dw/activation", rows: false }); // depthwise: filters are cells
  assert.equal(examplesSource("c2/weight", TAGS), null); // its activation has no examples
  assert.equal(examplesSource("c1/pattern", TAGS), null);
  assert.equal(examplesSource("nope", TAGS), null);
  assert.equal(examplesSource("c1/kernel", undefined), null);
});

test("filter f is channel f of the activation: its stored row, also when channels were kept", () => {
  const all = TAGS["c1/activation"];
  assert.deepEqual([0, 3, "2", 4, -1, "x"].map((l) => storedRow(l, all)), [0, 3, 2, -1, -1, -1]);
  const kept = { ...all, shape: [2, 8, 8, 2], filters: [1, 3] };
  assert.deepEqual([0, 1, 2, 3].map((l) => storedRow(l, kept)), [-1, 0, -1, 1]);
  assert.equal(storedRow(0, undefined), -1);
});

test("row places: each display slot's row, top and height in css px, following order, zoom and pan", () => {
  // a block grid as the dashboard stacks it beside strips: one filter a line
  const grid = { ...canonicalize({ kind: "kernel", layout: "HWIO", shape: [3, 3, 2, 5] }), blockCols: 1 };
  const zoom = 8;
  const dpr = 2;
  const order = [3, 0, 4, 1, 2];
  const panY = 10; // the first row half cut: still placed (top < 0)
  const places = rowPlaces(grid, { zoom, panY, rowOrder: order }, dpr, 1000);
  assert.deepEqual(places.map((p) => p.row), order);
  assert.ok(places[0].top < 0);
  for (const p of places) {
    // the brute force: render.js's rectangle of the slot's first tile, panned, in css px
    const rect = cellRect(grid, zoom, p.slot, 0);
    assert.equal(p.top, (rect.y - panY) / dpr);
    assert.equal(p.height, rect.h / dpr);
  }
  // a window 20 css px tall, panned to the third row: only the rows it shows
  const pitch = (3 * zoom + 1) / dpr; // 12.5 css px
  const some = rowPlaces(grid, { zoom, panY: 2 * pitch * dpr, rowOrder: null }, dpr, 20);
  assert.deepEqual(some.map((p) => [p.slot, p.row, p.top]), [[2, 2, 0], [3, 3, pitch]]);
  // blocks side by side have no row to sit beside
  assert.equal(rowPlaces({ ...grid, blockCols: 2 }, { zoom, panY: 0 }, 1, 100), null);
});

test("strip size: integer scale up to CROP_PX, shrunk (never grown) to a row's height", () => {
  const s = stripSize(3, 3, 4);
  assert.equal(s.scale, Math.floor(CROP_PX / 3));
  assert.equal(s.tile, 3 * s.scale);
  assert.equal(s.width, 4 * (s.tile + STRIP_GAP) - STRIP_GAP);
  assert.equal(s.height, 3 * s.scale);
  assert.equal(s.cssHeight, s.height);
  const small = stripSize(3, 3, 4, 13);
  assert.equal(small.cssHeight, 13);
  assert.equal(small.cssWidth, (s.width * 13) / s.height);
  assert.equal(stripSize(64, 32, 2).scale, 1); // larger than CROP_PX: one canvas px per pixel
  assert.ok(stripsWidth(9) >= 9 * (CROP_PX + STRIP_GAP) && stripsWidth(4) < stripsWidth(9));
});
