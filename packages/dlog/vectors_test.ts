// Runtime-neutral. The vectors come from interop/dlog_reference.py (Python, python3-ecdsa),
// an implementation independent of this one; interop_test.ts checks the file is current.
import { test } from "node:test";
import assert from "node:assert/strict";
import vectorFile from "./testdata/vectors.json" with { type: "json" };
import { decodePoint, decodeScalar, DLogProof, parsePid } from "./mod.ts";
import { proveWithNonce } from "./proof.ts";

test("vectors.json holds the v1 encoding and at least 8 vectors", () => {
  assert.equal(vectorFile.encoding, "DLOG-SECP256K1-SHA256/v1");
  assert.ok(vectorFile.vectors.length >= 8);
});

for (const vector of vectorFile.vectors) {
  const sid = vector.sid;
  const pid = parsePid(vector.pid);
  const base = decodePoint(vector.base, "base");
  const y = decodePoint(vector.y, "y");
  const x = decodeScalar(vector.x, "x");
  const r = decodeScalar(vector.r, "r");

  test(`vector "${vector.comment}": the same x and nonce give the same proof`, () => {
    assert.ok(base.multiply(x).equals(y), "y = x*B");
    assert.deepEqual(proveWithNonce(sid, pid, x, y, base, r).toDict(), vector.proof);
  });

  test(`vector "${vector.comment}": the Python proof verifies here`, () => {
    const proof = DLogProof.fromDict(vector.proof);
    assert.equal(proof.verify(sid, pid, y, base), true);
    assert.equal(proof.verify(sid + "x", pid, y, base), false, "bound to sid");
  });
}
