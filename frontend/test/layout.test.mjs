import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ACTIVATION_LAYOUTS, KERNEL_LAYOUTS, canonicalize, cellOffsets, cellStrides, denseRange, offsetOf,
  squareColumns, strides, subGrid,
} from "../static/layout.js";

// the layouts of tb_convfilters/layouts.py
const SIZES = { D: 2, H: 3, W: 4, I: 5, O: 6, M: 2, N: 3, C: 7 };

/** C-order offset of the element whose named axes have the given indices. */
function named(layout, idx) {
  const shape = [...layout].map((l) => SIZES[l]);
  const st = strides(shape);
  return [...layout].reduce((acc, l, k) => acc + (idx[l] || 0) * st[k], 0);
}

test("the layout lists match tb_convfilters/layouts.py", () => {
  assert.deepEqual(KERNEL_LAYOUTS, ["WIO", "OIW", "HWIO", "OIHW", "DHWIO", "OIDHW", "WIM", "HWIM",
    "WOI", "HWOI", "DHWOI", "IOW", "IOHW", "IODHW", "IO", "OI"]);
  assert.deepEqual(ACTIVATION_LAYOUTS, ["NWC", "NCW", "NHWC", "NCHW", "NDHWC", "NCDHW"]);
});

for (const layout of KERNEL_LAYOUTS) {
  test(`kernel ${layout}: rows = filters, cols = input channels, tiles = spatial`, () => {
    const shape = [...layout].map((l) => SIZES[l]);
    const g = canonicalize({ kind: "kernel", layout, shape });
    const depthwise = layout.includes("M");
    const D = layout.includes("D") ? SIZES.D : 1;
    const H = layout.includes("H") ? SIZES.H : 1;
    const W = layout.includes("W") ? SIZES.W : 1;
    assert.equal(g.rows, depthwise ? SIZES.I : SIZES.O);
    assert.equal(g.cols, depthwise ? SIZES.M : SIZES.I);
    assert.equal(g.th, H);
    assert.equal(g.tw, D * W + (D - 1)); // D slices side by side, 1-px separators
    assert.equal(g.nFilters, depthwise ? SIZES.I * SIZES.M : SIZES.O);
    const seen = new Set();
    for (let r = 0; r < g.rows; r++) {
      for (let c = 0; c < g.cols; c++) {
        for (let y = 0; y < g.th; y++) {
          for (let x = 0; x < g.tw; x++) {
            const d = Math.floor(x / (W + 1));
            const w = x % (W + 1);
            const got = offsetOf(g, r, c, y, x);
            if (w === W) {
              assert.equal(got, -1, "slice separator");
              continue;
            }
            const idx = depthwise ? { I: r, M: c, H: y, W: w, D: d } : { O: r, I: c, H: y, W: w, D: d };
            assert.equal(got, named(layout, idx), `${layout} r${r} c${c} y${y} x${x}`);
            seen.add(got);
          }
        }
      }
    }
    assert.equal(seen.size, shape.reduce((a, b) => a * b, 1), "every value drawn exactly once");
    if (depthwise) assert.equal(g.filterOf(3, 1), 3 * SIZES.M + 1);
  });
}

test("Dense IO/OI: 1x1 tiles, or image_shape (h, w, c) tiles", () => {
  for (const layout of ["IO", "OI"]) {
    const plain = canonicalize({ kind: "kernel", layout, shape: layout === "IO" ? [12, 4] : [4, 12] });
    assert.deepEqual([plain.rows, plain.cols, plain.th, plain.tw], [4, 12, 1, 1]);
    const shape = layout === "IO" ? [12, 4] : [4, 12];
    const img = canonicalize({ kind: "kernel", layout, shape, image_shape: [2, 3, 2] });
    assert.deepEqual([img.rows, img.cols, img.th, img.tw], [4, 2, 2, 3]);
    // input index i = (y * 3 + x) * 2 + ch (numpy reshape of an h x w x c image)
    const st = strides(shape);
    const [sI, sO] = layout === "IO" ? [st[0], st[1]] : [st[1], st[0]];
    for (let o = 0; o < 4; o++) for (let ch = 0; ch < 2; ch++) for (let y = 0; y < 2; y++) for (let x = 0; x < 3; x++) {
      assert.equal(offsetOf(img, o, ch, y, x), ((y * 3 + x) * 2 + ch) * sI + o * sO);
    }
  }
});

test("kept filter/channel indices label rows and columns", () => {
  const g = canonicalize({ kind: "kernel", layout: "OIHW", shape: [2, 3, 1, 1], filters: [5, 9], channels: [0, 4, 7] });
  assert.equal(g.filterLabel(1), "9");
  assert.equal(g.channelLabel(2), "7");
  const dw = canonicalize({ kind: "kernel", layout: "HWIM", shape: [1, 1, 2, 3], filters: [4, 6] });
  assert.equal(dw.filterLabel(dw.filterOf(1, 2)), String(6 * 3 + 2));
});

test("RGB mode: one colour tile per filter for 3-channel kernels only", () => {
  const g = canonicalize({ kind: "kernel", layout: "OIHW", shape: [4, 3, 2, 2] }, { rgb: true });
  assert.equal(g.rgb, true);
  assert.equal(g.cols, 1);
  assert.deepEqual(Array.from(g.chanOff), [0, 4, 8]);
  assert.deepEqual(cellOffsets(g, 1, 0), [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]);
  assert.equal(canonicalize({ kind: "kernel", layout: "OIHW", shape: [4, 2, 2, 2] }, { rgb: true }).rgb, false);
  assert.equal(canonicalize({ kind: "kernel", layout: "HWIM", shape: [2, 2, 3, 3] }, { rgb: true }).rgb, false);
});

