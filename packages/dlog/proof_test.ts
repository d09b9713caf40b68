// Runtime-neutral: node:test and node:assert run these under `deno test` and `node --test`.
import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import {
  CURVE_ORDER,
  DLogProof,
  DLogProofField,
  FIELD_PRIME,
  G,
  type Point,
  Secp256k1Point,
} from "./mod.ts";
import { proveWithNonce } from "./proof.ts";

const x = 0x5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eedn;
const y = G.multiply(x);
const otherBase = G.multiply(0xba5en);

function validDict(): Record<string, unknown> {
  return { ...DLogProof.prove("sid", 1n, x, y).toDict() };
}

test("DLogProof.prove() makes a proof that verify() accepts", () => {
  const proof = DLogProof.prove("sid", 1n, x, y);
  assert.equal(proof.verify("sid", 1n, y), true);
  assert.equal(proof.verify("sid", 1, y), true, "a number pid means the same as a bigint pid");
});

test("DLogProof.prove() works on a base point other than G", () => {
  const yB = otherBase.multiply(x);
  const proof = DLogProof.prove("sid", 0n, x, yB, otherBase);
  assert.equal(proof.verify("sid", 0n, yB, otherBase), true);
  assert.equal(proof.verify("sid", 0n, yB), false, "the base is part of the statement");
  assert.equal(proof.verify("sid", 0n, y, G), false);
});

test("DLogProof.prove() uses a fresh nonce each time", () => {
  const a = DLogProof.prove("sid", 1n, x, y);
  const b = DLogProof.prove("sid", 1n, x, y);
  assert.equal(a.equals(b), false);
  assert.equal(a.t.equals(b.t), false);
});

test("DLogProof.verify() rejects a proof moved to another sid, pid, y or base", () => {
  const proof = DLogProof.prove("room-1", 5n, x, y);
  assert.equal(proof.verify("room-2", 5n, y), false, "other sid");
  assert.equal(proof.verify("room-1", 6n, y), false, "other pid");
  assert.equal(proof.verify("room-1", 5n, G.multiply(x + 1n)), false, "other y");
  assert.equal(proof.verify("room-1", 5n, y, otherBase), false, "other base");
  assert.equal(proof.verify("room-1\u0000", 5n, y), false, "sid with a trailing NUL");
});

test("DLogProof.verify() rejects an altered t or s", () => {
  const proof = DLogProof.prove("sid", 1n, x, y);
  assert.equal(new DLogProof(proof.t, (proof.s + 1n) % CURVE_ORDER).verify("sid", 1n, y), false);
  assert.equal(new DLogProof(proof.t.add(G), proof.s).verify("sid", 1n, y), false);
  assert.equal(new DLogProof(proof.t.negate(), proof.s).verify("sid", 1n, y), false);
});

test("DLogProof.verify() returns false, never throws, on hostile arguments", () => {
  const proof = DLogProof.prove("sid", 1n, x, y);
  const offCurve = new Secp256k1Point(1n, 1n, 1n);
  const hostile: [string, () => boolean][] = [
    ["y is infinity", () => proof.verify("sid", 1n, Secp256k1Point.ZERO)],
    ["base is infinity", () => proof.verify("sid", 1n, y, Secp256k1Point.ZERO)],
    ["y is off the curve", () => proof.verify("sid", 1n, offCurve)],
    ["base is off the curve", () => proof.verify("sid", 1n, y, offCurve)],
    ["y is not a point", () => proof.verify("sid", 1n, {} as Point)],
    ["y is null", () => proof.verify("sid", 1n, null as unknown as Point)],
    ["pid is negative", () => proof.verify("sid", -1n, y)],
    ["pid is 2^256", () => proof.verify("sid", 1n << 256n, y)],
    ["pid is fractional", () => proof.verify("sid", 1.5, y)],
    ["pid is NaN", () => proof.verify("sid", NaN, y)],
    ["pid is a string", () => proof.verify("sid", "1" as unknown as bigint, y)],
    ["sid is a number", () => proof.verify(1 as unknown as string, 1n, y)],
    ["t is off the curve", () => {
      return new DLogProof(offCurve, proof.s).verify("sid", 1n, y);
    }],
  ];
  for (const [label, call] of hostile) {
    assert.equal(call(), false, label);
  }
});

