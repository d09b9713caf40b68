/**
 * dlog: a non-interactive Schnorr zero-knowledge proof of knowledge of a discrete
 * logarithm over secp256k1 (Fiat-Shamir with SHA-256), encoding DLOG-SECP256K1-SHA256/v1.
 *
 * Runs unchanged on Deno, Node (>= 20), Bun and browsers: it uses only @noble/curves,
 * @noble/hashes and Web APIs.
 *
 * @example Prove and verify
 * ```ts
 * import { DLogProof, G } from "./mod.ts";
 * const x = 42n;
 * const y = G.multiply(x);
 * const proof = DLogProof.prove("sid", 1n, x, y);
 * if (!proof.verify("sid", 1n, y)) throw new Error("expected valid");
 * ```
 *
 * @module
 */
export {
  challenge,
  DLogProof,
  type DLogProofDict,
  DLogProofField,
  G,
  type SerializerField,
} from "./proof.ts";
export { type ProofStatement, verifyBatch } from "./batch.ts";
export {
  CURVE_ORDER,
  decodePoint,
  decodeScalar,
  encodePoint,
  encodeScalar,
  FIELD_PRIME,
  parsePid,
  type Point,
  Secp256k1Point,
} from "./_codec.ts";
