// The frames of a video export (pure, DOM-free): the zoom and size of a frame, its
// step label, the recorder's format and the file's name. videoexport.js draws them.

import { geometry } from "./render.js";

/** Height (px) of the label band above the grid. */
export const LABEL_BAND = 24;
/** Widest frame the export picks a zoom for, and the largest zoom. */
export const MAX_WIDTH = 960;
export const MAX_ZOOM = 16;
/** WebM formats MediaRecorder is asked for, best first. */
export const MIME_TYPES = ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm"];

/**
 * The zoom (px per value) of an exported grid: the largest even one up to MAX_ZOOM
 * at which it is at most `maxWidth` px wide, at least 2 (video stores colour at half
 * resolution: a value of 2 x 2 px keeps its colour).
 */
export function exportZoom(grid, maxWidth = MAX_WIDTH) {
  for (let z = MAX_ZOOM; z > 2; z -= 2) if (geometry(grid, z).width <= maxWidth) return z;
  return 2;
}

/** {zoom, g (render.js geometry), width, height}: even sizes, the label band on top. */
export function frameLayout(grid, maxWidth = MAX_WIDTH) {
  const zoom = exportZoom(grid, maxWidth);
  const g = geometry(grid, zoom);
  const even = (n) => n + (n % 2);
  return { zoom, g, width: even(Math.max(g.width, 160)), height: even(g.height + LABEL_BAND) };
}

/** The label drawn on frame `i` of `n`. */
export function stepLabel(step, tag, run, i, n) {
  return `step ${step} · ${tag} · ${run} (${i + 1}/${n})`;
}

/** The first of MIME_TYPES that `isSupported(type)` accepts, or "" (the browser's default). */
export function pickMime(isSupported) {
  return MIME_TYPES.find((t) => isSupported(t)) || "";
}

/** A file name for `run`'s `tag`: letters, digits, "-" and "_" kept, the rest "_". */
export function fileName(run, tag) {
  const safe = (s) => String(s).replace(/[^A-Za-z0-9_-]+/g, "_").replace(/^_+|_+$/g, "") || "run";
  return `${safe(run)}-${safe(tag)}.webm`;
}
