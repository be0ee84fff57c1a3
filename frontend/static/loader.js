// Loading what the dashboard draws at a step: each panel's tensor (capped,
// aligned, or as a difference), its drift from the first step, the statistics
// behind the fixed colour limits and the norm sort, and the smaller view to
// offer after a 413.

import { alignTensor } from "./align.js";
import { cosineDrift, difference, orderBy } from "./analysis.js";
import * as api from "./api.js";
import { canonicalize, IMAGE_KINDS } from "./layout.js";
import { cellLimits, limitsFromStats } from "./normalize.js";
import { capAxes, fittingCap } from "./panel.js";
import { stepIndex } from "./state.js";

// drift needs the first step's tensor too: only fetched for tensors up to this size
const DRIFT_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Composed by the Dashboard (app.js) as `dashboard.loader`. Its interface,
 * `host`: cache (TensorCache); state() -> the URL state (read only);
 * info(run, tag) -> the tag's metadata in that run; stepsOf(run) -> the run's
 * logged steps of the tag, ascending; comparing (Comparing: aligning, match);
 * showMessage(text). Holds the statistics answers until clearStats().
 */
export class StepLoader {
  constructor(host) {
    this.host = host;
    this.statsCache = new Map();
  }

  /** Forgets the statistics (new steps or Reload). */
  clearStats() {
    this.statsCache.clear();
  }

  /**
   * The stats route's answer for `run`'s `tag` (a promise, cached; a failure is asked
   * again): steps spread over the series when it has more than the route returns, with
   * `step` in it when the series has that step (a capped reply lacking it gets that one
   * step fetched and merged in).
   */
  async stats(run, tag, step) {
    const key = JSON.stringify([run, tag]);
    if (!this.statsCache.has(key)) {
      const p = api.stats(run, tag);
      p.catch(() => this.statsCache.delete(key));
      this.statsCache.set(key, p);
    }
    const reply = await this.statsCache.get(key);
    if (step === undefined || step === null || !reply.capped) return reply;
    if (reply.steps.some((s) => s.step === step)) return reply;
    let one;
    try {
      one = await api.stats(run, tag, {}, { maxSteps: 1, step });
    } catch {
      return reply; // e.g. a step this series does not have: callers find no row
    }
    if (!reply.steps.some((s) => s.step === step)) {
      reply.steps.push(...one.steps);
      reply.steps.sort((a, b) => a.step - b.step);
    }
    return reply;
  }

  /** [lo, hi] shared by the panels (of `runs`) for the fixed modes, or null. */
  async fixedLimits(results, runs, signed) {
    const s = this.host.state();
    if (s.norm !== "steps" && s.norm !== "runs") return null;
    // images are drawn on their own [0, 1] scale and have no statistics
    if (IMAGE_KINDS.includes(this.host.info(s.run, s.tag).kind) && s.diff === "none") return null;
    if (s.diff === "none") {
      const shown = s.norm === "runs" ? runs : [s.run];
      try {
        return limitsFromStats(await Promise.all(shown.map((r) => this.stats(r, s.tag))), s.pct, signed);
      } catch (e) {
        this.host.showMessage(`Could not load statistics for fixed colour limits: ${e.message}`);
        return null;
      }
    }
    if (s.norm === "steps") return null; // a diff changes its range every step: per layer
    let lo = 0;
    let hi = 0;
    for (const r of results) {
      if (!r.values) continue;
      const [a, b] = cellLimits(r.grid, r.values, { mode: "layer", p: s.pct, signed }).range;
      lo = Math.min(lo, a);
      hi = Math.max(hi, b);
    }
    return [lo, hi];
  }

  /** Display order of grid rows (sorted by norm or drift of the first panel's `run`), or null. */
  async rowOrder(result, run) {
    const s = this.host.state();
    if (s.sort === "none" || !result || !result.grid || !result.grid.rowFilters) return null;
    if (s.sort === "drift") return result.drift ? orderBy(result.drift) : null;
    try {
      const stats = await this.stats(run, s.tag, s.step);
      const at = stats.steps.find((x) => x.step === s.step);
      if (!at || !at.values) return null;
      const i = stats.names.indexOf("norm");
      // a capped view draws only the first filters; an aligned one in the base run's order
      const perm = result.tensor.match ? result.tensor.match.permutation : null;
      const rows = Array.from({ length: result.grid.rows }, (_, r) => at.values[perm ? perm[r] : r]);
      return orderBy(rows.map((row) => (!row || row[i] === null ? NaN : row[i])));
    } catch {
      return null;
    }
  }

