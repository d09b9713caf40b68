/**
 * QUIC variable-length integers (RFC 9000 Section 16): 1, 2, 4 or 8 bytes, the two top
 * bits of the first byte giving the length, up to 2^62 - 1.
 *
 * @module
 */

/** The largest value a varint holds. */
export const VARINT_MAX = 2n ** 62n - 1n;

/** Bytes needed to encode `value`. */
export function varintLength(value: number): 1 | 2 | 4 | 8 {
  if (value < 0x40) return 1;
  if (value < 0x4000) return 2;
  if (value < 0x40000000) return 4;
  return 8;
}

/**
 * Writes `value` (a non-negative safe integer) at `offset` in its shortest form; returns
 * the offset after it.
 */
export function writeVarint(target: Uint8Array, offset: number, value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`Cannot encode varint: ${value} is not a non-negative safe integer`);
  }
  const length = varintLength(value);
  if (offset + length > target.length) throw new RangeError("Cannot encode varint: no room");
  const view = new DataView(target.buffer, target.byteOffset + offset, length);
  switch (length) {
    case 1:
      view.setUint8(0, value);
      break;
    case 2:
      view.setUint16(0, value | 0x4000);
      break;
    case 4:
      view.setUint32(0, (value | 0x80000000) >>> 0);
      break;
    case 8:
      view.setBigUint64(0, BigInt(value) | 0xc000000000000000n);
      break;
  }
  return offset + length;
}

/** `value` as a varint in its shortest form. */
export function encodeVarint(value: number): Uint8Array {
  const bytes = new Uint8Array(varintLength(value));
  writeVarint(bytes, 0, value);
  return bytes;
}

/** A decoded varint and the bytes it took. */
export interface Varint {
  /** The value. Exact up to 2^53 - 1; larger ones (from a peer) are rounded. */
  value: number;
  /** Bytes it occupied. */
  length: number;
}

/** Reads a varint at `offset` exactly, as a bigint; undefined when the input ends first. */
export function readVarintExact(source: Uint8Array, offset = 0): bigint | undefined {
  if (offset >= source.length) return undefined;
  const length = 1 << (source[offset]! >> 6);
  if (offset + length > source.length) return undefined;
  let value = BigInt(source[offset]! & 0x3f);
  for (let i = 1; i < length; i++) value = (value << 8n) | BigInt(source[offset + i]!);
  return value;
}

/**
 * Reads a varint at `offset`; undefined when the input ends before the varint does (the
 * caller waits for more bytes). Values above 2^53 - 1 are returned rounded: callers use them
 * only to reject lengths over their limits or to skip unknown identifiers.
 */
export function readVarint(source: Uint8Array, offset = 0): Varint | undefined {
  if (offset >= source.length) return undefined;
  const first = source[offset]!;
  const length = 1 << (first >> 6);
  if (offset + length > source.length) return undefined;
  const view = new DataView(source.buffer, source.byteOffset + offset, length);
  switch (length) {
    case 1:
      return { value: first & 0x3f, length };
    case 2:
      return { value: view.getUint16(0) & 0x3fff, length };
    case 4:
      return { value: view.getUint32(0) & 0x3fffffff, length };
    default:
      return { value: Number(view.getBigUint64(0) & 0x3fffffffffffffffn), length };
  }
}
