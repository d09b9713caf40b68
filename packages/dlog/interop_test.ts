// Cross-language checks against interop/dlog_reference.py, run with Debian's python3-ecdsa.
// Deno-only (it spawns Python); the runtime-neutral vector checks are in vectors_test.ts.
import assert from "node:assert/strict";
import { findPythonEcdsa, python, run, testWith } from "@duet/testkit";
import { CURVE_ORDER, DLogProof, encodePoint, encodeScalar, G, type Point } from "./mod.ts";

const reference = new URL("./interop/dlog_reference.py", import.meta.url).pathname;
const committedVectors = new URL("./testdata/vectors.json", import.meta.url);
const pythonEcdsa = await findPythonEcdsa();

async function callReference(command: string, input?: unknown): Promise<unknown> {
  const { code, stdout, stderr } = await run(
    python,
    [reference, command],
    input === undefined ? {} : { stdin: JSON.stringify(input) },
  );
  assert.equal(code, 0, `dlog_reference.py ${command} failed: ${stderr}`);
  return JSON.parse(stdout);
}

const otherBase = G.multiply(0xc0ffeen);
const statements = [
  { sid: "sid", pid: 1n, x: 0x1234n, base: G },
  { sid: "", pid: 0n, x: 1n, base: G },
  { sid: "комната 🔐", pid: (1n << 256n) - 1n, x: 0xdeadbeefn << 200n, base: G },
  { sid: "room-42", pid: 2n, x: 0xabcdefn, base: otherBase },
];

function wire(sid: string, pid: bigint, y: Point, base: Point, proof: DLogProof) {
  return { sid, pid: pid.toString(), y: encodePoint(y), base: encodePoint(base), proof };
}

testWith(pythonEcdsa, {
  name: "dlog_reference.py vectors reproduces testdata/vectors.json byte for byte",
  fn: async () => {
    const { stdout } = await run(python, [reference, "vectors"]);
    assert.equal(stdout, await Deno.readTextFile(committedVectors));
  },
});

testWith(pythonEcdsa, {
  name: "proofs made here verify in the Python reference, and altered ones do not",
  fn: async () => {
    const items = statements.flatMap(({ sid, pid, x, base }) => {
      const y = base.multiply(x);
      const proof = DLogProof.prove(sid, pid, x, y, base);
      const altered = new DLogProof(proof.t, (proof.s + 1n) % CURVE_ORDER);
      return [
        wire(sid, pid, y, base, proof),
        wire(sid, pid, y, base, altered),
        wire(sid + "x", pid, y, base, proof),
        wire(sid, pid + (pid === 0n ? 1n : -1n), y, base, proof),
      ];
    });
    const verdicts = await callReference("verify", items);
    assert.deepEqual(verdicts, items.map((_, i) => i % 4 === 0));
  },
});

testWith(pythonEcdsa, {
  name: "proofs made by the Python reference verify here, and altered ones do not",
  fn: async () => {
    const request = statements.map(({ sid, pid, x, base }) => ({
      sid,
      pid: pid.toString(),
      x: encodeScalar(x),
      base: encodePoint(base),
    }));
    const made = await callReference("prove", request) as { y: string; proof: unknown }[];
    assert.equal(made.length, statements.length);
    made.forEach(({ y, proof }, i) => {
      const { sid, pid, x, base } = statements[i]!;
      assert.equal(y, encodePoint(base.multiply(x)), "the same y = x*B");
      const parsed = DLogProof.fromDict(proof);
      const yPoint = base.multiply(x);
      assert.equal(parsed.verify(sid, pid, yPoint, base), true, `statement ${i}`);
      assert.equal(parsed.verify(sid, pid + 1n, yPoint, base), false, `statement ${i}, pid+1`);
    });
  },
});
