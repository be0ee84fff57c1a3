import assert from "node:assert/strict";
import { test } from "node:test";
import { lut, NONFINITE } from "../static/colormap.js";
import {
  BAND_H, barX, HALO, cellGeometry, cellHit, cellRect, colorbarPixels, entryColor, gradIndex, gradLimits, GUTTER,
  markerCells, MISSING, RATIO_BAND, RATIO_LOG10, rasterPixels, ratioIndex, RING, ROTATION_RANGE, rotationIndex,
  rowSources, SHOWN, TOP,
} from "../static/dynraster.js";

const table = lut("sequential");

function px(img, x, y) {
  const i = (y * img.width + x) * 4;
  return Array.from(img.data.subarray(i, i + 4));
}

test("the fixed scales are the documented ones", () => {
  assert.deepEqual(RATIO_LOG10, [-6, 0]);
  assert.deepEqual(RATIO_BAND, [-3.5, -2.5]);
  assert.deepEqual(ROTATION_RANGE, [0, 1]);
});

test("update ratio: log10 clipped to 1e-6..1 over the 257 entries", () => {
  assert.equal(ratioIndex(1e-3), 128); // (-3 + 6) / 6 * 256
  assert.equal(ratioIndex(10 ** -4.5), 64);
  assert.equal(ratioIndex(1e-5), 43); // 256 / 6 = 42.67
  assert.equal(ratioIndex(0.1), 213); // 5 / 6 * 256 = 213.3
  assert.equal(ratioIndex(1e-6), 0);
  assert.equal(ratioIndex(1e-9), 0);
  assert.equal(ratioIndex(0), 0); // stopped: darkest
  assert.equal(ratioIndex(1), 256);
  assert.equal(ratioIndex(30), 256);
  for (const v of [NaN, Infinity, -1]) assert.equal(ratioIndex(v), -1);
  assert.deepEqual(entryColor(-1, table), NONFINITE);
  assert.deepEqual(entryColor(0, table), [68, 1, 84]); // viridis' first stop
  assert.deepEqual(entryColor(256, table), [253, 231, 37]);
});

test("rotation: linear 0..1, clipped; NaN missing", () => {
  assert.equal(rotationIndex(0), 0);
  assert.equal(rotationIndex(0.25), 64);
  assert.equal(rotationIndex(0.5), 128);
  assert.equal(rotationIndex(1.5), 256);
  assert.equal(rotationIndex(NaN), -1);
  assert.deepEqual(entryColor(rotationIndex(NaN), table, MISSING), [160, 160, 160]);
});

test("gradient norms: log10 between the layer's smallest and largest finite positive norm", () => {
  assert.deepEqual(gradLimits(new Float32Array([NaN, 0, 1, 100, Infinity])), [0, 2]);
  assert.equal(gradIndex(10, [0, 2]), 128);
  assert.equal(gradIndex(1, [0, 2]), 0);
  assert.equal(gradIndex(NaN, [0, 2]), -1);
  assert.deepEqual(gradLimits([10]), [0.5, 1.5]);
  assert.equal(gradLimits([NaN, 0]), null);
  assert.equal(gradIndex(1, null), -1);
});

test("cell geometry: 512 filters x 100 intervals fit the side panel; small layers get big cells", () => {
  const big = cellGeometry(512, 100);
  assert.deepEqual(big, { rows: 512, cols: 100, cw: 5, ch: 1, left: GUTTER, top: TOP, width: 506, height: 516 });
  const g = cellGeometry(4, 3);
  assert.deepEqual([g.cw, g.ch, g.width, g.height], [16, 12, 6 + 48, 4 + 48]);
  assert.deepEqual(cellRect(g, 2, 1), { x: 22, y: 28, w: 16, h: 12 });
  assert.deepEqual(cellHit(g, 22, 28), { row: 2, col: 1 });
  assert.deepEqual(cellHit(g, 37, 39), { row: 2, col: 1 });
  assert.deepEqual(cellHit(g, 38, 28), { row: 2, col: 2 });
  assert.equal(cellHit(g, 5, 28), null); // the gutter
  assert.equal(cellHit(g, 22, 3), null); // the top gutter
  assert.equal(cellHit(g, 54, 10), null); // right of the last column
  assert.equal(cellHit(g, 10, 52), null); // below the last row
});

test("rows follow the grid's sorting and alignment when it draws the same filters", () => {
  assert.deepEqual(rowSources(4), [0, 1, 2, 3]);
  assert.deepEqual(rowSources(4, [3, 2, 1, 0]), [3, 2, 1, 0]);
  assert.deepEqual(rowSources(4, [3, 2, 1, 0], [1, 0, 3, 2]), [2, 3, 0, 1]);
  assert.deepEqual(rowSources(4, [1, 0]), [0, 1, 2, 3]); // a capped grid: not its order
});

