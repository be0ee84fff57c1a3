import assert from "node:assert/strict";
import { test } from "node:test";
import { COLORMAPS, LUT_SIZE, MID, NONFINITE, byteOf, colorOf, isSigned, lut, lutIndex } from "../static/colormap.js";

const rgb = (t, i) => [t[i * 3], t[i * 3 + 1], t[i * 3 + 2]];

test("diverging: negative blue, zero neutral grey-white, positive red, symmetric", () => {
  const t = lut("diverging");
  assert.equal(t.length, LUT_SIZE * 3);
  const [nr, , nb] = rgb(t, 0);
  const [pr, , pb] = rgb(t, LUT_SIZE - 1);
  assert.ok(nb > nr, "negative end is blue");
  assert.ok(pr > pb, "positive end is red");
  const mid = rgb(t, MID);
  assert.ok(Math.max(...mid) - Math.min(...mid) < 4, "zero is neutral");
  assert.equal(lutIndex(0, -3, 3), MID);
  assert.equal(lutIndex(-3, -3, 3), 0);
  assert.equal(lutIndex(3, -3, 3), LUT_SIZE - 1);
  assert.equal(lutIndex(1, -3, 3) - MID, MID - lutIndex(-1, -3, 3), "symmetric around 0");
  assert.ok(isSigned("diverging") && !isSigned("sequential") && !isSigned("grey"));
});

test("dark diverging keeps the hues around a dark neutral", () => {
  const t = lut("diverging", { dark: true });
  const mid = rgb(t, MID);
  assert.ok(Math.max(...mid) < 60);
  assert.ok(rgb(t, 0)[2] > rgb(t, 0)[0] && rgb(t, LUT_SIZE - 1)[0] > rgb(t, LUT_SIZE - 1)[2]);
});

test("sequential and grey are monotonic in brightness", () => {
  for (const name of ["sequential", "grey"]) {
    const t = lut(name);
    const lum = (i) => 0.3 * t[i * 3] + 0.59 * t[i * 3 + 1] + 0.11 * t[i * 3 + 2];
    for (let i = 1; i < LUT_SIZE; i++) assert.ok(lum(i) >= lum(i - 1) - 1.5, `${name} at ${i}`);
  }
  assert.deepEqual(rgb(lut("grey"), 0), [0, 0, 0]);
  assert.deepEqual(rgb(lut("grey"), LUT_SIZE - 1), [255, 255, 255]);
  assert.deepEqual(COLORMAPS, ["diverging", "sequential", "grey"]);
});

test("values are clamped, degenerate limits give the middle, non-finite is marked", () => {
  const t = lut("grey");
  assert.equal(lutIndex(10, 0, 1), LUT_SIZE - 1);
  assert.equal(lutIndex(-10, 0, 1), 0);
  assert.equal(lutIndex(5, 2, 2), MID);
  assert.deepEqual(colorOf(NaN, 0, 1, t), NONFINITE);
  assert.deepEqual(colorOf(-Infinity, 0, 1, t), NONFINITE);
  for (const name of COLORMAPS) {
    const table = lut(name);
    for (let i = 0; i < LUT_SIZE; i++) assert.notDeepEqual(rgb(table, i), NONFINITE);
  }
  assert.equal(byteOf(0, -1, 1), 128);
  assert.equal(byteOf(2, -1, 1), 255);
  assert.throws(() => lut("jet"), /jet/);
});
