// The dashboard's tensors: a byte-bounded LRU of fetches (api.js).

import * as api from "./api.js";

/** A small byte-bounded LRU of tensor promises. */
export class TensorCache {
  constructor(limit) {
    this.limit = limit;
    this.map = new Map();
  }

  /** `cap` ({maxFilters, maxChannels}) asks for a smaller view; it is part of the key. */
  get(run, tag, step, cap = null) {
    const caps = cap ? { maxFilters: cap.maxFilters, maxChannels: cap.maxChannels } : {};
    const key = JSON.stringify([run, tag, String(step), caps.maxFilters ?? null, caps.maxChannels ?? null]);
    if (this.map.has(key)) {
      const entry = this.map.get(key);
      this.map.delete(key);
      this.map.set(key, entry);
      return entry.promise;
    }
    const entry = { promise: api.tensor(run, tag, step, {}, caps), bytes: 0 };
    entry.promise.then((t) => { entry.bytes = t.buffer.byteLength; this.trim(); }, () => this.map.delete(key));
    this.map.set(key, entry);
    return entry.promise;
  }

  trim() {
    let total = 0;
    for (const e of this.map.values()) total += e.bytes;
    for (const [key, e] of this.map) {
      if (total <= this.limit || this.map.size <= 3) break;
      total -= e.bytes;
      this.map.delete(key);
    }
  }

  clear() {
    this.map.clear();
  }
}