test("DLogProof.verify() treats a lone surrogate in sid as invalid", () => {
  // "\ud800" would be encoded as U+FFFD; a proof for "\ufffd" must not carry over.
  const proof = DLogProof.prove("\ufffd", 1n, x, y);
  assert.equal(proof.verify("\ufffd", 1n, y), true);
  assert.equal(proof.verify("\ud800", 1n, y), false);
});

test("DLogProof.prove() rejects bad arguments with RangeError or TypeError", () => {
  assert.throws(() => DLogProof.prove("sid", 1n, 0n, y), RangeError);
  assert.throws(() => DLogProof.prove("sid", 1n, CURVE_ORDER, y), RangeError);
  assert.throws(() => DLogProof.prove("sid", 1n, -1n, y), RangeError);
  assert.throws(() => DLogProof.prove("sid", 1n, 1 as unknown as bigint, y), RangeError);
  assert.throws(() => DLogProof.prove("sid", -1n, x, y), RangeError);
  assert.throws(() => DLogProof.prove("sid", 1n << 256n, x, y), RangeError);
  assert.throws(() => DLogProof.prove("sid", 2 ** 60, x, y), RangeError);
  assert.throws(() => DLogProof.prove("\udc00", 1n, x, y), RangeError);
  assert.throws(() => DLogProof.prove("sid", 1n, x, Secp256k1Point.ZERO), RangeError);
  assert.throws(() => DLogProof.prove("sid", 1n, x, y, Secp256k1Point.ZERO), RangeError);
  assert.throws(() => DLogProof.prove("sid", 1n, x, "02ab" as unknown as Point), TypeError);
  assert.throws(() => DLogProof.prove(7 as unknown as string, 1n, x, y), TypeError);
});

// Fault injection for prove's self-check, with no hook in the library: a base point that
// is G in every respect but whose constant-time `multiply` (the one prove uses, verify does
// not) glitches, as a hardware fault or corrupted memory would.
function glitchingBase(base: Point, glitches: number): Point {
  let left = glitches;
  // noble freezes its points: the override is an own property shadowing the prototype's.
  return Object.create(base, {
    multiply: {
      value: (k: bigint) => {
        const product = base.multiply(k);
        return left-- > 0 ? product.add(G) : product;
      },
    },
  }) as Point;
}

