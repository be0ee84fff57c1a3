import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { MODULES } from "../static/index.js";

const STATIC = new URL("../static/", import.meta.url);

/** Names of the modules `name` imports (static `import ... from "./x.js"` and `import("./x.js")`). */
function importsOf(name) {
  const text = readFileSync(new URL(`${name}.js`, STATIC), "utf8");
  return [...text.matchAll(/(?:from|import)\s*\(?\s*"\.\/([A-Za-z0-9_-]+)\.js"/g)].map((m) => m[1]);
}

test("index.js preloads exactly the modules app.js imports, directly or not", () => {
  const seen = new Set();
  const todo = ["app"];
  while (todo.length) {
    const name = todo.pop();
    if (seen.has(name)) continue;
    seen.add(name);
    todo.push(...importsOf(name));
  }
  assert.deepEqual([...MODULES].sort(), [...seen].sort());
});
