// The Similarity view's data (pure, DOM-free): which activations to compare, which
// steps, and the rows of its heatmaps from the `similarity` route's CKA matrices.

import { lut, lutIndex } from "./colormap.js";

/** (run, step) pairs one similarity request may compare (the route's limit). */
export const MAX_ITEMS = 64;
/** Steps per run shown at most (evenly spaced, first and last included). */
export const MAX_STEPS = 12;

/** The activation tag of the layer of `tag` (itself, or "<layer>/activation"), or null. */
export function activationTag(tag, tags) {
  if (!tag || !tags) return null;
  if (tags[tag] && tags[tag].kind === "activation") return tag;
  const head = tag.includes("/") ? tag.slice(0, tag.lastIndexOf("/")) : tag;
  const candidate = `${head}/activation`;
  return tags[candidate] && tags[candidate].kind === "activation" ? candidate : null;
}

/** Up to `max` of ascending `steps`, evenly spaced, keeping the first and the last. */
export function pickSteps(steps, max) {
  if (steps.length <= max) return steps.slice();
  if (max <= 1) return steps.slice(-1);
  const out = new Set();
  for (let i = 0; i < max; i++) out.add(steps[Math.round((i * (steps.length - 1)) / (max - 1))]);
  return [...out];
}

/** Steps per run so that `runs` runs stay within MAX_ITEMS pairs. */
export function stepsPerRun(runs) {
  return Math.max(1, Math.min(MAX_STEPS, Math.floor(MAX_ITEMS / Math.max(1, runs))));
}

/**
 * From one layer's {labels: [{run, step}], matrix}: `settle`, CKA of `run` at each of
 * `steps` with its own last step (how early the layer settles), and `between[other]`,
 * CKA of `run` with `other` at each step; null where a step is missing.
 */
export function layerRows(answer, run, others, steps) {
  const index = new Map(answer.labels.map((l, i) => [`${l.run}\u0000${l.step}`, i]));
  const at = (r, s) => index.get(`${r}\u0000${s}`);
  const value = (i, j) => (i === undefined || j === undefined ? null : answer.matrix[i][j]);
  const own = answer.labels.filter((l) => l.run === run).map((l) => l.step);
  const last = own.length ? Math.max(...own) : null;
  return {
    settle: steps.map((s) => value(at(run, s), at(run, last))),
    between: Object.fromEntries(others.map((o) => [o, steps.map((s) => value(at(run, s), at(o, s)))])),
  };
}

/** The CSS colour of a CKA value on the fixed 0..1 scale (sequential colormap); grey when null. */
export function ckaColor(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "rgb(160, 160, 160)";
  const table = lut("sequential");
  const i = lutIndex(v, 0, 1) * 3;
  return `rgb(${table[i]}, ${table[i + 1]}, ${table[i + 2]})`;
}
