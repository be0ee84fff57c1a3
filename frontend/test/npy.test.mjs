import assert from "node:assert/strict";
import { test } from "node:test";
import { ApiError, decodeFloat16, parseNpy, parseNpyHeader, url } from "../static/api.js";

// np.save output of small arrays (see the values in each test)
const NPY = {
  "<f2": "k05VTVBZAQB2AHsnZGVzY3InOiAnPGYyJywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDMsIDMpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAAA8AMAAOP97AHwAfgEAAIA=",
  "<f4": "k05VTVBZAQB2AHsnZGVzY3InOiAnPGY0JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsIDMpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAAAAAACAPwAAAMAAAAA/AABAQAAAgL4=",
  "<f8": "k05VTVBZAQB2AHsnZGVzY3InOiAnPGY4JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsIDMpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAAAAAAAAAAAAAAAAAPA/AAAAAAAAAMAAAAAAAADgPwAAAAAAAAhAAAAAAAAA0L8=",
  "|i1": "k05VTVBZAQB2AHsnZGVzY3InOiAnfGkxJywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsIDMpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAf4AAwA=",
  "|u1": "k05VTVBZAQB2AHsnZGVzY3InOiAnfHUxJywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwgJ3NoYXBlJzogKDIsIDMpLCB9ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAoAAQID+v8=",
};

function buffer(b64) {
  const bytes = Buffer.from(b64, "base64");
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
}

test("float32, float64, int8 and uint8 decode to their typed arrays", () => {
  for (const [descr, Typed, values] of [
    ["<f4", Float32Array, [0, 1, -2, 0.5, 3, -0.25]],
    ["<f8", Float64Array, [0, 1, -2, 0.5, 3, -0.25]],
    ["|i1", Int8Array, [0, 1, -2, 0, 3, 0]],
    ["|u1", Uint8Array, [0, 1, 2, 3, 250, 255]],
  ]) {
    const npy = parseNpy(buffer(NPY[descr]));
    assert.ok(npy.array instanceof Typed, descr);
    assert.deepEqual(npy.shape, [2, 3]);
    assert.deepEqual(Array.from(npy.array), values);
  }
});

test("float16 decodes to Float32Array exactly, including Inf, NaN, subnormals and -0", () => {
  const npy = parseNpy(buffer(NPY["<f2"]));
  assert.equal(npy.dtype, "float16");
  assert.ok(npy.array instanceof Float32Array);
  assert.deepEqual(npy.shape, [3, 3]);
  const a = Array.from(npy.array);
  assert.deepEqual(a.slice(0, 6), [0, 1, -2, 0.5, 65504, Infinity]);
  assert.ok(Number.isNaN(a[6]));
  assert.equal(a[7], 2 ** -24);
  assert.ok(Object.is(a[8], -0));
  assert.deepEqual(Array.from(decodeFloat16(new Uint16Array([0xfc00, 0x3555]))), [-Infinity, Math.fround(0.333251953125)]);
});

test("header parsing: scalars, 1-tuples and bad headers", () => {
  assert.deepEqual(parseNpyHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (), }").shape, []);
  assert.deepEqual(parseNpyHeader("{'descr': '<f4', 'fortran_order': False, 'shape': (7,), }").shape, [7]);
  assert.throws(() => parseNpyHeader("{'descr': '<f4'}"), /bad .npy header/);
  assert.throws(() => parseNpy(new ArrayBuffer(12)), /not a .npy file/);
});

test("unsupported dtype and truncated payloads are refused", () => {
  const bytes = new Uint8Array(buffer(NPY["<f4"]));
  const truncated = bytes.slice(0, bytes.length - 4).buffer;
  assert.throws(() => parseNpy(truncated), /truncated/);
  const text = new TextDecoder("latin1").decode(bytes).replace("<f4", ">f4");
  const swapped = Uint8Array.from(text, (ch) => ch.charCodeAt(0)).buffer;
  assert.throws(() => parseNpy(swapped), /dtype >f4 is not supported/);
});

test("url encodes every parameter and skips missing ones", () => {
  assert.equal(url("tensor", { run: "a b/c", tag: "<img src=x>", step: undefined }),
    "tensor?run=a%20b%2Fc&tag=%3Cimg%20src%3Dx%3E");
  assert.equal(url("tags"), "tags");
  assert.equal(new ApiError(404, "nope").status, 404);
});
