import assert from "node:assert/strict";
import { test } from "node:test";
import { alignTensor, permuteAxis, rowCosines, rowNote } from "../static/align.js";
import { canonicalize } from "../static/layout.js";
import { decode, defaults, encode } from "../static/state.js";

function iota(n) {
  return Float32Array.from({ length: n }, (_, i) => i);
}

test("permuteAxis moves whole slices along one axis", () => {
  // shape (2, 3, 2): index [a, b, c] = a*6 + b*2 + c
  const out = permuteAxis(iota(12), [2, 3, 2], 1, [2, 0, 1]);
  assert.deepEqual(Array.from(out), [4, 5, 0, 1, 2, 3, 10, 11, 6, 7, 8, 9]);
  assert.ok(out instanceof Float32Array);
});

test("an HWIO kernel permuted by a planted match comes back in the base order, labelled by original index", () => {
  const shape = [1, 1, 3, 4]; // H W I O
  const base = iota(12); // base[i, o] = 4i + o
  const perm = [2, 0, 3, 1]; // run's filter perm[o] is base's o
  const cperm = [1, 2, 0]; // run's channel cperm[i] is base's i
  const run = new Float32Array(12);
  for (let i = 0; i < 3; i++) for (let o = 0; o < 4; o++) run[cperm[i] * 4 + perm[o]] = base[i * 4 + o];
  const header = { kind: "kernel", layout: "HWIO", shape };
  const aligned = alignTensor({ array: run, header }, { permutation: perm, cosine: [1, 1, 1, 1], channel_permutation: cperm });
  assert.deepEqual(Array.from(aligned.array), Array.from(base));
  assert.deepEqual(aligned.header.filters, perm);
  assert.deepEqual(aligned.header.channels, cperm);
  const grid = canonicalize(aligned.header);
  assert.equal(grid.filterLabel(0), "2");
  assert.equal(grid.channelLabel(0), "1");
  assert.throws(() => alignTensor({ array: run, header }, { permutation: [0, 1], cosine: [] }), /does not fit/);
});

test("OIHW and capped kernels: labels compose with the kept indices", () => {
  const header = { kind: "kernel", layout: "OIHW", shape: [3, 1, 1, 2], filters: [10, 20, 30] };
  const aligned = alignTensor({ array: iota(6), header }, { permutation: [2, 0, 1], cosine: [1, 1, 1], channel_permutation: null });
  assert.deepEqual(Array.from(aligned.array), [4, 5, 0, 1, 2, 3]);
  assert.deepEqual(aligned.header.filters, [30, 10, 20]);
  assert.equal(aligned.header.channels, undefined);
});

test("depthwise: channels move with their M filters", () => {
  const header = { kind: "kernel", layout: "HWIM", shape: [1, 1, 3, 2] };
  const aligned = alignTensor({ array: iota(6), header }, { permutation: [4, 5, 0, 1, 2, 3], cosine: [1, 1, 1, 1, 1, 1] });
  assert.deepEqual(Array.from(aligned.array), [4, 5, 0, 1, 2, 3]);
  assert.deepEqual(aligned.header.filters, [2, 0, 1]);
  assert.equal(canonicalize(aligned.header).filterLabel(1), "5"); // row 0 holds channel 2: filters 4, 5
});

test("row cosines: one per filter row, depthwise rows average their filters", () => {
  assert.deepEqual(rowCosines({ cosine: [0.5, 1, null] }, 3), [0.5, 1, null]);
  assert.deepEqual(rowCosines({ cosine: [0.5, 1, 0.2, 0.4] }, 2), [0.75, 0.30000000000000004]);
  assert.equal(rowNote(0.987), "cos 0.99");
  assert.equal(rowNote(null), "cos –");
});

test("the align switch and its base run survive the URL", () => {
  const s = { ...defaults(), run: "a", compare: ["b"], align: true, base: "a" };
  assert.deepEqual(decode(`#${encode(s)}`), s);
  assert.equal(decode("#run=a").align, false);
});
