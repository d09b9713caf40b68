/**
 * Token buckets, the one rate rule of every duet server: pure functions over a small state,
 * time passed in by the caller (milliseconds on any monotonic clock), so each rule is
 * tested without clocks. Two ways to use one: {@link pace} (never refuse; say how long to
 * wait, for a source that is read more slowly) and {@link tryTake} (refuse, saying when to
 * come back). {@link KeyedBuckets} keeps one bucket per key (a client address), forgetting
 * full ones. Written here because the arithmetic is a few lines and every library found
 * wraps it in timers or promises that a pure step function cannot use.
 *
 * Credit is counted in thousandths of a token, so that with whole milliseconds and whole
 * rates the arithmetic is exact (a `retryAfterMs` is exactly when a token is there).
 *
 * @module
 */

/** A refill: `perSecond` tokens a second (> 0), holding at most `burst` (>= 1). */
export interface Rate {
  /** Tokens added per second, a number > 0 (fractions allowed). */
  perSecond: number;
  /** The most tokens the bucket holds, a number >= 1: how many can be taken at once. */
  burst: number;
}

/**
 * A bucket's state: `credit` thousandths of a token at time `at` (ms), or `at` null for a
 * bucket never used (full). Credit below zero, after {@link pace}, is time to wait out.
 */
export interface Bucket {
  /** Credit in thousandths of a token; below zero after {@link pace} took more than it held. */
  readonly credit: number;
  /** When `credit` was counted, in ms on the caller's monotonic clock; null: never used. */
  readonly at: number | null;
}

const TOKEN = 1000;

/** Throws RangeError unless `rate.perSecond` > 0 and `rate.burst` >= 1. */
export function checkRate(rate: Rate): Rate {
  if (!(rate.perSecond > 0) || !(rate.burst >= 1)) {
    throw new RangeError(
      `A rate needs perSecond > 0 and burst >= 1, not ${JSON.stringify(rate)}`,
    );
  }
  return rate;
}

/** A full bucket. */
export function fullBucket(rate: Rate): Bucket {
  return { credit: rate.burst * TOKEN, at: null };
}

/** Credit at `now`, refilled since the last use, at most the burst; time going back adds none. */
function refilled(bucket: Bucket, rate: Rate, now: number): number {
  if (bucket.at === null) return bucket.credit;
  const elapsed = Math.max(0, now - bucket.at);
  return Math.min(rate.burst * TOKEN, bucket.credit + elapsed * rate.perSecond);
}

/** The tokens `bucket` holds at `now` (ms): at most `burst`, below zero while paced. */
export function available(bucket: Bucket, rate: Rate, now: number): number {
  return refilled(bucket, rate, now) / TOKEN;
}

/**
 * Pacing: takes `cost` tokens whatever the bucket holds. When that leaves it below zero,
 * `waitMs` is how long until it is back at zero: the caller handles nothing more from this
 * source until then, so a source that keeps sending gets `perSecond` on average, in order,
 * and is never refused.
 *
 * @returns the bucket after the take, and `waitMs` >= 0 (whole milliseconds).
 */
export function pace(
  bucket: Bucket,
  rate: Rate,
  now: number,
  cost = 1,
): { bucket: Bucket; waitMs: number } {
  const credit = refilled(bucket, rate, now) - cost * TOKEN;
  const waitMs = credit < 0 ? Math.ceil(-credit / rate.perSecond) : 0;
  return { bucket: { credit, at: now }, waitMs };
}

/**
 * Refusal: takes `cost` tokens only if the bucket holds them. A refused take leaves the
 * bucket as it was (a client that retries too early is not pushed further back);
 * `retryAfterMs` is then exactly how long until the tokens are there.
 *
 * Over any interval of T ms, the takes that succeed cost at most `burst + perSecond * T /
 * 1000` (rate_test.ts, generated sequences).
 */
export function tryTake(
  bucket: Bucket,
  rate: Rate,
  now: number,
  cost = 1,
): { bucket: Bucket; ok: boolean; retryAfterMs: number } {
  const credit = refilled(bucket, rate, now);
  if (credit >= cost * TOKEN) {
    return { bucket: { credit: credit - cost * TOKEN, at: now }, ok: true, retryAfterMs: 0 };
  }
  return { bucket, ok: false, retryAfterMs: Math.ceil((cost * TOKEN - credit) / rate.perSecond) };
}

/** Gives back `cost` tokens taken for work that turned out not to need them; never above the burst. */
export function refund(bucket: Bucket, rate: Rate, now: number, cost = 1): Bucket {
  return {
    credit: Math.min(rate.burst * TOKEN, refilled(bucket, rate, now) + cost * TOKEN),
    at: now,
  };
}

/** Whether a bucket is full at `now`: then it is the same as a new one and can be dropped. */
export function isFull(bucket: Bucket, rate: Rate, now: number): boolean {
  return refilled(bucket, rate, now) >= rate.burst * TOKEN;
}

/**
 * One bucket per key (a client address, say). Memory: one entry per key used within the
 * last `burst / perSecond` seconds (plus up to one sweep interval); full buckets are
 * forgotten, since a missing bucket is a full one.
 */
export class KeyedBuckets {
  /** The refill every key's bucket follows (checked by the constructor). */
  readonly rate: Rate;
  readonly #buckets = new Map<string, Bucket>();
  readonly #sweepEveryMs: number;
  #sweptAt = -Infinity;

  /**
   * Buckets for many keys, all with the same `rate`.
   *
   * @param rate The refill, checked by {@link checkRate}.
   * @throws {RangeError} unless `rate.perSecond` > 0 and `rate.burst` >= 1.
   *
   * @example Allow 2 requests a second per client, bursts of 5
   * ```ts
   * import { KeyedBuckets } from "./rate.ts";
   * const limits = new KeyedBuckets({ perSecond: 2, burst: 5 });
   * const now = performance.now();
   * const { ok, retryAfterMs } = limits.tryTake("203.0.113.7", now);
   * if (!ok) console.log(`come back in ${retryAfterMs} ms`);
   * ```
   */
  constructor(rate: Rate) {
    this.rate = checkRate(rate);
    // A bucket left alone this long is full again.
    this.#sweepEveryMs = Math.max(1_000, (rate.burst / rate.perSecond) * 1000);
  }

  /** {@link tryTake} on `key`'s bucket. */
  tryTake(key: string, now: number, cost = 1): { ok: boolean; retryAfterMs: number } {
    const taken = tryTake(this.#bucket(key, now), this.rate, now, cost);
    this.#buckets.set(key, taken.bucket);
    return { ok: taken.ok, retryAfterMs: taken.retryAfterMs };
  }

  /** {@link refund} to `key`'s bucket. */
  refund(key: string, now: number, cost = 1): void {
    this.#buckets.set(key, refund(this.#bucket(key, now), this.rate, now, cost));
  }

  /** Keys with a bucket not known to be full (what the memory grows with). */
  get tracked(): number {
    return this.#buckets.size;
  }

  #bucket(key: string, now: number): Bucket {
    if (now - this.#sweptAt >= this.#sweepEveryMs) {
      this.#sweptAt = now;
      for (const [k, bucket] of this.#buckets) {
        if (isFull(bucket, this.rate, now)) this.#buckets.delete(k);
      }
    }
    return this.#buckets.get(key) ?? fullBucket(this.rate);
  }
}
