/**
 * Capsules (RFC 9297 Section 3.2) on a WebTransport session's CONNECT stream, and HTTP
 * datagrams with the quarter-stream-id prefix (RFC 9297 Section 2.1).
 *
 * @module
 */
import { H3, H3Error } from "./errors.ts";
import { encodeFrame } from "./frames.ts";
import { readVarint, readVarintExact, varintLength, writeVarint } from "./varint.ts";

/** Capsule types. */
export const CapsuleType = {
  DATAGRAM: 0x00,
  CLOSE_WEBTRANSPORT_SESSION: 0x2843,
  DRAIN_WEBTRANSPORT_SESSION: 0x78ae,
} as const;

/** A capsule. */
export interface Capsule {
  /** The capsule type (see {@link CapsuleType}; unknown types are passed on too). */
  type: number;
  /** The capsule's value, without its type and length. */
  value: Uint8Array;
}

/** The longest reason a session close may carry, in bytes (draft-ietf-webtrans-http3). */
export const MAX_CLOSE_REASON_BYTES = 1024;

/** The bytes of one capsule: the same shape as an HTTP/3 frame (type, length, value). */
export function encodeCapsule(type: number, value: Uint8Array): Uint8Array {
  return encodeFrame(type, value);
}

/**
 * Reads one capsule at the start of `bytes`: the capsule and the bytes it took, or
 * undefined until more arrive. A capsule over `maxValue` bytes is H3_EXCESSIVE_LOAD.
 */
export function readCapsule(
  bytes: Uint8Array,
  maxValue = 64 * 1024,
): { capsule: Capsule; length: number } | undefined {
  const type = readVarint(bytes, 0);
  const size = type && readVarint(bytes, type.length);
  if (!type || !size) return undefined;
  if (size.value > maxValue) {
    throw new H3Error(
      H3.EXCESSIVE_LOAD,
      `Capsule of ${size.value} bytes; the limit is ${maxValue}`,
    );
  }
  const start = type.length + size.length;
  if (bytes.length < start + size.value) return undefined;
  return {
    capsule: { type: type.value, value: bytes.subarray(start, start + size.value) },
    length: start + size.value,
  };
}

/**
 * `reason` cut to at most `maxBytes` bytes of UTF-8 on a character boundary, as the W3C
 * API's close() does (a character is never split; lone surrogates count as U+FFFD, 3 bytes,
 * as they are sent). Returned unchanged when it fits.
 */
export function truncateReason(reason: string, maxBytes = MAX_CLOSE_REASON_BYTES): string {
  const bytes = new TextEncoder().encode(reason);
  if (bytes.length <= maxBytes) return reason;
  let end = maxBytes;
  // Continuation bytes are 0b10xxxxxx: step back to the first byte of the character.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes.subarray(0, end));
}

/** CLOSE_WEBTRANSPORT_SESSION: a 32-bit application error code and a UTF-8 reason. */
export function encodeCloseSession(code: number, reason: string): Uint8Array {
  if (!Number.isInteger(code) || code < 0 || code > 0xffffffff) {
    throw new RangeError(`Close code must be a 32-bit unsigned integer, got ${code}`);
  }
  const text = new TextEncoder().encode(reason);
  if (text.length > MAX_CLOSE_REASON_BYTES) {
    throw new RangeError(`Close reason is ${text.length} bytes; at most ${MAX_CLOSE_REASON_BYTES}`);
  }
  const value = new Uint8Array(4 + text.length);
  new DataView(value.buffer).setUint32(0, code);
  value.set(text, 4);
  return encodeCapsule(CapsuleType.CLOSE_WEBTRANSPORT_SESSION, value);
}

/** Decodes a CLOSE_WEBTRANSPORT_SESSION value; malformed is H3_MESSAGE_ERROR. */
export function decodeCloseSession(value: Uint8Array): { code: number; reason: string } {
  if (value.length < 4) throw new H3Error(H3.MESSAGE_ERROR, "Session close shorter than 4 bytes");
  if (value.length - 4 > MAX_CLOSE_REASON_BYTES) {
    throw new H3Error(H3.MESSAGE_ERROR, "Session close reason longer than 1024 bytes");
  }
  let reason: string;
  try {
    reason = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(value.subarray(4));
  } catch {
    throw new H3Error(H3.MESSAGE_ERROR, "Session close reason is not UTF-8");
  }
  return { code: new DataView(value.buffer, value.byteOffset).getUint32(0), reason };
}

/** An HTTP datagram for the session whose CONNECT stream has id `sessionId`. */
export function encodeDatagram(sessionId: number, payload: Uint8Array): Uint8Array {
  if (sessionId % 4 !== 0) {
    throw new RangeError(`Session id ${sessionId} is not a client-initiated bidirectional stream`);
  }
  const quarter = sessionId / 4;
  const out = new Uint8Array(varintLength(quarter) + payload.length);
  out.set(payload, writeVarint(out, 0, quarter));
  return out;
}

/** Splits a received datagram into its session id and payload; malformed is H3_DATAGRAM_ERROR. */
export function decodeDatagram(datagram: Uint8Array): { sessionId: number; payload: Uint8Array } {
  const quarter = readVarint(datagram, 0);
  if (!quarter) throw new H3Error(H3.DATAGRAM_ERROR, "Datagram without a quarter stream id");
  // RFC 9297 2.1: a quarter stream id of 2^60 or more cannot name a stream. Checked on the
  // exact value: as a number it is rounded there.
  if (quarter.value >= 2 ** 53 && readVarintExact(datagram)! >= 2n ** 60n) {
    throw new H3Error(H3.DATAGRAM_ERROR, "Quarter stream id of 2^60 or more");
  }
  return { sessionId: quarter.value * 4, payload: datagram.subarray(quarter.length) };
}
