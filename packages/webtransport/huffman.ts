/**
 * HPACK's Huffman code (RFC 7541 Section 5.2, Appendix B), used by QPACK string literals.
 * No library here: the npm ones are HTTP/2 stacks, not a codec to call.
 *
 * @module
 */
import { H3, H3Error } from "./errors.ts";
import { HUFFMAN_CODES } from "./_huffman_table.ts";

const EOS = 256;

/** A binary tree over the code: inner nodes are [zero, one], leaves are symbols. */
type Node = number | [Node | undefined, Node | undefined];
let root: Node | undefined;

function tree(): Node {
  if (root) return root;
  const top: [Node | undefined, Node | undefined] = [undefined, undefined];
  HUFFMAN_CODES.forEach(([code, length], symbol) => {
    let node = top;
    for (let bit = length - 1; bit > 0; bit--) {
      const side = (code >>> bit) & 1;
      node[side] ??= [undefined, undefined];
      node = node[side] as [Node | undefined, Node | undefined];
    }
    node[code & 1] = symbol;
  });
  return (root = top);
}

/** Bytes of `input` Huffman-coded, padded with the top bits of EOS (all ones). */
export function huffmanEncode(input: Uint8Array): Uint8Array {
  const out: number[] = [];
  let bits = 0; // pending bits, at most 7 + 30, kept in a float-safe range
  let count = 0;
  for (const byte of input) {
    const [code, length] = HUFFMAN_CODES[byte]!;
    bits = bits * 2 ** length + code;
    count += length;
    while (count >= 8) {
      count -= 8;
      const top = Math.floor(bits / 2 ** count);
      out.push(top);
      bits -= top * 2 ** count;
    }
  }
  if (count > 0) out.push(bits * 2 ** (8 - count) + (2 ** (8 - count) - 1));
  return Uint8Array.from(out);
}

/** Encoded size in bytes, to choose between Huffman and raw. */
export function huffmanLength(input: Uint8Array): number {
  let bits = 0;
  for (const byte of input) bits += HUFFMAN_CODES[byte]![1];
  return Math.ceil(bits / 8);
}

/**
 * Decodes a Huffman-coded string. Padding longer than 7 bits, padding that is not all
 * ones, and a coded EOS are QPACK_DECOMPRESSION_FAILED (RFC 7541 Section 5.2).
 */
export function huffmanDecode(input: Uint8Array): Uint8Array {
  const out: number[] = [];
  const top = tree();
  let node: Node | undefined = top;
  let pendingBits = 0; // bits read since the last symbol
  let pendingAllOnes = true;
  for (const byte of input) {
    for (let bit = 7; bit >= 0; bit--) {
      const side = (byte >> bit) & 1;
      node = (node as [Node | undefined, Node | undefined])[side];
      pendingBits++;
      pendingAllOnes &&= side === 1;
      if (node === undefined) {
        throw new H3Error(H3.QPACK_DECOMPRESSION_FAILED, "Invalid Huffman code");
      }
      if (typeof node === "number") {
        if (node === EOS) {
          throw new H3Error(H3.QPACK_DECOMPRESSION_FAILED, "EOS inside a Huffman string");
        }
        out.push(node);
        node = top;
        pendingBits = 0;
        pendingAllOnes = true;
      }
    }
  }
  if (pendingBits > 7 || !pendingAllOnes) {
    throw new H3Error(H3.QPACK_DECOMPRESSION_FAILED, "Invalid Huffman padding");
  }
  return Uint8Array.from(out);
}
