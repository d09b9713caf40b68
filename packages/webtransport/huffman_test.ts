import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { huffmanDecode, huffmanEncode } from "./huffman.ts";
import { HUFFMAN_CODES } from "./_huffman_table.ts";
import { H3, H3Error } from "./errors.ts";
import { hexToBytes } from "@noble/hashes/utils.js";

const hex = hexToBytes;
const text = (s: string) => new TextEncoder().encode(s);

test("HUFFMAN_CODES is a complete prefix code over 256 symbols and EOS", () => {
  assert.equal(HUFFMAN_CODES.length, 257);
  // Kraft: sum of 2^-length is exactly 1 for a complete code (scaled by 2^30).
  const kraft = HUFFMAN_CODES.reduce((sum, [, length]) => sum + 2 ** (30 - length), 0);
  assert.equal(kraft, 2 ** 30);
  const words = HUFFMAN_CODES.map(([code, length]) => code.toString(2).padStart(length, "0"));
  const sorted = [...words].sort();
  for (let i = 1; i < sorted.length; i++) {
    assert.ok(
      !sorted[i]!.startsWith(sorted[i - 1]!),
      `${sorted[i - 1]} is a prefix of ${sorted[i]}`,
    );
  }
  assert.deepEqual(HUFFMAN_CODES[256], [0x3fffffff, 30], "EOS is thirty ones");
});

// RFC 7541 Appendix C.4 (requests with Huffman coding).
const vectors: [string, string][] = [
  ["www.example.com", "f1e3c2e5f23a6ba0ab90f4ff"],
  ["no-cache", "a8eb10649cbf"],
  ["custom-key", "25a849e95ba97d7f"],
  ["custom-value", "25a849e95bb8e8b4bf"],
];

test("huffmanEncode() and huffmanDecode() reproduce RFC 7541 Appendix C.4", () => {
  for (const [plain, coded] of vectors) {
    assert.deepEqual(huffmanEncode(text(plain)), hex(coded), `encode ${plain}`);
    assert.deepEqual(huffmanDecode(hex(coded)), text(plain), `decode ${plain}`);
  }
});

test("huffmanDecode() rejects bad padding and a coded EOS with QPACK_DECOMPRESSION_FAILED", () => {
  const failed = (error: unknown) =>
    error instanceof H3Error && error.code === H3.QPACK_DECOMPRESSION_FAILED;
  assert.deepEqual(huffmanDecode(hex("1f")), text("a"), "'a' is 00011, padded with 111");
  assert.throws(() => huffmanDecode(hex("18")), failed, "padding of zeros");
  assert.throws(() => huffmanDecode(hex("1fff")), failed, "padding longer than 7 bits");
  assert.throws(() => huffmanDecode(hex("fffffffc")), failed, "EOS in the string");
  assert.deepEqual(huffmanDecode(new Uint8Array(0)), new Uint8Array(0));
});

test("property: huffmanDecode(huffmanEncode(bytes)) is bytes", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      assert.deepEqual(huffmanDecode(huffmanEncode(bytes)), bytes);
    }),
    { numRuns: 300 },
  );
});

test("property: huffmanDecode() of random bytes returns bytes or throws H3Error, nothing else", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        huffmanDecode(bytes);
      } catch (error) {
        assert.ok(error instanceof H3Error, String(error));
      }
    }),
    { numRuns: 1000 },
  );
});
