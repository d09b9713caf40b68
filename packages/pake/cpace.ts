/**
 * CPace, the CFRG's balanced password-authenticated key exchange
 * (draft-irtf-cfrg-cpace), in its CPACE-RISTR255-SHA512 suite: group ristretto255, hash
 * SHA-512. Both parties know a low-entropy password-related string (PRS); each sends one
 * message; both derive the same intermediate session key (ISK) if and only if their PRS,
 * channel identifier (CI) and session id (sid) match and each received what the other sent.
 * A party in the middle learns nothing of the key, and can test one PRS guess per run.
 *
 * The steps, as the draft names them (its version of 2026-04-23, whose published vectors
 * testdata/cpace_ristretto255_vectors.json holds):
 *
 * - `generator_string = lv_cat(DSI, PRS, zero_bytes(len_zpad), CI, sid)`, the zero padding
 *   making DSI and PRS fill SHA-512's first 128-byte block;
 *   `g = one_way_map(SHA-512(generator_string))` (ristretto255's element derivation, RFC 9496).
 * - `y` a random scalar; `Y = encode(g^y)`; each party sends `lv_cat(Y, AD)` (the draft's
 *   recommended encoding of its message).
 * - `K = scalar_mult_vfy(y, Y_peer)`: the identity encoding when `Y_peer` does not decode,
 *   which aborts the run.
 * - `ISK = SHA-512(lv_cat(DSI || "_ISK", sid, K) || transcript)`, the transcript being
 *   `lv_cat(Ya, ADa) || lv_cat(Yb, ADb)` when A is known to send first (initiator-responder,
 *   `transcript_ir`), else `"oc"` and both messages, the lexicographically larger first
 *   (`transcript_oc`, for parties with no set order).
 *
 * Pure: no I/O. Scalars come from the Web Crypto CSPRNG unless a test passes its own.
 * Constant-time where @noble/curves is (its scalar multiplication); the byte handling here
 * branches only on lengths, which are public.
 *
 * @module
 */
import { ristretto255, ristretto255_hasher } from "@noble/curves/ed25519.js";
import { sha512 } from "@noble/hashes/sha2.js";
import { concatBytes, randomBytes, utf8ToBytes } from "@noble/hashes/utils.js";
import { bytesToNumberLE, equalBytes } from "@noble/curves/utils.js";
import { hmac } from "@noble/hashes/hmac.js";

const Point = ristretto255.Point;
type Point = InstanceType<typeof Point>;

/** The suite's domain-separation identifier, G.DSI. */
export const DSI: Uint8Array = utf8ToBytes("CPaceRistretto255");
/** SHA-512's input block size in bytes, H.s_in_bytes. */
const S_IN_BYTES = 128;
/** The encoding of the identity element, G.I: 32 zero bytes. */
const IDENTITY: Uint8Array = new Uint8Array(32);

/**
 * `bytes` with its length in front, as LEB128 (one byte below 128): the draft's
 * `prepend_len`.
 */
export function prependLen(bytes: Uint8Array): Uint8Array {
  const length: number[] = [];
  let n = bytes.length;
  do {
    length.push(n < 128 ? n : (n & 0x7f) | 0x80);
    n >>>= 7;
  } while (n > 0);
  return concatBytes(Uint8Array.from(length), bytes);
}

/** Each string with its length in front, concatenated: the draft's `lv_cat`. */
export function lvCat(...parts: Uint8Array[]): Uint8Array {
  return concatBytes(...parts.map(prependLen));
}

/**
 * Splits `bytes` made by {@link lvCat} of exactly `count` parts; undefined when the lengths
 * do not add up to the whole (the abort the draft asks of a malformed message).
 */
export function parseLvCat(bytes: Uint8Array, count: number): Uint8Array[] | undefined {
  const parts: Uint8Array[] = [];
  let at = 0;
  for (let i = 0; i < count; i++) {
    let length = 0;
    let shift = 0;
    for (;;) {
      if (at >= bytes.length || shift > 28) return undefined;
      const byte = bytes[at++]!;
      length += (byte & 0x7f) * 2 ** shift;
      shift += 7;
      if (byte < 0x80) break;
    }
    if (at + length > bytes.length) return undefined;
    parts.push(bytes.subarray(at, at + length));
    at += length;
  }
  return at === bytes.length ? parts : undefined;
}

