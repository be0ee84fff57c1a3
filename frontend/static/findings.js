// The filter doctor's findings (route `findings`) as the dashboard uses them:
// grouping, mapping a finding's original filter index to a grid filter,
// badge colours and labels, the step to jump to (pure, DOM-free).

import { fmt } from "./dom.js";
import { filterCells, filterCount } from "./layout.js";

export const PROBLEMS = ["dead", "suspected_dead", "exploding", "duplicate", "mirrored", "frozen", "stalled", "exploding_updates"];

/**
 * How each problem is drawn: badge/chip colour, its text colour, a one-letter
 * code for small tiles and a sentence for the legend. The colours avoid the
 * colormaps' blue/white/red, viridis and the NaN magenta.
 */
export const PROBLEM_STYLE = {
  dead: { color: [66, 66, 66], text: [255, 255, 255], code: "D", help: "no signal: zero weights, or a unit that never fires" },
  suspected_dead: { color: [189, 189, 189], text: [0, 0, 0], code: "?", help: "never fired on the inputs it was judged on, but they were too few to be sure (log more sample_inputs)" },
  exploding: { color: [255, 143, 0], text: [0, 0, 0], code: "E", help: "its norm grew far past its first step's or the layer median, or it holds NaN/Inf" },
  duplicate: { color: [255, 234, 0], text: [0, 0, 0], code: "=", help: "its kernel is a (scaled) copy of a lower filter" },
  mirrored: { color: [0, 229, 255], text: [0, 0, 0], code: "−", help: "its kernel is a negated copy of a lower filter" },
  frozen: { color: [124, 77, 255], text: [255, 255, 255], code: "F", help: "the whole layer never changed while other layers did" },
  stalled: { color: [0, 121, 107], text: [255, 255, 255], code: "S", help: "stopped changing (update ratio below the threshold) while the rest of its layer trained" },
  exploding_updates: { color: [216, 67, 21], text: [255, 255, 255], code: "U", help: "an update ratio far above its layer's median" },
};

/** CSS colour of a problem's badge. */
export function cssColor(problem, key = "color") {
  const c = (PROBLEM_STYLE[problem] || PROBLEM_STYLE.dead)[key];
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/** [{run, tags: [{tag, findings}]}] in the route's order (run, tag, filter, problem). */
export function groupFindings(findings) {
  const runs = new Map();
  for (const f of findings || []) {
    if (!runs.has(f.run)) runs.set(f.run, new Map());
    const tags = runs.get(f.run);
    if (!tags.has(f.tag)) tags.set(f.tag, []);
    tags.get(f.tag).push(f);
  }
  return [...runs].map(([run, tags]) => ({ run, tags: [...tags].map(([tag, list]) => ({ tag, findings: list })) }));
}

/** The findings of one series. */
export function seriesFindings(findings, run, tag) {
  return (findings || []).filter((f) => f.run === run && f.tag === tag);
}

/** Map from a filter's label (its original index, as text) to its grid filter index. */
export function labelIndex(grid) {
  const out = new Map();
  const n = filterCount(grid);
  for (let f = 0; f < n; f++) out.set(grid.filterLabel(f), f);
  return out;
}

/** The grid filter index of a finding, or -1 (a whole layer, or a filter not drawn). */
export function findingFilter(grid, finding, index = labelIndex(grid)) {
  if (finding.filter === null || finding.filter === undefined) return -1;
  const f = index.get(String(finding.filter));
  return f === undefined ? -1 : f;
}

/**
 * Badges of one grid: [{filter, label, problems, cells: [start, end)}] for every
 * filter with findings, ascending by filter; problems in PROBLEMS order.
 */
export function badgesFor(grid, findings) {
  const index = labelIndex(grid);
  const byFilter = new Map();
  for (const finding of findings || []) {
    const f = findingFilter(grid, finding, index);
    if (f < 0) continue;
    if (!byFilter.has(f)) byFilter.set(f, new Set());
    byFilter.get(f).add(finding.problem);
  }
  return [...byFilter].sort((a, b) => a[0] - b[0]).map(([f, problems]) => ({
    filter: f,
    label: grid.filterLabel(f),
    problems: PROBLEMS.filter((p) => problems.has(p)),
    cells: filterCells(grid, f),
  }));
}

/**
 * Per grid filter (0..n-1): the findings about it (for the health table).
 * Findings naming filters outside the grid are left out.
 */
export function findingsByFilter(grid, findings, n = filterCount(grid)) {
  const index = labelIndex(grid);
  const out = Array.from({ length: n }, () => []);
  for (const finding of findings || []) {
    const f = findingFilter(grid, finding, index);
    if (f >= 0 && f < n) out[f].push(finding);
  }
  return out;
}

/**
 * The step to show for a finding first seen at `step`: that step if it was
 * logged, else the nearest logged step after it, else the last one.
 * Returns {step, exact, after} or null when there are no steps.
 */
export function stepAtOrAfter(steps, step) {
  if (!steps.length) return null;
  let lo = 0;
  let hi = steps.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (steps[mid] < step) lo = mid + 1;
    else hi = mid;
  }
  if (lo === steps.length) return { step: steps[steps.length - 1], exact: false, after: false };
  return { step: steps[lo], exact: steps[lo] === step, after: steps[lo] !== step };
}

