/**
 * Pure parts of the client: reply statistics, the reconnect backoff and the outage
 * budget (circuit breaker). No clocks or sockets, so they are tested alone.
 *
 * @module
 */
import { backoffMs, type BackoffPolicy } from "@duet/core/backoff";

export type { BackoffPolicy };

/** Round-trip figures in milliseconds. */
export interface RttSummary {
  /** The shortest. */
  min: number;
  /** The mean. */
  avg: number;
  /** The longest. */
  max: number;
  /** The median (nearest rank). */
  p50: number;
  /** The 99th percentile (nearest rank). */
  p99: number;
}

/** Collects round trips. */
export class RttStats {
  readonly #samples: number[] = [];
  #sum = 0;

  /** Adds one round trip, in milliseconds. */
  add(ms: number): void {
    this.#samples.push(ms);
    this.#sum += ms;
  }

  /** How many round trips were added. */
  get count(): number {
    return this.#samples.length;
  }

  /** min/avg/max and nearest-rank percentiles; null with no samples. */
  summary(): RttSummary | null {
    const n = this.#samples.length;
    if (!n) return null;
    const sorted = [...this.#samples].sort((a, b) => a - b);
    const rank = (p: number) => sorted[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))]!;
    return {
      min: sorted[0]!,
      avg: this.#sum / n,
      max: sorted[n - 1]!,
      p50: rank(0.5),
      p99: rank(0.99),
    };
  }
}

/**
 * The delay before reconnection attempt `attempt` (0-based here, as the client counts its
 * passes), in whole ms: `@duet/core`'s one policy (with "full" jitter, uniform in
 * [0, min(maxMs, initialMs * 2^attempt)), so clients that lost the same server do not return
 * in step).
 */
export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number): number {
  return Math.floor(backoffMs(policy, attempt + 1, random()));
}

/** An outage: when the connection was lost and, once over, how long it lasted. */
export interface Outage {
  /** Why the connection was lost (or the first attempt failed). */
  reason: string;
  /** When, on the monotonic clock (milliseconds). */
  startedAt: number;
  /** How long it lasted; absent while under way. */
  durationMs?: number;
}

/**
 * The circuit breaker: an outage longer than the budget opens it, and the client stops.
 */
export class OutageBudget {
  /** Every outage, in order; the last is under way while it has no `durationMs`. */
  readonly outages: Outage[] = [];
  readonly #budgetMs: number;

  /**
   * A breaker with no outage yet.
   *
   * @param budgetMs How long an outage may last before the client stops.
   */
  constructor(budgetMs: number) {
    this.#budgetMs = budgetMs;
  }

  /** The outage under way, if any. */
  get current(): Outage | undefined {
    const last = this.outages.at(-1);
    return last && last.durationMs === undefined ? last : undefined;
  }

  /** Records the start of an outage (a second call during one is ignored). */
  begin(reason: string, now: number): void {
    if (!this.current) this.outages.push({ reason, startedAt: now });
  }

  /** Ends the outage under way; returns how long it lasted. */
  end(now: number): number | undefined {
    const outage = this.current;
    if (!outage) return undefined;
    outage.durationMs = now - outage.startedAt;
    return outage.durationMs;
  }

  /** True when the outage under way has used up the budget. */
  exhausted(now: number): boolean {
    const outage = this.current;
    return outage !== undefined && now - outage.startedAt >= this.#budgetMs;
  }

  /** Total time spent in outages, the one under way counted up to `now`. */
  totalMs(now: number): number {
    return this.outages.reduce((sum, o) => sum + (o.durationMs ?? now - o.startedAt), 0);
  }
}
