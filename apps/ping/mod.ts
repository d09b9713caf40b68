/**
 * ping: WebTransport ping-pong. A server that answers `ping` with `pong` over streams and
 * datagrams (and serves a browser page and a WebSocket echo on the same port), and a
 * client that measures it, recovers from outages and can find its server by itself.
 *
 * @module
 */
export {
  answer,
  answerDatagram,
  answerMessage,
  encodeLine,
  LineSplitter,
  MAX_LINE_BYTES,
  parseReply,
  PING_PROTOCOL,
  pingLine,
  serveLines,
  violationReply,
} from "./protocol.ts";
export type { LineEvent } from "./protocol.ts";
export {
  DEFAULTS,
  type PingServerConfig,
  type PingServerInfo,
  type RunningPingServer,
  startPingServer,
} from "./server.ts";
export { WS_MAX_BACKLOG_BYTES } from "./ws_echo.ts";
export type { RunningService } from "@duet/core/service";
export type { CertificateHash } from "@duet/webtransport";
export {
  type AccessPolicy,
  checkAccess,
  choosePingProtocol,
  forLog,
  type HeaderLookup,
  LOGGED_TEXT_MAX,
  messageTooLong,
  originAllowed,
  presentedToken,
  publishedInfo,
  type Refusal,
  serviceUrl,
  tokenMatches,
  WS_BURST_SECONDS,
} from "./policy.ts";
export {
  CLIENT_DEFAULTS,
  NoQuicAnswerError,
  type PingMode,
  type PingOptions,
  type PingSummary,
  type PingTrust,
  runPing,
  validatePingOptions,
} from "./client.ts";
export { FINAL_STATUSES, type PingEvent, type PingTally } from "./client_core.ts";
export {
  describeTransportChange,
  type FallbackCommand,
  type FallbackConfig,
  type FallbackEvent,
  type FallbackState,
  type FallbackStep,
  INITIAL_FALLBACK_STATE,
  stepFallback,
  type Transport,
  webSocketUrls,
} from "./fallback.ts";
export {
  backoffDelay,
  type BackoffPolicy,
  type Outage,
  OutageBudget,
  RttStats,
  type RttSummary,
} from "./stats.ts";
export {
  type FetchedInfo,
  fetchServerInfo,
  isLoopback,
  parseCertHash,
  resolveTrust,
  type TrustChoice,
  validateInfo,
} from "./trust.ts";
export {
  type AnnounceOptions,
  type Announcer,
  type Discovered,
  type DiscoverOptions,
  discoverServer,
  lookupSrv,
  orderSrv,
  precheckAnnouncement,
  SERVICE_TYPE,
  type SrvRank,
  startAnnouncer,
} from "./discovery.ts";
