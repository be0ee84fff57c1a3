import assert from "node:assert/strict";
import { test } from "node:test";
import { activationTag, ckaColor, layerRows, MAX_ITEMS, pickSteps, stepsPerRun } from "../static/cka.js";

test("a kernel's layer finds its activation tag", () => {
  const tags = { "c1/kernel": { kind: "kernel" }, "c1/activation": { kind: "activation" }, "c2/kernel": { kind: "kernel" } };
  assert.equal(activationTag("c1/kernel", tags), "c1/activation");
  assert.equal(activationTag("c1/activation", tags), "c1/activation");
  assert.equal(activationTag("c2/kernel", tags), null);
});

test("steps: evenly spaced with first and last; within the pair limit", () => {
  assert.deepEqual(pickSteps([0, 1, 2], 5), [0, 1, 2]);
  assert.deepEqual(pickSteps([0, 10, 20, 30, 40, 50, 60, 70, 80], 3), [0, 40, 80]);
  assert.ok(stepsPerRun(3) * 3 <= MAX_ITEMS && stepsPerRun(1) >= 1 && stepsPerRun(100) === 1);
});

test("heatmap rows: settling against the last step, and between runs at equal steps", () => {
  const answer = {
    labels: [{ run: "a", step: 0 }, { run: "a", step: 5 }, { run: "b", step: 0 }, { run: "b", step: 5 }],
    matrix: [[1, 0.3, 0.9, 0.2], [0.3, 1, 0.25, 0.8], [0.9, 0.25, 1, 0.4], [0.2, 0.8, 0.4, 1]],
  };
  const rows = layerRows(answer, "a", ["b", "c"], [0, 5, 9]);
  assert.deepEqual(rows.settle, [0.3, 1, null]);
  assert.deepEqual(rows.between.b, [0.9, 0.8, null]);
  assert.deepEqual(rows.between.c, [null, null, null]);
});

test("colours use one fixed 0..1 scale", () => {
  assert.equal(ckaColor(-1), ckaColor(0));
  assert.equal(ckaColor(2), ckaColor(1));
  assert.notEqual(ckaColor(0), ckaColor(1));
  assert.equal(ckaColor(null), "rgb(160, 160, 160)");
});
