// The block layout: kernels with few input channels drawn as a near-square grid
// of filter blocks (layout.js blockCols, render.js geometry / hitTest / cellRect).
import assert from "node:assert/strict";
import { test } from "node:test";
import { LUT_SIZE, lut } from "../static/colormap.js";
import { BLOCK_CHANNELS, blockLabel, canonicalize, subGrid } from "../static/layout.js";
import { cellLimits } from "../static/normalize.js";
import { blockRect, cellRect, fitBlocks, fitZoom, geometry, hitTest, renderGrid } from "../static/render.js";
import { decode, defaults, encode } from "../static/state.js";

const hwio = (h, w, i, o, extra = {}) => canonicalize({ kind: "kernel", layout: "HWIO", shape: [h, w, i, o], ...extra });

test("1 to 3 input channels make a near-square grid of blocks; more make a strip", () => {
  assert.equal(BLOCK_CHANNELS, 3);
  // the demo's conv1: 16 filters x 1 channel of 5x5 -> 4 x 4 blocks
  assert.equal(hwio(5, 5, 1, 16).blockCols, 4);
  assert.equal(hwio(3, 3, 1, 64).blockCols, 8);
  // 3 channels side by side make wide blocks: fewer of them to a line (near-square in pixels)
  assert.equal(hwio(7, 7, 3, 64).blockCols, 5);
  assert.equal(hwio(3, 3, 4, 64).blockCols, 1);
  assert.equal(hwio(3, 3, 4, 64).blocks, false);
  // 6 filters x 3 channels: near-square is one block a line, but a view may put more side by side
  assert.deepEqual([hwio(3, 3, 3, 6).blockCols, hwio(3, 3, 3, 6).blocks], [1, true]);
  assert.equal(hwio(3, 3, 1, 1).blocks, false, "one filter");
  assert.equal(hwio(3, 3, 64, 64).blockCols, 1);
  // RGB mode: one colour tile per filter
  const rgb = canonicalize({ kind: "kernel", layout: "HWIO", shape: [7, 7, 3, 64] }, { rgb: true });
  assert.equal(rgb.rgb, true);
  assert.equal(rgb.blockCols, 8);
  // depthwise (HWIM): a block per input channel, its M filters side by side
  assert.equal(canonicalize({ kind: "kernel", layout: "HWIM", shape: [3, 3, 32, 1] }).blockCols, 6);
  // 1D kernels: 1-value-tall tiles, so more blocks to a line would be too wide
  assert.equal(canonicalize({ kind: "kernel", layout: "WIO", shape: [5, 1, 16] }).blockCols, 2);
  // dense kernels drawn as images (image_shape 28x28x1): 10 filters -> 3 to a line
  assert.equal(canonicalize({ kind: "kernel", layout: "IO", shape: [784, 10], image_shape: [28, 28, 1] }).blockCols, 3);
  // activations and images are near-square already; sub-grids (detail view) are plain
  assert.equal(canonicalize({ kind: "activation", layout: "NHWC", shape: [1, 8, 8, 16] }).blockCols, 1);
  assert.equal(subGrid(hwio(5, 5, 1, 16), [0]).blockCols, 1);
});

test("block labels are original filter indices (a subset logged) and depthwise first filters", () => {
  const kept = hwio(3, 3, 1, 4, { filters: [3, 9, 12, 40] });
  assert.deepEqual([0, 1, 2, 3].map((r) => blockLabel(kept, r)), ["3", "9", "12", "40"]);
  const dw = canonicalize({ kind: "kernel", layout: "HWIM", shape: [3, 3, 4, 2] });
  assert.deepEqual([0, 1, 2, 3].map((r) => blockLabel(dw, r)), ["0", "2", "4", "6"]);
});

