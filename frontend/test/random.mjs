// Test data shared by the test files (no tests here).

/** Pseudo-random normal float32 values (xorshift32 + Box-Muller), scaled by `sigma`. */
export function normal(n, sigma = 1, seed = 1) {
  const v = new Float32Array(n);
  let s = seed;
  const uniform = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 0.5) / 2 ** 32;
  };
  for (let i = 0; i < n; i++) v[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()) * sigma;
  return v;
}
