import assert from "node:assert/strict";
import fc from "fast-check";
import { backoffMs, type BackoffPolicy } from "./backoff.ts";

const policy = (jitter: BackoffPolicy["jitter"]): BackoffPolicy => ({
  initialMs: 100,
  maxMs: 2_000,
  jitter,
});

Deno.test("backoffMs(): doubles from the first pause to the cap", () => {
  const pauses = [1, 2, 3, 4, 5, 6, 7].map((attempt) => backoffMs(policy("none"), attempt, 0.5));
  assert.deepEqual(pauses, [100, 200, 400, 800, 1_600, 2_000, 2_000]);
  assert.equal(backoffMs(policy("none"), 0, 0), 100);
  assert.equal(backoffMs(policy("none"), 10_000, 0), 2_000);
});

Deno.test("backoffMs(): equal jitter keeps half the ceiling, full jitter spans it", () => {
  assert.equal(backoffMs(policy("equal"), 3, 0), 200);
  assert.equal(backoffMs(policy("equal"), 3, 0.999), 399.8);
  assert.equal(backoffMs(policy("full"), 3, 0), 0);
  assert.equal(backoffMs(policy("full"), 3, 0.5), 200);
});

Deno.test("backoffMs(): always in [0, maxMs], never past the ceiling, below it with full jitter", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 10_000 }),
      fc.integer({ min: 0, max: 1_000_000 }),
      fc.integer({ min: -5, max: 5_000 }),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      fc.constantFrom("none", "equal", "full"),
      (initialMs, extra, attempt, random, jitter) => {
        const p: BackoffPolicy = { initialMs, maxMs: initialMs + extra, jitter };
        const pause = backoffMs(p, attempt, random);
        const ceiling = Math.min(p.maxMs, initialMs * 2 ** Math.max(0, attempt - 1));
        assert.ok(pause >= 0 && pause <= p.maxMs && pause <= ceiling);
        if (jitter === "full") assert.ok(pause < ceiling);
      },
    ),
  );
});
