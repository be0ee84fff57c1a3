// Binary arrays in JSON answers (pure, DOM-free): {"dtype", "shape", "data"} with
// `data` the C-order little-endian bytes in base64 (the `examples`, `dynamics` and
// `rotation` routes).

/** Decodes a route's binary array {dtype, shape, data (base64, little-endian)}: {array, shape}. */
export function decodeBinary(blob) {
  const text = atob(blob.data);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  const types = {
    float32: Float32Array, float64: Float64Array, uint8: Uint8Array, int8: Int8Array,
    uint16: Uint16Array, int16: Int16Array, int32: Int32Array, float16: Uint16Array,
  };
  const Typed = types[blob.dtype];
  if (!Typed) throw new Error(`binary array: dtype ${blob.dtype} is not supported`);
  let array = new Typed(bytes.buffer, 0, bytes.length / Typed.BYTES_PER_ELEMENT);
  if (blob.dtype === "float16") array = Float32Array.from(array, halfToFloat);
  return { array, shape: blob.shape };
}

function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}
