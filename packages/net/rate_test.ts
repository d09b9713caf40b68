// Token buckets: exact burst and refill, pacing that never refuses, refusals that cost
// nothing and name the exact retry time, and - under generated sequences - no window lets
// through more than burst + rate x its length, while an honest client is never refused.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  available,
  type Bucket,
  fullBucket,
  isFull,
  KeyedBuckets,
  pace,
  type Rate,
  refund,
  tryTake,
} from "./rate.ts";

// Small buckets and dense arrivals, so that refusals are common.
const rates = fc.record({
  perSecond: fc.integer({ min: 1, max: 200 }),
  burst: fc.integer({ min: 1, max: 8 }),
});

/** Arrival times in ms: non-decreasing, from gaps of 0 to `maxGap` ms (fractions included). */
const times = (maxGap: number) =>
  fc.array(fc.double({ min: 0, max: maxGap, noNaN: true }), { minLength: 10, maxLength: 200 })
    .map((gaps) => {
      let t = 0;
      return gaps.map((gap) => (t += gap));
    });

/** Runs arrivals at `at` through one bucket; which ones were allowed. */
function run(at: number[], rate: Rate): boolean[] {
  let bucket = fullBucket(rate);
  return at.map((now) => {
    const taken = tryTake(bucket, rate, now);
    bucket = taken.bucket;
    return taken.ok;
  });
}

Deno.test("rate: a full bucket gives its burst at once, then perSecond; refusals cost nothing", () => {
  const rate: Rate = { perSecond: 10, burst: 20 };
  let bucket: Bucket = fullBucket(rate);
  for (let i = 0; i < 20; i++) {
    const taken = tryTake(bucket, rate, 0);
    assert.equal(taken.ok, true, `take ${i}`);
    bucket = taken.bucket;
  }
  const refused = tryTake(bucket, rate, 0);
  assert.deepEqual([refused.ok, refused.retryAfterMs], [false, 100]);
  assert.equal(refused.bucket, bucket, "a refusal costs nothing");
  assert.equal(tryTake(bucket, rate, 99).ok, false);
  assert.equal(tryTake(bucket, rate, 100).ok, true);
  assert.equal(available(bucket, rate, 10_000), 20, "never above the burst");
  assert.equal(isFull(bucket, rate, 2_000), true);
  assert.equal(isFull(bucket, rate, 1_999), false);
});

Deno.test("rate: time running backwards refills nothing", () => {
  const rate = { perSecond: 1, burst: 1 };
  const { bucket } = tryTake(fullBucket(rate), rate, 10_000);
  assert.equal(tryTake(bucket, rate, 0).ok, false);
  assert.equal(tryTake(bucket, rate, 10_999).ok, false);
  assert.equal(tryTake(bucket, rate, 11_000).ok, true);
});

Deno.test("rate: pacing never refuses; it says how long until the bucket is back at zero", () => {
  const rate: Rate = { perSecond: 20, burst: 40 };
  let bucket = fullBucket(rate);
  const waits: number[] = [];
  for (let i = 0; i < 42; i++) {
    const paced = pace(bucket, rate, 0);
    bucket = paced.bucket;
    waits.push(paced.waitMs);
  }
  assert.deepEqual(waits.slice(0, 40), Array(40).fill(0));
  assert.deepEqual(waits.slice(40), [50, 100]);
  assert.equal(pace(fullBucket(rate), rate, 0, 50).waitMs, 500, "a costly frame waits more");
});

Deno.test("rate: a refund gives a token back, never above the burst", () => {
  const rate: Rate = { perSecond: 1, burst: 2 };
  const taken = tryTake(fullBucket(rate), rate, 0);
  assert.equal(available(refund(taken.bucket, rate, 0), rate, 0), 2);
  assert.equal(available(refund(fullBucket(rate), rate, 0), rate, 0), 2);
});

Deno.test("rate property: no window lets through more than burst + rate x its length, refunds included", () => {
  let refusals = 0;
  fc.assert(
    fc.property(rates, times(50), fc.array(fc.boolean(), { maxLength: 200 }), (rate, at, back) => {
      let bucket = fullBucket(rate);
      const kept: number[] = [];
      at.forEach((now, i) => {
        const taken = tryTake(bucket, rate, now);
        bucket = taken.bucket;
        if (!taken.ok) return void refusals++;
        if (back[i]) bucket = refund(bucket, rate, now);
        else kept.push(now);
      });
      for (let i = 0; i < kept.length; i++) {
        for (let j = i; j < kept.length; j++) {
          const bound = rate.burst + (rate.perSecond * (kept[j]! - kept[i]!)) / 1000;
          if (j - i + 1 > bound + 1e-6) return false;
        }
      }
      return true;
    }),
    { numRuns: 200 },
  );
  assert.ok(refusals > 0, "the generated arrivals do meet the limit");
});

