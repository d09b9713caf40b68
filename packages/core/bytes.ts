/**
 * Joining many byte chunks into one array. For two or a few arrays, use `concatBytes` of
 * `@noble/hashes/utils.js`, as the rest of duet does; it is variadic, and spreading a list
 * of chunks into it fails with "Maximum call stack size exceeded" from about 200,000 of
 * them (measured on Deno 2.9.6), a count a peer chooses when it sends a body in one-byte
 * pieces. This joins a list of any length (an array, as Deno's standard library's `concat`
 * takes, not arguments).
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

const EMPTY = new Uint8Array(0);
/** Stores up to this size (bytes) are kept however little of them is used. */
const SHRINK_ABOVE = 64 * 1024;

/**
 * Bytes that arrive in pieces and are taken from the front, as a parser reads a stream.
 * Appending costs O(piece) amortised: the store it keeps doubles when full. Joining each
 * piece to all that is held instead costs O(held) per piece, so a message a peer sends in
 * one-byte pieces costs its length squared (a 64 KiB HTTP/3 frame pushed one byte at a time:
 * 2 GiB of copying). Bytes once appended are never written again, so views of them handed out
 * ({@link ByteQueue.bytes} and its subarrays) stay as they were. When all is taken, the store
 * is let go: an idle queue holds nothing; when most of a large store is taken, what is left
 * moves to a smaller one. A first piece is held as it is, with the buffer it is a view of.
 *
 * @example
 * ```ts
 * import { ByteQueue } from "@duet/core/bytes";
 * const queue = new ByteQueue();
 * queue.push(new Uint8Array([1, 2]));
 * queue.push(new Uint8Array([3]));
 * const first = queue.bytes.subarray(0, 2); // [1, 2]
 * queue.consume(2);
 * console.assert(first.join() === "1,2" && queue.bytes.join() === "3");
 * ```
 */
export class ByteQueue {
  #store: Uint8Array = EMPTY;
  #start = 0;
  #end = 0;
  /** Whether `#store` is this queue's own (else a caller's piece, adopted without a copy). */
  #own = false;

  /** What is held, oldest first: a view, valid until the bytes are consumed and reused. */
  get bytes(): Uint8Array {
    return this.#store.subarray(this.#start, this.#end);
  }

  /** How many bytes are held. */
  get length(): number {
    return this.#end - this.#start;
  }

  /**
   * Appends `piece`. The first piece of an empty queue is held as it is, not copied: the
   * caller must not write into it afterwards.
   */
  push(piece: Uint8Array): void {
    if (piece.length === 0) return;
    if (this.#start === this.#end) {
      this.#store = piece;
      this.#start = 0;
      this.#end = piece.length;
      this.#own = false;
      return;
    }
    if (this.#own && this.#store.length - this.#end >= piece.length) {
      this.#store.set(piece, this.#end);
      this.#end += piece.length;
      return;
    }
    const held = this.#end - this.#start;
    const store = new Uint8Array(Math.max(2 * (held + piece.length), 256));
    store.set(this.#store.subarray(this.#start, this.#end));
    store.set(piece, held);
    this.#store = store;
    this.#start = 0;
    this.#end = held + piece.length;
    this.#own = true;
  }

  /**
   * Takes `count` bytes from the front.
   *
   * @throws {RangeError} when `count` is negative, not whole, or more than is held.
   */
  consume(count: number): void {
    if (!Number.isInteger(count) || count < 0 || count > this.length) {
      throw new RangeError(`cannot consume ${count} of ${this.length} bytes`);
    }
    this.#start += count;
    if (this.#start === this.#end) return this.clear();
    // Little left of a large store of ours: move it, so the store does not outlive its use.
    const held = this.#end - this.#start;
    if (this.#own && this.#store.length > SHRINK_ABOVE && held * 4 < this.#store.length) {
      this.#store = this.#store.slice(this.#start, this.#end);
      this.#start = 0;
      this.#end = held;
      this.#own = false; // exactly full: the next push grows it
    }
  }

  /** Takes everything, and lets the store go. */
  clear(): void {
    this.#store = EMPTY;
    this.#start = 0;
    this.#end = 0;
    this.#own = false;
  }
}
