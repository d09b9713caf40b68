// Runtime-neutral: node:test and node:assert run these under `deno test` and `node --test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CURVE_ORDER,
  DLogProof,
  G,
  type Point,
  type ProofStatement,
  Secp256k1Point,
  verifyBatch,
} from "./mod.ts";

const otherBase = G.multiply(0xb45en);

function statements(count: number, base?: Point): ProofStatement[] {
  return Array.from({ length: count }, (_, i) => {
    const x = BigInt(i) * 0x1234567n + 99n;
    const b = base ?? G;
    const y = b.multiply(x);
    const sid = `sid-${i % 3}`;
    return { proof: DLogProof.prove(sid, BigInt(i), x, y, b), sid, pid: BigInt(i), y, base };
  });
}

const valid = statements(12);
const mixed = [...statements(6), ...statements(6, otherBase)];

// The ways one statement of a batch can be wrong.
const corruptions: Record<string, (s: ProofStatement) => ProofStatement> = {
  "another pid": (s) => ({ ...s, pid: BigInt(s.pid) + 1n }),
  "another sid": (s) => ({ ...s, sid: s.sid + "!" }),
  "another y": (s) => ({ ...s, y: s.y.add(G) }),
  "s + 1": (s) => ({ ...s, proof: new DLogProof(s.proof.t, (s.proof.s + 1n) % CURVE_ORDER) }),
  "t negated": (s) => ({ ...s, proof: new DLogProof(s.proof.t.negate(), s.proof.s) }),
  "another base": (s) => ({ ...s, base: otherBase.add(G) }),
};

test("verifyBatch() accepts an empty batch and a batch of valid proofs", () => {
  assert.equal(verifyBatch([]), true);
  assert.equal(verifyBatch(valid.slice(0, 1)), true);
  assert.equal(verifyBatch(valid), true);
});

test("verifyBatch() accepts proofs over several base points", () => {
  assert.equal(verifyBatch(mixed), true);
});

test("verifyBatch() detects one bad proof at any position, whatever is wrong with it", () => {
  for (const [label, corrupt] of Object.entries(corruptions)) {
    for (const batch of [valid, mixed]) {
      for (let i = 0; i < batch.length; i++) {
        const altered = batch.map((s, j) => (j === i ? corrupt(s) : s));
        assert.equal(verifyBatch(altered), false, `${label} at ${i}`);
      }
    }
  }
});

test("verifyBatch() detects two bad proofs whose errors would cancel without weights", () => {
  // s1 + d and s2 - d: the unweighted sum of both equations still holds.
  const [a, b] = valid as [ProofStatement, ProofStatement];
  const d = 12345n;
  const forged = [
    { ...a, proof: new DLogProof(a.proof.t, (a.proof.s + d) % CURVE_ORDER) },
    { ...b, proof: new DLogProof(b.proof.t, (b.proof.s - d + CURVE_ORDER) % CURVE_ORDER) },
  ];
  assert.equal(verifyBatch(forged), false);
});

test("verifyBatch() returns false, never throws, on malformed statements", () => {
  const s = valid[0]!;
  const offCurve = new Secp256k1Point(1n, 1n, 1n);
  const hostile: [string, unknown][] = [
    ["not an array", "proofs"],
    ["null statement", [null]],
    ["proof is a dict", [{ ...s, proof: s.proof.toDict() }]],
    ["y at infinity", [{ ...s, y: Secp256k1Point.ZERO }]],
    ["y off the curve", [{ ...s, y: offCurve }]],
    ["base at infinity", [{ ...s, base: Secp256k1Point.ZERO }]],
    ["pid out of range", [{ ...s, pid: -1n }]],
    ["sid not a string", [{ ...s, sid: 3 }]],
  ];
  for (const [label, input] of hostile) {
    assert.equal(verifyBatch(input as ProofStatement[]), false, label);
  }
});

test("verifyBatch() agrees with verify() one by one (property)", () => {
  fc.assert(
    fc.property(
      fc.array(fc.boolean(), { minLength: 1, maxLength: 10 }),
      fc.constantFrom(...Object.keys(corruptions)),
      (bad, how) => {
        const batch = statements(bad.length).map((s, i) => (bad[i] ? corruptions[how]!(s) : s));
        const oneByOne = batch.every((s) => s.proof.verify(s.sid, s.pid, s.y, s.base));
        return verifyBatch(batch) === oneByOne;
      },
    ),
    { numRuns: 25 },
  );
});