  /**
   * What `panel` draws at `step`: {tensor, grid, values, title, cap, drift?, viewName?},
   * or {error, kind?, offer?}.
   */
  async loadPanel(panel, step) {
    const { cache, comparing } = this.host;
    const s = this.host.state();
    const runSteps = this.host.stepsOf(panel.run);
    if (stepIndex(runSteps, step) < 0) {
      return { error: `${panel.run} has no step ${step} of ${s.tag}`, kind: "info" };
    }
    const cap = panel.capFor(s.tag);
    let tensor;
    try {
      tensor = await cache.get(panel.run, s.tag, step, cap);
    } catch (e) {
      return { error: `${s.tag} at step ${step}: ${e.message}`, offer: cap ? null : this.offerFor(panel.run, e) };
    }
    if (String(tensor.step) !== String(step)) return { error: `the server sent step ${tensor.step} for step ${step}` };
    let match = null;
    if (comparing.aligning(panel.run)) {
      try {
        match = await comparing.match(panel.run, step);
        tensor = alignTensor(tensor, match);
      } catch (e) {
        return { error: `Align ${panel.run} to ${s.base} at step ${step}: ${e.message}` };
      }
    }
    let grid;
    try {
      grid = canonicalize(tensor.header, { rgb: s.rgb, sample: s.sample });
    } catch (e) {
      return { error: `Cannot draw ${s.tag}: ${e.message}` };
    }
    const out = { tensor, grid, values: tensor.array, title: "", cap };
    // the first step, for drift (and the "− first step" view)
    const first = runSteps[0];
    const wantFirst = s.diff === "first" || (grid.kind === "kernel" && tensor.buffer.byteLength <= DRIFT_MAX_BYTES);
    if (wantFirst && first !== undefined) {
      try {
        let t0 = first === step ? tensor : await cache.get(panel.run, s.tag, first, cap);
        if (match && t0 !== tensor) t0 = alignTensor(t0, match);
        if (t0.array.length === tensor.array.length) {
          out.drift = grid.kind === "kernel" ? cosineDrift(grid, tensor.array, t0.array) : null;
          if (s.diff === "first") {
            out.values = difference(tensor.array, t0.array);
            out.title = `W(${step}) − W(${first})`;
            out.viewName = "diff-first";
          }
        } else if (s.diff === "first") {
          return { error: `the shape of ${s.tag} changed since step ${first}; no difference to show` };
        }
      } catch (e) {
        if (s.diff === "first") return { error: `first step ${first}: ${e.message}` };
      }
    }
    if (s.diff === "run") {
      const baseSteps = this.host.stepsOf(s.base);
      if (stepIndex(baseSteps, step) < 0) return { error: `${s.base} has no step ${step} of ${s.tag} to subtract`, kind: "info" };
      try {
        const b = await cache.get(s.base, s.tag, step, cap);
        out.values = difference(tensor.array, b.array);
        out.title = `${panel.run} − ${s.base} at step ${step}`;
        out.viewName = "diff-run";
      } catch (e) {
        return { error: `${s.base} at step ${step}: ${e.message}` };
      }
    }
    return out;
  }

  /** The view to offer after a 413 (the first filters that fit the limit), or null. */
  offerFor(run, error) {
    const body = error instanceof api.ApiError && error.status === 413 ? error.body : null;
    const axes = capAxes(this.host.info(run, this.host.state().tag));
    if (!body || !axes || !(body.nbytes > 0) || !(body.limit_bytes > 0)) return null;
    const cap = fittingCap(body.nbytes, body.limit_bytes, axes.filters, axes.channels);
    return { tag: this.host.state().tag, ...cap, ...axes };
  }
}
