import assert from "node:assert/strict";
import { test } from "node:test";
import { TensorCache } from "../static/cache.js";
import { beside, prefetchPlan, tensorBytes } from "../static/prefetch.js";

const MiB = 1024 * 1024;

/** A cache whose fetches resolve at once to `bytes[tag]` bytes; `asked` lists every fetch. */
function fakeCache(limit, prefetchLimit, bytes) {
  const asked = [];
  const fetch = (run, tag, step) => {
    asked.push(`${tag}@${step}`);
    return Promise.resolve({ buffer: new ArrayBuffer(bytes[tag] ?? 8), step: String(step) });
  };
  return { cache: new TensorCache(limit, { prefetchLimit, fetch }), asked };
}

const settle = () => new Promise((r) => setTimeout(r, 0));

test("tensorBytes: decoded size from the listing's shape and dtype; unknown is Infinity", () => {
  assert.equal(tensorBytes({ shape: [3, 3, 512, 512], dtype: "float32" }), 9437184);
  assert.equal(tensorBytes({ shape: [2, 3], dtype: "float16" }), 24); // decoded to float32
  assert.equal(tensorBytes({ shape: [2, 3], dtype: "float64" }), 48);
  assert.equal(tensorBytes({ shape: [2, 3], dtype: "uint8" }), 6);
  assert.equal(tensorBytes({ shape: [2, 3] }), Infinity);
  assert.equal(tensorBytes({ shape: [2, -1], dtype: "float32" }), Infinity);
  assert.equal(tensorBytes(undefined), Infinity);
});

test("beside: nearest first, the later before the earlier, within the list", () => {
  assert.deepEqual(beside(["a", "b", "c", "d"], "b"), ["c", "a"]);
  assert.deepEqual(beside(["a", "b", "c", "d"], "b", 2), ["c", "a", "d"]);
  assert.deepEqual(beside(["a", "b"], "a"), ["b"]);
  assert.deepEqual(beside(["a", "b"], "x"), []);
  assert.deepEqual(beside([0, 5, 10], 10), [5]);
});

test("prefetchPlan: neighbouring tags at their last step, then neighbouring steps; too big or unknown left out", () => {
  const info = (shape, max) => ({ shape, dtype: "float32", max_step: max });
  const tags = {
    "c/kernel": info([3, 3, 8, 8], 9),
    "a/kernel": info([3, 3, 8, 8], 9),
    "b/kernel": info([3, 3, 8, 8], 9),
    "d/kernel": info([3, 3, 512, 512], 9),
    "e/kernel": { shape: [3, 3, 8, 8], max_step: 9 }, // no dtype: size unknown
  };
  const plan = prefetchPlan({ tags, tag: "b/kernel", steps: [0, 5, 9], step: 5, budget: 64 * MiB });
  assert.deepEqual(plan.map((x) => [x.tag, x.step]), [["c/kernel", 9], ["a/kernel", 9], ["b/kernel", 9], ["b/kernel", 0]]);
  assert.equal(plan[0].bytes, 3 * 3 * 8 * 8 * 4);
  const small = prefetchPlan({ tags, tag: "c/kernel", steps: [9], step: 9, budget: 1 * MiB });
  assert.deepEqual(small.map((x) => x.tag), ["b/kernel"]); // d (9 MiB) is over the budget alone
  assert.deepEqual(prefetchPlan({ tags, tag: "d/kernel", steps: [9], step: 9, budget: 64 * MiB }).map((x) => x.tag), ["c/kernel"]);
});

