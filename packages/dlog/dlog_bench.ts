// deno bench packages/dlog/dlog_bench.ts -- results and ratios in docs/benchmarks.md.
// Anchors are the raw @noble/curves operations each dlog operation is built on.
import { mulAddUnsafe, pippenger } from "@noble/curves/abstract/curve.js";
import { bytesToNumberBE, randomBytes } from "@noble/curves/utils.js";
import {
  CURVE_ORDER,
  DLogProof,
  G,
  type ProofStatement,
  Secp256k1Point,
  verifyBatch,
} from "./mod.ts";

function scalar(): bigint {
  return bytesToNumberBE(randomBytes(32)) % (CURVE_ORDER - 1n) + 1n;
}

function statements(count: number): ProofStatement[] {
  return Array.from({ length: count }, (_, i) => {
    const x = scalar();
    // Parsed from the wire, as a verifier sees them (affine points, validity cached).
    const y = Secp256k1Point.fromHex(G.multiply(x).toHex(true));
    const proof = DLogProof.fromDict(DLogProof.prove("bench", i, x, y).toDict());
    return { proof, sid: "bench", pid: i, y };
  });
}

const x = scalar();
const y = G.multiply(x);
const k = scalar();
const [one] = statements(1) as [ProofStatement];
const c = scalar();

Deno.bench(
  "noble G.multiply (fixed-base, constant-time)",
  { group: "prove", baseline: true },
  () => {
    G.multiply(k);
  },
);
Deno.bench("DLogProof.prove", { group: "prove" }, () => {
  DLogProof.prove("bench", 1n, x, y);
});

Deno.bench(
  "noble s*G == T + c*Y (raw verify equation)",
  { group: "verify", baseline: true },
  () => {
    G.multiplyUnsafe(one.proof.s).equals(one.proof.t.add(one.y.multiplyUnsafe(c)));
  },
);
Deno.bench("DLogProof.verify (1 proof)", { group: "verify" }, () => {
  one.proof.verify(one.sid, one.pid, one.y);
});
for (const size of [16, 64, 256, 1024]) {
  const batch = statements(size);
  Deno.bench(`verifyBatch (${size} proofs per iteration)`, { group: "verify" }, () => {
    if (!verifyBatch(batch)) throw new Error("batch must verify");
  });
}

// The MSM behind verifyBatch at sizes around the crossover (2 points per proof).
for (const points of [128, 512, 2048]) {
  const ps = Array.from({ length: points }, () => G.multiply(scalar()));
  const ss = Array.from({ length: points }, (_, i) => (i % 2 ? scalar() : scalar() >> 128n));
  Deno.bench(`Strauss ${points} points`, { group: `msm-${points}`, baseline: true }, () => {
    mulAddUnsafe(Secp256k1Point, ps, ss);
  });
  Deno.bench(`Pippenger ${points} points`, { group: `msm-${points}` }, () => {
    pippenger(Secp256k1Point, ps, ss);
  });
}
