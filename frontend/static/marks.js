// Performance marks of the dashboard's phases (`convfilters:<name>`), read by the
// browser benchmark (benchmarks/tab.py) and the order-of-marks test: a tag
// switch starts at "switch", its grid stands at "grid", the side views follow.
// The detail says which tag and step a mark belongs to.

const PREFIX = "convfilters:";

/** Marks phase `name` now ({tag, step, ...} in its detail); never throws. */
export function mark(name, detail = {}) {
  try {
    performance.mark(PREFIX + name, { detail });
  } catch {
    // marks are for measuring only
  }
}

/** The marks so far: [{name, t, ...detail}] in time order (name without the prefix). */
export function marks() {
  return performance.getEntriesByType("mark")
    .filter((m) => m.name.startsWith(PREFIX))
    .map((m) => ({ name: m.name.slice(PREFIX.length), t: m.startTime, ...(m.detail || {}) }));
}
