import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { encodeVarint, readVarint, readVarintExact, varintLength, writeVarint } from "./varint.ts";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";

const hex = hexToBytes;
const toHex = bytesToHex;

test("readVarint() decodes the examples of RFC 9000 Appendix A.1", () => {
  assert.deepEqual(readVarint(hex("c2197c5eff14e88c")), { value: 151288809941952652, length: 8 });
  assert.deepEqual(readVarint(hex("9d7f3e7d")), { value: 494878333, length: 4 });
  assert.deepEqual(readVarint(hex("7bbd")), { value: 15293, length: 2 });
  assert.deepEqual(readVarint(hex("25")), { value: 37, length: 1 });
  assert.deepEqual(
    readVarint(hex("4025")),
    { value: 37, length: 2 },
    "non-minimal forms are valid",
  );
});

test("encodeVarint() writes the shortest form at every length boundary", () => {
  const cases: [number, string][] = [
    [0, "00"],
    [63, "3f"],
    [64, "4040"],
    [16383, "7fff"],
    [16384, "80004000"],
    [2 ** 30 - 1, "bfffffff"],
    [2 ** 30, "c000000040000000"],
    [Number.MAX_SAFE_INTEGER, "c01fffffffffffff"],
  ];
  for (const [value, expected] of cases) {
    assert.equal(toHex(encodeVarint(value)), expected, `${value}`);
    assert.equal(varintLength(value), expected.length / 2);
    assert.deepEqual(readVarint(hex(expected)), { value, length: expected.length / 2 });
  }
});

test("readVarint() returns undefined for truncated input, at an offset too", () => {
  assert.equal(readVarint(new Uint8Array(0)), undefined);
  assert.equal(readVarint(hex("40")), undefined);
  assert.equal(readVarint(hex("80aabb")), undefined);
  assert.equal(readVarint(hex("c0aabbccddeeff")), undefined);
  assert.equal(readVarint(hex("00"), 1), undefined);
  assert.deepEqual(readVarint(hex("ff25"), 1), { value: 37, length: 1 });
});

test("encodeVarint() refuses negative, fractional and unsafe values; writeVarint() a full buffer", () => {
  for (const bad of [-1, 1.5, Number.NaN, 2 ** 53]) {
    assert.throws(() => encodeVarint(bad), RangeError);
  }
  assert.throws(() => writeVarint(new Uint8Array(1), 0, 64), RangeError);
});

test("property: readVarint(encodeVarint(n)) is n for every safe n", () => {
  fc.assert(fc.property(fc.maxSafeNat(), (n) => {
    const bytes = encodeVarint(n);
    const read = readVarint(bytes);
    return read?.value === n && read.length === bytes.length;
  }));
});

test("readVarintExact() keeps every bit that readVarint() rounds away", () => {
  const max = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  assert.equal(readVarintExact(max), 2n ** 62n - 1n);
  assert.equal(readVarintExact(new Uint8Array([0xd0, 0, 0, 0, 0, 0, 0, 1])), 2n ** 60n + 1n);
  assert.equal(readVarintExact(new Uint8Array([0x25])), 37n);
  assert.equal(readVarintExact(new Uint8Array([0x7b, 0xbd])), 15293n); // RFC 9000 A.1
  assert.equal(readVarintExact(new Uint8Array([0xc0, 0])), undefined, "truncated");
});