/** The draft's `lexiographically_larger`: the first differing byte decides, else the length. */
function larger(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i]! > b[i]!;
  }
  return a.length > b.length;
}

const OC = utf8ToBytes("oc");

/**
 * `"oc"`, then the lexicographically larger of two strings, then the other: the draft's
 * `o_cat`, which lets two parties with no set order build the same transcript.
 */
export function oCat(a: Uint8Array, b: Uint8Array): Uint8Array {
  return larger(a, b) ? concatBytes(OC, a, b) : concatBytes(OC, b, a);
}

/** What both parties must share (PRS) or agree on in the open (CI, sid). */
export interface CPaceInputs {
  /** The password-related string: the code, as bytes. */
  prs: Uint8Array;
  /** The channel identifier: binds the run to who talks to whom (optional). */
  ci?: Uint8Array;
  /** The session id: binds the run to one session (optional; at least 8 bytes advised). */
  sid?: Uint8Array;
}

/** The draft's `generator_string(DSI, PRS, CI, sid, s_in_bytes)`. */
export function generatorString(inputs: CPaceInputs): Uint8Array {
  const { prs, ci = new Uint8Array(0), sid = new Uint8Array(0) } = inputs;
  const zpad = Math.max(0, S_IN_BYTES - prependLen(prs).length - prependLen(DSI).length - 1);
  return lvCat(DSI, prs, new Uint8Array(zpad), ci, sid);
}

/**
 * ristretto255's one-way map (RFC 9496's element derivation: 64 uniform bytes to an
 * element). noble types it as optional, since not every group it hashes to has one.
 */
const oneWayMap = ristretto255_hasher.deriveToCurve!;

/** The generator g for `inputs`: `one_way_map(SHA-512(generator_string))`. */
function generatorPoint(inputs: CPaceInputs): Point {
  return oneWayMap(sha512(generatorString(inputs)));
}

/**
 * The draft's `calculate_generator` for `inputs`, encoded: 32 bytes, the ristretto255
 * encoding of `one_way_map(SHA-512(generator_string))`.
 */
export function calculateGenerator(inputs: CPaceInputs): Uint8Array {
  return generatorPoint(inputs).toBytes();
}

/**
 * A scalar as the draft recommends: 32 random bytes with the bits above the group's 252
 * cleared, read little-endian; 0 (probability 2^-252) is drawn again.
 */
export function sampleScalar(random: (n: number) => Uint8Array = randomBytes): bigint {
  for (;;) {
    const bytes = random(32).slice();
    bytes[31]! &= 0x0f;
    const y = bytesToNumberLE(bytes);
    if (y !== 0n) return y;
  }
}

/** `encode(point^y)` for a scalar y in [1, order). */
function scalarMult(y: bigint, point: Point): Uint8Array {
  return point.multiply(y).toBytes();
}

/**
 * `scalar_mult_vfy(y, X)`: `encode(decode(X)^y)`, or the identity's encoding when `X` does
 * not decode (not canonical, not on the group) or is the identity.
 */
export function scalarMultVfy(y: bigint, encoded: Uint8Array): Uint8Array {
  let point: Point;
  try {
    point = Point.fromBytes(encoded);
  } catch {
    return IDENTITY.slice();
  }
  if (point.equals(Point.ZERO)) return IDENTITY.slice();
  return scalarMult(y, point);
}

/** One party's first step: its secret scalar and the message it sends. */
export interface CPaceStart {
  /** The secret scalar y; never sent, used once. */
  readonly y: bigint;
  /** `Y = encode(g^y)`, 32 bytes. */
  readonly share: Uint8Array;
  /** The message to send, `lv_cat(Y, AD)`. */
  readonly message: Uint8Array;
}

/**
 * Starts a run: computes the generator, draws a scalar (or takes `y`, for test vectors
 * only) and returns the message to send with associated data `ad` (sent in the clear).
 */
