// Fetching ahead what the next flip will show: the tags beside the shown one (at
// the step a tag switch opens, its last) and the steps beside the shown step,
// once the shown grid and its side views are done, within the tensor cache's
// prefetch budget (cache.js). The plan is pure (node tests); the Prefetcher runs
// it in idle time.

/** Bytes of decoded tensors fetched ahead and not shown yet, at most (the tensor cache's prefetch budget). */
export const PREFETCH_BYTES = 64 * 1024 * 1024;

const BYTES = { float64: 8, float32: 4, float16: 4, bfloat16: 4, int8: 1, uint8: 1 }; // decoded in the browser

/** Decoded bytes of a tag's tensor from its listing entry ({shape, dtype}); Infinity when unknown. */
export function tensorBytes(info) {
  const shape = info && info.shape;
  const per = info && BYTES[info.dtype];
  if (!Array.isArray(shape) || !per || shape.some((n) => !Number.isInteger(n) || n < 0)) return Infinity;
  return shape.reduce((a, b) => a * b, 1) * per;
}

/** The `k` items on each side of `at` in `list`, nearest first, the later one before the earlier. */
export function beside(list, at, k = 1) {
  const i = list.indexOf(at);
  if (i < 0) return [];
  const out = [];
  for (let d = 1; d <= k; d++) {
    if (i + d < list.length) out.push(list[i + d]);
    if (i - d >= 0) out.push(list[i - d]);
  }
  return out;
}

/**
 * What to fetch ahead, most wanted first: [{tag, step, bytes}] for the tags beside
 * `tag` in `tags` ({name: info}; listed in name order as the Tag select shows them) at
 * their last step (`max_step`), then `tag`'s steps beside `step` in `steps` (ascending).
 * Left out: what has no known step or size, and what is bigger than `budget` alone.
 */
export function prefetchPlan({ tags, tag, steps, step, budget, k = 1 }) {
  const plan = [];
  const add = (t, s) => {
    const bytes = tensorBytes(tags[t]);
    if (s === undefined || s === null || !(bytes <= budget)) return;
    plan.push({ tag: t, step: s, bytes });
  };
  for (const t of beside(Object.keys(tags).sort(), tag, k)) add(t, tags[t].max_step);
  for (const s of beside(steps, step, k)) add(tag, s);
  return plan;
}

/**
 * Made by the Dashboard (app.js) as `dashboard.prefetcher`; reads the dashboard:
 * cache (TensorCache), state, tags, stepsByRun (the shown tag's steps per run),
 * panels (their runs and view caps) and loader (its cached steps and stats).
 */
export class Prefetcher {
  constructor(dashboard) {
    this.d = dashboard;
    this.pending = null;
  }

  /** Fetches ahead when the page is idle; a newer call (or cancel) replaces this one. */
  schedule() {
    this.cancel();
    const run = () => {
      this.pending = null;
      this.fetchAhead();
    };
    this.pending = typeof requestIdleCallback === "function"
      ? { idle: requestIdleCallback(run, { timeout: 1000 }) }
      : { timer: setTimeout(run, 50) };
  }

  cancel() {
    if (!this.pending) return;
    if (this.pending.idle !== undefined) cancelIdleCallback(this.pending.idle);
    else clearTimeout(this.pending.timer);
    this.pending = null;
  }

  fetchAhead() {
    const { cache, state: s, loader } = this.d;
    const cap = (panel, tag) => panel.capFor(tag);
    const plans = this.d.panels.map((panel) => [panel, prefetchPlan({
      tags: this.d.tags[panel.run] || {}, tag: s.tag, steps: this.d.stepsByRun.get(panel.run) || [], step: s.step, budget: cache.prefetchLimit,
    })]);
    // what was fetched ahead for an earlier view and not shown makes room for this one's
    cache.keepAhead(plans.flatMap(([panel, plan]) => plan.map((x) => [panel.run, x.tag, x.step, cap(panel, x.tag)])));
    for (const [panel, plan] of plans) {
      for (const item of plan) {
        if (!cache.prefetch(panel.run, item.tag, item.step, cap(panel, item.tag), item.bytes)) break; // budget spent
        if (item.tag !== s.tag) {
          // what a switch to that tag asks before it draws, and its health table after
          loader.steps(panel.run, item.tag).catch(() => {});
          loader.stats(panel.run, item.tag).catch(() => {});
        }
      }
    }
  }
}
