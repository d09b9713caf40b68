/**
 * ping: WebTransport ping-pong. A server that answers `ping` with `pong` over streams and
 * datagrams (and serves a browser page and a WebSocket echo on the same port), and a
 * client that measures it, recovers from outages and can find its server by itself.
 *
 * @module
 */
export * from "./protocol.ts";
export {
  DEFAULTS,
  type PingServerConfig,
  type RunningPingServer,
  startPingServer,
  WS_MAX_BACKLOG_BYTES,
} from "./server.ts";
export * from "./policy.ts";
export {
  CLIENT_DEFAULTS,
  NoQuicAnswerError,
  type PingEvent,
  type PingMode,
  type PingOptions,
  type PingSummary,
  type PingTrust,
  runPing,
} from "./client.ts";
export * from "./fallback.ts";
export * from "./stats.ts";
export {
  fetchServerInfo,
  isLoopback,
  parseCertHash,
  resolveTrust,
  type TrustChoice,
  validateInfo,
} from "./trust.ts";
export {
  type Announcer,
  type Discovered,
  discoverServer,
  lookupSrv,
  orderSrv,
  SERVICE_TYPE,
  type SrvRank,
  startAnnouncer,
} from "./discovery.ts";
