import assert from "node:assert/strict";
import test from "node:test";

import { canonicalize } from "../static/layout.js";
import { geometry } from "../static/render.js";
import { exportZoom, fileName, frameLayout, LABEL_BAND, pickMime, stepLabel } from "../static/videoframes.js";

const kernel = (shape) => canonicalize({ kind: "kernel", layout: "HWIO", shape }, {});

test("the export zoom is even, at least 2, and fits the width when it can", () => {
  const small = kernel([3, 3, 4, 5]);
  const z = exportZoom(small, 960);
  assert.equal(z % 2, 0);
  assert.ok(z >= 2 && z <= 16);
  assert.ok(geometry(small, z).width <= 960);
  assert.ok(z === 16 || geometry(small, z + 2).width > 960);
  const huge = kernel([7, 7, 512, 4]);
  assert.equal(exportZoom(huge, 960), 2); // never below 2 px per value
});

test("frames have even sizes with the label band above the grid", () => {
  for (const shape of [[3, 3, 4, 5], [5, 5, 3, 7], [1, 1, 3, 3]]) {
    const f = frameLayout(kernel(shape));
    assert.equal(f.width % 2, 0);
    assert.equal(f.height % 2, 0);
    assert.ok(f.height >= f.g.height + LABEL_BAND && f.width >= f.g.width);
  }
});

test("labels, formats and file names", () => {
  assert.equal(stepLabel(30, "conv/kernel", "a", 2, 4), "step 30 · conv/kernel · a (3/4)");
  assert.equal(pickMime((t) => t === "video/webm;codecs=vp8"), "video/webm;codecs=vp8");
  assert.equal(pickMime(() => false), "");
  assert.equal(fileName("seed 1/x", "conv1/kernel"), "seed_1_x-conv1_kernel.webm");
});
