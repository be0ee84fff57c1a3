// The Dynamics view's pixels (pure, DOM-free): the filter x interval raster of update
// ratios, the gradient-norm raster, the layer x step rotation view, their colour bars,
// cell geometry and hit tests, and where the doctor's findings are drawn.
//
// Colours (display.json "dynamics", the sequential table of colormap.js):
// - update ratio v: entry lutIndex(log10 v, lo, hi) with [lo, hi] = ratio_log10
//   (-6..0: 1e-6 and below darkest, 1 and above brightest); v = 0 darkest; NaN and
//   +Inf (a filter all zeros at the interval's start) the NaN/Inf colour, as in the grid.
// - gradient norm g: entry lutIndex(log10 g, lo, hi) with [lo, hi] the smallest and
//   largest log10 of the layer's finite positive norms (gradLimits); a step logged
//   without gradients (NaN) in the `missing` grey.
// - rotation r: entry lutIndex(r, 0, 1) (clipped: 1 and above brightest); NaN (the
//   layer has no such step, or it is all zeros) in the `missing` grey.

import display from "./display.json" with { type: "json" };
import { lutIndex, NONFINITE } from "./colormap.js";
import { stepAtOrAfter } from "./findings.js";

export const RATIO_LOG10 = display.dynamics.ratio_log10;
export const RATIO_BAND = display.dynamics.ratio_band;
export const ROTATION_RANGE = display.dynamics.rotation;
export const MISSING = display.dynamics.missing;
/** Left gutter (px) holding the findings' marks; top gutter holding the shown step's mark. */
export const GUTTER = 6;
export const TOP = 4;
/** Mark of the shown step (top gutter). */
export const SHOWN = [90, 90, 90];
/** Thickness (px) of a finding's outline around its cell, and of the white halo around that. */
export const RING = 2;
export const HALO = [255, 255, 255];

/** Table entry of an update ratio on the fixed log scale, or -1 (NaN, Inf, negative). */
export function ratioIndex(v) {
  if (!(v >= 0) || v === Infinity) return -1;
  return lutIndex(Math.log10(v), RATIO_LOG10[0], RATIO_LOG10[1]);
}

/** Table entry of a rotation on the fixed linear scale, or -1 (NaN). */
export function rotationIndex(v) {
  return Number.isFinite(v) ? lutIndex(v, ROTATION_RANGE[0], ROTATION_RANGE[1]) : -1;
}

/** [lo, hi] of log10 over the finite positive values (hi > lo), or null when there are none. */
export function gradLimits(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v > 0 && v < Infinity) {
      const l = Math.log10(v);
      if (l < lo) lo = l;
      if (l > hi) hi = l;
    }
  }
  if (lo === Infinity) return null;
  return hi > lo ? [lo, hi] : [lo - 0.5, lo + 0.5];
}

/** Table entry of a gradient norm within log10 limits, or -1 (NaN: not logged at that step). */
export function gradIndex(v, limits) {
  if (!limits || !(v >= 0) || v === Infinity) return -1;
  return lutIndex(Math.log10(v), limits[0], limits[1]);
}

/** [r, g, b] of a table entry (`missing` for -1). */
export function entryColor(i, table, missing = NONFINITE) {
  return i < 0 ? missing : [table[i * 3], table[i * 3 + 1], table[i * 3 + 2]];
}

/**
 * Cell sizes of a rows x cols raster fitting maxWidth x maxHeight px (each cell at least
 * min and at most max px), after the left gutter and the top gutter:
 * {rows, cols, cw, ch, left, top, width, height}.
 */
export function cellGeometry(rows, cols, { maxWidth = 540, maxHeight = 520, minW = 1, maxW = 16, minH = 1, maxH = 12, left = GUTTER, top = TOP } = {}) {
  const fit = (room, n, lo, hi) => Math.max(lo, Math.min(hi, Math.floor(room / Math.max(1, n))));
  const cw = fit(maxWidth - left, cols, minW, maxW);
  const ch = fit(maxHeight - top, rows, minH, maxH);
  return { rows, cols, cw, ch, left, top, width: left + cols * cw, height: top + rows * ch };
}

/** {x, y, w, h} px of cell (row, col). */
export function cellRect(g, row, col) {
  return { x: g.left + col * g.cw, y: g.top + row * g.ch, w: g.cw, h: g.ch };
}

/** {row, col} of the cell under px (x, y), or null (a gutter or outside). */
export function cellHit(g, x, y) {
  if (x < g.left || y < g.top) return null;
  const col = Math.floor((x - g.left) / g.cw);
  const row = Math.floor((y - g.top) / g.ch);
  return row < g.rows && col < g.cols ? { row, col } : null;
}

/**
 * The route's row drawn in each raster row: the grid's order when it draws the same
 * `n` filters (`order`: display slot -> grid row, the grid's sorting; `perm`: grid row ->
 * logged filter, an alignment), else 0..n-1.
 */