test("geometry of a block grid: blocks, spaces, label bands", () => {
  const grid = hwio(5, 5, 1, 16);
  const g = geometry(grid, 10, 15);
  assert.deepEqual([g.blockCols, g.lines, g.tileW, g.blockW, g.band], [4, 4, 50, 50, 15]);
  assert.ok(g.space > g.gap, "blocks are further apart than the tiles of one block");
  assert.equal(g.blockPitchX, 50 + g.space);
  assert.equal(g.blockPitchY, 15 + 50 + g.space);
  assert.equal(g.width, 4 * 50 + 3 * g.space);
  assert.equal(g.height, 4 * (15 + 50) + 3 * g.space);
  // a strip (blockCols 1) is the old geometry: rows of tiles 1 px apart, no bands
  const strip = geometry(hwio(3, 3, 8, 5), 4, 15);
  assert.deepEqual([strip.band, strip.width, strip.height], [0, 8 * 13 - 1, 5 * 13 - 1]);
  // 3-channel blocks keep their tiles 1 px apart
  const three = geometry(hwio(3, 3, 3, 32), 4);
  assert.equal(three.blockW, 3 * 13 - 1);
});

test("cellRect and hitTest agree for every tile, with sorted blocks and label bands", () => {
  const grid = hwio(3, 2, 2, 7); // 7 filters x 2 channels of 3x2: 2 blocks to a line, one empty slot
  assert.equal(grid.blockCols, 2);
  const order = Int32Array.from([6, 0, 5, 1, 4, 2, 3]);
  const band = 7;
  const view = { zoom: 4, panX: 3, panY: 5, rowOrder: order, band };
  const g = geometry(grid, 4, band);
  for (let slot = 0; slot < 7; slot++) {
    for (let c = 0; c < 2; c++) {
      const rect = cellRect(grid, 4, slot, c, band);
      assert.equal(rect.x, (slot % 2) * g.blockPitchX + c * g.pitchX);
      assert.equal(rect.y, Math.floor(slot / 2) * g.blockPitchY + band);
      for (let ty = 0; ty < 3; ty++) {
        for (let tx = 0; tx < 2; tx++) {
          const hit = hitTest(grid, view, rect.x + tx * 4 + 2 - 3, rect.y + ty * 4 + 2 - 5);
          assert.deepEqual([hit.row, hit.r, hit.c, hit.ty, hit.tx], [slot, order[slot], c, ty, tx]);
          // HWIO offset of (y, x, channel c, filter r)
          assert.equal(hit.offset, ((ty * 2 + tx) * 2 + c) * 7 + order[slot]);
          assert.equal(grid.filterOf(hit.r, hit.c), order[slot]);
        }
      }
    }
    // the label band above a block, and the space right of it, hit nothing
    const block = blockRect(grid, 4, slot, band);
    assert.equal(hitTest(grid, view, block.x + 1 - 3, block.y - 2 - 5), null);
    assert.equal(hitTest(grid, view, block.x + g.blockW + 1 - 3, block.y + 1 - 5), null);
  }
  // the eighth slot does not exist
  const empty = cellRect(grid, 4, 7, 0, band);
  assert.equal(hitTest(grid, view, empty.x + 1 - 3, empty.y + 1 - 5), null);
});

test("pixels: each filter's block at its place, labels' band and block spaces background", () => {
  // 5 filters x 1 channel of 1x1, filter f = f - 2: 2 blocks to a line at zoom 3
  const grid = hwio(1, 1, 1, 5);
  assert.equal(grid.blockCols, 2);
  const values = new Float32Array([-2, -1, 0, 1, 2]);
  const band = 4;
  const g = geometry(grid, 3, band);
  const bg = [1, 2, 3];
  const out = new Uint8ClampedArray(g.width * g.height * 4);
  const limits = cellLimits(grid, values, { mode: "layer", p: 100, signed: true });
  const table = lut("diverging");
  const view = { zoom: 3, panX: 0, panY: 0, rowOrder: Int32Array.from([4, 3, 2, 1, 0]), band };
  renderGrid(out, g.width, g.height, grid, values, limits, table, view, bg, [9, 9, 9]);
  const at = (x, y) => Array.from(out.slice((y * g.width + x) * 4, (y * g.width + x) * 4 + 3));
  const entry = (t) => {
    const i = Math.round(t * (LUT_SIZE - 1));
    return [table[3 * i], table[3 * i + 1], table[3 * i + 2]];
  };
  for (let slot = 0; slot < 5; slot++) {
    const f = 4 - slot; // sorted descending
    const rect = cellRect(grid, 3, slot, 0, band);
    assert.deepEqual(at(rect.x + 1, rect.y + 1), entry((f - 2 + 2) / 4), `slot ${slot}`);
    assert.deepEqual(at(rect.x + 1, rect.y - 1), bg, "label band");
    if (slot % 2 === 0) assert.deepEqual(at(rect.x + 3, rect.y + 1), bg, "space between blocks");
  }
  const missing = cellRect(grid, 3, 5, 0, band);
  assert.deepEqual(at(missing.x + 1, missing.y + 1), bg, "no sixth filter");
});

