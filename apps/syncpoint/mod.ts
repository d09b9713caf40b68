/**
 * syncpoint: an HTTP rendezvous service. `POST /wait-for-second-party/:id` holds the first
 * party until the second arrives (both get 200 and each other's payload) or the timeout
 * passes (408). {@link startSyncpoint} runs the service, {@link waitForSecondParty} is its
 * client. Importing this module does nothing by itself: no connection, file or timer.
 *
 * @example
 * ```ts ignore
 * import { startSyncpoint, waitForSecondParty } from "@duet/syncpoint";
 *
 * const syncpoint = await startSyncpoint({ port: 0 });
 * const [a, b] = await Promise.all([
 *   waitForSecondParty(syncpoint.url, "job-7", { payload: "from a" }),
 *   waitForSecondParty(syncpoint.url, "job-7", { payload: "from b" }),
 * ]);
 * console.log(a.peerPayload, b.peerPayload); // "from b" "from a"
 * await syncpoint.shutdown();
 * ```
 *
 * @module
 */
export { DEFAULTS, type RunningSyncpoint, startSyncpoint, type SyncpointConfig } from "./server.ts";
export {
  ApiError,
  createApp,
  type HandlerOptions,
  ID_PATTERN,
  ID_RULE,
  type SyncpointApp,
} from "./handler.ts";
export {
  type Arrival,
  LocalRendezvous,
  type LocalRendezvousOptions,
  type Outcome,
  type Presence,
  type Refusal,
  type Rendezvous,
  type RendezvousEvents,
  type RendezvousLimits,
} from "./rendezvous.ts";
export { type HoldLimits, type HoldRefusal, isLoopback, WaitingLedger } from "./limits.ts";
export { type MetricSources, SyncpointMetrics } from "./metrics.ts";
export {
  ANSWER_GRACE_MS,
  MAX_ANSWER_BYTES,
  type PairResult,
  type RetryEvent,
  type RetryPolicy,
  SyncpointError,
  UNASKED_WAIT_CAP_MS,
  waitForSecondParty,
  type WaitOptions,
} from "./client.ts";
export {
  CodeExchangeError,
  MAX_CODE_ID_LENGTH,
  maxCodePayloadBytes,
  waitWithCode,
} from "./code_exchange.ts";
export type { RunningService } from "@duet/core/service";
export type { Rate } from "@duet/net/rate";
