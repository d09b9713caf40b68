/**
 * Stream plumbing shared by the connection, the session and the client: reading the
 * varints and frames that head a QUIC stream, handing on what follows them, refusing
 * streams that have no session, and counting stream bytes against session flow control.
 *
 * @module
 */
import { concatBytes } from "@noble/hashes/utils.js";
import type { Frame, FrameReader } from "./frames.ts";
import type { FlowControlError, FlowSignal, SessionFlow, StreamKind } from "./flow.ts";
import { readVarint } from "./varint.ts";

/** A bidirectional stream, as in the W3C WebTransport API. */
export interface BidirectionalStream {
  /** What the peer sends, in order; ends at the peer's FIN. */
  readable: ReadableStream<Uint8Array>;
  /** What we send; `close()` sends FIN. */
  writable: WritableStream<Uint8Array>;
}

/** A stream that arrived before its session; kept by `EarlyData` (early.ts). */
export type EarlyStream =
  | { kind: "bidi"; stream: BidirectionalStream }
  | { kind: "uni"; stream: ReadableStream<Uint8Array> };

/** Reads from `source` after a header was parsed off its first bytes. */
export function remainderStream(
  source: ReadableStreamDefaultReader<Uint8Array>,
  rest: Uint8Array,
): ReadableStream<Uint8Array> {
  let first: Uint8Array | undefined = rest.length ? rest : undefined;
  return new ReadableStream({
    async pull(controller) {
      if (first) {
        controller.enqueue(first);
        first = undefined;
        return;
      }
      const { value, done } = await source.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: (reason) => source.cancel(reason),
  }, { highWaterMark: 0 });
}

/**
 * Reads one varint at the start of `buffered` followed by what `source` delivers. Returns
 * its value and every byte read so far (`bytes`; the varint's own are the first `length`),
 * or undefined if the stream ends first. Stream headers are one or two varints, so a
 * second call continues from the first call's remainder without wrapping the source.
 */
export async function readLeadingVarint(
  source: ReadableStreamDefaultReader<Uint8Array>,
  buffered: Uint8Array = new Uint8Array(0),
): Promise<{ value: number; length: number; bytes: Uint8Array } | undefined> {
  let bytes = buffered;
  for (;;) {
    const varint = readVarint(bytes);
    if (varint) return { ...varint, bytes };
    const { value, done } = await source.read();
    if (done) return undefined;
    bytes = concatBytes(bytes, value);
  }
}

/** Feeds `frames` from `source` until a whole frame is there; undefined if the stream ends. */
export async function readFrame(
  frames: FrameReader,
  source: ReadableStreamDefaultReader<Uint8Array>,
): Promise<Frame | undefined> {
  let frame = frames.next();
  while (!frame) {
    const { value, done } = await source.read();
    if (done) return undefined;
    frames.push(value);
    frame = frames.next();
  }
  return frame;
}

/**
 * Refuses a stream that has no session: STOP_SENDING on what it reads, FIN on what it
 * writes. The draft asks for WT_BUFFERED_STREAM_REJECTED; Deno sends code 0 and cannot
 * reset a send stream (see the README).
 */
export function refuse(item: EarlyStream): void {
  if (item.kind === "bidi") {
    item.stream.readable.cancel().catch(() => {});
    item.stream.writable.close().catch(() => {});
  } else {
    item.stream.cancel().catch(() => {});
  }
}

/** What stream metering needs from its session. */
export interface Meter {
  /** The session's flow control; without it (or with nothing to count) streams pass as they are. */
  readonly flow?: SessionFlow;
  /** Whether the session has ended: a sender waiting for credit then fails. */
  ended(): boolean;
  /** Resolves when the peer raises a limit, or the session ends. */
  credit(): Promise<void>;
  /** Sends a flow-control capsule on the CONNECT stream; nothing when `signal` is undefined. */
  sendCapsule(signal: FlowSignal | undefined): void;
  /** The peer broke flow control: the session ends. */
  flowError(error: FlowControlError): void;
}

/**
 * `writable`, spending the peer's data credit and waiting for more when it runs out; itself
 * when there is no credit to count (flow control off, or a limit no session reaches).
 */
export function meterOut(
  writable: WritableStream<Uint8Array>,
  meter: Meter,
): WritableStream<Uint8Array> {
  const flow = meter.flow;
  if (!flow?.meterSend) return writable;
  const writer = writable.getWriter();
  return new WritableStream({
    write: async (chunk) => {
      for (let offset = 0; offset < chunk.length;) {
        const granted = flow.takeData(chunk.length - offset);
        if (granted === 0) {
          if (meter.ended()) throw new Error("The session is closed");
          meter.sendCapsule(flow.dataBlocked());
          await meter.credit();
          continue;
        }
        await writer.write(chunk.subarray(offset, offset + granted));
        offset += granted;
      }
    },
    close: () => writer.close(),
    abort: (reason) => writer.abort(reason),
  });
}

/**
 * `readable` from a peer's sender, counting what it sends against the window we granted
 * and raising the window as the application reads; a peer's own stream (`kind`) also
 * counts, when it ends, toward raising the stream limit.
 */
export function meterIn(
  readable: ReadableStream<Uint8Array>,
  meter: Meter,
  kind?: StreamKind,
): ReadableStream<Uint8Array> {
  const flow = meter.flow;
  if (!flow?.meterReceive) return readable; // windows no session fills: nothing to raise
  const source = readable.getReader();
  let ended = false;
  const end = () => {
    if (ended || !kind) return;
    ended = true;
    meter.sendCapsule(flow.closedStream(kind));
  };
  return new ReadableStream({
    pull: async (controller) => {
      let read;
      try {
        read = await source.read();
      } catch (error) {
        end();
        throw error;
      }
      if (read.done) {
        end();
        return controller.close();
      }
      try {
        flow.receivedData(read.value.length);
      } catch (error) {
        meter.flowError(error as FlowControlError);
        throw error;
      }
      meter.sendCapsule(flow.consumedData(read.value.length));
      controller.enqueue(read.value);
    },
    cancel: (reason) => {
      end();
      return source.cancel(reason);
    },
  }, { highWaterMark: 0 });
}