export function start(
  inputs: CPaceInputs,
  ad: Uint8Array = new Uint8Array(0),
  y?: bigint,
): CPaceStart {
  const scalar = y ?? sampleScalar();
  const share = scalarMult(scalar, generatorPoint(inputs));
  return { y: scalar, share, message: lvCat(share, ad) };
}

/** How the two messages are ordered in the transcript. */
export type TranscriptOrder =
  /** This party sent first (it is A): `own || peer`. */
  | "initiator"
  /** The peer sent first: `peer || own`. */
  | "responder"
  /** No set order: the larger message first (`oCat`). */
  | "parallel";

/** What a finished run gives. */
export interface CPaceResult {
  /** The intermediate session key, 64 bytes: derive keys from it, never use it as it is. */
  isk: Uint8Array;
  /** The peer's associated data, as it sent it. */
  peerAd: Uint8Array;
}

/**
 * Whether `peerMessage` carries this party's own share: its own message (or its share with
 * other associated data) sent back, a reflection. Two honest parties never draw the same
 * scalar (probability 2^-252); a party that took its own share would confirm its own tag as
 * the peer's, a key exchange with nobody. False for a message that does not parse.
 */
export function isReflection(own: CPaceStart, peerMessage: Uint8Array): boolean {
  const parts = parseLvCat(peerMessage, 2);
  return parts !== undefined && equalBytes(parts[0]!, own.share);
}

/**
 * Finishes a run with the peer's message: the ISK, or undefined when the message is
 * malformed (its lengths do not add up) or its share is not a valid non-identity element,
 * the aborts the draft requires, or is this party's own share sent back (a reflection, which
 * would otherwise let a party confirm a key with itself). Never throws on hostile input.
 */
export function finish(
  inputs: CPaceInputs,
  own: CPaceStart,
  peerMessage: Uint8Array,
  order: TranscriptOrder,
): CPaceResult | undefined {
  const parts = parseLvCat(peerMessage, 2);
  if (!parts || isReflection(own, peerMessage)) return undefined;
  const [peerShare, peerAd] = parts as [Uint8Array, Uint8Array];
  const k = scalarMultVfy(own.y, peerShare);
  if (k.every((byte) => byte === 0)) return undefined;
  const transcript = order === "initiator"
    ? concatBytes(own.message, peerMessage)
    : order === "responder"
    ? concatBytes(peerMessage, own.message)
    : oCat(own.message, peerMessage);
  const isk = sha512(
    concatBytes(
      lvCat(concatBytes(DSI, utf8ToBytes("_ISK")), inputs.sid ?? new Uint8Array(0), k),
      transcript,
    ),
  );
  return { isk, peerAd: peerAd.slice() };
}

/**
 * The draft's explicit key confirmation: `mac_key = SHA-512("CPaceMac" || sid || ISK)`.
 * Without it a party knows only that a peer who got the same key holds the code; with it,
 * each side learns before using the key whether the other derived the same one, and a wrong
 * code (or a relay in the middle) shows at once, on both sides.
 */
function macKey(isk: Uint8Array, sid: Uint8Array): Uint8Array {
  return sha512(concatBytes(utf8ToBytes("CPaceMac"), sid, isk));
}

/**
 * The tag this party sends after a run: `HMAC-SHA-512(mac_key, own message)`, 64 bytes (the
 * draft's `Ta` or `Tb`, over the message this party sent).
 */
export function confirmationTag(
  result: CPaceResult,
  inputs: CPaceInputs,
  own: CPaceStart,
): Uint8Array {
  return hmac(sha512, macKey(result.isk, inputs.sid ?? new Uint8Array(0)), own.message);
}

/**
 * Whether `tag` is the peer's confirmation of the same key: `HMAC-SHA-512(mac_key, peer
 * message)`, compared in constant time. False for a tag of any other value or length; never
 * throws.
 */
export function verifyConfirmation(
  result: CPaceResult,
  inputs: CPaceInputs,
  peerMessage: Uint8Array,
  tag: Uint8Array,
): boolean {
  if (!(tag instanceof Uint8Array) || tag.length !== 64) return false;
  const expected = hmac(sha512, macKey(result.isk, inputs.sid ?? new Uint8Array(0)), peerMessage);
  return equalBytes(expected, tag);
}
