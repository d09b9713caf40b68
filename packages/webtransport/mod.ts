/**
 * webtransport: WebTransport over HTTP/3 for Deno's raw QUIC API. A server
 * (`serveWebTransport`) and a client (`connectWebTransport`) with W3C-like sessions, the
 * certificates for hash pinning (generation, rotation, checks), and the pure codecs under
 * them: QUIC varints, HTTP/3 frames and SETTINGS, static-table QPACK with Huffman strings,
 * capsules and HTTP datagrams.
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
  SessionFlow,
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
export {
  type BidirectionalStream,
  type CloseInfo,
  type ServeOptions,
  serveWebTransport,
  type SessionRequest,
  type WebTransportServer,
  WebTransportSession,
} from "./server.ts";
export {
  type CertificateHash,
  type ConnectOptions,
  connectWebTransport,
  WebTransportProtocolError,
  WebTransportRejectedError,
  WebTransportUnsupportedError,
} from "./client.ts";
