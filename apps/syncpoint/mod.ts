/**
 * syncpoint: an HTTP rendezvous service. `POST /wait-for-second-party/:id` holds the first
 * party until the second arrives (both get 200 and each other's payload) or the timeout
 * passes (408).
 *
 * @module
 */
export { DEFAULTS, type RunningSyncpoint, startSyncpoint, type SyncpointConfig } from "./server.ts";
export { ApiError, createApp, type HandlerOptions, ID_PATTERN, ID_RULE } from "./handler.ts";
export {
  type Arrival,
  LocalRendezvous,
  type LocalRendezvousOptions,
  type Outcome,
  type Refusal,
  type Rendezvous,
  type RendezvousLimits,
} from "./rendezvous.ts";
export { type HoldLimits, type HoldRefusal, isLoopback, WaitingLedger } from "./limits.ts";
export { type MetricSources, SyncpointMetrics } from "./metrics.ts";
export { type PairResult, SyncpointError, waitForSecondParty, type WaitOptions } from "./client.ts";