test("fitZoom uses the available width of a block grid", () => {
  const grid = hwio(5, 5, 1, 16);
  for (const width of [300, 716, 1000]) {
    const z = fitZoom(grid, width, 64);
    assert.ok(geometry(grid, z).width <= width);
    assert.ok(geometry(grid, z + 1).width > width, `zoom ${z} leaves width unused at ${width} px`);
  }
  assert.equal(fitZoom(grid, 10000, 48), 48, "at most maxZoom");
  const z = fitZoom(hwio(3, 3, 1, 40000), 300);
  assert.ok(z < 1 && geometry(hwio(3, 3, 1, 40000), z).width <= 300);
});

test("fitBlocks picks the block columns that show the grid largest in the area", () => {
  const band = (z) => (z >= 4 ? 15 : 0);
  // brute force over every column count and zoom: the same best zoom, and no shorter layout at it
  for (const [grid, width, height, least] of [
    [hwio(5, 5, 1, 16), 800, 760, 5], [hwio(7, 7, 3, 32), 800, 690, 4], [hwio(7, 7, 3, 32), 1300, 700, 4],
    [hwio(3, 3, 1, 2), 800, 690, 8], [hwio(3, 3, 1, 4096), 800, 690, 8], [hwio(1, 1, 2, 5), 120, 90, 24],
  ]) {
    const best = fitBlocks(grid, width, height, 48, least, band);
    let want = 0;
    for (let c = 1; c <= grid.rows; c++) {
      const g = { ...grid, blockCols: c };
      for (let z = 48; z >= 1; z--) {
        const geo = geometry(g, z, band(z));
        if (geo.width <= width && (geo.height <= height || z <= least)) {
          want = Math.max(want, z);
          break;
        }
      }
    }
    assert.equal(best.zoom, want, `${grid.rows} filters in ${width}x${height}`);
    const chosen = geometry({ ...grid, blockCols: best.blockCols }, best.zoom, band(best.zoom));
    assert.ok(chosen.width <= width);
    for (let c = 1; c <= grid.rows; c++) {
      const geo = geometry({ ...grid, blockCols: c }, best.zoom, band(best.zoom));
      if (geo.width <= width) assert.ok(geo.height >= chosen.height, `${c} columns are shorter`);
    }
  }
  // the demo's conv1 in a square-ish panel: 4 x 4 blocks, the whole grid in view
  const demo = fitBlocks(hwio(5, 5, 1, 16), 800, 760, 48, 5, band);
  assert.equal(demo.blockCols, 4);
  assert.ok(demo.height <= 760);
  // a wide panel puts more blocks on a line
  assert.ok(fitBlocks(hwio(5, 5, 1, 16), 1600, 500, 48, 5, band).blockCols > 4);
});

test("a chosen zoom is part of the URL state; none means fit", () => {
  assert.equal(defaults().zoom, null);
  assert.equal(decode(`#${encode({ ...defaults(), zoom: 12 })}`).zoom, 12);
  assert.equal(decode(`#${encode({ ...defaults(), zoom: 0.25 })}`).zoom, 0.25);
  assert.equal(encode({ ...defaults(), zoom: null }), "");
  for (const bad of ["0", "-3", "1000", "x"]) assert.equal(decode(`#zoom=${bad}`).zoom, null, bad);
});
