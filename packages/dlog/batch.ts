/**
 * Batch verification of many DLOG proofs with one multi-scalar multiplication.
 *
 * @module
 */
import { mulAddUnsafe, pippenger } from "@noble/curves/abstract/curve.js";
import { bytesToNumberBE, randomBytes } from "@noble/curves/utils.js";
import { assertPoint, normalizePid, type Point, Secp256k1Point } from "./_codec.ts";
import { challenge, DLogProof, G } from "./proof.ts";

/** One claim to check: `proof` shows knowledge of log_base(y) in session `sid` for `pid`. */
export interface ProofStatement {
  /** The proof. */
  proof: DLogProof;
  /** The session id the proof is bound to. */
  sid: string;
  /** The party id the proof is bound to. */
  pid: bigint | number;
  /** The public point Y = x*B. */
  y: Point;
  /** The base point B; G when omitted. */
  base?: Point;
}

const Fn = Secp256k1Point.Fn;

// Strauss-Shamir shares one doubling chain and skips zero digits, which suits the 2n+1
// points of a small batch; Pippenger's buckets win once the batch is large. The crossover
// was measured with packages/dlog/dlog_bench.ts (docs/benchmarks.md).
const PIPPENGER_FROM_POINTS = 1024;

/** A uniform 128-bit weight in [1, 2^128), unknown to whoever made the proofs. */
function randomWeight(): bigint {
  for (;;) {
    const a = bytesToNumberBE(randomBytes(16));
    if (a !== 0n) return a;
  }
}

/**
 * Verifies all statements at once. True only if every proof is valid, except with
 * probability at most 2^-128 per call (the weights are fresh 128-bit random numbers).
 *
 * Every proof i must satisfy `s_i*B_i - T_i - c_i*Y_i = 0`; the batch checks the random
 * linear combination `sum a_i*(s_i*B_i - T_i - c_i*Y_i) = 0`, folding all terms on the same
 * base into one scalar. An empty batch is valid. Like {@link DLogProof.verify} it never
 * throws: malformed statements give `false`. On `false`, verify one by one to find the
 * culprits.
 *
 * @example Check 3 proofs at once
 * ```ts
 * import { DLogProof, G, verifyBatch } from "./mod.ts";
 * const statements = [1n, 2n, 3n].map((x) => {
 *   const y = G.multiply(x);
 *   return { proof: DLogProof.prove("sid", x, x, y), sid: "sid", pid: x, y };
 * });
 * if (!verifyBatch(statements)) throw new Error("expected all valid");
 * statements[1]!.pid = 9n;
 * if (verifyBatch(statements)) throw new Error("expected the altered statement to fail");
 * ```
 */
export function verifyBatch(statements: readonly ProofStatement[]): boolean {
  try {
    if (!Array.isArray(statements)) return false;
    let generatorScalar = 0n;
    const otherBases = new Map<string, { point: Point; scalar: bigint }>();
    const points: Point[] = [];
    const scalars: bigint[] = [];
    for (const { proof, sid, pid, y, base = G } of statements) {
      if (!(proof instanceof DLogProof)) return false;
      assertPoint(y, "y");
      assertPoint(base, "base");
      const c = challenge(sid, normalizePid(pid), base, y, proof.t);
      const a = randomWeight();
      const baseScalar = Fn.mul(a, proof.s);
      if (base.equals(G)) {
        generatorScalar = Fn.add(generatorScalar, baseScalar);
      } else {
        const key = base.toHex(true);
        const entry = otherBases.get(key) ?? { point: base, scalar: 0n };
        entry.scalar = Fn.add(entry.scalar, baseScalar);
        otherBases.set(key, entry);
      }
      // Negate the points, not the scalars: a stays 128 bits wide, which halves its walk.
      points.push(proof.t.negate(), y.negate());
      scalars.push(a, Fn.mul(a, c));
    }
    for (const { point, scalar } of otherBases.values()) {
      points.push(point);
      scalars.push(scalar);
    }
    const msm = points.length >= PIPPENGER_FROM_POINTS ? pippenger : mulAddUnsafe;
    const combined = msm(Secp256k1Point, points, scalars);
    // G keeps noble's precomputed table, so its term is cheaper on its own.
    return combined.add(G.multiplyUnsafe(generatorScalar)).is0();
  } catch {
    return false;
  }
}