test("DLogProof.prove() verifies its proof and throws rather than return a faulty one", () => {
  for (const base of [G, otherBase]) {
    const yB = base.multiply(x);
    // One transient glitch (T = r*B + G): the proof made is wrong, the check catches it.
    assert.throws(
      () => DLogProof.prove("sid", 1n, x, yB, glitchingBase(base, 1)),
      (error: unknown) => {
        assert.ok(error instanceof Error && !(error instanceof RangeError), String(error));
        assert.match((error as Error).message, /does not verify \(a fault/);
        return true;
      },
    );
    // Without a glitch the same base proves fine: the injection alone is not what throws.
    const proof = DLogProof.prove("sid", 1n, x, yB, glitchingBase(base, 0));
    assert.equal(proof.verify("sid", 1n, yB, base), true);
  }
});

test("DLogProof.prove() throws RangeError when y is not x*base (its proof would not verify)", () => {
  assert.throws(() => DLogProof.prove("sid", 1n, x, G.multiply(x + 1n)), (error: unknown) => {
    assert.ok(error instanceof RangeError, String(error));
    assert.match((error as Error).message, /y is not x\*base/);
    return true;
  });
  assert.throws(() => DLogProof.prove("sid", 1n, x, y, otherBase), RangeError);
});

test("new DLogProof() rejects s outside [0, q) and t at infinity", () => {
  assert.throws(() => new DLogProof(G, CURVE_ORDER), RangeError);
  assert.throws(() => new DLogProof(G, -1n), RangeError);
  assert.throws(() => new DLogProof(G, 1 as unknown as bigint), TypeError);
  assert.throws(() => new DLogProof(Secp256k1Point.ZERO, 1n), RangeError);
});

test("DLogProof.toDict() gives 66 and 64 lowercase hex characters, zero-padded", () => {
  const dict = new DLogProof(G, 5n).toDict();
  assert.deepEqual(dict, {
    t: "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    s: "0000000000000000000000000000000000000000000000000000000000000005",
  });
  assert.equal(JSON.stringify(new DLogProof(G, 5n)), JSON.stringify(dict), "toJSON nests");
});

test("DLogProof.fromDict() round-trips and toString() is its JSON", () => {
  const proof = DLogProof.prove("sid", 1n, x, y);
  assert.ok(DLogProof.fromDict(proof.toDict()).equals(proof));
  assert.ok(DLogProof.fromString(proof.toString()).equals(proof));
  assert.deepEqual(JSON.parse(proof.toString()), proof.toDict());
});

test("DLogProof.fromDict() rejects malformed input with a clear error", () => {
  const dict = validDict();
  const t = dict["t"] as string;
  const s = dict["s"] as string;
  const pAsX = FIELD_PRIME.toString(16);
  const cases: [string, unknown, ErrorConstructor | TypeErrorConstructor, RegExp][] = [
    ["null", null, TypeError, /expected an object/],
    ["an array", [t, s], TypeError, /expected an object/],
    ["a string", JSON.stringify(dict), TypeError, /expected an object/],
    ["missing t", { s }, SyntaxError, /missing field "t"/],
    ["missing s", { t }, SyntaxError, /missing field "s"/],
    ["an unknown field", { t, s, c: "00" }, SyntaxError, /unknown field "c"/],
    ["t not a string", { t: 5, s }, TypeError, /proof\.t: expected a string, got number/],
    [
      "t too short",
      { t: t.slice(2), s },
      SyntaxError,
      /proof\.t: expected 66 hex characters, got 64/,
    ],
    ["t too long", { t: t + "00", s }, SyntaxError, /expected 66 hex characters, got 68/],
    ["t uppercase", { t: t.toUpperCase(), s }, SyntaxError, /lowercase hex/],
    ["t not hex", { t: "zz" + t.slice(2), s }, SyntaxError, /lowercase hex/],
    ["t uncompressed prefix 04", { t: "04" + t.slice(2), s }, SyntaxError, /prefix 0x04/],
    ["t prefix 00 (infinity)", { t: "00" + "0".repeat(64), s }, SyntaxError, /prefix 0x00/],
    ["t with x = p", { t: "02" + pAsX, s }, RangeError, /below the field prime/],
    ["t with x = 2^256-1", { t: "02" + "f".repeat(64), s }, RangeError, /below the field prime/],
    ["t off the curve (x = 5)", { t: "02" + "5".padStart(64, "0"), s }, RangeError, /not the x/],
    ["s not a string", { t, s: 5 }, TypeError, /proof\.s: expected a string/],
    ["s too short", { t, s: s.slice(1) }, SyntaxError, /64 hex characters, got 63/],
    ["s uppercase", { t, s: "A" + s.slice(1) }, SyntaxError, /lowercase/],
    ["s with a 0x prefix", { t, s: "0x" + s.slice(2) }, SyntaxError, /lowercase hex/],
    ["s = q (malleable)", { t, s: CURVE_ORDER.toString(16) }, RangeError, /below the group order/],
    ["s = 2^256-1", { t, s: "f".repeat(64) }, RangeError, /below the group order/],
  ];
  for (const [label, input, type, message] of cases) {
    assert.throws(() => DLogProof.fromDict(input), (error: unknown) => {
      assert.ok(error instanceof type, `${label}: ${error} is not a ${type.name}`);
      assert.match((error as Error).message, message, label);
      return true;
    }, label);
  }
});

test("DLogProof.fromString() rejects invalid JSON with SyntaxError", () => {
  assert.throws(() => DLogProof.fromString("{"), SyntaxError);
  assert.throws(() => DLogProof.fromString(""), SyntaxError);
  assert.throws(() => DLogProof.fromString(5 as unknown as string), TypeError);
});

test("DLogProof.fromDict() accepts s = q-1 and s = 0, the bounds of [0, q)", () => {
  const t = validDict()["t"];
  assert.equal(DLogProof.fromDict({ t, s: (CURVE_ORDER - 1n).toString(16) }).s, CURVE_ORDER - 1n);
  assert.equal(DLogProof.fromDict({ t, s: "0".repeat(64) }).s, 0n);
});

test("DLogProof.equals() compares t and s", () => {
  const proof = DLogProof.prove("sid", 1n, x, y);
  assert.ok(proof.equals(new DLogProof(proof.t, proof.s)));
  assert.ok(!proof.equals(new DLogProof(proof.t, (proof.s + 1n) % CURVE_ORDER)));
  assert.ok(!proof.equals(new DLogProof(proof.t.add(G), proof.s)));
  assert.ok(!proof.equals({ t: proof.t, s: proof.s } as DLogProof), "a look-alike object");
});

test("DLogProofField serializes to the dict form and back", () => {
  const field = new DLogProofField();
  const proof = DLogProof.prove("sid", 1n, x, y);
  const dict = field.serialize(proof);
  assert.deepEqual(dict, proof.toDict());
  assert.ok(field.deserialize(JSON.parse(JSON.stringify({ proof: dict })).proof).equals(proof));
  assert.throws(() => field.deserialize({ t: dict.t }), SyntaxError);
});

test("proveWithNonce() is deterministic for a fixed nonce", () => {
  const a = proveWithNonce("sid", 1n, x, y, G, 12345n);
  const b = proveWithNonce("sid", 1n, x, y, G, 12345n);
  assert.ok(a.equals(b));
  assert.ok(a.t.equals(G.multiply(12345n)), "T = r*G");
});

// Properties. fast-check's bigInt arbitraries cover the edges (1, q-1) with extra weight.
const secret = fc.bigInt({ min: 1n, max: CURVE_ORDER - 1n });
const pid = fc.bigInt({ min: 0n, max: (1n << 256n) - 1n });
const sid = fc.string({ unit: "grapheme", maxLength: 40 });

test("property: prove() then verify() holds for any x, sid and pid", () => {
  fc.assert(
    fc.property(secret, sid, pid, (x, sid, pid) => {
      const y = G.multiply(x);
      return DLogProof.prove(sid, pid, x, y).verify(sid, pid, y);
    }),
    { numRuns: 60 },
  );
});

test("property: fromDict(toDict(p)) equals p and fromString(toString(p)) equals p", () => {
  fc.assert(
    fc.property(secret, sid, pid, (x, sid, pid) => {
      const proof = DLogProof.prove(sid, pid, x, G.multiply(x));
      return DLogProof.fromDict(proof.toDict()).equals(proof) &&
        DLogProof.fromString(proof.toString()).equals(proof);
    }),
    { numRuns: 60 },
  );
});

test("property: flipping any single bit of t or s makes the proof fail", () => {
  const proof = DLogProof.prove("sid", 3n, x, y);
  const dict = proof.toDict();
  const flip = (hex: string, bit: number): string => {
    const bytes = hexToBytes(hex);
    bytes[bit >> 3]! ^= 1 << (bit & 7);
    return bytesToHex(bytes);
  };
  fc.assert(
    fc.property(fc.constantFrom("t", "s"), fc.nat(263), (field, bitIndex) => {
      const bits = field === "t" ? 264 : 256;
      const altered = { ...dict, [field]: flip(dict[field as "t" | "s"], bitIndex % bits) };
      let parsed: DLogProof;
      try {
        parsed = DLogProof.fromDict(altered);
      } catch {
        return true; // rejected at parse time: also a failure of the altered proof
      }
      return parsed.verify("sid", 3n, y) === false;
    }),
    { numRuns: 200 },
  );
});
