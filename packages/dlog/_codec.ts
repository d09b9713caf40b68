// Strict text codecs for DLOG-SECP256K1-SHA256/v1 (README.md, "Encoding").
// noble parses hex leniently (either case) and reports failures with its own wording; the
// encoding is stricter than that and callers need messages that name the field, so the
// checks that come before noble are written out here.
import { secp256k1 } from "@noble/curves/secp256k1.js";
import type { WeierstrassPoint, WeierstrassPointCons } from "@noble/curves/abstract/weierstrass.js";
import { bytesToNumberBE, numberToBytesBE } from "@noble/curves/utils.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";

/**
 * A point on secp256k1, as @noble/curves represents it (projective coordinates over the
 * field of {@link FIELD_PRIME}); immutable.
 */
export type Point = WeierstrassPoint<bigint>;

/**
 * The curve's point constructor (@noble/curves' `secp256k1.Point`): `BASE` is G, `ZERO`
 * the point at infinity, `fromHex`/`fromBytes` parse SEC1, `Fn` is arithmetic mod
 * {@link CURVE_ORDER}.
 */
export const Secp256k1Point: WeierstrassPointCons<bigint> = secp256k1.Point;
/** Order q of the secp256k1 group (all scalars live in [0, q)). */
export const CURVE_ORDER: bigint = secp256k1.Point.Fn.ORDER;
/** Prime p of the secp256k1 base field (all coordinates live in [0, p)). */
export const FIELD_PRIME: bigint = secp256k1.Point.Fp.ORDER;

const LOWER_HEX = /^[0-9a-f]*$/;
const PID_LIMIT = 1n << 256n;

function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

/** What is wrong with text that is not all lowercase hex digits, in the words users see. */
export function hexMistake(value: string): string {
  return /^[0-9a-fA-F]*$/.test(value)
    ? "expected lowercase hex digits [0-9a-f]; it has uppercase ones (write it in lowercase)"
    : "expected lowercase hex digits [0-9a-f] only";
}

/** Parses exactly `chars` lowercase hex characters. */
export function parseHex(value: unknown, chars: number, what: string): Uint8Array {
  if (typeof value !== "string") {
    throw new TypeError(`Cannot decode ${what}: expected a string, got ${typeName(value)}`);
  }
  if (value.length !== chars) {
    // "0x" + the digits is the usual way to write a number in hex elsewhere: say so.
    const prefixed = /^0[xX]/.test(value) ? " (without a 0x prefix)" : "";
    throw new SyntaxError(
      `Cannot decode ${what}: expected ${chars} hex characters${prefixed}, got ${value.length}`,
    );
  }
  if (!LOWER_HEX.test(value)) {
    throw new SyntaxError(`Cannot decode ${what}: ${hexMistake(value)}`);
  }
  return hexToBytes(value);
}

/** Decodes a 33-byte SEC1 compressed point given as 66 lowercase hex characters. */
export function decodePoint(value: unknown, what: string): Point {
  const bytes = parseHex(value, 66, what);
  const prefix = bytes[0];
  if (prefix !== 0x02 && prefix !== 0x03) {
    throw new SyntaxError(
      `Cannot decode ${what}: prefix 0x${
        bytesToHex(bytes.subarray(0, 1))
      } is not 02 or 03 (SEC1 compressed)`,
    );
  }
  if (bytesToNumberBE(bytes.subarray(1)) >= FIELD_PRIME) {
    throw new RangeError(`Cannot decode ${what}: x coordinate is not below the field prime p`);
  }
  try {
    // Decompression finds y from x; it fails when x^3 + 7 has no square root, i.e. off-curve.
    // A 33-byte compressed encoding cannot express the point at infinity.
    return Secp256k1Point.fromBytes(bytes);
  } catch {
    throw new RangeError(`Cannot decode ${what}: x is not the x coordinate of a secp256k1 point`);
  }
}

/** Encodes a point as 66 lowercase hex characters (SEC1 compressed). */
export function encodePoint(point: Point): string {
  return point.toHex(true);
}

/** Decodes a scalar in [0, q) given as 64 lowercase hex characters. */
export function decodeScalar(value: unknown, what: string): bigint {
  const scalar = bytesToNumberBE(parseHex(value, 64, what));
  if (scalar >= CURVE_ORDER) {
    throw new RangeError(`Cannot decode ${what}: value is not below the group order q`);
  }
  return scalar;
}

/**
 * Encodes a scalar as 64 lowercase hex characters (32 bytes, big-endian, zero-padded).
 *
 * @throws {RangeError} when `scalar` is negative or not below 2^256.
 */
export function encodeScalar(scalar: bigint): string {
  if (typeof scalar !== "bigint" || scalar < 0n || scalar >= 1n << 256n) {
    throw new RangeError("Cannot encode scalar: expected a bigint in [0, 2^256)");
  }
  return bytesToHex(numberToBytesBE(scalar, 32));
}

/** Accepts a party id as a non-negative safe integer or a bigint below 2^256. */
export function normalizePid(pid: bigint | number): bigint {
  if (typeof pid === "number") {
    if (!Number.isSafeInteger(pid)) {
      throw new RangeError(`Invalid pid: ${pid} is not a safe integer; pass a bigint`);
    }
    pid = BigInt(pid);
  } else if (typeof pid !== "bigint") {
    throw new TypeError(`Invalid pid: expected a bigint or number, got ${typeName(pid)}`);
  }
  if (pid < 0n || pid >= PID_LIMIT) {
    throw new RangeError("Invalid pid: must be in [0, 2^256)");
  }
  return pid;
}

/** Parses a party id written as a decimal integer in [0, 2^256). */
export function parsePid(text: string): bigint {
  if (!/^(0|[1-9][0-9]*)$/.test(text)) {
    const why = /^0[0-9]+$/.test(text)
      ? "has a leading zero (write it without: one spelling per number)"
      : /^\s*(0|[1-9][0-9]*)\s*$/.test(text)
      ? "has spaces around it"
      : "is not a decimal integer";
    throw new SyntaxError(`Invalid pid: ${JSON.stringify(text)} ${why}`);
  }
  return normalizePid(BigInt(text));
}

/** Checks that a session id is a string of well-formed Unicode. */
export function assertSid(sid: string): void {
  if (typeof sid !== "string") {
    throw new TypeError(`Invalid sid: expected a string, got ${typeName(sid)}`);
  }
  // A lone surrogate would be encoded as U+FFFD, so two different sids would hash alike.
  if (!sid.isWellFormed()) {
    throw new RangeError("Invalid sid: contains a lone surrogate (not well-formed Unicode)");
  }
}

/** Checks that a value is a secp256k1 point other than infinity. */
export function assertPoint(point: Point, what: string): void {
  if (!(point instanceof Secp256k1Point)) {
    throw new TypeError(`Invalid ${what}: expected a secp256k1 point, got ${typeName(point)}`);
  }
  if (point.is0()) throw new RangeError(`Invalid ${what}: the point at infinity`);
}
