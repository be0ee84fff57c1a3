import assert from "node:assert/strict";
import { test } from "node:test";
import { normal } from "./random.mjs";
import { LUT_SIZE, MID, NONFINITE, lut } from "../static/colormap.js";
import { ACTIVATION_LAYOUTS, KERNEL_LAYOUTS, canonicalize, subGrid } from "../static/layout.js";
import { cellLimits } from "../static/normalize.js";
import { fitZoom, geometry, hitTest, imageFor, renderGrid } from "../static/render.js";

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

// The simple per-pixel renderGrid that the fast paths must match byte for byte.
/**
 * What screen pixel (sx, sy) shows, from the geometry's numbers alone:
 * "bg", "sep", or {cell, y, x} (pixel y, x of the cell's tile).
 */
function locate(grid, g, view, sx, sy) {
  const wx = sx + view.panX;
  const wy = sy + view.panY;
  if (wx < 0 || wy < 0 || wx >= g.width || wy >= g.height) return "bg";
  const bx = Math.floor(wx / g.blockPitchX);
  const line = Math.floor(wy / g.blockPitchY);
  const slot = line * g.blockCols + bx;
  const ix = wx - bx * g.blockPitchX;
  const iy = wy - line * g.blockPitchY - g.band;
  if (slot >= grid.rows) return "bg";
  // blocks: the label band and the space around a block are background
  if (g.blockCols > 1 && (ix >= g.blockW || iy < 0 || iy >= g.tileH)) return "bg";
  const c = Math.floor(ix / g.pitchX);
  const inX = ix - c * g.pitchX;
  if (iy >= g.tileH || inX >= g.tileW) return "sep";
  const x = Math.min(grid.tw - 1, Math.floor(inX / view.zoom));
  if (grid.xOff[x] < 0) return "sep";
  const r = view.rowOrder ? view.rowOrder[slot] : slot;
  const cell = r * grid.cols + c;
  if (cell >= grid.cells) return "bg";
  return { cell, y: Math.min(grid.th - 1, Math.floor(iy / view.zoom)), x };
}

function simpleRender(out, width, height, grid, values, limits, table, view, bg, sep = bg) {
  const g = geometry(grid, view.zoom, view.band || 0);
  const { lo, hi } = limits;
  const top = LUT_SIZE - 1;
  const [nr, ng, nb] = NONFINITE;
  const chans = grid.rgb ? grid.chanOff : null;
  const cellBase = grid.cellBase;
  let p = 0;
  for (let sy = 0; sy < height; sy++) {
    for (let sx = 0; sx < width; sx++, p += 4) {
      const at = locate(grid, g, view, sx, sy);
      if (typeof at === "string") {
        const [cr, cg, cb] = at === "sep" ? sep : bg;
        out[p] = cr;
        out[p + 1] = cg;
        out[p + 2] = cb;
        out[p + 3] = 255;
        continue;
      }
      const { cell } = at;
      const l = lo[cell];
      const span = hi[cell] - l;
      const off = cellBase[cell] + grid.yOff[at.y] + grid.xOff[at.x];
      out[p + 3] = 255;
      if (chans) {
        let bad = false;
        for (let k = 0; k < 3; k++) {
          const v = values[off + chans[k]];
          if (!Number.isFinite(v)) bad = true;
          const t = span > 0 ? (v - l) / span : 0.5;
          out[p + k] = t <= 0 ? 0 : t >= 1 ? 255 : Math.round(t * 255);
        }
        if (bad) {
          out[p] = nr;
          out[p + 1] = ng;
          out[p + 2] = nb;
        }
        continue;
      }
      const v = values[off];
      if (!Number.isFinite(v)) {
        out[p] = nr;
        out[p + 1] = ng;
        out[p + 2] = nb;
        continue;
      }
      let i;
      if (span > 0) {
        const t = (v - l) / span;
        i = t <= 0 ? 0 : t >= 1 ? top : Math.round(t * top);
      } else {
        i = top >> 1;
      }
      i *= 3;
      out[p] = table[i];
      out[p + 1] = table[i + 1];
      out[p + 2] = table[i + 2];
    }
  }
  return out;
}

/** Draws with renderGrid and the simple loop; returns the first differing byte (or -1). */
function compareDraw(grid, values, limits, t, view, w, h) {
  const got = new Uint8ClampedArray(w * h * 4).fill(7);
  const want = new Uint8ClampedArray(w * h * 4);
  renderGrid(got, w, h, grid, values, limits, t, view, BG, SEP);
  simpleRender(want, w, h, grid, values, limits, t, view, BG, SEP);
  return got.findIndex((b, i) => b !== want[i]);
}

