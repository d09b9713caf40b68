/**
 * One WebTransport session: its CONNECT stream (capsules: close, drain, flow control), the
 * streams and datagrams the connection hands it, and the streams it opens. The same class
 * serves the server's sessions and the client's.
 *
 * @module
 */
import { encodeFrame, FrameReader, FrameType, StreamType } from "./frames.ts";
import {
  type Capsule,
  CapsuleType,
  decodeCloseSession,
  encodeCapsule,
  encodeCloseSession,
  encodeDatagram,
  readCapsule,
  truncateReason,
} from "./capsule.ts";
import { encodeVarint, readVarintExact } from "./varint.ts";
import type { Dialect } from "./dialect.ts";
import {
  FlowCapsule,
  FlowControlError,
  type FlowSignal,
  type SessionFlow,
  type StreamKind,
} from "./flow.ts";
import { concatBytes } from "@noble/hashes/utils.js";
import { ByteQueue } from "@duet/core/bytes";
import { type BidirectionalStream, type Meter, meterIn, meterOut } from "./streams.ts";

/** How a session ended. */
export interface CloseInfo {
  /** The application's close code, a 32-bit unsigned integer (0 when none was given). */
  closeCode: number;
  /** The application's reason, at most 1,024 bytes of UTF-8 ("" when none was given). */
  reason: string;
}

/** Incoming datagrams a session queues for its reader; more are dropped (and counted). */
export const DATAGRAM_QUEUE = 1024;

/**
 * One WebTransport session on an HTTP/3 connection, shaped like the W3C `WebTransport`
 * object: streams both ways, datagrams, `closed`, `draining`, `close()`. Servers get one
 * from `SessionRequest.accept()`, clients from `connectWebTransport()`.
 *
 * @example Echo every bidirectional stream the peer opens
 * ```ts ignore
 * for await (const { readable, writable } of session.incomingBidirectionalStreams) {
 *   readable.pipeTo(writable).catch(() => {});
 * }
 * ```
 */
export class WebTransportSession {
  /** The URL the client asked for. */
  readonly url: URL;
  /** The CONNECT request's header fields. */
  readonly headers: Map<string, string>;
  /** Resolves when the session ends, with the close code and reason (0 and "" if none). */
  readonly closed: Promise<CloseInfo>;
  /** Resolved: a server session is ready once accepted. */
  readonly ready: Promise<void> = Promise.resolve();
  /**
   * Resolves when the peer asks for the session to wind down (a DRAIN capsule, or GOAWAY on
   * its connection): finish what is under way and open nothing new.
   */
  readonly draining: Promise<void>;
  /** Datagrams of this session. Incoming ones beyond 1,024 unread are dropped. */
  readonly datagrams: {
    readable: ReadableStream<Uint8Array>;
    writable: WritableStream<Uint8Array>;
  };
  /** Bidirectional streams the peer opens; ends when the session does. */
  readonly incomingBidirectionalStreams: ReadableStream<BidirectionalStream>;
  /** Unidirectional streams the peer opens; ends when the session does. */
  readonly incomingUnidirectionalStreams: ReadableStream<ReadableStream<Uint8Array>>;

  /** The session's id: its CONNECT stream's QUIC stream id. */
  readonly id: number;
  /** The dialect of WebTransport the session speaks (see dialect.ts). */
  readonly dialect: Dialect;
  /** The application protocol both sides agreed (`WT-Protocol`), or "" if none. */
  readonly protocol: string;
  /**
   * Session flow control (drafts 13–16, see flow.ts), when both sides asked for it: the
   * streams and bytes the peer lets us send, and our windows. Undefined when off.
   */
  readonly flow?: SessionFlow;
  /** Wakes senders waiting for flow-control credit when the peer raises a limit. */
  #credit = Promise.withResolvers<void>();
  /** Writes on the CONNECT stream (capsules), one at a time. */
  #connectWrites: Promise<void> = Promise.resolve();
  readonly #conn: Deno.QuicConn;
  readonly #connect: BidirectionalStream;
  readonly #onClosed: (info: CloseInfo) => void;
  readonly #onDraining: () => void;
  #bidi!: ReadableStreamDefaultController<BidirectionalStream>;
  #uni!: ReadableStreamDefaultController<ReadableStream<Uint8Array>>;
  #datagrams!: ReadableStreamDefaultController<Uint8Array>;
  #ended = false;
  /** Flow-control metering of this session's streams (streams.ts). */
  readonly #meter: Meter;
  readonly #peerDone = Promise.withResolvers<void>();
  /** @internal Set by the client: finishes the connection after close(). */
  _afterClose?: () => Promise<void>;
  /** Datagrams dropped because the reader fell behind. */
  droppedDatagrams = 0;

