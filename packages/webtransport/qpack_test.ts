import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeFieldSection, encodeFieldSection, type Field } from "./qpack.ts";
import { STATIC_TABLE } from "./_qpack_static.ts";
import { H3, H3Error } from "./errors.ts";
import { hexToBytes } from "@noble/hashes/utils.js";

const hex = (text: string) => hexToBytes(text.replace(/ /g, ""));
const failed = (error: unknown) =>
  error instanceof H3Error && error.code === H3.QPACK_DECOMPRESSION_FAILED;

test("STATIC_TABLE has RFC 9204 Appendix A's 99 entries", () => {
  assert.equal(STATIC_TABLE.length, 99);
  assert.deepEqual(STATIC_TABLE[0], [":authority", ""]);
  assert.deepEqual(STATIC_TABLE[15], [":method", "CONNECT"]);
  assert.deepEqual(STATIC_TABLE[25], [":status", "200"]);
  assert.deepEqual(STATIC_TABLE[85], [
    "content-security-policy",
    "script-src 'none'; object-src 'none'; base-uri 'none'",
  ]);
  assert.deepEqual(STATIC_TABLE[98], ["x-frame-options", "sameorigin"]);
});

test("decodeFieldSection() reads RFC 9204 Appendix B.1 (literal with static name reference)", () => {
  assert.deepEqual(decodeFieldSection(hex("0000 510b 2f69 6e64 6578 2e68 746d 6c")), [[
    ":path",
    "/index.html",
  ]]);
});

test("encodeFieldSection() uses a static index for a full match, and reads back", () => {
  assert.deepEqual(
    encodeFieldSection([[":method", "CONNECT"], [":status", "200"]]),
    hex("0000 cf d9"),
  );
  assert.deepEqual(decodeFieldSection(hex("0000 cf d9")), [[":method", "CONNECT"], [
    ":status",
    "200",
  ]]);
});

test("a WebTransport extended CONNECT request round-trips, Huffman-coded where shorter", () => {
  const request: Field[] = [
    [":method", "CONNECT"],
    [":protocol", "webtransport"],
    [":scheme", "https"],
    [":authority", "127.0.0.1:4433"],
    [":path", "/ping?token=abc"],
    ["origin", "https://127.0.0.1:4433"],
    ["sec-webtransport-http3-draft02", "1"],
    ["user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/156"],
  ];
  const section = encodeFieldSection(request);
  assert.deepEqual(decodeFieldSection(section), request);
  const raw = request.reduce((n, [name, value]) => n + name.length + value.length, 0);
  assert.ok(section.length < raw, `${section.length} bytes encode ${raw} bytes of text`);
});

test("decodeFieldSection() refuses every dynamic table reference", () => {
  const cases: [string, string][] = [
    ["Required Insert Count 1", "0100"],
    ["indexed, dynamic (T=0)", "0000 80"],
    ["name reference, dynamic (T=0)", "0000 4000"],
    ["indexed post-base", "0000 10"],
    ["name reference post-base", "0000 0000"],
  ];
  for (const [label, bytes] of cases) {
    assert.throws(() => decodeFieldSection(hex(bytes)), failed, label);
  }
});

test("decodeFieldSection() refuses truncated and out-of-range input", () => {
  const cases: [string, string][] = [
    ["empty", ""],
    ["prefix cut", "00"],
    ["static index 99", "0000 ff24"],
    ["value longer than the section", "0000 5105 2f69"],
    ["literal name cut", "0000 2703 6162"],
    ["integer continuation never ends", "0000 ff ff ff"],
    ["integer overflow", "0000 ff ffffffffffffffffff7f"],
  ];
  for (const [label, bytes] of cases) {
    assert.throws(() => decodeFieldSection(hex(bytes)), failed, label);
  }
});

test("decodeFieldSection() enforces the field section size limit with EXCESSIVE_LOAD", () => {
  const section = encodeFieldSection([["x-big", "v".repeat(200)]]);
  assert.throws(
    () => decodeFieldSection(section, 100),
    (e) => e instanceof H3Error && e.code === H3.EXCESSIVE_LOAD,
  );
  assert.equal(decodeFieldSection(section, 1000).length, 1);
});

test("encodeFieldSection() refuses text that is not bytes", () => {
  assert.throws(() => encodeFieldSection([["x", "日本"]]), TypeError);
});

const headerText = fc.string({
  unit: fc.integer({ min: 0x20, max: 0xff }).map((c) => String.fromCharCode(c)),
  maxLength: 60,
});
const staticField = fc.constantFrom(...STATIC_TABLE).map(([n, v]) => [n, v] as Field);
const nameOnly = fc.tuple(
  fc.constantFrom(...STATIC_TABLE.map(([n]) => n)),
  headerText,
) as fc.Arbitrary<Field>;
const literal = fc.tuple(headerText.filter((s) => s.length > 0), headerText) as fc.Arbitrary<Field>;

test("property: decodeFieldSection(encodeFieldSection(fields)) is fields", () => {
  fc.assert(
    fc.property(fc.array(fc.oneof(staticField, nameOnly, literal), { maxLength: 20 }), (fields) => {
      assert.deepEqual(decodeFieldSection(encodeFieldSection(fields), 1 << 20), fields);
    }),
    { numRuns: 300 },
  );
});

test("property: random or truncated sections give fields or an H3Error, nothing else", () => {
  const valid = encodeFieldSection([[":method", "CONNECT"], [":path", "/ping"], [
    "origin",
    "https://a.example",
  ]]);
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 80 }), fc.nat(valid.length), (random, cut) => {
      for (const input of [random, valid.subarray(0, cut)]) {
        try {
          decodeFieldSection(input);
        } catch (error) {
          assert.ok(error instanceof H3Error, String(error));
        }
      }
    }),
    { numRuns: 2000 },
  );
});
