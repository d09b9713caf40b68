/**
 * webtransport: WebTransport over HTTP/3 for Deno's raw QUIC API. A server
 * (`serveWebTransport`) and a client (`connectWebTransport`) with W3C-like sessions, the
 * certificates for hash pinning (generation, rotation, checks), and the pure codecs under
 * them: QUIC varints, HTTP/3 frames and SETTINGS, static-table QPACK with Huffman strings,
 * capsules and HTTP datagrams.
 *
 * Durations are milliseconds; any past `setTimeout`'s 2^31 − 1 ms (24.8 days) is honoured,
 * not fired early, and a bad one is a `RangeError` naming the option.
 *
 * @example A server and a client pinning its certificate
 * ```ts ignore
 * import {
 *   connectWebTransport,
 *   generateCertificate,
 *   serveWebTransport,
 * } from "@duet/webtransport";
 *
 * const certificate = await generateCertificate();
 * const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
 * (async () => {
 *   for await (const request of server.requests) {
 *     const session = await request.accept();
 *     session.datagrams.readable.pipeTo(session.datagrams.writable).catch(() => {});
 *   }
 * })();
 * const session = await connectWebTransport(`https://127.0.0.1:${server.addr.port}/`, {
 *   serverCertificateHashes: [{ algorithm: "sha-256", value: certificate.sha256 }],
 *   signal: AbortSignal.timeout(5_000),
 * });
 * await session.close();
 * await server.shutdown({ graceMs: 1_000 });
 * ```
 *
 * @module
 */
export { H3, H3Error } from "./errors.ts";
export {
  encodeVarint,
  readVarint,
  type Varint,
  VARINT_MAX,
  varintLength,
  writeVarint,
} from "./varint.ts";
export {
  decodeSettings,
  encodeFrame,
  encodeSettings,
  type Frame,
  FrameReader,
  FrameType,
  Setting,
  StreamType,
} from "./frames.ts";
export { decodeFieldSection, encodeFieldSection, type Field } from "./qpack.ts";
export { huffmanDecode, huffmanEncode } from "./huffman.ts";
export {
  type Capsule,
  CapsuleType,
  decodeCloseSession,
  decodeDatagram,
  encodeCapsule,
  encodeCloseSession,
  encodeDatagram,
  MAX_CLOSE_REASON_BYTES,
  readCapsule,
  truncateReason,
} from "./capsule.ts";
export {
  type Dialect,
  DIALECTS,
  localSettings,
  negotiate,
  peerDialects,
  requestDialect,
  type Role,
  upgradeToken,
} from "./dialect.ts";
export {
  chooseProtocol,
  encodeAvailableProtocols,
  encodeProtocol,
  parseAvailableProtocols,
  parseProtocol,
  validateProtocols,
} from "./protocols.ts";
export { EARLY_LIMITS, type EarlyLimits } from "./early.ts";
export {
  DEFAULT_WINDOWS,
  FlowCapsule,
  flowControlEnabled,
  FlowControlError,
  type FlowLimits,
  type FlowSignal,
  SessionFlow,
  type StreamKind,
} from "./flow.ts";
export {
  type CertificateAuthority,
  type CertificateOptions,
  CertificateRotation,
  checkPinnable,
  generateCertificate,
  generateCertificateAuthority,
  type GeneratedCertificate,
  MAX_VALIDITY_DAYS,
  type PinningCheck,
  type RotationOptions,
} from "./cert.ts";
export { type BidirectionalStream } from "./streams.ts";
export { type CloseInfo, DATAGRAM_QUEUE, WebTransportSession } from "./session.ts";
export { type SessionRequest, SETTINGS_TIMEOUT_MS } from "./connection.ts";
export {
  DEFAULT_GRACE_MS,
  type ServeOptions,
  serveWebTransport,
  type ShutdownOptions,
  type WebTransportServer,
} from "./server.ts";
export {
  type CertificateHash,
  type ConnectOptions,
  connectWebTransport,
  WebTransportProtocolError,
  WebTransportRejectedError,
  WebTransportUnsupportedError,
} from "./client.ts";
