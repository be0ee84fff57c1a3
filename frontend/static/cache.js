// The dashboard's tensors: a byte-bounded LRU of fetches (api.js), and the
// tensors fetched ahead of need (prefetch.js) within a budget of their own.

import * as api from "./api.js";

/** The cache key of a tensor: run, tag, step and the view's caps. */
function keyOf(run, tag, step, caps) {
  return JSON.stringify([run, tag, String(step), caps.maxFilters ?? null, caps.maxChannels ?? null]);
}

/**
 * A byte-bounded LRU of tensor promises. `limit`: bytes of decoded tensors kept in
 * all; `prefetchLimit`: bytes of those fetched ahead (`prefetch`) and not asked for
 * since, evicted first (oldest first) when over it. `fetch(run, tag, step, caps, signal)`
 * -> promise of {buffer, ...} (api.tensor by default; tests pass their own); a fetch
 * ahead that is dropped while on its way is aborted (`signal`), so that it stops taking
 * the server's time and a connection from what is shown next.
 */
export class TensorCache {
  constructor(limit, { prefetchLimit = limit, fetch = null } = {}) {
    this.limit = limit;
    this.prefetchLimit = prefetchLimit;
    this.fetch = fetch || ((run, tag, step, caps, signal) => api.tensor(run, tag, step, { signal }, caps));
    this.map = new Map();
  }

  /** `cap` ({maxFilters, maxChannels}) asks for a smaller view; it is part of the key. */
  get(run, tag, step, cap = null) {
    return this.entry(run, tag, step, cap, false).promise;
  }

  /**
   * Fetches ahead unless held already: true if it started (or holds) the fetch,
   * false when `bytes` (the expected decoded size) would not fit the prefetch budget.
   */
  prefetch(run, tag, step, cap = null, bytes = 0) {
    const caps = capsOf(cap);
    if (this.map.has(keyOf(run, tag, step, caps))) return true;
    if (bytes > this.prefetchLimit || this.prefetchedBytes() + bytes > this.prefetchLimit) return false;
    const entry = this.entry(run, tag, step, cap, true);
    if (!entry.bytes) entry.bytes = bytes; // counted while it is on its way
    entry.promise.catch(() => {}); // nobody awaits a prefetch: its failure is asked again when shown
    return true;
  }

  /** Drops the tensors fetched ahead and not asked for since, except `keep` ([[run, tag, step, cap]]). */
  keepAhead(keep) {
    const wanted = new Set(keep.map(([run, tag, step, cap]) => keyOf(run, tag, step, capsOf(cap))));
    for (const [key, e] of [...this.map]) if (e.ahead && !wanted.has(key)) this.drop(key, e);
  }

  /** Aborts the fetches ahead still on their way and not asked for since (those that arrived stay). */
  abortAhead() {
    for (const [key, e] of [...this.map]) if (e.ahead && e.controller) this.drop(key, e);
  }

  drop(key, entry) {
    this.map.delete(key);
    if (entry.controller) entry.controller.abort();
  }

  /** Is this tensor held (or on its way)? */
  has(run, tag, step, cap = null) {
    return this.map.has(keyOf(run, tag, step, capsOf(cap)));
  }

  entry(run, tag, step, cap, ahead) {
    const caps = capsOf(cap);
    const key = keyOf(run, tag, step, caps);
    if (this.map.has(key)) {
      const entry = this.map.get(key);
      this.map.delete(key);
      this.map.set(key, entry);
      if (!ahead) {
        entry.ahead = false;
        entry.controller = null; // asked for now: never aborted
      }
      return entry;
    }
    const controller = ahead ? new AbortController() : null; // while on its way
    const entry = { promise: this.fetch(run, tag, step, caps, controller && controller.signal), bytes: 0, ahead, controller };
    entry.promise.then(
      (t) => { entry.controller = null; entry.bytes = t.buffer.byteLength; this.trim(); },
      () => { entry.controller = null; if (this.map.get(key) === entry) this.map.delete(key); },
    );
    this.map.set(key, entry);
    return entry;
  }

  /** Bytes held by tensors fetched ahead and not asked for since. */
  prefetchedBytes() {
    let total = 0;
    for (const e of this.map.values()) if (e.ahead) total += e.bytes;
    return total;
  }

  trim() {
    let ahead = this.prefetchedBytes();
    for (const [key, e] of this.map) {
      if (ahead <= this.prefetchLimit) break;
      if (!e.ahead) continue;
      ahead -= e.bytes;
      this.map.delete(key);
    }
    let total = 0;
    for (const e of this.map.values()) total += e.bytes;
    for (const [key, e] of this.map) {
      if (total <= this.limit || this.map.size <= 3) break;
      total -= e.bytes;
      this.map.delete(key);
    }
  }

  clear() {
    this.abortAhead();
    this.map.clear();
  }
}

function capsOf(cap) {
  return cap ? { maxFilters: cap.maxFilters, maxChannels: cap.maxChannels } : {};
}
