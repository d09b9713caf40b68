/**
 * HTTP/3 frames (RFC 9114 Section 7): type and length as varints, then the payload; and
 * the SETTINGS payload, including the settings WebTransport needs.
 *
 * @module
 */
import { ByteQueue } from "@duet/core/bytes";
import { H3, H3Error } from "./errors.ts";
import { readVarint, readVarintExact, varintLength, writeVarint } from "./varint.ts";

/** Frame types (RFC 9114 Section 7.2). */
export const FrameType = {
  DATA: 0x00,
  HEADERS: 0x01,
  CANCEL_PUSH: 0x03,
  SETTINGS: 0x04,
  PUSH_PROMISE: 0x05,
  GOAWAY: 0x07,
  MAX_PUSH_ID: 0x0d,
  /** Not a frame: on a bidirectional stream it announces a WebTransport stream. */
  WEBTRANSPORT_STREAM: 0x41,
} as const;

/** Unidirectional stream types (RFC 9114 6.2, RFC 9204 4.2, draft-ietf-webtrans-http3). */
export const StreamType = {
  CONTROL: 0x00,
  PUSH: 0x01,
  QPACK_ENCODER: 0x02,
  QPACK_DECODER: 0x03,
  WEBTRANSPORT: 0x54,
} as const;

/**
 * Setting identifiers. RFC 9114 7.2.4.1, RFC 9204 5, RFC 9220 (extended CONNECT), RFC 9297
 * (datagrams), and draft-ietf-webtrans-http3, whose drafts announce WebTransport under a
 * new identifier each time the wire format changes (see dialect.ts): ENABLE_WEBTRANSPORT
 * (drafts 02–06), WEBTRANSPORT_MAX_SESSIONS (07–12), WT_MAX_SESSIONS (13–14), WT_ENABLED
 * (15–16). The WT_INITIAL_* settings are the flow-control limits of drafts 12–16.
 */
export const Setting = {
  QPACK_MAX_TABLE_CAPACITY: 0x01,
  MAX_FIELD_SECTION_SIZE: 0x06,
  QPACK_BLOCKED_STREAMS: 0x07,
  ENABLE_CONNECT_PROTOCOL: 0x08,
  H3_DATAGRAM: 0x33,
  /** The pre-RFC draft-04/05 datagram setting, still sent by some clients. */
  H3_DATAGRAM_DRAFT04: 0xffd277,
  ENABLE_WEBTRANSPORT: 0x2b603742,
  WEBTRANSPORT_MAX_SESSIONS: 0xc671706a,
  WT_MAX_SESSIONS: 0x14e9cd29,
  WT_ENABLED: 0x2c7cf000,
  WT_INITIAL_MAX_DATA: 0x2b61,
  WT_INITIAL_MAX_STREAMS_UNI: 0x2b64,
  WT_INITIAL_MAX_STREAMS_BIDI: 0x2b65,
} as const;

/** A complete frame. */
export interface Frame {
  /** The frame type (see {@link FrameType}; unknown types are passed on too). */
  type: number;
  /** The frame's payload, without its type and length. */
  payload: Uint8Array;
}

/** Identifiers reserved for HTTP/2 settings, which HTTP/3 forbids (RFC 9114 7.2.4.1). */
const HTTP2_ONLY_SETTINGS = new Set([0x02, 0x03, 0x04, 0x05]);
/** Frame types of HTTP/2 that HTTP/3 forbids (RFC 9114 7.2.8). */
const HTTP2_ONLY_FRAMES = new Set([0x02, 0x06, 0x08, 0x09]);

/** The bytes of one frame. */
export function encodeFrame(type: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(varintLength(type) + varintLength(payload.length) + payload.length);
  let offset = writeVarint(out, 0, type);
  offset = writeVarint(out, offset, payload.length);
  out.set(payload, offset);
  return out;
}

/**
 * Splits a stream's bytes into frames as they arrive. Feed chunks with {@link push} and
 * take frames from {@link next}. Payloads over `maxPayload` bytes are refused with
 * H3_EXCESSIVE_LOAD before they are buffered; HTTP/2-only frame types with H3_FRAME_UNEXPECTED.
 *
 * @example
 * ```ts
 * import { encodeFrame, FrameReader, FrameType } from "./frames.ts";
 * const reader = new FrameReader();
 * reader.push(encodeFrame(FrameType.DATA, new Uint8Array([1, 2, 3])));
 * const frame = reader.next();
 * if (frame?.type !== FrameType.DATA || frame.payload.length !== 3) throw new Error();
 * ```
 */
