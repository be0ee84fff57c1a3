// Colour lookup tables (pure, DOM-free).
//
// A table has LUT_SIZE RGB entries; value v in [lo, hi] maps to entry
// round((v - lo) / (hi - lo) * (LUT_SIZE - 1)). LUT_SIZE is odd so that a
// symmetric range puts 0 exactly on the middle (neutral) entry.

export const LUT_SIZE = 257;
export const MID = (LUT_SIZE - 1) / 2;
export const COLORMAPS = ["diverging", "sequential", "grey"];
/** Colour of NaN / +-Inf values: matches no entry of any table. */
export const NONFINITE = [255, 0, 255];

const STOPS = {
  // negative = blue, zero = near white, positive = red (ColorBrewer RdBu, reversed)
  diverging: [
    [5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240],
    [247, 247, 247],
    [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31],
  ],
  // the same hues around a dark neutral, for TensorBoard's dark mode
  "diverging-dark": [
    [150, 200, 255], [70, 140, 220], [40, 90, 160], [30, 50, 90],
    [34, 34, 38],
    [100, 40, 34], [170, 60, 45], [230, 110, 80], [255, 185, 150],
  ],
  // viridis
  sequential: [
    [68, 1, 84], [72, 40, 120], [62, 73, 137], [49, 104, 142], [38, 130, 142],
    [31, 158, 137], [53, 183, 121], [110, 206, 88], [181, 222, 43], [253, 231, 37],
  ],
  grey: [[0, 0, 0], [255, 255, 255]],
};

const cache = new Map();

function build(stops) {
  const table = new Uint8Array(LUT_SIZE * 3);
  const segments = stops.length - 1;
  for (let i = 0; i < LUT_SIZE; i++) {
    const t = (i / (LUT_SIZE - 1)) * segments;
    const k = Math.min(Math.floor(t), segments - 1);
    const f = t - k;
    for (let ch = 0; ch < 3; ch++) {
      table[i * 3 + ch] = Math.round(stops[k][ch] * (1 - f) + stops[k + 1][ch] * f);
    }
  }
  return table;
}

/** The RGB table (Uint8Array of LUT_SIZE * 3) of colormap `name`. */
export function lut(name, { dark = false } = {}) {
  if (!COLORMAPS.includes(name)) {
    throw new Error(`colormap ${JSON.stringify(name)} is unknown; expected one of ${COLORMAPS.join(", ")}`);
  }
  const key = name === "diverging" && dark ? "diverging-dark" : name;
  if (!cache.has(key)) cache.set(key, build(STOPS[key]));
  return cache.get(key);
}

/** True for colormaps meant for signed data around 0 (symmetric limits). */
export function isSigned(name) {
  return name === "diverging";
}

/** Table index of a finite value `v` for limits [lo, hi] (clamped); MID when hi <= lo. */
export function lutIndex(v, lo, hi) {
  if (!(hi > lo)) return MID;
  const t = (v - lo) / (hi - lo);
  if (t <= 0) return 0;
  if (t >= 1) return LUT_SIZE - 1;
  return Math.round(t * (LUT_SIZE - 1));
}

/** [r, g, b] of value `v` (NONFINITE for NaN/Inf). */
export function colorOf(v, lo, hi, table) {
  if (!Number.isFinite(v)) return NONFINITE.slice();
  const i = lutIndex(v, lo, hi) * 3;
  return [table[i], table[i + 1], table[i + 2]];
}

/** A byte 0..255 of `v` within [lo, hi] (for RGB tiles). */
export function byteOf(v, lo, hi) {
  if (!(hi > lo)) return 128;
  const t = (v - lo) / (hi - lo);
  return t <= 0 ? 0 : t >= 1 ? 255 : Math.round(t * 255);
}
