// Colour lookup tables (pure, DOM-free).
//
// A table has LUT_SIZE RGB entries; value v in [lo, hi] maps to entry
// round((v - lo) / (hi - lo) * (LUT_SIZE - 1)). LUT_SIZE is odd so that a
// symmetric range puts 0 exactly on the middle (neutral) entry.

import display from "./display.json" with { type: "json" };

// The tables, like the limit settings in normalize.js, come from display.json,
// which tb_convfilters.plot reads too: one definition for the dashboard and plots.
export const LUT_SIZE = display.lut_size;
export const MID = (LUT_SIZE - 1) / 2;
export const COLORMAPS = display.colormaps;
/** Colour of NaN / +-Inf values: matches no entry of any table. */
export const NONFINITE = display.nonfinite;
const STOPS = display.stops;

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
  const key = (dark && display.dark[name]) || name;
  if (!cache.has(key)) cache.set(key, build(STOPS[key]));
  return cache.get(key);
}

/** True for colormaps meant for signed data around 0 (symmetric limits). */
export function isSigned(name) {
  return display.signed.includes(name);
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
