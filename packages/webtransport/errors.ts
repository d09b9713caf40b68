/**
 * HTTP/3, QPACK and WebTransport error codes, and the error the codecs throw.
 *
 * @module
 */

/** HTTP/3 error codes (RFC 9114 Section 8.1), QPACK's (RFC 9204 Section 6), datagrams' (RFC 9297). */
export const H3 = {
  NO_ERROR: 0x100,
  GENERAL_PROTOCOL_ERROR: 0x101,
  INTERNAL_ERROR: 0x102,
  STREAM_CREATION_ERROR: 0x103,
  CLOSED_CRITICAL_STREAM: 0x104,
  FRAME_UNEXPECTED: 0x105,
  FRAME_ERROR: 0x106,
  EXCESSIVE_LOAD: 0x107,
  ID_ERROR: 0x108,
  SETTINGS_ERROR: 0x109,
  MISSING_SETTINGS: 0x10a,
  REQUEST_REJECTED: 0x10b,
  REQUEST_CANCELLED: 0x10c,
  REQUEST_INCOMPLETE: 0x10d,
  MESSAGE_ERROR: 0x10e,
  CONNECT_ERROR: 0x10f,
  VERSION_FALLBACK: 0x110,
  QPACK_DECOMPRESSION_FAILED: 0x200,
  QPACK_ENCODER_STREAM_ERROR: 0x201,
  QPACK_DECODER_STREAM_ERROR: 0x202,
  DATAGRAM_ERROR: 0x33,
  /** WebTransport (draft-ietf-webtrans-http3): a stream for a session that is not there. */
  WT_BUFFERED_STREAM_REJECTED: 0x3994bd84,
  WT_SESSION_GONE: 0x170d7b68,
  WT_FLOW_CONTROL_ERROR: 0x045d4487,
  /** The server's WT-Protocol is not one the client offered. */
  WT_ALPN_ERROR: 0x0817b3dd,
  /** The peer's SETTINGS announce no WebTransport dialect we speak. */
  WT_REQUIREMENTS_NOT_MET: 0x212c0d48,
} as const;

/**
 * A peer broke the protocol. `code` is the HTTP/3 error code to close the connection (or
 * reset the stream) with; this is the error callers are meant to catch.
 */
export class H3Error extends Error {
  /** Always "H3Error". */
  override name = "H3Error";
  /** The HTTP/3 application error code. */
  readonly code: number;
  /**
   * An error to close the connection (or stream) with.
   *
   * @param code the HTTP/3 application error code (see {@link H3})
   * @param message what went wrong, for the close reason and logs
   */
  constructor(code: number, message: string) {
    super(message);
    this.code = code;
  }
}
