// CPace on ristretto255/SHA-512 against the draft's published vectors byte for byte, then as
// properties: matching inputs agree, a differing code, sid or CI never does, and tampered or
// malformed messages are refused without throwing.
import assert from "node:assert/strict";
import fc from "fast-check";
import { bytesToHex, concatBytes, hexToBytes, utf8ToBytes as utf8 } from "@noble/hashes/utils.js";
import { bytesToNumberLE } from "@noble/curves/utils.js";
import { sha512 } from "@noble/hashes/sha2.js";
import {
  calculateGenerator,
  confirmationTag,
  type CPaceInputs,
  finish,
  generatorString,
  isReflection,
  lvCat,
  oCat,
  parseLvCat,
  prependLen,
  scalarMultVfy,
  start,
  verifyConfirmation,
} from "./cpace.ts";

const vectors = JSON.parse(
  await Deno.readTextFile(new URL("./testdata/cpace_ristretto255_vectors.json", import.meta.url)),
);
const h = hexToBytes;
const inputs: CPaceInputs = { prs: h(vectors.PRS), ci: h(vectors.CI), sid: h(vectors.sid) };

Deno.test("CPace ristretto255/SHA-512: the draft's vectors, step by step", () => {
  assert.equal(bytesToHex(generatorString(inputs)), vectors.generator_string);
  assert.equal(bytesToHex(sha512(generatorString(inputs))), vectors.hash_result);
  assert.equal(bytesToHex(calculateGenerator(inputs)), vectors.g);
  const a = start(inputs, h(vectors.ADa), bytesToNumberLE(h(vectors.ya_le)));
  const b = start(inputs, h(vectors.ADb), bytesToNumberLE(h(vectors.yb_le)));
  assert.equal(bytesToHex(a.share), vectors.Ya);
  assert.equal(bytesToHex(a.message), "20" + vectors.Ya + "03" + vectors.ADa);
  assert.equal(bytesToHex(b.share), vectors.Yb);
  assert.equal(bytesToHex(b.message), "20" + vectors.Yb + "03" + vectors.ADb);
  assert.equal(bytesToHex(scalarMultVfy(a.y, b.share)), vectors.K);
  assert.equal(bytesToHex(scalarMultVfy(b.y, a.share)), vectors.K);
  // Initiator-responder: A sent first.
  const ir = [finish(inputs, a, b.message, "initiator"), finish(inputs, b, a.message, "responder")];
  for (const result of ir) assert.equal(bytesToHex(result!.isk), vectors.ISK_IR);
  assert.equal(bytesToHex(ir[0]!.peerAd), vectors.ADb);
  assert.equal(bytesToHex(ir[1]!.peerAd), vectors.ADa);
  // Parallel: the larger message first.
  for (const [own, peer] of [[a, b], [b, a]] as const) {
    assert.equal(bytesToHex(finish(inputs, own, peer.message, "parallel")!.isk), vectors.ISK_SY);
  }
});

Deno.test("CPace ristretto255: scalar_mult_vfy on the draft's valid and invalid points", () => {
  const valid = vectors.scalar_mult_valid;
  assert.equal(
    bytesToHex(scalarMultVfy(bytesToNumberLE(h(valid.s_le)), h(valid.X))),
    valid.result,
  );
  const invalid = vectors.scalar_mult_invalid;
  for (const point of [invalid.Y_i1, invalid.Y_i2]) {
    assert.equal(
      bytesToHex(scalarMultVfy(bytesToNumberLE(h(invalid.s_le)), h(point))),
      "00".repeat(32),
    );
  }
  // Included in a message, either one aborts the run (no key), without throwing.
  const a = start(inputs);
  for (const point of [invalid.Y_i1, invalid.Y_i2]) {
    assert.equal(
      finish(inputs, a, lvCat(h(point), new Uint8Array(0)), "initiator"),
      undefined,
    );
  }
});

Deno.test("prepend_len, lv_cat, o_cat and the transcripts: the draft's vectors; malformed messages refused", () => {
  assert.equal(bytesToHex(prependLen(new Uint8Array(0))), "00");
  assert.equal(bytesToHex(prependLen(utf8("1234"))), "0431323334");
  const range = (n: number) => Uint8Array.from({ length: n }, (_, i) => i);
  assert.equal(bytesToHex(prependLen(range(127))), "7f" + bytesToHex(range(127)));
  assert.equal(bytesToHex(prependLen(range(128))), "8001" + bytesToHex(range(128)));
  assert.equal(
    bytesToHex(lvCat(utf8("1234"), utf8("5"), utf8(""), utf8("678"))),
    "043132333401350003363738",
  );
  for (const { a, b, out } of vectors.o_cat) {
    assert.equal(bytesToHex(oCat(h(a), h(b))), out);
    assert.equal(bytesToHex(oCat(h(b), h(a))), out, "either order");
  }
  for (const t of vectors.transcript_ir) {
    assert.equal(
      bytesToHex(concatBytes(lvCat(h(t.Ya), h(t.ADa)), lvCat(h(t.Yb), h(t.ADb)))),
      t.out,
    );
  }
  for (const t of vectors.transcript_oc) {
    assert.equal(bytesToHex(oCat(lvCat(h(t.Ya), h(t.ADa)), lvCat(h(t.Yb), h(t.ADb)))), t.out);
  }
  const msg = lvCat(h(vectors.Ya), h(vectors.ADa));
  assert.deepEqual(parseLvCat(msg, 2)!.map(bytesToHex), [vectors.Ya, vectors.ADa]);
  // One byte more, one byte less, a length past the end, an empty message: refused.
  for (
    const bad of [new Uint8Array([...msg, 0]), msg.subarray(0, msg.length - 1), h("21"), h("")]
  ) {
    assert.equal(parseLvCat(bad, 2), undefined, bytesToHex(bad));
    assert.equal(finish(inputs, start(inputs), bad, "parallel"), undefined);
  }
});

