import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CapsuleType,
  decodeCloseSession,
  decodeDatagram,
  encodeCapsule,
  encodeCloseSession,
  encodeDatagram,
  MAX_CLOSE_REASON_BYTES,
  readCapsule,
  truncateReason,
} from "./capsule.ts";
import { H3, H3Error } from "./errors.ts";

const code = (c: number) => (error: unknown) => error instanceof H3Error && error.code === c;

test("CLOSE_WEBTRANSPORT_SESSION carries a 32-bit code and a UTF-8 reason", () => {
  const bytes = encodeCloseSession(0xdeadbeef, "bye — до свидания");
  const read = readCapsule(bytes)!;
  assert.equal(read.length, bytes.length);
  assert.equal(read.capsule.type, CapsuleType.CLOSE_WEBTRANSPORT_SESSION);
  assert.deepEqual(decodeCloseSession(read.capsule.value), {
    code: 0xdeadbeef,
    reason: "bye — до свидания",
  });
  assert.deepEqual(decodeCloseSession(readCapsule(encodeCloseSession(0, ""))!.capsule.value), {
    code: 0,
    reason: "",
  });
});

test("encodeCloseSession() refuses codes outside 32 bits and reasons over 1,024 bytes", () => {
  assert.throws(() => encodeCloseSession(-1, ""), RangeError);
  assert.throws(() => encodeCloseSession(2 ** 32, ""), RangeError);
  assert.throws(() => encodeCloseSession(0, "x".repeat(1025)), RangeError);
  assert.doesNotThrow(() => encodeCloseSession(0, "x".repeat(1024)));
});

test("decodeCloseSession() refuses short values, long reasons and non-UTF-8 with MESSAGE_ERROR", () => {
  assert.throws(() => decodeCloseSession(new Uint8Array(3)), code(H3.MESSAGE_ERROR));
  assert.throws(() => decodeCloseSession(new Uint8Array(4 + 1025)), code(H3.MESSAGE_ERROR));
  assert.throws(
    () => decodeCloseSession(new Uint8Array([0, 0, 0, 1, 0xff])),
    code(H3.MESSAGE_ERROR),
  );
});

test("readCapsule() waits for more bytes, and refuses oversized capsules", () => {
  const bytes = encodeCapsule(CapsuleType.DRAIN_WEBTRANSPORT_SESSION, new Uint8Array(0));
  for (let cut = 0; cut < bytes.length; cut++) {
    assert.equal(readCapsule(bytes.subarray(0, cut)), undefined);
  }
  assert.equal(readCapsule(bytes)?.capsule.type, CapsuleType.DRAIN_WEBTRANSPORT_SESSION);
  assert.throws(
    () => readCapsule(encodeCapsule(0x00, new Uint8Array(100)), 10),
    code(H3.EXCESSIVE_LOAD),
  );
});

test("datagrams carry the session's quarter stream id", () => {
  const datagram = encodeDatagram(8, new TextEncoder().encode("ping"));
  assert.equal(datagram[0], 2, "session 8 -> quarter id 2");
  const { sessionId, payload } = decodeDatagram(datagram);
  assert.equal(sessionId, 8);
  assert.equal(new TextDecoder().decode(payload), "ping");
  assert.throws(() => encodeDatagram(2, new Uint8Array(0)), RangeError);
  assert.throws(() => decodeDatagram(new Uint8Array(0)), code(H3.DATAGRAM_ERROR));
});

test("property: datagrams round-trip for any session and payload", () => {
  fc.assert(fc.property(fc.nat(2 ** 40), fc.uint8Array({ maxLength: 100 }), (quarter, payload) => {
    const decoded = decodeDatagram(encodeDatagram(quarter * 4, payload));
    assert.equal(decoded.sessionId, quarter * 4);
    assert.deepEqual(decoded.payload, payload);
  }));
});

const utf8 = (text: string) => new TextEncoder().encode(text).length;

test("a reason that begins with U+FEFF keeps it, through the capsule and a cut", () => {
  const reason = "\ufeffbye";
  const read = readCapsule(encodeCloseSession(7, reason))!;
  assert.deepEqual(decodeCloseSession(read.capsule.value), { code: 7, reason });
  assert.equal(truncateReason("\ufeff" + "x".repeat(1100)), "\ufeff" + "x".repeat(1021));
});

test("truncateReason() keeps 1,023 and 1,024 bytes, cuts 1,025 to 1,024", () => {
  for (const n of [0, 1, 1023, 1024]) assert.equal(truncateReason("x".repeat(n)), "x".repeat(n));
  assert.equal(truncateReason("x".repeat(1025)), "x".repeat(1024));
  assert.equal(truncateReason("x".repeat(5000)), "x".repeat(1024));
});

test("truncateReason() never splits a character across the 1,024-byte boundary", () => {
  // 1,023 ASCII bytes then a 2-, 3- or 4-byte character: it would end at byte 1,025-1,027.
  for (const wide of ["é", "€", "😀"]) {
    assert.equal(truncateReason("x".repeat(1023) + wide), "x".repeat(1023));
    assert.equal(
      truncateReason("x".repeat(1024 - utf8(wide)) + wide + "y"),
      "x".repeat(1024 - utf8(wide)) + wide,
    );
  }
  // 1,024 bytes exactly of 4-byte characters; one more character is cut whole.
  assert.equal(truncateReason("😀".repeat(256)), "😀".repeat(256));
  assert.equal(truncateReason("😀".repeat(257)), "😀".repeat(256));
  // A lone surrogate is sent as U+FFFD, three bytes, and counted so.
  assert.equal(utf8(truncateReason("x".repeat(1022) + "\ud800")), 1022);
});

test("property: a truncated reason is the longest whole-character prefix that fits and encodes", () => {
  fc.assert(
    fc.property(fc.string({ unit: "grapheme", maxLength: 700 }), fc.nat(40), (text, pad) => {
      const reason = "x".repeat(pad) + text + text;
      const cut = truncateReason(reason);
      assert.ok(utf8(cut) <= MAX_CLOSE_REASON_BYTES);
      const whole = new TextDecoder().decode(new TextEncoder().encode(reason));
      assert.ok(whole.startsWith(cut));
      if (cut.length < whole.length) {
        const next = String.fromCodePoint(whole.codePointAt(cut.length)!);
        assert.ok(utf8(cut) + utf8(next) > MAX_CLOSE_REASON_BYTES);
      }
      assert.deepEqual(decodeCloseSession(readCapsule(encodeCloseSession(7, cut))!.capsule.value), {
        code: 7,
        reason: cut,
      });
    }),
  );
});

test("decodeDatagram() refuses a quarter stream id of 2^60 or more, exactly (RFC 9297 2.1)", () => {
  const quarter = (bytes: number[]) => new Uint8Array([...bytes, 9]);
  assert.throws(
    () => decodeDatagram(quarter([0xd0, 0, 0, 0, 0, 0, 0, 0])),
    code(H3.DATAGRAM_ERROR),
  );
  assert.throws(
    () => decodeDatagram(quarter([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])),
    code(H3.DATAGRAM_ERROR),
  );
  // 2^60 - 1 is allowed, although as a number it rounds to 2^60.
  assert.doesNotThrow(() =>
    decodeDatagram(quarter([0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]))
  );
});
