import assert from "node:assert/strict";
import { test } from "node:test";
import { decode, defaults, encode, stepIndex, unionSteps } from "../static/state.js";

test("hash round trip keeps every field, including odd run names", () => {
  const s = { ...defaults(), run: "a&b=c #1", tag: "<img src=x onerror=alert(1)>", step: 42, cmap: "grey", norm: "tile",
    pct: 98, compare: ["x,y", "z"], diff: "run", base: "z", rgb: true, sample: 3, sort: "drift", sel: 7 };
  assert.deepEqual(decode(`#${encode(s)}`), s);
});

test("defaults are left out and bad values fall back", () => {
  assert.equal(encode({ ...defaults(), run: "r" }), "run=r");
  const s = decode("#step=-1&cmap=jet&norm=zz&pct=7&sample=x&sort=q");
  assert.deepEqual({ ...s }, defaults());
});

test("stepIndex finds only exact steps; unionSteps merges sorted", () => {
  assert.equal(stepIndex([0, 5, 10], 5), 1);
  assert.equal(stepIndex([0, 5, 10], 6), -1);
  assert.deepEqual(unionSteps([[0, 10], [5, 10, 20]]), [0, 5, 10, 20]);
});