const bytes = (min: number, max: number) => fc.uint8Array({ minLength: min, maxLength: max });

Deno.test("property: the same code, sid and CI agree on a 64-byte key, whoever is initiator", () => {
  fc.assert(
    fc.property(
      bytes(0, 40),
      bytes(0, 16),
      bytes(0, 40),
      bytes(0, 8),
      bytes(0, 8),
      (prs, sid, ci, adA, adB) => {
        const shared = { prs, sid, ci };
        const a = start(shared, adA);
        const b = start(shared, adB);
        const ka = finish(shared, a, b.message, "initiator")!;
        const kb = finish(shared, b, a.message, "responder")!;
        assert.equal(ka.isk.length, 64);
        assert.deepEqual(ka.isk, kb.isk);
        assert.deepEqual(
          finish(shared, a, b.message, "parallel")!.isk,
          finish(shared, b, a.message, "parallel")!.isk,
        );
        assert.deepEqual([ka.peerAd, kb.peerAd], [adB, adA]);
      },
    ),
    { numRuns: 30 },
  );
});

Deno.test("property: a differing code, sid or CI never agrees", () => {
  fc.assert(
    fc.property(bytes(1, 20), bytes(1, 20), fc.constantFrom("prs", "sid", "ci"), (x, y, which) => {
      fc.pre(bytesToHex(x) !== bytesToHex(y));
      const one = { prs: h("01"), sid: h("02"), ci: h("03"), [which]: x };
      const two = { ...one, [which]: y };
      const a = start(one);
      const b = start(two);
      const ka = finish(one, a, b.message, "initiator");
      const kb = finish(two, b, a.message, "responder");
      assert.ok(ka && kb, "well-formed messages finish");
      assert.notDeepEqual(ka.isk, kb.isk);
    }),
    { numRuns: 30 },
  );
});

Deno.test("property: a message tampered with in any byte gives no key or a different one, never a throw", () => {
  const shared = { prs: h("70617373"), sid: h("00112233445566778899") };
  fc.assert(
    fc.property(fc.nat(), fc.integer({ min: 1, max: 255 }), (at, flip) => {
      const a = start(shared, h("41"));
      const b = start(shared, h("42"));
      const tampered = b.message.slice();
      tampered[at % tampered.length]! ^= flip;
      const honest = finish(shared, b, a.message, "responder")!;
      const got = finish(shared, a, tampered, "initiator");
      if (got) assert.notDeepEqual(got.isk, honest.isk);
    }),
    { numRuns: 100 },
  );
});

Deno.test("key confirmation: each side's tag verifies at the other; a wrong code fails on both sides; tags never cross", () => {
  const shared = { prs: utf8("7-guitar-orbit"), sid: h("0011223344556677") };
  const a = start(shared, utf8("alice"));
  const b = start(shared, utf8("bob"));
  const atA = finish(shared, a, b.message, "initiator")!;
  const atB = finish(shared, b, a.message, "responder")!;
  const ta = confirmationTag(atA, shared, a);
  const tb = confirmationTag(atB, shared, b);
  assert.equal(ta.length, 64);
  assert.equal(verifyConfirmation(atB, shared, a.message, ta), true);
  assert.equal(verifyConfirmation(atA, shared, b.message, tb), true);
  // A's tag is not B's: a reflected tag is refused.
  assert.equal(verifyConfirmation(atA, shared, b.message, ta), false);
  // Malformed tags: false, never a throw.
  for (const bad of [new Uint8Array(0), ta.subarray(1), new Uint8Array(64), "x" as unknown]) {
    assert.equal(verifyConfirmation(atB, shared, a.message, bad as Uint8Array), false);
  }
  // A wrong code: both sides finish (the messages are well formed) and both refuse.
  const wrong = { ...shared, prs: utf8("7-guitar-orbiT") };
  const c = start(wrong, utf8("mallory"));
  const atC = finish(wrong, c, a.message, "responder")!;
  const atA2 = finish(shared, a, c.message, "initiator")!;
  assert.equal(verifyConfirmation(atA2, shared, c.message, confirmationTag(atC, wrong, c)), false);
  assert.equal(verifyConfirmation(atC, wrong, a.message, confirmationTag(atA2, shared, a)), false);
});

Deno.test("a party's own message sent back (a reflection) gives no key, whatever the AD around it", () => {
  const shared = { prs: utf8("7-guitar-orbit"), sid: h("0011223344556677") };
  const a = start(shared, utf8("alice"));
  for (const order of ["initiator", "responder", "parallel"] as const) {
    assert.equal(finish(shared, a, a.message, order), undefined, order);
    // The same share with other associated data is still ours.
    assert.equal(finish(shared, a, lvCat(a.share, utf8("bob")), order), undefined, order);
  }
});

Deno.test("isReflection: a party's own share, with any AD, is one; the peer's share and what does not parse are not", () => {
  const shared = { prs: utf8("7-guitar-orbit"), sid: h("0011223344556677") };
  const a = start(shared, utf8("alice"));
  const b = start(shared, utf8("bob"));
  assert.equal(isReflection(a, a.message), true);
  assert.equal(isReflection(a, lvCat(a.share, utf8("bob"))), true);
  assert.equal(isReflection(a, b.message), false);
  assert.equal(isReflection(a, new Uint8Array(0)), false);
  assert.equal(isReflection(a, a.share), false, "a bare share is no message");
});