test("every layout, mode, view and number type draws what the per-pixel loop draws", () => {
  const sizes = { D: 2, H: 3, W: 2, I: 4, O: 5, M: 2, N: 2, C: 7 };
  const headers = [
    ...KERNEL_LAYOUTS.map((layout) => ({ kind: "kernel", layout })),
    ...ACTIVATION_LAYOUTS.map((layout) => ({ kind: "activation", layout })),
    { kind: "kernel", layout: "IO", shape: [12, 4], image_shape: [2, 2, 3] },
    { kind: "kernel", layout: "OIHW", shape: [4, 3, 2, 2], rgb: true },
    { kind: "kernel", layout: "HWIO", shape: [3, 2, 1, 7] }, // 7 one-channel filters: 3 blocks a line
    { kind: "pattern", layout: "NHWC", shape: [3, 4, 4, 3] },
  ];
  const views = [
    { zoom: 1, panX: 0, panY: 0 }, { zoom: 3, panX: 0, panY: 0 }, { zoom: 2, panX: -3, panY: 5, more: 4 },
    { zoom: 0.37, panX: 1, panY: 0 }, { zoom: 0.5, panX: 0, panY: 0, more: 3 },
    { zoom: 4, panX: 2, panY: -1, band: 5, more: 2 },
  ];
  for (const h of headers) {
    const shape = h.shape || [...h.layout].map((l) => sizes[l]);
    const n = shape.reduce((a, b) => a * b, 1);
    const grid = canonicalize({ ...h, shape }, { rgb: h.rgb, sample: 1 });
    const f32 = normal(n, 0.5, n);
    f32[1] = NaN;
    f32[n - 2] = Infinity;
    f32[2] = -Infinity;
    const cases = [f32, Float64Array.from(f32), Int16Array.from(f32, (v) => (Number.isFinite(v) ? v * 4 : 0))];
    const grids = [grid, subGrid(grid, Array.from({ length: grid.cells }, (_, i) => grid.cells - 1 - i))];
    const order = Int32Array.from({ length: grid.rows }, (_, i) => grid.rows - 1 - i);
    for (const g of grids) {
      for (const values of cases) {
        for (const mode of ["tile", "filter", "layer", "steps"]) {
          for (const cmap of ["diverging", "sequential"]) {
            const limits = cellLimits(g, values, { mode, p: 99, signed: cmap === "diverging", fixed: [-0.3, 0.9] });
            for (const { more = 0, ...v } of views) {
              const geo = geometry(g, v.zoom, v.band);
              const rowOrder = g === grid ? order : null;
              const view = { ...v, rowOrder };
              const at = compareDraw(g, values, limits, lut(cmap), view, geo.width + more, geo.height + more);
              assert.equal(at, -1, `${h.kind} ${h.layout} ${values.constructor.name} ${mode} ${cmap} zoom ${v.zoom}`);
            }
          }
        }
      }
    }
  }
});

test("a big layer coloured by bit-pattern buckets matches, bucket edges and NaN included", () => {
  const shape = [3, 3, 64, 64];
  const grid = canonicalize({ kind: "kernel", layout: "HWIO", shape });
  const values = normal(3 * 3 * 64 * 64, 0.02);
  values[5] = NaN;
  values[6] = -Infinity;
  values[7] = -0;
  const g = geometry(grid, 1);
  for (const [cmap, signed] of [["diverging", true], ["sequential", false], ["grey", false]]) {
    for (const p of [99.5, 100, 60]) {
      const limits = cellLimits(grid, values, { mode: "layer", p, signed });
      // the values exactly at the limits and at the 2 * 256 half-way points between colours
      const { lo, hi } = { lo: limits.lo[0], hi: limits.hi[0] };
      for (let j = 0; j <= 512; j++) values[100 + j] = lo + ((hi - lo) * j) / 512;
      for (const view of [{ zoom: 1, panX: 0, panY: 0 }, { zoom: 2, panX: 37, panY: 11 }]) {
        assert.equal(compareDraw(grid, values, limits, lut(cmap), view, g.width, g.height), -1, `${cmap} p${p}`);
      }
    }
  }
  const limits = cellLimits(grid, values, { mode: "layer", p: 99.5 });
  const out = new Uint8ClampedArray(g.width * g.height * 4);
  renderGrid(out, g.width, g.height, grid, values, limits, table, { zoom: 1, panX: 0, panY: 0 }, BG);
  // value 5 sits in filter 5, channel 0, pixel (0, 0): screen (0, 15)
  assert.deepEqual(Array.from(out.slice((15 * g.width) * 4, (15 * g.width) * 4 + 3)), NONFINITE);
});

test("limits narrow for their magnitude, and unaligned output, still match", () => {
  const grid = canonicalize({ kind: "kernel", layout: "HWIO", shape: [3, 3, 8, 8] });
  const values = normal(3 * 3 * 8 * 8, 1e-4).map((v) => 100 + v); // many colours per bucket
  const limits = cellLimits(grid, values, { mode: "layer", p: 99, signed: false });
  const g = geometry(grid, 2);
  assert.equal(compareDraw(grid, values, limits, table, { zoom: 2, panX: 0, panY: 0 }, g.width, g.height), -1);
  const bytes = new Uint8ClampedArray(g.width * g.height * 4 + 1);
  const out = bytes.subarray(1);
  const want = new Uint8ClampedArray(g.width * g.height * 4);
  const wide = cellLimits(grid, values, { mode: "layer", p: 99, signed: true });
  renderGrid(out, g.width, g.height, grid, values, wide, table, { zoom: 2, panX: 0, panY: 0 }, BG, SEP);
  simpleRender(want, g.width, g.height, grid, values, wide, table, { zoom: 2, panX: 0, panY: 0 }, BG, SEP);
  assert.deepEqual(out, want);
});

test("imageFor keeps one ImageData per context and size", () => {
  let made = 0;
  const createImageData = (width, height) => {
    made++;
    return { width, height, data: new Uint8ClampedArray(width * height * 4) };
  };
  const ctx = { createImageData };
  const a = imageFor(ctx, 4, 3);
  assert.equal(imageFor(ctx, 4, 3), a);
  const b = imageFor(ctx, 5, 3);
  assert.notEqual(b, a);
  assert.equal(b.width, 5);
  assert.notEqual(imageFor({ createImageData }, 5, 3), b, "another context");
  assert.equal(made, 3);
});