Deno.test("rate property: an honest client (at most the rate, bursts within the burst) is never refused", () => {
  fc.assert(
    fc.property(
      rates,
      fc.array(fc.record({ size: fc.nat(), pause: fc.double({ min: 1, max: 3, noNaN: true }) }), {
        maxLength: 50,
      }),
      (rate, bursts) => {
        const at: number[] = [];
        let t = 0;
        for (const { size, pause } of bursts) {
          const n = 1 + (size % rate.burst);
          t += Math.ceil((pause * (n * 1000)) / rate.perSecond);
          for (let k = 0; k < n; k++) at.push(t);
        }
        return run(at, rate).every(Boolean);
      },
    ),
  );
  fc.assert(
    fc.property(rates, fc.nat({ max: 300 }), (rate, n) => {
      const spacing = Math.ceil(1000 / rate.perSecond);
      return run(Array.from({ length: n }, (_, i) => i * spacing), rate).every(Boolean);
    }),
  );
});

Deno.test("rate property: retryAfterMs is exact: refused 1 ms before it, allowed at it", () => {
  let refusals = 0;
  const wholeMs = times(20).map((at) => at.map(Math.round));
  fc.assert(
    fc.property(rates, wholeMs, (rate, at) => {
      let bucket = fullBucket(rate);
      for (const now of at) {
        const taken = tryTake(bucket, rate, now);
        if (!taken.ok) {
          refusals++;
          if (taken.retryAfterMs < 1) return false;
          if (!tryTake(taken.bucket, rate, now + taken.retryAfterMs).ok) return false;
          if (
            taken.retryAfterMs > 1 && tryTake(taken.bucket, rate, now + taken.retryAfterMs - 1).ok
          ) {
            return false;
          }
        }
        bucket = taken.bucket;
      }
      return true;
    }),
    { numRuns: 300 },
  );
  assert.ok(refusals > 0, "the generated arrivals do meet the limit");
});

Deno.test("rate property: a paced source handles at most burst + rate x T (before its last frame) in any window", () => {
  fc.assert(
    fc.property(
      rates,
      fc.array(
        fc.record({ gap: fc.integer({ min: 0, max: 200 }), cost: fc.constantFrom(1, 1, 1, 10) }),
        { maxLength: 200 },
      ),
      (rate, frames) => {
        let bucket = fullBucket(rate);
        let arrival = 0;
        let free = 0;
        const handled: { at: number; cost: number }[] = [];
        for (const { gap, cost } of frames) {
          arrival += gap;
          const at = Math.max(arrival, free);
          const paced = pace(bucket, rate, at, cost);
          bucket = paced.bucket;
          free = at + paced.waitMs;
          handled.push({ at, cost });
        }
        for (let i = 0; i < handled.length; i++) {
          let spent = 0;
          for (let j = i; j < handled.length; j++) {
            spent += handled[j]!.cost;
            const window = handled[j]!.at - handled[i]!.at;
            const allowed = rate.burst + (rate.perSecond * window) / 1000;
            if (spent - handled[j]!.cost > allowed + 1e-6) return false;
          }
        }
        return true;
      },
    ),
  );
});

Deno.test("KeyedBuckets: keys are limited apart; quiet ones are forgotten", () => {
  const limiter = new KeyedBuckets({ perSecond: 10, burst: 2 });
  assert.equal(limiter.tryTake("203.0.113.1", 0).ok, true);
  assert.equal(limiter.tryTake("203.0.113.1", 0).ok, true);
  assert.deepEqual(limiter.tryTake("203.0.113.1", 0), { ok: false, retryAfterMs: 100 });
  assert.equal(limiter.tryTake("203.0.113.2", 0).ok, true, "another key has its own");
  limiter.refund("203.0.113.1", 0);
  assert.equal(limiter.tryTake("203.0.113.1", 0).ok, true, "a refunded token");
  for (let i = 0; i < 1_000; i++) limiter.tryTake(`2001:db8::${i.toString(16)}`, 1);
  assert.equal(limiter.tracked, 1_002);
  limiter.tryTake("203.0.113.3", 5_000);
  assert.equal(limiter.tracked, 1, "only the newest key is remembered");
  assert.throws(() => new KeyedBuckets({ perSecond: 0, burst: 1 }), RangeError);
  assert.throws(() => new KeyedBuckets({ perSecond: 1, burst: 0 }), RangeError);
});
