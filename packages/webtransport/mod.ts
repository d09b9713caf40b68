/**
 * webtransport: the pieces of a WebTransport-over-HTTP/3 layer for Deno's raw QUIC API.
 * So far the pure codecs: QUIC varints, HTTP/3 frames and SETTINGS, static-table QPACK
 * with Huffman strings, capsules (session close and drain) and HTTP datagrams. The
 * session layer on `Deno.QuicEndpoint` / `Deno.connectQuic` is next.
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
} from "./capsule.ts";
export {
  type CertificateAuthority,
  type CertificateOptions,
  generateCertificate,
  generateCertificateAuthority,
  type GeneratedCertificate,
  MAX_VALIDITY_DAYS,
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
export { type ConnectOptions, connectWebTransport, WebTransportRejectedError } from "./client.ts";