test("findings are marked at their filter's row and the interval starting at first_step", () => {
  const filters = [2, 5, 17]; // the route's labels
  const sources = [2, 0, 1]; // row 0 draws filter 17, row 1 filter 2, row 2 filter 5
  const steps = [0, 2, 4, 6, 9];
  const findings = [
    { filter: 17, problem: "stalled", first_step: 4 },
    { filter: null, problem: "frozen", first_step: 0 },
    { filter: 99, problem: "dead", first_step: 0 },
    { filter: 5, problem: "exploding_updates", first_step: 5 }, // not logged: the next step
    { filter: 2, problem: "dead", first_step: 9 }, // the last step: the last interval
  ];
  assert.deepEqual(markerCells(findings, filters, sources, steps, 4), [
    { problem: "stalled", filter: 17, row: 0, col: 2, step: 4 },
    { problem: "exploding_updates", filter: 5, row: 2, col: 3, step: 6 },
    { problem: "dead", filter: 2, row: 1, col: 3, step: 6 },
  ]);
  assert.deepEqual(markerCells(findings, filters, sources, [0], 0), []);
});

test("raster: cells in their colour, the shown column and the finding's ring", () => {
  const g = cellGeometry(3, 5, { maxW: 8, maxH: 8 });
  const colors = (row, col) => [row * 10, col * 10, 7];
  const img = rasterPixels(g, colors, { shown: 1, marks: [{ row: 1, col: 2, color: [1, 2, 3] }] });
  assert.deepEqual([img.width, img.height], [GUTTER + 40, TOP + 24]);
  for (let row = 0; row < 3; row++) {
    for (let col = 0; col < 5; col++) {
      const r = cellRect(g, row, col);
      const inner = row === 1 && col === 2 ? [[r.x, r.y], [r.x + 7, r.y + 7]] : [[r.x + 4, r.y + 4]];
      // a ring and its halo cover 3 px of its neighbours' edges; every cell's centre keeps its colour
      for (const [x, y] of inner) assert.deepEqual(px(img, x, y), [row * 10, col * 10, 7, 255], `${row} ${col}`);
    }
  }
  const r = cellRect(g, 1, 2); // x 22, y 12
  for (const [x, y] of [[r.x - RING, r.y - RING], [r.x - 1, r.y + 2], [r.x + r.w, r.y], [r.x + r.w + 1, r.y + r.h + 1], [r.x + 2, r.y + r.h]]) {
    assert.deepEqual(px(img, x, y), [1, 2, 3, 255], `ring ${x} ${y}`);
  }
  for (const [x, y] of [[r.x - RING - 1, r.y], [r.x + r.w + RING, r.y + r.h + RING], [r.x, r.y - RING - 1]]) {
    assert.deepEqual(px(img, x, y), [...HALO, 255], `halo ${x} ${y}`);
  }
  assert.deepEqual(px(img, 0, r.y), [1, 2, 3, 255]); // the gutter mark at its row
  assert.deepEqual(px(img, 0, r.y - 1), [0, 0, 0, 0]);
  assert.deepEqual(px(img, GUTTER + 8, 0), [...SHOWN, 255]); // column 1 marked on top
  assert.deepEqual(px(img, GUTTER + 15, TOP - 2), [...SHOWN, 255]);
  assert.deepEqual(px(img, GUTTER + 16, 0)[3], 0);
  assert.deepEqual(px(img, GUTTER + 8, TOP - 1), [0, 0, 0, 0]);
  assert.deepEqual(px(img, GUTTER, 0), [0, 0, 0, 0]);
});

test("colour bar: x shows entry round(x / 255 * 256), the 1e-3 band marked under it", () => {
  const img = colorbarPixels(table, 256, 14 + BAND_H, { range: RATIO_LOG10, band: RATIO_BAND });
  for (const x of [0, 100, 255]) {
    const i = Math.round((x / 255) * 256) * 3;
    assert.deepEqual(px(img, x, 5), [table[i], table[i + 1], table[i + 2], 255]);
  }
  assert.equal(barX(-3.5, -6, 0, 256), 106); // 2.5 / 6 * 255 = 106.25
  assert.equal(barX(-2.5, -6, 0, 256), 149); // 3.5 / 6 * 255 = 148.75
  const bottom = 14 + BAND_H - 1;
  assert.deepEqual(px(img, 106, bottom), [0, 0, 0, 255]);
  assert.deepEqual(px(img, 149, bottom), [0, 0, 0, 255]);
  assert.equal(px(img, 105, bottom)[3], 0);
  assert.equal(px(img, 150, bottom)[3], 0);
  assert.equal(px(img, 120, 14)[3], 0); // a 1 px gap under the bar
  const plain = colorbarPixels(table, 256, 14);
  assert.equal(px(plain, 120, 13)[3], 255);
});
