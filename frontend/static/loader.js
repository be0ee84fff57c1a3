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
 * showMessage(text). Holds the statistics answers until clearStats() and the
 * steps listings until clearSteps().
 */
export class StepLoader {
  constructor(host) {
    this.host = host;
    this.statsCache = new Map();
    this.stepsCache = new Map();
  }

  /** Forgets the statistics (new steps or Reload). */
  clearStats() {
    this.statsCache.clear();
  }

  /** Forgets the steps listings (Reload). */
  clearSteps() {
    this.stepsCache.clear();
  }

  /**
   * The steps route's answer for `run`'s `tag` (cached; a failure is asked again);
   * `refresh` asks the server again (the 30 s poll), as does a listing older than `tags`.
   */
  async steps(run, tag, refresh = false) {
    const key = JSON.stringify([run, tag]);
    if (refresh || !this.stepsCache.has(key)) {
      const p = api.steps(run, tag);
      p.catch(() => { if (this.stepsCache.get(key) === p) this.stepsCache.delete(key); });
      this.stepsCache.set(key, p);
    }
    const asked = this.stepsCache.get(key);
    const list = await asked;
    // `tags` (asked again every poll) lists a later step than this listing had: ask again,
    // unless another caller did meanwhile (the switch and its listing ask at once)
    const max = this.host.info(run, tag).max_step;
    if (!refresh && typeof max === "number" && list.length && list[list.length - 1].step < max) {
      const later = this.stepsCache.get(key);
      return later && later !== asked ? later : this.steps(run, tag, true);
    }
    return list;
  }

  /** Starts fetching what `showStep` will ask for at `step` (each panel's tensor), before the steps are listed. */
  warm(panels, step) {
    const s = this.host.state();
    if (step === null || step === undefined) return;
    for (const p of panels) {
      if (this.host.info(p.run, s.tag).kind) this.host.cache.get(p.run, s.tag, step, p.capFor(s.tag)).catch(() => {});
    }
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
    // the first step, for the "− first step" view and sorting by drift (else drift() after the grid is drawn)
    const first = runSteps[0];
    if ((s.diff === "first" || (s.sort === "drift" && panel === this.host.firstPanel())) && first !== undefined) {
      try {
        const t0 = await this.firstTensor(panel.run, step, tensor, match, cap);
        if (t0.array.length === tensor.array.length) {
          out.drift = this.driftOf(grid, tensor, t0);
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

  /** `run`'s tensor of the shown tag at its first step (aligned as `tensor` is), fetched through the cache. */
  async firstTensor(run, step, tensor, match, cap) {
    const first = this.host.stepsOf(run)[0];
    let t0 = first === step ? tensor : await this.host.cache.get(run, this.host.state().tag, first, cap);
    if (match && t0 !== tensor) t0 = alignTensor(t0, match);
    return t0;
  }

  /** Each filter's cosine distance to the first step, or null (not a kernel, too big, shapes differ). */
  driftOf(grid, tensor, t0) {
    if (grid.kind !== "kernel" || tensor.buffer.byteLength > DRIFT_MAX_BYTES || t0.array.length !== tensor.array.length) return null;
    return cosineDrift(grid, tensor.array, t0.array);
  }

  /**
   * The drift of what `loaded` (a loadPanel result of `run` at `step`) shows, computed once
   * and kept in it: for the health table, after the grid is drawn. Null when there is none.
   */
  async drift(run, step, loaded) {
    if (!loaded || !loaded.grid || loaded.grid.kind !== "kernel") return null;
    if (loaded.drift !== undefined) return loaded.drift;
    if (!loaded.driftPromise) {
      loaded.driftPromise = this.firstTensor(run, step, loaded.tensor, loaded.tensor.match || null, loaded.cap)
        .then((t0) => this.driftOf(loaded.grid, loaded.tensor, t0), () => null);
    }
    return loaded.driftPromise;
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
