// Where the dataset examples of a grid go (pure, DOM-free): which activation's
// examples a tag shows, which stored row of that activation a filter is, where each
// grid row sits in the visible window (its strip goes beside it) and how large a
// strip of crops is drawn.

import { activationTag } from "./cka.js";
import { geometry } from "./render.js";

/** Crops are drawn at most this many css px across (an integer scale of their pixels). */
export const CROP_PX = 40;
/** css px between the crops of a strip. */
export const STRIP_GAP = 2;
/** css px of a strip's label (its filter or channel) left of its crops. */
export const LABEL_PX = 40;

/**
 * The activation whose examples `tag` shows: {tag, rows}, or null. An activation with
 * examples shows its own (`rows` false: channels are cells, the strips are a list); a
 * kernel shows those of its layer's activation ("<layer>/activation", cka.js) when that
 * one has examples, with `rows` true when its grid rows are its filters (not depthwise).
 */
export function examplesSource(tag, tags) {
  const info = tags && tags[tag];
  if (!info || (info.kind !== "kernel" && info.kind !== "activation")) return null;
  const act = activationTag(tag, tags);
  if (!act || !tags[act].examples) return null;
  return { tag: act, rows: info.kind === "kernel" && !String(info.layout).includes("M") };
}

/**
 * The stored row of activation `actInfo` (its tags entry: layout, shape, filters?) that
 * holds channel `label` (filter f of a kernel is channel f of its activation), or -1
 * when that channel was not kept.
 */
export function storedRow(label, actInfo) {
  const n = Number(label);
  if (!Number.isInteger(n) || n < 0 || !actInfo) return -1;
  if (Array.isArray(actInfo.filters)) return actInfo.filters.indexOf(n);
  const c = actInfo.shape && actInfo.layout ? actInfo.shape[actInfo.layout.indexOf("C")] : undefined;
  return c === undefined || n < c ? n : -1;
}

/**
 * The grid rows of a stacked grid (one row per line: blockCols 1) that show in its
 * visible window: `view` {zoom, panY, rowOrder} in device px, `dpr` device px per css
 * px, `height` the window's css px. For each display slot in view, {slot, row, top,
 * height}: the row drawn there (rowOrder) and its tiles' css px top (from the window's
 * top, may be negative when cut) and height. Null for a grid drawn as blocks side by side.
 */
export function rowPlaces(grid, view, dpr, height) {
  if ((grid.blockCols || 1) !== 1) return null;
  const g = geometry({ ...grid, blockCols: 1 }, view.zoom);
  const panY = view.panY || 0;
  const first = Math.max(0, Math.floor(panY / g.pitchY));
  const last = Math.min(grid.rows - 1, Math.floor((panY + height * dpr) / g.pitchY));
  const out = [];
  for (let slot = first; slot <= last; slot++) {
    const top = (slot * g.pitchY - panY) / dpr;
    const h = g.tileH / dpr;
    if (top + h <= 0 || top >= height) continue;
    out.push({ slot, row: view.rowOrder ? view.rowOrder[slot] : slot, top, height: h });
  }
  return out;
}

/**
 * The size of a strip of `k` crops of `cropH` x `cropW` pixels: drawn at integer
 * `scale` (at most CROP_PX css px across) into a canvas of `width` x `height`, shown
 * `cssWidth` x `cssHeight` css px: shrunk to `most` css px tall when given and smaller
 * (a row of the grid), never larger. `tile`: one crop's canvas px across.
 */
export function stripSize(cropH, cropW, k, most = Infinity) {
  const scale = Math.max(1, Math.floor(CROP_PX / Math.max(cropH, cropW)));
  const tile = cropW * scale;
  const width = k * (tile + STRIP_GAP) - STRIP_GAP;
  const height = cropH * scale;
  const shrink = Math.min(1, most / height);
  return { scale, tile, width, height, cssWidth: width * shrink, cssHeight: height * shrink };
}

/** css px to leave right of a grid for strips of `k` crops and their labels. */
export function stripsWidth(k) {
  return LABEL_PX + 6 + k * (CROP_PX + STRIP_GAP) + 8;
}
