// Spectra of filters (pure, DOM-free): the pixels of a layer's coverage histogram
// (frequency band x orientation bin) and of its coverage over steps, hit tests, and a
// filter's badge text. The numbers come from the `spectra` / `spectra_steps` routes
// (tb_convfilters.spectra); a count c of a picture whose most is m is the sequential
// table's colour of c within [0, m] (colorOf), as tb_convfilters.plot.coverage_pixels.

import { colorOf } from "./colormap.js";

/** Histogram cell size and gap, css px. */
export const HIST_CELL = 22;
export const HIST_GAP = 1;
/** Raster cells (a step x a (band, bin)): width, height; gap between bands; gutter marking the shown step. */
export const RASTER_W = 5;
export const RASTER_H = 4;
export const RASTER_BAND_GAP = 2;
export const RASTER_GUTTER = 5;
/** The gutter's mark of the shown step, and the background. */
export const MARK = [230, 81, 0];

function largest(rows) {
  let most = 0;
  for (const row of rows) for (const c of row) if (c > most) most = c;
  return most;
}

function fill(data, width, x0, y0, w, h, rgb) {
  for (let y = y0; y < y0 + h; y++) {
    for (let x = x0; x < x0 + w; x++) {
      const i = (y * width + x) * 4;
      data[i] = rgb[0];
      data[i + 1] = rgb[1];
      data[i + 2] = rgb[2];
      data[i + 3] = 255;
    }
  }
}

/**
 * The histogram `counts[band][bin]` as RGBA {width, height, data}: a column per orientation
 * bin, a row per frequency band with the lowest band at the bottom; cells `cell` px apart by `gap`
 * (transparent).
 */
export function histogramPixels(counts, table, { cell = HIST_CELL, gap = HIST_GAP } = {}) {
  const bands = counts.length;
  const bins = bands ? counts[0].length : 0;
  const width = Math.max(0, bins * (cell + gap) - gap);
  const height = Math.max(0, bands * (cell + gap) - gap);
  const data = new Uint8ClampedArray(width * height * 4);
  const most = largest(counts);
  for (let band = 0; band < bands; band++) {
    for (let bin = 0; bin < bins; bin++) {
      const { x, y } = histogramCell(band, bin, bands, { cell, gap });
      fill(data, width, x, y, cell, cell, colorOf(counts[band][bin], 0, most, table));
    }
  }
  return { width, height, data };
}

/** Top-left px of cell (band, bin) of a histogram of `bands` bands. */
export function histogramCell(band, bin, bands, { cell = HIST_CELL, gap = HIST_GAP } = {}) {
  return { x: bin * (cell + gap), y: (bands - 1 - band) * (cell + gap) };
}

/** {band, bin} under px (x, y) of a histogram, or null (a gap or outside). */
export function histogramHit(x, y, bands, bins, { cell = HIST_CELL, gap = HIST_GAP } = {}) {
  const bin = Math.floor(x / (cell + gap));
  const row = Math.floor(y / (cell + gap));
  if (x < 0 || y < 0 || bin >= bins || row >= bands) return null;
  if (x - bin * (cell + gap) >= cell || y - row * (cell + gap) >= cell) return null;
  return { band: bands - 1 - row, bin };
}

/** Left px of raster column (band, bin). */
export function rasterX(band, bin, bins) {
  return RASTER_GUTTER + band * (bins * RASTER_W + RASTER_BAND_GAP) + bin * RASTER_W;
}

/**
 * The coverage over steps, `steps[i].counts[band][bin]` (steps with an `error` or no counts
 * are left transparent), as RGBA {width, height, data}: a row per step (the first on top),
 * the bands left to right (low first), each `bins` columns; one colour scale over all steps;
 * the row of index `shown` marked in the gutter.
 */
export function rasterPixels(steps, bands, bins, table, shown = -1) {
  const width = rasterX(bands, 0, bins) - RASTER_BAND_GAP;
  const height = steps.length * RASTER_H;
  const data = new Uint8ClampedArray(width * height * 4);
  let most = 0;
  for (const s of steps) if (s.counts) most = Math.max(most, largest(s.counts));
  steps.forEach((s, i) => {
    if (i === shown) fill(data, width, 0, i * RASTER_H, RASTER_GUTTER - 1, RASTER_H, MARK);
    if (!s.counts) return;
    for (let band = 0; band < bands; band++) {
      for (let bin = 0; bin < bins; bin++) {
        const rgb = colorOf(s.counts[band][bin], 0, most, table);
        fill(data, width, rasterX(band, bin, bins), i * RASTER_H, RASTER_W, RASTER_H, rgb);
      }
    }
  });
  return { width, height, data, most };
}

/** {row, band, bin} under px (x, y) of a raster, or null. */
export function rasterHit(x, y, rows, bands, bins) {
  const row = Math.floor(y / RASTER_H);
  if (y < 0 || row >= rows || x < RASTER_GUTTER) return null;
  const pitch = bins * RASTER_W + RASTER_BAND_GAP;
  const band = Math.floor((x - RASTER_GUTTER) / pitch);
  const within = x - RASTER_GUTTER - band * pitch;
  if (band >= bands || within >= bins * RASTER_W) return null;
  return { row, band, bin: Math.floor(within / RASTER_W) };
}

/** "22.5°" centre of orientation bin `bin` from the edges. */
export function binLabel(edges, bin) {
  return `${+((edges[bin] + edges[bin + 1]) / 2).toFixed(2)}°`;
}

/** "0.125–0.25" of frequency band `band`. */
export function bandLabel(edges, band) {
  return `${+edges[band].toFixed(4)}–${+edges[band + 1].toFixed(4)}`;
}

/** The badge text of one filter's dominant (orientation, frequency); null values as in the route. */
export function badgeText(orientation, frequency) {
  if (frequency === null || frequency === undefined) return "spectrum: no power (all zero or non-finite)";
  if (frequency === 0) return "spectrum: flat (frequency 0, a blob: no orientation)";
  return `spectrum: ${+orientation.toFixed(1)}° · ${+frequency.toFixed(3)} cycles/px`;
}

/** Index in a spectra answer of the filter labelled `label` (the grid's label), or -1. */
export function filterIndex(answer, label) {
  return answer.filters.indexOf(Number(label));
}

/** True for kernel layouts spectra can read (two spatial axes, H and W). */
export function hasSpectra(info) {
  return Boolean(info && info.kind === "kernel" && info.layout && info.layout.includes("H") && !info.layout.includes("D"));
}
