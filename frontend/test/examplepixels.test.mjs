import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeBinary } from "../static/binary.js";
import { boxOf, boxRect, imagePixels, overlayPixels, unit } from "../static/examplepixels.js";

const px = (img, x, y) => Array.from(img.data.slice((y * img.width + x) * 4, (y * img.width + x) * 4 + 4));

test("t = clip((x - lo) / (hi - lo), 0, 1); hi == lo gives 0.5", () => {
  assert.equal(unit(1, 0, 4), 0.25);
  assert.equal(unit(-3, 0, 4), 0);
  assert.equal(unit(9, 0, 4), 1);
  assert.equal(unit(7, 2, 2), 0.5);
});

test("3 channels HWC as RGB, hand-computed", () => {
  // 1 x 2 image, range [0, 10]: pixel 0 = (0, 5, 10), pixel 1 = (2, -1, 11)
  const a = new Float32Array([0, 5, 10, 2, -1, 11]);
  const img = imagePixels(a, 0, "HWC", [1, 2, 3], [0, 10]);
  assert.equal(img.width, 2);
  assert.equal(img.height, 1);
  assert.deepEqual(px(img, 0, 0), [0, 128, 255, 255]); // round(127.5) = 128
  assert.deepEqual(px(img, 1, 0), [51, 0, 255, 255]);
});

test("CHW layout, gray for 1 channel, the mean for 2, at an offset", () => {
  // two 2 x 1 images, CHW with 2 channels: the second at offset 4
  const a = new Float32Array([9, 9, 9, 9, 1, 3, 3, 5]);
  const img = imagePixels(a, 4, "CHW", [2, 2, 1], [0, 4]);
  assert.deepEqual(px(img, 0, 0), [128, 128, 128, 255]); // mean(1, 3) = 2 -> 0.5
  assert.deepEqual(px(img, 0, 1), [255, 255, 255, 255]); // mean(3, 5) = 4 -> 1
  const gray = imagePixels(new Uint8Array([0, 51]), 0, "HWC", [1, 2, 1], [0, 255]);
  assert.deepEqual(px(gray, 1, 0), [51, 51, 51, 255]);
  const flat = imagePixels(new Float32Array([3]), 0, "HWC", [1, 1, 1], [3, 3]);
  assert.deepEqual(px(flat, 0, 0), [128, 128, 128, 255]);
});

test("crop pixels outside the input are transparent", () => {
  // field start -1, jump 2, size 3 at position (0, 1): box rows -1..1, cols 1..3 of a 4 x 3 input
  const field = { start: [-1, -1], jump: [2, 2], size: [3, 3] };
  const box = boxOf(field, [0, 1]);
  assert.deepEqual(box, { start: [-1, 1], size: [3, 3] });
  const crop = new Float32Array(9).fill(1);
  const img = imagePixels(crop, 0, "HWC", [3, 3, 1], [0, 1], { box, inputShape: [4, 3, 1] });
  assert.deepEqual(px(img, 0, 0), [0, 0, 0, 0]); // row -1
  assert.deepEqual(px(img, 0, 1), [255, 255, 255, 255]); // row 0, col 1
  assert.deepEqual(px(img, 1, 1), [255, 255, 255, 255]); // col 2
  assert.deepEqual(px(img, 2, 1), [0, 0, 0, 0]); // col 3 of 3
  assert.deepEqual(boxRect("HWC", field, [0, 1]), { y: -1, x: 1, h: 3, w: 3 });
});

test("the unknown-field overlay: nearest-index upsampling and alpha 160 m / v", () => {
  // 2 x 2 map over a 4 x 3 input; value 4
  const map = new Float32Array([4, 2, -1, 8]);
  const img = overlayPixels(map, 0, [2, 2], 4, 3, 4);
  // x: floor(x * 2 / 3) = 0, 0, 1; y: floor(y * 2 / 4) = 0, 0, 1, 1
  assert.deepEqual(px(img, 0, 0), [255, 0, 0, 160]);
  assert.deepEqual(px(img, 1, 1), [255, 0, 0, 160]);
  assert.deepEqual(px(img, 2, 0), [255, 0, 0, 80]);
  assert.deepEqual(px(img, 0, 2), [255, 0, 0, 0]); // m < 0
  assert.deepEqual(px(img, 2, 3), [255, 0, 0, 160]); // m / v = 2, clipped
  const none = overlayPixels(map, 0, [2, 2], 4, 3, 0);
  assert.ok(none.data.every((v) => v === 0));
});

test("binary arrays decode little-endian; float16 widened", () => {
  const f = new Float32Array([1.5, -2]);
  const data = Buffer.from(f.buffer).toString("base64");
  const got = decodeBinary({ dtype: "float32", shape: [2], data });
  assert.deepEqual(Array.from(got.array), [1.5, -2]);
  const half = Buffer.from(new Uint16Array([0x3c00, 0xc000]).buffer).toString("base64");
  assert.deepEqual(Array.from(decodeBinary({ dtype: "float16", shape: [2], data: half }).array), [1, -2]);
});
