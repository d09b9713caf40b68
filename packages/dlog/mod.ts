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
// The @noble/curves types that Point and Secp256k1Point are made of, type-only (no code):
// `deno doc --lint` on Deno 2.9.6 counts a type from another package as private unless it
// is exported here too (denoland/deno#27364), so the whole chain is.
export type { AffinePoint, CurvePoint, CurvePointCons, P_F } from "@noble/curves/abstract/curve.js";
export type { IField } from "@noble/curves/abstract/modular.js";
export type {
  WeierstrassOpts,
  WeierstrassPoint,
  WeierstrassPointCons,
} from "@noble/curves/abstract/weierstrass.js";
export type { TArg, TRet, TypedArg, TypedRet } from "@noble/curves/utils.js";
