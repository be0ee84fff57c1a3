import assert from "node:assert/strict";
import { test } from "node:test";
import {
  badgesFor, describeFinding, findingFilter, findingsByFilter, groupFindings, labelIndex, PROBLEM_STYLE, PROBLEMS,
  seriesFindings, stepAtOrAfter,
} from "../static/findings.js";
import { canonicalize } from "../static/layout.js";
import { pairedStep } from "../static/patterns.js";

const finding = (run, tag, filter, problem, first_step = 0, detail = {}) => ({ run, tag, filter, problem, first_step, detail });

const FOUND = [
  finding("a", "c1/kernel", null, "frozen", 10, { max_change: 0, first_logged_step: 0, last_step: 30, changed_layers: 1 }),
  finding("a", "c1/kernel", 3, "dead", 0, { dead_steps: 4, norm: 0, median_norm: 6.4 }),
  finding("a", "c1/kernel", 5, "duplicate", 0, { other_filter: 1, cosine: 1, norm_ratio: 1 }),
  finding("a", "c1/kernel", 5, "exploding", 20, { reasons: ["growth"], nonfinite: 0, norm: 66, norm_first: 5.5, growth: 12, median_norm: 6, norm_last: 9603 }),
  finding("a", "c2/activation", 2, "dead", 0, { dead_steps: 4, zero_frac: 1, samples: 4 }),
  finding("b", "c1/kernel", 6, "mirrored", 10, { other_filter: 2, cosine: -1, norm_ratio: 1 }),
];

test("findings group per run, then per tag, in the route's order", () => {
  const groups = groupFindings(FOUND);
  assert.deepEqual(groups.map((g) => g.run), ["a", "b"]);
  assert.deepEqual(groups[0].tags.map((t) => [t.tag, t.findings.length]), [["c1/kernel", 4], ["c2/activation", 1]]);
  assert.deepEqual(seriesFindings(FOUND, "b", "c1/kernel").map((f) => f.filter), [6]);
  assert.deepEqual(groupFindings([]), []);
});

test("badges land on the grid filter of each original index; layer findings have none", () => {
  // HWIO 3x3, 4 input channels, 8 filters: filter f is grid row f
  const grid = canonicalize({ kind: "kernel", layout: "HWIO", shape: [3, 3, 4, 8] });
  const badges = badgesFor(grid, seriesFindings(FOUND, "a", "c1/kernel"));
  assert.deepEqual(badges.map((b) => [b.filter, b.label, b.problems, b.cells]), [
    [3, "3", ["dead"], [12, 16]],
    [5, "5", ["exploding", "duplicate"], [20, 24]],
  ]);
  const per = findingsByFilter(grid, seriesFindings(FOUND, "a", "c1/kernel"));
  assert.equal(per.length, 8);
  assert.deepEqual(per[5].map((f) => f.problem), ["duplicate", "exploding"]);
  assert.deepEqual(per[0], []);
});

test("filters kept with max_filters map through their original indices", () => {
  // OIHW with filters [1, 5, 9] kept: original 5 is grid row 1; 3 was not logged
  const grid = canonicalize({ kind: "kernel", layout: "OIHW", shape: [3, 2, 3, 3], filters: [1, 5, 9] });
  assert.deepEqual([...labelIndex(grid)], [["1", 0], ["5", 1], ["9", 2]]);
  assert.equal(findingFilter(grid, { filter: 5 }), 1);
  assert.equal(findingFilter(grid, { filter: 3 }), -1);
  assert.equal(findingFilter(grid, { filter: null }), -1);
  const badges = badgesFor(grid, [finding("a", "t", 9, "dead"), finding("a", "t", 3, "dead")]);
  assert.deepEqual(badges.map((b) => [b.filter, b.cells]), [[2, [4, 6]]]);
});