  /**
   * Made by the connection (server: when a request is accepted; client: when the CONNECT
   * is answered 200), not by applications.
   */
  constructor(
    { id, conn, connect, url, headers, connectRest, dialect, protocol, flow }: {
      id: number;
      conn: Deno.QuicConn;
      /** The CONNECT stream. */
      connect: BidirectionalStream;
      url: URL;
      headers: Map<string, string>;
      /** The CONNECT stream's bytes after the HEADERS: capsules in DATA frames. */
      connectRest: ReadableStreamDefaultReader<Uint8Array>;
      dialect: Dialect;
      protocol: string;
      flow?: SessionFlow;
    },
  ) {
    this.id = id;
    this.flow = flow;
    this.#meter = {
      flow,
      ended: () => this.#ended,
      credit: () => this.#credit.promise,
      sendCapsule: (signal) => this.#sendCapsule(signal),
      flowError: (error) => this.#flowError(error),
    };
    this.#conn = conn;
    this.#connect = connect;
    this.url = url;
    this.headers = headers;
    this.dialect = dialect;
    this.protocol = protocol;
    const closed = Promise.withResolvers<CloseInfo>();
    this.closed = closed.promise;
    this.#onClosed = closed.resolve;
    const draining = Promise.withResolvers<void>();
    this.draining = draining.promise;
    this.#onDraining = draining.resolve;
    this.incomingBidirectionalStreams = new ReadableStream({ start: (c) => void (this.#bidi = c) });
    this.incomingUnidirectionalStreams = new ReadableStream({ start: (c) => void (this.#uni = c) });
    this.datagrams = {
      readable: new ReadableStream({ start: (c) => void (this.#datagrams = c) }, {
        highWaterMark: DATAGRAM_QUEUE,
      }),
      writable: new WritableStream({
        write: (payload) => conn.sendDatagram(encodeDatagram(id, payload)),
      }),
    };
    this.#watchConnectStream(connectRest);
  }

  /**
   * Opens a bidirectional stream to the peer. Waits, as the W3C API does, while the peer's
   * stream limits (QUIC's, and the session's under flow control) allow no more.
   *
   * @throws {Error} the session or its connection closed first.
   *
   * @example Send a message and read the reply to its end
   * ```ts ignore
   * const { readable, writable } = await session.createBidirectionalStream();
   * const writer = writable.getWriter();
   * await writer.write(new TextEncoder().encode("ping"));
   * await writer.close(); // FIN
   * for await (const chunk of readable) console.log(new TextDecoder().decode(chunk));
   * ```
   */
  async createBidirectionalStream(): Promise<BidirectionalStream> {
    await this.#streamCredit("bidi");
    // Waits for stream credit, as the W3C API does, instead of failing at the peer's limit.
    const stream = await this.#conn.createBidirectionalStream({ waitUntilAvailable: true });
    const writer = stream.writable.getWriter();
    await writer.write(
      concatBytes(encodeVarint(FrameType.WEBTRANSPORT_STREAM), encodeVarint(this.id)),
    );
    writer.releaseLock();
    return {
      readable: meterIn(stream.readable, this.#meter),
      writable: meterOut(stream.writable, this.#meter),
    };
  }

  /**
   * Opens a unidirectional stream to the peer; waits for stream credit as
   * {@link createBidirectionalStream} does.
   *
   * @throws {Error} the session or its connection closed first.
   */
  async createUnidirectionalStream(): Promise<WritableStream<Uint8Array>> {
    await this.#streamCredit("uni");
    const stream = await this.#conn.createUnidirectionalStream({ waitUntilAvailable: true });
    const writer = stream.getWriter();
    await writer.write(
      concatBytes(encodeVarint(StreamType.WEBTRANSPORT), encodeVarint(this.id)),
    );
    writer.releaseLock();
    return meterOut(stream, this.#meter);
  }

  /** Waits until the peer's stream limit lets us open one of `kind` (flow control only). */
  async #streamCredit(kind: StreamKind): Promise<void> {
    const flow = this.flow;
    if (!flow) return;
    while (!flow.takeStream(kind)) {
      if (this.#ended) throw new Error("The session is closed");
      this.#sendCapsule(flow.streamsBlocked(kind));
      await this.#credit.promise;
    }
  }

  /** Sends a flow-control capsule on the CONNECT stream (nothing when `signal` is undefined). */
  #sendCapsule(signal: FlowSignal | undefined): void {
    if (!signal || this.#ended) return;
    this.#writeConnect(
      encodeFrame(FrameType.DATA, encodeCapsule(signal.type, encodeVarint(signal.value))),
    )
      .catch(() => {}); // the peer is gone: the session is ending anyway
  }

  /** Writes on the CONNECT stream after every earlier write there. */
  #writeConnect(bytes: Uint8Array, finish = false): Promise<void> {
    const write = this.#connectWrites.then(async () => {
      const writer = this.#connect.writable.getWriter();
      try {
        if (bytes.length) await writer.write(bytes);
        if (finish) await writer.close();
      } finally {
        writer.releaseLock();
      }
    });
    this.#connectWrites = write.catch(() => {});
    return write;
  }

  /**
   * The peer broke flow control: the session ends. The drafts ask for a reset with
   * WT_FLOW_CONTROL_ERROR, a code Deno cannot send; we stop reading and send FIN instead,
   * and report the error as the close reason.
   */
  #flowError(error: FlowControlError): void {
    if (this.#ended) return;
    this.#writeConnect(new Uint8Array(0), true).catch(() => {});
    this.#end({ closeCode: 0, reason: `WT_FLOW_CONTROL_ERROR: ${error.message}` });
  }

  /**
   * Ends the session with a close capsule (then FIN), as the W3C API's close(). A reason
   * over 1,024 bytes of UTF-8 is cut on a character boundary, as the W3C API does.
   *
   * @throws {RangeError} `closeCode` is not a 32-bit unsigned integer (nothing is sent).
   */
  async close(info: Partial<CloseInfo> = {}): Promise<void> {
    if (this.#ended) return;
    const closeInfo = { closeCode: info.closeCode ?? 0, reason: truncateReason(info.reason ?? "") };
    // Encoded before the try: a bad code is the caller's error, not a peer that is gone.
    const capsule = encodeFrame(
      FrameType.DATA,
      encodeCloseSession(closeInfo.closeCode, closeInfo.reason),
    );
    try {
      await this.#writeConnect(capsule, true);
    } catch {
      // the peer is gone already: the session ends all the same
    }
    this.#end(closeInfo);
    await this._afterClose?.();
  }

  /** @internal Resolves when the peer has ended the CONNECT stream (or it failed). */
  _peerDone(): Promise<void> {
    return this.#peerDone.promise;
  }

  /** @internal */
  _addBidirectional(stream: BidirectionalStream): void {
    if (this.#ended || !this.#counted("bidi")) return;
    this.#bidi.enqueue({
      readable: meterIn(stream.readable, this.#meter, "bidi"),
      writable: meterOut(stream.writable, this.#meter),
    });
  }

  /** @internal */
  _addUnidirectional(stream: ReadableStream<Uint8Array>): void {
    if (this.#ended || !this.#counted("uni")) return;
    this.#uni.enqueue(meterIn(stream, this.#meter, "uni"));
  }

  /** A peer's stream, counted against the limit we granted; false when it broke it. */
  #counted(kind: StreamKind): boolean {
    try {
      this.flow?.receivedStream(kind);
      return true;
    } catch (error) {
      this.#flowError(error as FlowControlError);
      return false;
    }
  }

  /** @internal */
  _datagram(payload: Uint8Array): void {
    if (this.#ended) return;
    if ((this.#datagrams.desiredSize ?? 0) <= 0) this.droppedDatagrams++;
    else this.#datagrams.enqueue(payload);
  }

  /** Asks the peer to wind the session down (a DRAIN_WEBTRANSPORT_SESSION capsule). */
  async drain(): Promise<void> {
    if (this.#ended) return;
    try {
      await this.#writeConnect(
        encodeFrame(
          FrameType.DATA,
          encodeCapsule(CapsuleType.DRAIN_WEBTRANSPORT_SESSION, new Uint8Array(0)),
        ),
      );
    } catch {
      // the peer is gone already
    }
  }

  /** @internal The peer's connection sent GOAWAY. */
  _draining(): void {
    this.#onDraining();
  }

  /** @internal */
  _connectionLost(): void {
    this.#end({ closeCode: 0, reason: "" });
  }

  #end(info: CloseInfo): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#credit.resolve(); // senders waiting for credit find the session closed
    for (const controller of [this.#bidi, this.#uni, this.#datagrams]) {
      try {
        controller.close();
      } catch { /* closed */ }
    }
    this.#onClosed(info);
  }

  /** Reads DATA frames on the CONNECT stream for capsules; FIN without one ends quietly. */
  async #watchConnectStream(source: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    const frames = new FrameReader();
    const capsules = new ByteQueue();
    try {
      for (;;) {
        const { value, done } = await source.read();
        if (done) break;
        frames.push(value);
        for (let frame = frames.next(); frame; frame = frames.next()) {
          if (frame.type !== FrameType.DATA) continue;
          capsules.push(frame.payload);
          for (let read = readCapsule(capsules.bytes); read; read = readCapsule(capsules.bytes)) {
            capsules.consume(read.length);
            if (!this.#onCapsule(read.capsule)) break;
          }
        }
      }
    } catch {
      // Reset, or malformed (a capsule past its limit, a bad close capsule): the session is
      // over either way. Stop reading; the drafts ask for a reset with H3_MESSAGE_ERROR, a
      // code Deno cannot send.
      source.cancel().catch(() => {});
    }
    this.#peerDone.resolve();
    this.#end({ closeCode: 0, reason: "" });
    // However the peer ended it, our side of the CONNECT stream ends too, so the peer learns
    // the session is over and the stream's slot is freed (a no-op after our own close()).
    this.#writeConnect(new Uint8Array(0), true).catch(() => {});
  }

  /**
   * Acts on one capsule from the peer. Returns false when the peer broke flow control (the
   * rest of that DATA frame's capsules are not read).
   *
   * @throws {H3Error} a malformed close capsule (the session ends).
   */
  #onCapsule(capsule: Capsule): boolean {
    if (capsule.type === CapsuleType.DRAIN_WEBTRANSPORT_SESSION) this.#onDraining();
    if (this.flow && isFlowCapsule(capsule.type)) {
      // Without flow control these are ignored, as the drafts require.
      const value = flowCapsuleValue(capsule.type, capsule.value);
      try {
        if (this.flow.onCapsule(capsule.type, value)) {
          const waiting = this.#credit;
          this.#credit = Promise.withResolvers<void>();
          waiting.resolve();
        }
      } catch (error) {
        if (!(error instanceof FlowControlError)) throw error;
        this.#flowError(error);
        return false;
      }
    }
    if (capsule.type === CapsuleType.CLOSE_WEBTRANSPORT_SESSION) {
      const { code, reason } = decodeCloseSession(capsule.value);
      this.#end({ closeCode: code, reason });
      // Answer the peer's close with our FIN, so it learns the session is over.
      this.#writeConnect(new Uint8Array(0), true).catch(() => {});
    }
    return true;
  }
}

/**
 * A flow-control capsule's value. Varints above 2^53 - 1 are not exact as numbers, so the
 * check that matters is made on the exact value: a stream count above 2^60 becomes
 * Infinity (refused by {@link SessionFlow.onCapsule}), any other huge value 2^53 - 1 (a
 * limit no session reaches). A value that is not a varint is 0 (a limit that never rises).
 */
export function flowCapsuleValue(type: number, value: Uint8Array): number {
  const exact = readVarintExact(value);
  if (exact === undefined) return 0;
  if (exact <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(exact);
  const streams = type === FlowCapsule.WT_MAX_STREAMS_BIDI ||
    type === FlowCapsule.WT_MAX_STREAMS_UNI || type === FlowCapsule.WT_STREAMS_BLOCKED_BIDI ||
    type === FlowCapsule.WT_STREAMS_BLOCKED_UNI;
  return streams && exact > 2n ** 60n ? Infinity : Number.MAX_SAFE_INTEGER;
}

const FLOW_CAPSULES = new Set<number>(Object.values(FlowCapsule));

/** Whether a capsule type is one of session flow control's. */
export function isFlowCapsule(type: number): boolean {
  return FLOW_CAPSULES.has(type);
}
