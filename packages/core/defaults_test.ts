import assert from "node:assert/strict";
import { withDefaults } from "./defaults.ts";

Deno.test("withDefaults(): an undefined setting keeps the default; null, 0 and false are settings", () => {
  const defaults = { port: 8080, drainMs: 5_000, host: "127.0.0.1", quiet: true, extra: "x" };
  assert.deepEqual(
    withDefaults(defaults, { drainMs: undefined, port: 0, quiet: false, host: undefined }),
    { port: 0, drainMs: 5_000, host: "127.0.0.1", quiet: false, extra: "x" },
  );
  assert.deepEqual(withDefaults(defaults, {}), defaults);
  assert.notEqual(withDefaults(defaults, {}), defaults, "a new object");
});
