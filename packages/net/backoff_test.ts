// The accept backoff: doubling from 5 ms to 1 s over one outage.
import assert from "node:assert/strict";
import { acceptBackoffMs } from "./backoff.ts";

Deno.test("acceptBackoffMs: doubles from 5 ms to 1 s", () => {
  assert.deepEqual(
    Array.from({ length: 10 }, (_, i) => acceptBackoffMs(i + 1)),
    [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000],
  );
  assert.equal(acceptBackoffMs(10_000), 1000);
  assert.equal(acceptBackoffMs(0), 5);
});
