import assert from "node:assert/strict";
import { test } from "node:test";
import { colorOf, lut } from "../static/colormap.js";
import {
  badgeText, bandLabel, binLabel, filterIndex, hasSpectra, HIST_CELL, HIST_GAP, histogramCell,
  histogramHit, histogramPixels, MARK, RASTER_GUTTER, RASTER_H, RASTER_W, rasterHit, rasterPixels, rasterX,
} from "../static/spectra.js";

const table = lut("sequential");

function px(img, x, y) {
  const i = (y * img.width + x) * 4;
  return Array.from(img.data.subarray(i, i + 4));
}

test("histogram: every cell's pixels are its count's colour within [0, most], low band at the bottom", () => {
  const counts = [[0, 1, 2], [4, 0, 3]]; // band 0 (low), band 1
  const img = histogramPixels(counts, table);
  assert.equal(img.width, 3 * (HIST_CELL + HIST_GAP) - HIST_GAP);
  assert.equal(img.height, 2 * (HIST_CELL + HIST_GAP) - HIST_GAP);
  for (let band = 0; band < 2; band++) {
    for (let bin = 0; bin < 3; bin++) {
      const { x, y } = histogramCell(band, bin, 2);
      const want = [...colorOf(counts[band][bin], 0, 4, table), 255];
      for (const [dx, dy] of [[0, 0], [HIST_CELL - 1, HIST_CELL - 1], [10, 5]]) {
        assert.deepEqual(px(img, x + dx, y + dy), want, `band ${band} bin ${bin}`);
      }
      assert.deepEqual(histogramHit(x + 3, y + 3, 2, 3), { band, bin });
    }
  }
  // the bottom row is band 0; gaps are transparent and hit nothing
  assert.deepEqual(px(img, 0, img.height - 1), [...colorOf(0, 0, 4, table), 255]);
  assert.equal(px(img, HIST_CELL, 0)[3], 0);
  assert.equal(histogramHit(HIST_CELL, 0, 2, 3), null);
  assert.equal(histogramHit(0, img.height + 2, 2, 3), null);
  // the most is the table's last entry, 0 the first
  assert.deepEqual(colorOf(4, 0, 4, table), Array.from(table.subarray(256 * 3, 257 * 3)));
});

test("raster: a row per step, one scale over all steps, the shown step marked, errors left blank", () => {
  const steps = [
    { step: 0, counts: [[1, 0], [0, 0]] },
    { step: 5, error: "unreadable" },
    { step: 9, counts: [[0, 2], [6, 0]] },
  ];
  const img = rasterPixels(steps, 2, 2, table, 2);
  assert.equal(img.most, 6);
  assert.equal(img.width, rasterX(2, 0, 2) - 2);
  assert.equal(img.height, 3 * RASTER_H);
  for (const [row, s] of [[0, steps[0]], [2, steps[2]]]) {
    for (let band = 0; band < 2; band++) {
      for (let bin = 0; bin < 2; bin++) {
        const x = rasterX(band, bin, 2) + 1;
        const y = row * RASTER_H + 1;
        assert.deepEqual(px(img, x, y), [...colorOf(s.counts[band][bin], 0, 6, table), 255]);
        assert.deepEqual(rasterHit(x, y, 3, 2, 2), { row, band, bin });
      }
    }
  }
  assert.equal(px(img, rasterX(0, 0, 2), RASTER_H + 1)[3], 0); // the failed step
  assert.deepEqual(px(img, 0, 2 * RASTER_H), [...MARK, 255]);
  assert.equal(px(img, 0, 0)[3], 0);
  assert.equal(rasterHit(RASTER_GUTTER - 1, 0, 3, 2, 2), null);
  assert.equal(rasterHit(rasterX(0, 1, 2) + RASTER_W, 0, 3, 2, 2), null); // the gap between bands
});

test("labels, badges and filter lookup", () => {
  const edges = [-11.25, 11.25, 33.75];
  assert.equal(binLabel(edges, 0), "0°");
  assert.equal(binLabel(edges, 1), "22.5°");
  assert.equal(bandLabel([0, 0.125, 0.25], 1), "0.125–0.25");
  assert.equal(badgeText(45, Math.SQRT2 / 7), "spectrum: 45° · 0.202 cycles/px");
  assert.equal(badgeText(null, 0), "spectrum: flat (frequency 0, a blob: no orientation)");
  assert.match(badgeText(null, null), /no power/);
  assert.equal(filterIndex({ filters: [1, 3, 5] }, "3"), 1);
  assert.equal(filterIndex({ filters: [1, 3, 5] }, "2"), -1);
  assert.ok(hasSpectra({ kind: "kernel", layout: "OIHW" }));
  assert.ok(!hasSpectra({ kind: "kernel", layout: "DHWIO" }));
  assert.ok(!hasSpectra({ kind: "kernel", layout: "WIO" }));
  assert.ok(!hasSpectra({ kind: "activation", layout: "NHWC" }));
});