test("depthwise and activation badges cover one cell", () => {
  // HWIM: 2 input channels x 3 multipliers; filter i*M + m is cell (i, m)
  const dw = canonicalize({ kind: "kernel", layout: "HWIM", shape: [3, 3, 2, 3], filters: [4, 7] });
  // original index of cell (1, 2) is 7 * 3 + 2 = 23
  assert.deepEqual(badgesFor(dw, [finding("a", "t", 23, "dead")]).map((b) => [b.filter, b.cells]), [[5, [5, 6]]]);
  const act = canonicalize({ kind: "activation", layout: "NHWC", shape: [2, 4, 4, 6] });
  assert.deepEqual(badgesFor(act, [finding("a", "t", 2, "dead")]).map((b) => b.cells), [[2, 3]]);
});

test("the step to jump to: exact, else the next logged one, else the last", () => {
  assert.deepEqual(stepAtOrAfter([0, 10, 20], 10), { step: 10, exact: true, after: false });
  assert.deepEqual(stepAtOrAfter([0, 10, 20], 11), { step: 20, exact: false, after: true });
  assert.deepEqual(stepAtOrAfter([0, 10, 20], -5), { step: 0, exact: false, after: true });
  assert.deepEqual(stepAtOrAfter([0, 10, 20], 25), { step: 20, exact: false, after: false });
  assert.equal(stepAtOrAfter([], 3), null);
});

test("a pattern pairs with the kernel step at or before it", () => {
  assert.equal(pairedStep([0, 5, 10], 5), 5);
  assert.equal(pairedStep([0, 5, 10], 7), 5);
  assert.equal(pairedStep([3, 5], 1), 3);
});

test("every problem has a style, and findings read as sentences with their numbers", () => {
  for (const p of PROBLEMS) assert.equal(PROBLEM_STYLE[p].color.length, 3, p);
  const text = FOUND.map(describeFinding);
  assert.match(text[0], /frozen: identical at steps 0 and 30 while 1 other layer changed \(first seen at step 10\)/);
  assert.match(text[1], /^dead since step 0: norm 0 \(layer median 6\.4\)/);
  assert.match(text[2], /^duplicate of filter 1 since step 0: cosine 1/);
  assert.match(text[3], /^exploding since step 20 \(growth\): norm 5\.5 → 66, ×12; last 9603/);
  assert.match(text[4], /^dead since step 0: ≤ 0 at 100% of positions \(4 samples\)/);
  assert.match(text[5], /^mirror of filter 2 since step 10/);
});

test("a dead unit says how many inputs it was judged on; too few make it only suspected", () => {
  const dead = finding("a", "c2/activation", 2, "dead", 0, { dead_steps: 3, zero_frac: 1, inputs: 512 });
  const unsure = finding("a", "c2/activation", 3, "suspected_dead", 10, { dead_steps: 3, zero_frac: 1, inputs: 4 });
  assert.equal(describeFinding(dead), "dead since step 0: never > 0 on the 512 inputs judged, 3 steps");
  assert.equal(describeFinding(unsure),
    "suspected dead since step 10: never > 0 on the 4 inputs judged (too few to be sure), 3 steps");
  assert.ok(PROBLEMS.indexOf("suspected_dead") === PROBLEMS.indexOf("dead") + 1);
  assert.notDeepEqual(PROBLEM_STYLE.suspected_dead.color, PROBLEM_STYLE.dead.color);
});

test("stalled and exploding_updates are described with their numbers", () => {
  const stalled = { problem: "stalled", first_step: 4, detail: { max_ratio: 0, stalled_intervals: 5, until_step: 9, median_ratio: 0.02 } };
  assert.match(describeFinding(stalled), /stalled after step 4: .* 5 logged intervals \(to step 9\)/);
  const big = { problem: "exploding_updates", first_step: 3, detail: { ratio: 0.5, median_ratio: 0.01, times_median: 50, to_step: 4, intervals: 1 } };
  assert.match(describeFinding(big), /from step 3 to 4: ×50 .* \(1 interval\)/);
  for (const p of ["stalled", "exploding_updates"]) assert.ok(PROBLEMS.includes(p) && PROBLEM_STYLE[p].code);
});
