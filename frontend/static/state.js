// The view state and its URL-hash encoding (pure, DOM-free).

import { COLORMAPS } from "./colormap.js";
import { DEFAULT_PERCENTILE, MODES } from "./normalize.js";

export const DIFFS = ["none", "first", "run"];
export const SORTS = ["none", "norm", "drift"];
/** The range of a chosen zoom (css px per tensor value). */
export const ZOOM_RANGE = [1 / 16, 64];

export function defaults() {
  return {
    run: null,
    tag: null,
    step: null,
    cmap: "diverging",
    norm: "layer",
    pct: DEFAULT_PERCENTILE,
    compare: [],
    diff: "none",
    base: null,
    align: false, // compared runs' kernels reordered to the base run's filters
    rgb: false,
    sample: 0,
    sort: "none",
    examples: false, // "Show: dataset examples": each filter's strip of examples beside the grid
    sel: null,
    zoom: null, // css px per value chosen by the user; null: fit the available width
  };
}

function int(s) {
  return /^[0-9]{1,19}$/.test(s || "") ? Number(s) : null;
}

/** State from a hash ("#run=a&tag=b..."); unknown or bad values fall back to defaults. */
export function decode(hash) {
  const s = defaults();
  const q = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  if (q.has("run")) s.run = q.get("run");
  if (q.has("tag")) s.tag = q.get("tag");
  s.step = int(q.get("step"));
  if (COLORMAPS.includes(q.get("cmap"))) s.cmap = q.get("cmap");
  if (MODES.includes(q.get("norm"))) s.norm = q.get("norm");
  const pct = Number(q.get("pct"));
  if (q.has("pct") && pct >= 50 && pct <= 100) s.pct = pct;
  s.compare = q.getAll("cmp");
  if (DIFFS.includes(q.get("diff"))) s.diff = q.get("diff");
  if (q.has("base")) s.base = q.get("base");
  s.align = q.get("align") === "1";
  s.examples = q.get("ex") === "1" && s.diff === "none";
  s.rgb = q.get("rgb") === "1";
  s.sample = int(q.get("sample")) || 0;
  if (SORTS.includes(q.get("sort"))) s.sort = q.get("sort");
  s.sel = int(q.get("sel"));
  const zoom = Number(q.get("zoom"));
  if (q.has("zoom") && zoom >= ZOOM_RANGE[0] && zoom <= ZOOM_RANGE[1]) s.zoom = zoom;
  return s;
}

/** The hash (without "#") of a state; defaults are left out to keep links short. */
export function encode(state) {
  const d = defaults();
  const q = new URLSearchParams();
  if (state.run !== null) q.set("run", state.run);
  if (state.tag !== null) q.set("tag", state.tag);
  if (state.step !== null && state.step !== undefined) q.set("step", String(state.step));
  for (const key of ["cmap", "norm", "pct", "diff", "sort"]) {
    if (state[key] !== d[key]) q.set(key, String(state[key]));
  }
  for (const run of state.compare || []) q.append("cmp", run);
  if ((state.diff === "run" || state.align) && state.base !== null) q.set("base", state.base);
  if (state.align) q.set("align", "1");
  if (state.examples) q.set("ex", "1");
  if (state.rgb) q.set("rgb", "1");
  if (state.sample) q.set("sample", String(state.sample));
  if (state.sel !== null && state.sel !== undefined) q.set("sel", String(state.sel));
  if (state.zoom) q.set("zoom", String(Number(state.zoom.toFixed(4))));
  return q.toString();
}

/** Index in ascending `steps` of exactly `step`, or -1. */
export function stepIndex(steps, step) {
  let lo = 0;
  let hi = steps.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (steps[mid] === step) return mid;
    if (steps[mid] < step) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

/** Sorted union of several ascending step lists. */
export function unionSteps(lists) {
  const set = new Set();
  for (const list of lists) for (const s of list) set.add(s);
  return [...set].sort((a, b) => a - b);
}
