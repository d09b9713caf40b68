/**
 * duet's one backoff policy: exponential, capped, with a chosen jitter. Every loop that
 * tries again (accepting connections, reconnecting a client, retrying a rendezvous,
 * resending) computes its pause here; only the numbers differ, each chosen for its loop
 * and named where it is used. Written here because it is one line of arithmetic that
 * every retry library wraps in its own loop, timers and error handling, which our pure
 * state machines must own themselves.
 *
 * @module
 */

/** How the pauses of one retry loop grow. */
export interface BackoffPolicy {
  /** The ceiling of the first pause, in ms (> 0). */
  initialMs: number;
  /** The largest ceiling, in ms (≥ initialMs). */
  maxMs: number;
  /**
   * How much of the ceiling is random, so that clients that failed together do not return
   * together: "none" (the ceiling itself), "equal" (half fixed, half random) or "full"
   * (uniform from 0 to the ceiling). AWS's architecture blog, "Exponential Backoff And
   * Jitter", compares the three.
   */
  jitter: "none" | "equal" | "full";
}

/**
 * The pause before retry number `attempt` (1 for the first retry), in ms: the ceiling
 * `min(maxMs, initialMs × 2^(attempt − 1))` with the policy's jitter applied. Not rounded:
 * each loop rounds as its unit needs (timers take fractions).
 *
 * @param attempt 1, 2, ...; values below 1 count as 1, and huge ones do not overflow.
 * @param random A number in [0, 1): `Math.random()` in the shells, a fixed one in tests.
 * @returns A number of ms in [0, maxMs]; below the ceiling with "full" jitter and
 *   `random` < 1.
 *
 * @example
 * ```ts
 * const policy = { initialMs: 100, maxMs: 2_000, jitter: "none" } as const;
 * backoffMs(policy, 1, 0); // 100
 * backoffMs(policy, 6, 0); // 2000 (3,200 capped)
 * backoffMs({ ...policy, jitter: "full" }, 2, 0.5); // 100 (half of 200)
 * ```
 */
export function backoffMs(policy: BackoffPolicy, attempt: number, random: number): number {
  const doublings = Math.max(0, Math.min(Math.floor(attempt) - 1, 60)) || 0;
  const ceiling = Math.min(policy.maxMs, policy.initialMs * 2 ** doublings);
  const delay = policy.jitter === "none"
    ? ceiling
    : policy.jitter === "equal"
    ? ceiling / 2 + (random * ceiling) / 2
    : random * ceiling;
  return delay;
}