/** One line about a finding: what, since when, and the numbers behind it. */
export function describeFinding(f) {
  const d = f.detail || {};
  const since = `since step ${f.first_step}`;
  switch (f.problem) {
    case "dead":
    case "suspected_dead": {
      const what = f.problem === "dead" ? "dead" : "suspected dead";
      if ("inputs" in d) {
        const inputs = `${d.inputs} input${d.inputs === 1 ? "" : "s"}`;
        return `${what} ${since}: never > 0 on the ${inputs} judged`
          + (f.problem === "dead" ? "" : " (too few to be sure)") + `, ${d.dead_steps} steps`;
      }
      return "samples" in d
        ? `${what} ${since}: ≤ 0 at ${fmt(100 * d.zero_frac, 3)}% of positions (${d.samples} samples), ${d.dead_steps} steps`
        : `${what} ${since}: norm ${fmt(d.norm)} (layer median ${fmt(d.median_norm)}), ${d.dead_steps} steps`;
    }
    case "exploding": {
      const why = (d.reasons || []).join(", ");
      return "growth" in d
        ? `exploding ${since} (${why}): norm ${fmt(d.norm_first)} → ${fmt(d.norm)}, ×${fmt(d.growth, 3)}; last ${fmt(d.norm_last)}`
        : `exploding ${since} (${why}): ${fmt(100 * d.nonfinite, 3)}% NaN/Inf`;
    }
    case "duplicate":
    case "mirrored":
      return `${f.problem === "duplicate" ? "duplicate of" : "mirror of"} filter ${d.other_filter} ${since}: cosine ${fmt(d.cosine, 4)}, norm ratio ${fmt(d.norm_ratio, 3)}`;
    case "frozen":
      return `frozen: identical at steps ${d.first_logged_step} and ${d.last_step} while ${d.changed_layers} other layer${d.changed_layers === 1 ? "" : "s"} changed (first seen at step ${f.first_step})`;
    case "stalled":
      return `stalled after step ${f.first_step}: update ratio ≤ ${fmt(d.max_ratio)} for ${d.stalled_intervals} logged interval${d.stalled_intervals === 1 ? "" : "s"} (to step ${d.until_step}) while its layer's median was ≥ ${fmt(d.median_ratio)}`;
    case "exploding_updates":
      return `update ratio ${fmt(d.ratio)} from step ${f.first_step} to ${d.to_step}: ×${fmt(d.times_median, 3)} its layer's median ${fmt(d.median_ratio)} (${d.intervals} interval${d.intervals === 1 ? "" : "s"})`;
    default:
      return `${f.problem} ${since}`;
  }
}