test("TensorCache.prefetch: within its budget; refused when it would not fit; shown tensors do not count", async () => {
  const { cache, asked } = fakeCache(100 * MiB, 20 * MiB, { big: 9 * MiB, small: 1 * MiB });
  assert.equal(cache.prefetch("r", "big", 1, null, 9 * MiB), true);
  assert.equal(cache.prefetch("r", "big", 2, null, 9 * MiB), true);
  assert.equal(cache.prefetch("r", "big", 3, null, 9 * MiB), false, "a third 9 MiB tensor is over 20 MiB");
  assert.equal(cache.prefetch("r", "big", 1, null, 9 * MiB), true, "held already: no second fetch");
  await settle();
  assert.deepEqual(asked, ["big@1", "big@2"]);
  assert.equal(cache.prefetchedBytes(), 18 * MiB);
  // shown: no longer counted as fetched ahead, and not fetched again
  await cache.get("r", "big", 1);
  assert.deepEqual(asked, ["big@1", "big@2"]);
  assert.equal(cache.prefetchedBytes(), 9 * MiB);
  assert.equal(cache.prefetch("r", "big", 3, null, 9 * MiB), true);
  await settle();
  assert.equal(cache.prefetchedBytes(), 18 * MiB);
});

test("TensorCache: keepAhead drops what was fetched ahead for another view; the LRU trims the oldest first", async () => {
  const { cache } = fakeCache(20 * MiB, 64 * MiB, { big: 9 * MiB, small: 1 * MiB });
  cache.prefetch("r", "big", 1, null, 9 * MiB);
  cache.prefetch("r", "small", 1, null, 1 * MiB);
  await settle();
  cache.keepAhead([["r", "small", 1, null]]);
  assert.equal(cache.has("r", "big", 1), false);
  assert.equal(cache.has("r", "small", 1), true);
  await cache.get("r", "big", 5);
  await cache.get("r", "big", 6);
  await cache.get("r", "big", 7); // 28 MiB > 20: the least recently used goes
  await settle();
  assert.equal(cache.has("r", "small", 1), false);
  await cache.get("r", "big", 5); // used again: now the most recent
  await cache.get("r", "big", 8);
  await settle();
  assert.equal(cache.has("r", "big", 6), false);
  assert.deepEqual([5, 7, 8].map((s) => cache.has("r", "big", s)), [true, true, true]);
});

test("TensorCache: a failed fetch is forgotten, so it is asked again", async () => {
  let n = 0;
  const cache = new TensorCache(MiB, { fetch: () => (++n === 1 ? Promise.reject(new Error("x")) : Promise.resolve({ buffer: new ArrayBuffer(4) })) });
  await assert.rejects(cache.get("r", "t", 1));
  await settle();
  await cache.get("r", "t", 1);
  assert.equal(n, 2);
});

test("TensorCache: a fetch ahead dropped on its way is aborted; one arrived or asked for is not", async () => {
  const signals = {};
  const pending = {};
  const fetch = (run, tag, step, caps, signal) => {
    signals[tag] = signal;
    return new Promise((resolve, reject) => {
      pending[tag] = () => resolve({ buffer: new ArrayBuffer(8), step: String(step) });
      if (signal) signal.addEventListener("abort", () => reject(new Error("aborted")));
    });
  };
  const cache = new TensorCache(100 * MiB, { prefetchLimit: 20 * MiB, fetch });
  for (const tag of ["arrived", "asked", "on-its-way", "unwanted"]) cache.prefetch("r", tag, 1, null, 8);
  pending.arrived();
  await settle();
  const asked = cache.get("r", "asked", 1); // asked for while on its way: never aborted
  cache.keepAhead([["r", "arrived", 1, null], ["r", "on-its-way", 1, null]]);
  assert.equal(signals.unwanted.aborted, true, "dropped by keepAhead while on its way");
  assert.equal(cache.has("r", "unwanted", 1), false);
  cache.abortAhead();
  assert.equal(signals["on-its-way"].aborted, true);
  assert.equal(cache.has("r", "on-its-way", 1), false);
  assert.equal(signals.asked.aborted, false);
  assert.equal(cache.has("r", "arrived", 1), true, "an arrived tensor stays");
  assert.equal(cache.has("r", "asked", 1), true);
  pending.asked();
  assert.equal((await asked).step, "1");
  cache.prefetch("r", "later", 1, null, 8);
  cache.clear();
  assert.equal(signals.later.aborted, true, "clear aborts too");
  const shown = cache.get("r", "shown", 1);
  assert.equal(signals.shown, null, "a tensor asked for directly has no signal to abort");
  pending.shown();
  await shown;
});
