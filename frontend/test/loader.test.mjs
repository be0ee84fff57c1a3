import assert from "node:assert/strict";
import { test } from "node:test";
import { StepLoader } from "../static/loader.js";

test("StepLoader.steps: a listing older than `tags` is asked again once, however many callers waited on it", async () => {
  const real = globalThis.fetch;
  const asked = [];
  let listed = [{ step: 0 }]; // the first answer lacks step 1, which `tags` lists already
  globalThis.fetch = async (url) => {
    asked.push(url);
    const answer = listed;
    listed = [{ step: 0 }, { step: 1 }];
    return new Response(JSON.stringify(answer), { headers: { "Content-Type": "application/json" } });
  };
  try {
    const loader = new StepLoader({ info: () => ({ max_step: 1 }) });
    // the tag switch asks before its DOM work, the listing right after
    const [a, b] = await Promise.all([loader.steps("r", "t"), loader.steps("r", "t")]);
    assert.deepEqual(a.map((d) => d.step), [0, 1]);
    assert.deepEqual(b.map((d) => d.step), [0, 1]);
    assert.equal(asked.length, 2, asked.join(", "));
  } finally {
    globalThis.fetch = real;
  }
});
