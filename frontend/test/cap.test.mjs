import assert from "node:assert/strict";
import { test } from "node:test";
import { fittingCap } from "../static/panel.js";

test("a 413 offers as many filters as fit the limit", () => {
  // 48 filters of 144 bytes each = 6912 bytes, limit 5242: 36 filters (5184 bytes) fit, 37 do not
  assert.deepEqual(fittingCap(6912, 5242, 48, 4), { maxFilters: 36, maxChannels: null });
  assert.deepEqual(fittingCap(101, 100, 1000, null), { maxFilters: 990, maxChannels: null });
});

test("when one filter is over the limit, input channels are capped too", () => {
  // 2 filters of 256 channels x 36 bytes: one filter is 9216 bytes, 145 channels (5220 bytes) fit
  assert.deepEqual(fittingCap(18432, 5242, 2, 256), { maxFilters: 1, maxChannels: 145 });
  assert.deepEqual(fittingCap(1e9, 1, 2, 256), { maxFilters: 1, maxChannels: 1 });
  assert.deepEqual(fittingCap(1e9, 1, 2, null), { maxFilters: 1, maxChannels: null });
});