export function rowSources(n, order = null, perm = null) {
  const ok = (a) => a && a.length === n;
  return Array.from({ length: n }, (_, r) => {
    const g = ok(order) ? order[r] : r;
    return ok(perm) ? perm[g] : g;
  });
}

/**
 * Where the doctor's findings of one kernel are drawn: [{problem, filter, row, col, step}]
 * for every finding about one filter (`filter` in `filters`, the route's labels) in raster
 * row `row` (`sources` from rowSources) and the column of the interval that starts at its
 * `first_step` (a step not logged: the next logged one; past the last interval: the last).
 * Whole-layer findings (filter null) and filters not in the raster are left out.
 */
export function markerCells(findings, filters, sources, steps, cols) {
  const rowOf = new Map();
  sources.forEach((src, row) => rowOf.set(filters[src], row));
  const out = [];
  for (const f of findings || []) {
    if (f.filter === null || f.filter === undefined || !rowOf.has(f.filter) || cols <= 0) continue;
    const at = stepAtOrAfter(steps, f.first_step);
    if (!at) continue;
    const col = Math.min(steps.indexOf(at.step), cols - 1);
    out.push({ problem: f.problem, filter: f.filter, row: rowOf.get(f.filter), col, step: steps[col] });
  }
  return out;
}

function fill(data, width, x, y, w, h, rgb) {
  for (let yy = Math.max(0, y); yy < y + h; yy++) {
    for (let xx = Math.max(0, x); xx < x + w && xx < width; xx++) {
      const o = (yy * width + xx) * 4;
      if (o >= data.length) return;
      data[o] = rgb[0];
      data[o + 1] = rgb[1];
      data[o + 2] = rgb[2];
      data[o + 3] = 255;
    }
  }
}

/**
 * A raster as RGBA {width, height, data}: cell (row, col) in colorAt(row, col) ([r, g, b]);
 * the column `shown` marked in the top gutter; each of `marks` ({row, col, color}) as a
 * ring RING px wide around its cell (in a 1 px HALO, so it shows on any colour) and a mark
 * in the left gutter at its row.
 */
export function rasterPixels(g, colorAt, { shown = -1, marks = [] } = {}) {
  const data = new Uint8ClampedArray(g.width * g.height * 4);
  for (let row = 0; row < g.rows; row++) {
    for (let col = 0; col < g.cols; col++) {
      const r = cellRect(g, row, col);
      fill(data, g.width, r.x, r.y, r.w, r.h, colorAt(row, col));
    }
  }
  if (shown >= 0 && shown < g.cols) fill(data, g.width, g.left + shown * g.cw, 0, g.cw, g.top - 1, SHOWN);
  const ring = (r, d, color) => {
    fill(data, g.width, r.x - d, r.y - d, r.w + 2 * d, d, color);
    fill(data, g.width, r.x - d, r.y + r.h, r.w + 2 * d, d, color);
    fill(data, g.width, r.x - d, r.y - d, d, r.h + 2 * d, color);
    fill(data, g.width, r.x + r.w, r.y - d, d, r.h + 2 * d, color);
  };
  for (const m of marks) ring(cellRect(g, m.row, m.col), RING + 1, HALO);
  for (const m of marks) {
    const r = cellRect(g, m.row, m.col);
    ring(r, RING, m.color);
    fill(data, g.width, 0, r.y, g.left - 1, Math.max(r.h, 1), m.color);
  }
  return { width: g.width, height: g.height, data };
}

/** x px (0..width-1) of log10 value `l` on a colour bar over [lo, hi]. */
export function barX(l, lo, hi, width) {
  return Math.round(((Math.min(hi, Math.max(lo, l)) - lo) / (hi - lo)) * (width - 1));
}

/** Rows (px) under a colour bar that mark its band. */
export const BAND_H = 4;

/**
 * A horizontal colour bar of `table` as RGBA: `height` rows, x px showing entry
 * round(x / (width - 1) * (LUT_SIZE - 1)); with `band` ([lo, hi] in the bar's units over
 * `range`), its last BAND_H rows are empty but for `mark` under the band (below a 1 px gap).
 */
export function colorbarPixels(table, width, height, { range = null, band = null, mark = [0, 0, 0] } = {}) {
  const data = new Uint8ClampedArray(width * height * 4);
  const n = table.length / 3;
  const barH = band ? height - BAND_H : height;
  for (let x = 0; x < width; x++) {
    const i = Math.round((x / (width - 1)) * (n - 1));
    fill(data, width, x, 0, 1, barH, [table[i * 3], table[i * 3 + 1], table[i * 3 + 2]]);
  }
  if (band) {
    const a = barX(band[0], range[0], range[1], width);
    const b = barX(band[1], range[0], range[1], width);
    fill(data, width, a, barH + 1, b - a + 1, BAND_H - 1, mark);
  }
  return { width, height, data };
}

/** "1e-3" style label of a power of ten (1 for 0). */
export function decade(l) {
  return l === 0 ? "1" : `1e${l}`;
}
