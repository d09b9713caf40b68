import assert from "node:assert/strict";
import fc from "fast-check";
import { backoffDelay, OutageBudget, RttStats } from "./stats.ts";

Deno.test("RttStats: min/avg/max and nearest-rank p50/p99; null when empty", () => {
  const stats = new RttStats();
  assert.equal(stats.summary(), null);
  for (let i = 100; i >= 1; i--) stats.add(i);
  assert.deepEqual(stats.summary(), { min: 1, avg: 50.5, max: 100, p50: 50, p99: 99 });
  const one = new RttStats();
  one.add(0.25);
  assert.deepEqual(one.summary(), { min: 0.25, avg: 0.25, max: 0.25, p50: 0.25, p99: 0.25 });
});

Deno.test("backoffDelay: full jitter under a ceiling that doubles up to the cap", () => {
  const policy = { initialMs: 100, maxMs: 5000, jitter: "full" } as const;
  assert.equal(backoffDelay(policy, 0, () => 0), 0);
  assert.equal(backoffDelay(policy, 0, () => 0.999), 99);
  assert.equal(backoffDelay(policy, 3, () => 0.5), 400);
  assert.equal(backoffDelay(policy, 10, () => 0.5), 2500, "capped at maxMs");
  fc.assert(
    fc.property(fc.nat(1000), fc.double({ min: 0, max: 0.9999999, noNaN: true }), (attempt, r) => {
      const delay = backoffDelay(policy, attempt, () => r);
      return delay >= 0 && delay < Math.min(5000, 100 * 2 ** Math.min(attempt, 30));
    }),
  );
});

Deno.test("OutageBudget: outages begin once, end with a duration, and open the breaker", () => {
  const budget = new OutageBudget(1000);
  assert.equal(budget.exhausted(0), false);
  budget.begin("lost", 100);
  budget.begin("again", 200); // during an outage: ignored
  assert.equal(budget.current?.reason, "lost");
  assert.equal(budget.exhausted(1099), false);
  assert.equal(budget.exhausted(1100), true);
  assert.equal(budget.end(600), 500);
  assert.equal(budget.current, undefined);
  assert.equal(budget.exhausted(5000), false, "no outage, no verdict");
  budget.begin("second", 2000);
  assert.equal(budget.totalMs(2300), 800, "500 done plus 300 under way");
  assert.equal(budget.outages.length, 2);
});
