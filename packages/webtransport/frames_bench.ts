// deno bench packages/webtransport/frames_bench.ts -- results and ratios in docs/benchmarks.md.
// Reassembling one 64 KiB HTTP/3 frame that a peer sends a byte at a time, and in 1,200-byte
// pieces (about a QUIC packet's payload). The anchor joins each piece to all that is held, as
// the reader did before it kept its bytes in @duet/core's ByteQueue.
import { concatBytes } from "@noble/hashes/utils.js";
import { encodeFrame, FrameReader, FrameType } from "./frames.ts";
import { readVarint } from "./varint.ts";

const frame = encodeFrame(FrameType.DATA, new Uint8Array(65_536 - 8));

/** The anchor: a reader that joins every piece to what it holds. */
function joinEachPiece(pieces: Uint8Array[]): number {
  let held: Uint8Array = new Uint8Array(0);
  let frames = 0;
  for (const piece of pieces) {
    held = held.length === 0 ? piece : concatBytes(held, piece);
    const type = readVarint(held, 0);
    const length = type && readVarint(held, type.length);
    if (type && length && held.length >= type.length + length.length + length.value) {
      held = held.subarray(type.length + length.length + length.value);
      frames++;
    }
  }
  return frames;
}

function withQueue(pieces: Uint8Array[]): number {
  const reader = new FrameReader();
  let frames = 0;
  for (const piece of pieces) {
    reader.push(piece);
    if (reader.next()) frames++;
  }
  return frames;
}

for (const size of [1, 1_200]) {
  const pieces: Uint8Array[] = [];
  for (let at = 0; at < frame.length; at += size) pieces.push(frame.subarray(at, at + size));
  const group = `64 KiB frame in ${size}-byte pieces`;
  Deno.bench(`anchor: join each piece (${size} B)`, { group, baseline: true }, () => {
    if (joinEachPiece(pieces) !== 1) throw new Error("no frame");
  });
  Deno.bench(`FrameReader (${size} B)`, { group }, () => {
    if (withQueue(pieces) !== 1) throw new Error("no frame");
  });
}