for (const layout of ACTIVATION_LAYOUTS) {
  test(`activation ${layout}: one tile per channel of the picked sample, near-square`, () => {
    const shape = [...layout].map((l) => SIZES[l]);
    const sample = 2;
    const g = canonicalize({ kind: "activation", layout, shape }, { sample });
    assert.equal(g.samples, SIZES.N);
    assert.equal(g.cells, SIZES.C);
    assert.ok(g.rows * g.cols >= SIZES.C && (g.rows - 1) * g.cols < SIZES.C);
    const D = layout.includes("D") ? SIZES.D : 1;
    const W = SIZES.W;
    for (let ch = 0; ch < SIZES.C; ch++) {
      const r = Math.floor(ch / g.cols);
      const c = ch % g.cols;
      assert.equal(g.filterOf(r, c), ch);
      for (let y = 0; y < g.th; y++) for (let x = 0; x < g.tw; x++) {
        const w = x % (W + 1);
        if (w === W) continue;
        assert.equal(offsetOf(g, r, c, y, x), named(layout, { N: sample, C: ch, H: y, W: w, D: Math.floor(x / (W + 1)) }));
      }
    }
    assert.equal(g.tw, D * W + D - 1);
    assert.equal(canonicalize({ kind: "activation", layout, shape }, { sample: 99 }).sample, SIZES.N - 1);
  });
}

test("near-square grids account for the tile aspect", () => {
  assert.equal(squareColumns(64, 8, 8), 8);
  assert.equal(squareColumns(16, 1, 100), 1);
  assert.equal(squareColumns(5, 10, 1), 5);
});

test("pattern images: one tile per filter, RGB when C = 3", () => {
  const g = canonicalize({ kind: "pattern", layout: "NHWC", shape: [5, 4, 4, 3] });
  assert.equal(g.cells, 5);
  assert.equal(g.rgb, true);
  assert.equal(g.cols, 2);
  // image 2 (row 1, col 0), pixel (1, 2), blue: strides of [5, 4, 4, 3] are [48, 12, 3, 1]
  assert.equal(offsetOf(g, 1, 0, 1, 2) + g.chanOff[2], 2 * 48 + 1 * 12 + 2 * 3 + 2);
});

test("bad headers are refused with the offending layout", () => {
  assert.throws(() => canonicalize({ kind: "kernel", layout: "HWXO", shape: [1, 1, 1, 1] }), /HWXO/);
  assert.throws(() => canonicalize({ kind: "kernel", layout: "HWIO", shape: [1, 1, 1] }), /does not match/);
});

/** Every value offset of every cell of `g`, sorted. */
function allOffsets(g) {
  const out = [];
  for (let cell = 0; cell < g.cells; cell++) out.push(...cellOffsets(g, Math.floor(cell / g.cols), cell % g.cols));
  return out.sort((a, b) => a - b);
}

test("denseRange: every layout's grid is one block of memory, read once", () => {
  const headers = [
    ...KERNEL_LAYOUTS.map((layout) => ({ kind: "kernel", layout })),
    ...ACTIVATION_LAYOUTS.map((layout) => ({ kind: "activation", layout })),
    { kind: "pattern", layout: "NHWC", sizes: { C: 3 } },
    { kind: "kernel", layout: "IO", shape: [12, 4], image_shape: [2, 3, 2] },
    { kind: "kernel", layout: "OIHW", sizes: { I: 3 }, rgb: true },
  ];
  for (const h of headers) {
    const shape = h.shape || [...h.layout].map((l) => (h.sizes && h.sizes[l]) || SIZES[l]);
    for (const sample of h.kind === "activation" ? [0, 2] : [0]) {
      const g = canonicalize({ ...h, shape }, { sample, rgb: h.rgb });
      const d = denseRange(g);
      assert.ok(d, `${h.layout} ${h.kind}`);
      const offsets = allOffsets(g);
      assert.equal(d.end - d.start, offsets.length, `${h.layout} ${h.kind} size`);
      assert.ok(offsets.every((o, i) => o === d.start + i), `${h.layout} ${h.kind} sample ${sample}`);
      assert.deepEqual(cellStrides(g), { rowStride: d.rowStride, colStride: d.colStride });
    }
  }
});

test("denseRange and cellStrides refuse cells that are not one regular block", () => {
  const g = canonicalize({ kind: "kernel", layout: "OIHW", shape: [3, 2, 2, 2] });
  const holed = subGrid(g, [0, 1, 4, 5]); // filters 0 and 2: regular, with a hole
  assert.deepEqual(cellStrides(holed), { rowStride: 16, colStride: 4 });
  assert.equal(denseRange(holed), null);
  const shuffled = subGrid(g, [0, 3, 1, 2]);
  assert.equal(cellStrides(shuffled), null);
  assert.equal(denseRange(shuffled), null);
  const backwards = subGrid(g, [5, 4, 3, 2, 1, 0]);
  assert.deepEqual(cellStrides(backwards), { rowStride: -8, colStride: -4 });
  assert.equal(denseRange(backwards), null);
  assert.deepEqual(denseRange(subGrid(g, [2, 3, 4, 5])), { start: 8, end: 24, rowStride: 8, colStride: 4 });
});
