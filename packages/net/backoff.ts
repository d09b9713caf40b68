/**
 * The backoff of every accept loop in duet (packages/net/serve.ts listening again,
 * packages/net/http1.ts, apps/chat/server_accept.ts accepting): how long to wait before the
 * n-th retry of one outage. The numbers are the accept loops'; the policy is duet's one
 * (`@duet/core/backoff`), without jitter: a listener has no peers to fall in step with.
 *
 * @module
 */
import { backoffMs } from "@duet/core/backoff";

/** 5 ms before the first retry, doubling to at most 1 s. */
export const ACCEPT_BACKOFF_MS = { first: 5, max: 1_000 } as const;

/**
 * How long to wait before retry number `attempt` (1, 2, ...) of one outage, in ms: 5, 10,
 * 20, ... ms, at most 1,000 ms (below 1 counts as 1).
 *
 * @param attempt The retry's number in this outage, from 1.
 * @returns Milliseconds, in [5, 1000].
 *
 * @example
 * ```ts
 * import { acceptBackoffMs } from "./backoff.ts";
 * if (acceptBackoffMs(1) !== 5 || acceptBackoffMs(20) !== 1_000) throw new Error("unreachable");
 * ```
 */
export function acceptBackoffMs(attempt: number): number {
  const policy = {
    initialMs: ACCEPT_BACKOFF_MS.first,
    maxMs: ACCEPT_BACKOFF_MS.max,
    jitter: "none",
  } as const;
  return backoffMs(policy, attempt, 0);
}