export class FrameReader {
  readonly #queue = new ByteQueue();
  readonly #maxPayload: number;

  /**
   * A reader with no bytes yet.
   *
   * @param maxPayload the largest payload accepted, in bytes (default 64 KiB); a longer
   *   frame is an error.
   */
  constructor(maxPayload = 64 * 1024) {
    this.#maxPayload = maxPayload;
  }

  /**
   * Appends bytes read from the stream. When nothing is held, `chunk` is kept without a copy
   * (payloads of {@link FrameReader.next} may be views of it): do not write into it afterwards.
   */
  push(chunk: Uint8Array): void {
    this.#queue.push(chunk);
  }

  /** The next complete frame, or undefined until more bytes arrive. */
  next(): Frame | undefined {
    const buffer = this.#queue.bytes;
    const type = readVarint(buffer, 0);
    if (!type) return undefined;
    const length = readVarint(buffer, type.length);
    if (!length) return undefined;
    if (HTTP2_ONLY_FRAMES.has(type.value)) {
      throw new H3Error(
        H3.FRAME_UNEXPECTED,
        `Frame type 0x${type.value.toString(16)} is HTTP/2 only`,
      );
    }
    if (length.value > this.#maxPayload) {
      throw new H3Error(
        H3.EXCESSIVE_LOAD,
        `Frame of type 0x${
          type.value.toString(16)
        } declares ${length.value} bytes; the limit is ${this.#maxPayload}`,
      );
    }
    const start = type.length + length.length;
    if (buffer.length < start + length.value) return undefined;
    const payload = buffer.subarray(start, start + length.value);
    this.#queue.consume(start + length.value);
    return { type: type.value, payload };
  }

  /** Bytes received but not yet part of a complete frame. */
  get buffered(): number {
    return this.#queue.length;
  }

  /** Takes the unparsed bytes (e.g. after a WebTransport stream signal). */
  takeRemainder(): Uint8Array {
    const rest = this.#queue.bytes;
    this.#queue.clear();
    return rest;
  }
}

/** Encodes a SETTINGS payload from identifier/value pairs. */
export function encodeSettings(settings: ReadonlyMap<number, number>): Uint8Array {
  let size = 0;
  for (const [id, value] of settings) size += varintLength(id) + varintLength(value);
  const out = new Uint8Array(size);
  let offset = 0;
  for (const [id, value] of settings) {
    offset = writeVarint(out, offset, id);
    offset = writeVarint(out, offset, value);
  }
  return out;
}

/**
 * Decodes a SETTINGS payload. Unknown identifiers (including GREASE) are kept, those past
 * 2^53 under their value rounded to a number (none is one we read); a repeated identifier
 * (compared exactly), an HTTP/2-only one or a truncated pair is H3_SETTINGS_ERROR.
 */
export function decodeSettings(payload: Uint8Array): Map<number, number> {
  const settings = new Map<number, number>();
  // Identifiers compared exactly: ids past 2^53 (GREASE reserves ids up to 2^62 - 1) are
  // rounded in `settings`, and two different ones would look the same.
  const seen = new Set<bigint>();
  for (let offset = 0; offset < payload.length;) {
    const id = readVarint(payload, offset);
    const value = id && readVarint(payload, offset + id.length);
    if (!id || !value) throw new H3Error(H3.SETTINGS_ERROR, "SETTINGS ends inside a setting");
    if (HTTP2_ONLY_SETTINGS.has(id.value)) {
      throw new H3Error(H3.SETTINGS_ERROR, `Setting 0x${id.value.toString(16)} is HTTP/2 only`);
    }
    const exactId = readVarintExact(payload, offset)!;
    if (seen.has(exactId)) {
      throw new H3Error(H3.SETTINGS_ERROR, `Setting 0x${exactId.toString(16)} appears twice`);
    }
    seen.add(exactId);
    settings.set(id.value, value.value);
    offset += id.length + value.length;
  }
  return settings;
}
