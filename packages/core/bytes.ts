/**
 * Joining many byte chunks into one array. For two or a few arrays, use `concatBytes` of
 * `@noble/hashes/utils.js`, as the rest of duet does; it is variadic, and spreading a list
 * of chunks into it fails with "Maximum call stack size exceeded" from about 200,000 of
 * them (measured on Deno 2.9.6), a count a peer chooses when it sends a body in one-byte
 * pieces. This joins a list of any length, the shape of denoland/std's `bytes/concat.ts`.
 *
 * @module
 */

/**
 * The chunks, in order, in one new array of their total length.
 *
 * @param chunks Any number of arrays; empty ones are allowed, none is modified.
 * @returns A new array (never one of `chunks`), empty for no chunks.
 *
 * @example
 * ```ts
 * import { concatChunks } from "@duet/core/bytes";
 * const joined = concatChunks([new Uint8Array([1, 2]), new Uint8Array([3])]);
 * console.assert(joined.join() === "1,2,3");
 * ```
 */
export function concatChunks(chunks: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let size = 0;
  for (const chunk of chunks) size += chunk.length;
  const joined = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    joined.set(chunk, at);
    at += chunk.length;
  }
  return joined;
}
