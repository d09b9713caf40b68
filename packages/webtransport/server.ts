/**
 * A WebTransport-over-HTTP/3 server on Deno's raw QUIC API, speaking every deployed dialect
 * of draft-ietf-webtrans-http3 (02, 07, 14 and 16; see dialect.ts). It replaces Deno's
 * WebTransport wrapper: streams are taken straight from the QUIC connection, so closing
 * one sends a real FIN and stream credit is returned as soon as a stream ends.
 *
 * @module
 */
import { H3, H3Error } from "./errors.ts";
import { decodeFieldSection, encodeFieldSection, type Field } from "./qpack.ts";
import {
  decodeSettings,
  encodeFrame,
  encodeSettings,
  type Frame,
  FrameReader,
  FrameType,
  StreamType,
} from "./frames.ts";
import {
  CapsuleType,
  decodeCloseSession,
  decodeDatagram,
  encodeCapsule,
  encodeCloseSession,
  encodeDatagram,
  readCapsule,
  truncateReason,
} from "./capsule.ts";
import { encodeVarint, readVarint, readVarintExact } from "./varint.ts";
import {
  type Dialect,
  DIALECTS,
  localSettings,
  peerDialects,
  requestDialect,
  responseFields,
  type Role,
  sessionsPerConnection,
} from "./dialect.ts";
import { EarlyData, type EarlyLimits } from "./early.ts";
import {
  DEFAULT_WINDOWS,
  FlowCapsule,
  flowControlEnabled,
  FlowControlError,
  type FlowLimits,
  type FlowSignal,
  initialLimits,
  SessionFlow,
  type StreamKind,
} from "./flow.ts";
import {
  AVAILABLE_PROTOCOLS,
  encodeProtocol,
  parseAvailableProtocols,
  PROTOCOL,
} from "./protocols.ts";

/** A bidirectional stream, as in the W3C WebTransport API. */
export interface BidirectionalStream {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
}

/** How a session ended. */
export interface CloseInfo {
  closeCode: number;
  reason: string;
}

/** A client's request to open a session, before the server decides. */
export interface SessionRequest {
  /** https://authority/path?query as the client sent it. */
  url: URL;
  /** The request's header fields (pseudo-headers included), lowercase names. */
  headers: Map<string, string>;
  /** The Origin header, or null (non-browser clients). */
  origin: string | null;
  /** The client's UDP address. */
  remoteAddr: Deno.NetAddr;
  /** The dialect of WebTransport this request speaks (see dialect.ts). */
  dialect: Dialect;
  /**
   * The application protocols the client offers (`WT-Available-Protocols`, the W3C
   * `protocols` option), most preferred first; empty when it offers none.
   */
  protocols: string[];
  /**
   * Accepts: answers 200 and returns the session. `protocol` is the application protocol
   * chosen from {@link protocols}, sent as `WT-Protocol`.
   *
   * @throws {RangeError} `protocol` is not one the client offered.
   */
  accept(options?: { protocol?: string }): Promise<WebTransportSession>;
  /**
   * Refuses with an HTTP status (404 by default).
   *
   * @throws {RangeError} `status` is not an integer from 300 to 599 (nothing is sent).
   */
  reject(status?: number): Promise<void>;
}

const DATAGRAM_QUEUE = 1024;

/** How long a peer has to send its SETTINGS, in ms from the connection's start. */
export const SETTINGS_TIMEOUT_MS = 5_000;

/** Requests that may wait for the client's SETTINGS on one connection; more are refused. */
const MAX_UNSETTLED_REQUESTS = 8;

/**
 * The URL of an extended CONNECT: https, with an authority and a path that make a URL, and
 * no userinfo (RFC 9110 4.2.4 forbids it in an https authority). Undefined otherwise.
 */
function requestUrl(headers: Map<string, string>): URL | undefined {
  const authority = headers.get(":authority");
  const path = headers.get(":path");
  if (headers.get(":scheme") !== "https" || !authority || !path) return undefined;
  if (authority.includes("@") || !path.startsWith("/")) return undefined;
  try {
    return new URL(`https://${authority}${path}`);
  } catch {
    return undefined;
  }
}

/** How long a closed connection's CONNECT streams are read for close capsules, in ms. */
const CLOSE_READ_MS = 100;

/**
 * Streams a client may have open at once per connection. QUIC's usual 100 counts the
 * CONNECT stream too, so a page with 100 streams open would find its 100th refused
 * (Chromium fails createBidirectionalStream() rather than wait); 256 leaves room.
 */
const DEFAULT_TRANSPORT: Deno.QuicTransportOptions = {
  maxConcurrentBidirectionalStreams: 256,
  maxConcurrentUnidirectionalStreams: 256,
};

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
async function readLeadingVarint(
  source: ReadableStreamDefaultReader<Uint8Array>,
  buffered: Uint8Array = new Uint8Array(0),
): Promise<{ value: number; length: number; bytes: Uint8Array } | undefined> {
  let bytes = buffered;
  for (;;) {
    const varint = readVarint(bytes);
    if (varint) return { ...varint, bytes };
    const { value, done } = await source.read();
    if (done) return undefined;
    const joined = new Uint8Array(bytes.length + value.length);
    joined.set(bytes);
    joined.set(value, bytes.length);
    bytes = joined;
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

/** One WebTransport session on an HTTP/3 connection. */
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
  /** Streams the client opens. */
  readonly incomingBidirectionalStreams: ReadableStream<BidirectionalStream>;
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
  readonly #peerDone = Promise.withResolvers<void>();
  /** @internal Set by the client: finishes the connection after close(). */
  _afterClose?: () => Promise<void>;
  /** Datagrams dropped because the reader fell behind. */
  droppedDatagrams = 0;

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

  /** Opens a bidirectional stream to the peer. */
  async createBidirectionalStream(): Promise<BidirectionalStream> {
    await this.#streamCredit("bidi");
    // Waits for stream credit, as the W3C API does, instead of failing at the peer's limit.
    const stream = await this.#conn.createBidirectionalStream({ waitUntilAvailable: true });
    const writer = stream.writable.getWriter();
    await writer.write(
      new Uint8Array([...encodeVarint(FrameType.WEBTRANSPORT_STREAM), ...encodeVarint(this.id)]),
    );
    writer.releaseLock();
    return { readable: this.#meterIn(stream.readable), writable: this.#meterOut(stream.writable) };
  }

  /** Opens a unidirectional stream to the peer. */
  async createUnidirectionalStream(): Promise<WritableStream<Uint8Array>> {
    await this.#streamCredit("uni");
    const stream = await this.#conn.createUnidirectionalStream({ waitUntilAvailable: true });
    const writer = stream.getWriter();
    await writer.write(
      new Uint8Array([...encodeVarint(StreamType.WEBTRANSPORT), ...encodeVarint(this.id)]),
    );
    writer.releaseLock();
    return this.#meterOut(stream);
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

  /**
   * `writable`, spending the peer's data credit and waiting for more when it runs out; itself
   * when there is no credit to count (flow control off, or a limit no session reaches).
   */
  #meterOut(writable: WritableStream<Uint8Array>): WritableStream<Uint8Array> {
    const flow = this.flow;
    if (!flow?.meterSend) return writable;
    const writer = writable.getWriter();
    return new WritableStream({
      write: async (chunk) => {
        for (let offset = 0; offset < chunk.length;) {
          const granted = flow.takeData(chunk.length - offset);
          if (granted === 0) {
            if (this.#ended) throw new Error("The session is closed");
            this.#sendCapsule(flow.dataBlocked());
            await this.#credit.promise;
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
  #meterIn(readable: ReadableStream<Uint8Array>, kind?: StreamKind): ReadableStream<Uint8Array> {
    const flow = this.flow;
    if (!flow?.meterReceive) return readable; // windows no session fills: nothing to raise
    const source = readable.getReader();
    let ended = false;
    const end = () => {
      if (ended || !kind) return;
      ended = true;
      this.#sendCapsule(flow.closedStream(kind));
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
          this.#flowError(error as FlowControlError);
          throw error;
        }
        this.#sendCapsule(flow.consumedData(read.value.length));
        controller.enqueue(read.value);
      },
      cancel: (reason) => {
        end();
        return source.cancel(reason);
      },
    }, { highWaterMark: 0 });
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
      readable: this.#meterIn(stream.readable, "bidi"),
      writable: this.#meterOut(stream.writable),
    });
  }

  /** @internal */
  _addUnidirectional(stream: ReadableStream<Uint8Array>): void {
    if (this.#ended || !this.#counted("uni")) return;
    this.#uni.enqueue(this.#meterIn(stream, "uni"));
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
    let capsules: Uint8Array = new Uint8Array(0);
    try {
      for (;;) {
        const { value, done } = await source.read();
        if (done) break;
        frames.push(value);
        for (let frame = frames.next(); frame; frame = frames.next()) {
          if (frame.type !== FrameType.DATA) continue;
          const joined = new Uint8Array(capsules.length + frame.payload.length);
          joined.set(capsules);
          joined.set(frame.payload, capsules.length);
          capsules = joined;
          for (let read = readCapsule(capsules); read; read = readCapsule(capsules)) {
            capsules = capsules.subarray(read.length);
            if (read.capsule.type === CapsuleType.DRAIN_WEBTRANSPORT_SESSION) this.#onDraining();
            if (this.flow && isFlowCapsule(read.capsule.type)) {
              // Without flow control these are ignored, as the drafts require.
              const value = flowCapsuleValue(read.capsule.type, read.capsule.value);
              try {
                if (this.flow.onCapsule(read.capsule.type, value)) {
                  const waiting = this.#credit;
                  this.#credit = Promise.withResolvers<void>();
                  waiting.resolve();
                }
              } catch (error) {
                if (!(error instanceof FlowControlError)) throw error;
                this.#flowError(error);
                break;
              }
            }
            if (read.capsule.type === CapsuleType.CLOSE_WEBTRANSPORT_SESSION) {
              const { code, reason } = decodeCloseSession(read.capsule.value);
              this.#end({ closeCode: code, reason });
              // Answer the peer's close with our FIN, so it learns the session is over.
              this.#writeConnect(new Uint8Array(0), true).catch(() => {});
            }
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
}

/**
 * A flow-control capsule's value. Varints above 2^53 - 1 are not exact as numbers, so the
 * check that matters is made on the exact value: a stream count above 2^60 becomes
 * Infinity (refused by {@link SessionFlow.onCapsule}), any other huge value 2^53 - 1 (a
 * limit no session reaches). A value that is not a varint is 0 (a limit that never rises).
 */
function flowCapsuleValue(type: number, value: Uint8Array): number {
  const exact = readVarintExact(value);
  if (exact === undefined) return 0;
  if (exact <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(exact);
  const streams = type === FlowCapsule.WT_MAX_STREAMS_BIDI ||
    type === FlowCapsule.WT_MAX_STREAMS_UNI || type === FlowCapsule.WT_STREAMS_BLOCKED_BIDI ||
    type === FlowCapsule.WT_STREAMS_BLOCKED_UNI;
  return streams && exact > 2n ** 60n ? Infinity : Number.MAX_SAFE_INTEGER;
}

/** Options of {@link serveWebTransport}. */
export interface ServeOptions {
  hostname?: string;
  port?: number;
  /** Certificate and key, PEM. {@link WebTransportServer.setCertificate} replaces them. */
  cert: string;
  key: string;
  /**
   * QUIC transport settings: idle timeout, keep-alive, and the number of streams a client
   * may have open at once per connection (default 256 of each kind; Deno's otherwise).
   */
  transport?: Deno.QuicTransportOptions;
  /** The dialects to announce and serve (default: all four, see dialect.ts). */
  dialects?: readonly Dialect[];
  /**
   * Bounds of the streams and datagrams a connection keeps for sessions whose CONNECT has
   * not arrived or not been accepted yet (default `EARLY_LIMITS` of early.ts: 32 streams, 64
   * datagrams, 64 KiB).
   */
  earlyLimits?: EarlyLimits;
  /**
   * The session flow-control windows granted to clients in drafts 13–16 (default: so wide
   * they never need raising; see flow.ts).
   */
  flowWindows?: FlowLimits;
  /**
   * How long a client has to send its HTTP/3 SETTINGS, in ms (default 5,000); one that has
   * not is closed with H3_MISSING_SETTINGS, and its requests with it.
   */
  settingsTimeoutMs?: number;
  /**
   * QUIC connections one client address may hold at once (0 or absent: no cap); more are
   * closed as soon as their handshake ends, with H3_EXCESSIVE_LOAD. Behind a proxy or NAT
   * that gives many clients one address, a cap per address caps them all.
   */
  maxConnectionsPerAddress?: number;
}

/** A listening server. */
export interface WebTransportServer {
  /** Where it listens (UDP). */
  addr: Deno.NetAddr;
  /** Session requests, for the application to accept or reject. */
  requests: ReadableStream<SessionRequest>;
  /**
   * Presents a new certificate to connections from now on; established connections keep
   * theirs. For rotation: see {@link CertificateRotation}.
   */
  setCertificate(cert: string, key: string): void;
  /**
   * Winds down: stops taking connections, sends GOAWAY on every connection and a DRAIN
   * capsule on every session, waits up to `graceMs` (default 5,000) for the sessions to
   * end, then closes what is left with a close capsule and closes the endpoint.
   */
  shutdown(options?: { graceMs?: number; reason?: string }): Promise<void>;
  /** Stops listening and closes every connection at once. */
  close(): void;
}

/** Listens for WebTransport sessions. */
export function serveWebTransport(options: ServeOptions): WebTransportServer {
  const endpoint = new Deno.QuicEndpoint({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
  });
  let requests!: ReadableStreamDefaultController<SessionRequest>;
  const connections = new Set<H3Connection>();
  /** Connections open (or being accepted) per client address. */
  const perAddress = new Map<string, number>();
  let listener: Deno.QuicListener | undefined;
  const listen = (cert: string, key: string) => {
    listener?.stop();
    // A stopped listener's connections live on; the endpoint takes a new listener, which
    // is how Deno lets a server change certificates without dropping anyone.
    const current = endpoint.listen({
      ...DEFAULT_TRANSPORT,
      ...options.transport,
      cert,
      key,
      alpnProtocols: ["h3"],
    });
    listener = current;
    (async () => {
      for await (const incoming of current) {
        Promise.resolve(incoming.accept()).then((conn: Deno.QuicConn) => {
          // Connections per address. Counted after the handshake: reading the address of a
          // QuicIncoming makes Deno drop it (accept() then fails with BadResource; repro in
          // testdata/deno_incoming_remote_addr.ts), so the refusal cannot come before.
          const address = conn.remoteAddr.hostname;
          const held = perAddress.get(address) ?? 0;
          if (options.maxConnectionsPerAddress && held >= options.maxConnectionsPerAddress) {
            conn.close({
              closeCode: H3.EXCESSIVE_LOAD,
              reason: "too many connections from this address",
            });
            return;
          }
          perAddress.set(address, held + 1);
          const release = () => {
            const left = (perAddress.get(address) ?? 1) - 1;
            if (left > 0) perAddress.set(address, left);
            else perAddress.delete(address);
          };
          const h3 = new H3Connection(conn, (request) => {
            try {
              requests.enqueue(request);
            } catch {
              request.reject(503).catch(() => {}); // shutting down
            }
          }, {
            role: "server",
            dialects: options.dialects,
            earlyLimits: options.earlyLimits,
            flowWindows: options.flowWindows,
            settingsTimeoutMs: options.settingsTimeoutMs,
          });
          connections.add(h3);
          // run() fails when the peer is gone before our control stream opens: that is the
          // peer's problem, never a reason for the server to stop.
          h3.run().catch(() => {}).finally(() => {
            connections.delete(h3);
            release();
          });
        }).catch(() => {});
      }
    })().catch(() => {});
  };
  listen(options.cert, options.key);
  const endRequests = () => {
    try {
      requests.close();
    } catch { /* closed */ }
  };
  const close = () => {
    for (const h3 of connections) h3.conn.close({ closeCode: H3.NO_ERROR, reason: "" });
    endpoint.close();
    endRequests();
  };
  return {
    addr: endpoint.addr,
    requests: new ReadableStream({ start: (c) => void (requests = c) }),
    setCertificate: listen,
    async shutdown({ graceMs = 5000, reason = "server shutting down" } = {}) {
      listener?.stop();
      endRequests();
      const sessions = [...connections].flatMap((h3) => h3.goAway());
      await Promise.all(sessions.map((session) => session.drain()));
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        Promise.all(sessions.map((session) => session.closed)),
        new Promise((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
      await Promise.all(sessions.map((session) => session.close({ closeCode: 0, reason })));
      // Closing a QUIC connection discards what is unsent, the close capsules included: give
      // the clients a moment to receive them and hang up themselves.
      await Promise.race([
        Promise.all([...connections].map((h3) => h3.conn.closed.catch(() => {}))),
        new Promise((resolve) => (timer = setTimeout(resolve, 1000))),
      ]);
      clearTimeout(timer);
      close();
    },
    close,
  };
}

const FLOW_CAPSULES = new Set<number>(Object.values(FlowCapsule));

/** Whether a capsule type is one of session flow control's. */
function isFlowCapsule(type: number): boolean {
  return FLOW_CAPSULES.has(type);
}

/** A stream that arrived before its session; kept by {@link EarlyData}. */
type EarlyStream =
  | { kind: "bidi"; stream: BidirectionalStream }
  | { kind: "uni"; stream: ReadableStream<Uint8Array> };

/** Options of an {@link H3Connection}. */
export interface H3ConnectionOptions {
  /** Which end we are. */
  role: Role;
  /** The dialects we announce (default: all, see dialect.ts). */
  dialects?: readonly Dialect[];
  /** Bounds of streams and datagrams kept for sessions not there yet (see early.ts). */
  earlyLimits?: EarlyLimits;
  /** The flow-control windows we grant in drafts 13–16 (default: wide open, see flow.ts). */
  flowWindows?: FlowLimits;
  /** How long the peer has to send its SETTINGS, in ms (default {@link SETTINGS_TIMEOUT_MS}). */
  settingsTimeoutMs?: number;
}

/** The HTTP/3 side of one QUIC connection. */
export class H3Connection {
  readonly #sessions = new Map<number, WebTransportSession>();
  /**
   * Held for the connection's life. Dropping it lets garbage collection close Deno's send
   * stream, and closing the HTTP/3 control stream makes Chromium end the connection
   * ("Attempt to close a static stream") some seconds in.
   */
  #control?: WritableStreamDefaultWriter<Uint8Array>;
  #goingAway = false;
  #highestRequest = -4;
  /**
   * Sessions asked for and not yet decided: on a server, CONNECT requests the application
   * has not answered; on a client, CONNECTs sent and not yet answered. Their early streams
   * and datagrams are kept.
   */
  readonly #pending = new Set<number>();
  /** Requests handed to the application and not answered yet (they count as sessions). */
  readonly #deciding = new Set<number>();
  /** Requests waiting for the client's SETTINGS. */
  #unsettled = 0;
  /** Whether the peer's SETTINGS have come. */
  #settled = false;
  readonly #settingsTimeoutMs: number;
  readonly #early: EarlyData<EarlyStream>;
  readonly #peerSettings = Promise.withResolvers<Map<number, number>>();
  readonly role: Role;
  /** The dialects we announce. */
  readonly dialects: readonly Dialect[];
  /** The SETTINGS we send. */
  readonly localSettings: Map<number, number>;
  readonly #windows: FlowLimits;

  constructor(
    readonly conn: Deno.QuicConn,
    /** Server: where session requests go. A client has none. */
    readonly onRequest?: (request: SessionRequest) => void,
    options: H3ConnectionOptions = { role: onRequest ? "server" : "client" },
  ) {
    this.role = options.role;
    this.dialects = options.dialects ?? DIALECTS;
    this.#windows = options.flowWindows ?? DEFAULT_WINDOWS;
    this.#settingsTimeoutMs = options.settingsTimeoutMs ?? SETTINGS_TIMEOUT_MS;
    this.localSettings = localSettings(this.role, this.dialects, this.#windows);
    this.#early = new EarlyData(options.earlyLimits);
    this.#peerSettings.promise.catch(() => {}); // awaited only by those who need it
  }

  /**
   * The peer's SETTINGS, once its control stream delivers them.
   *
   * @throws {Error} the connection closed first.
   */
  peerSettings(): Promise<Map<number, number>> {
    return this.#peerSettings.promise;
  }

  /**
   * The flow control of a session in `dialect`, given the peer's SETTINGS: undefined unless
   * both sides asked for it (flow.ts).
   */
  flowFor(dialect: Dialect, peer: ReadonlyMap<number, number>): SessionFlow | undefined {
    return flowControlEnabled(dialect, this.localSettings, peer)
      ? new SessionFlow(initialLimits(peer), this.#windows)
      : undefined;
  }

  /**
   * Sends GOAWAY: no new requests on this connection. Returns its open sessions, which the
   * caller drains and closes.
   */
  goAway(): WebTransportSession[] {
    // A server's GOAWAY names the first client-initiated bidirectional stream it will not
    // process: everything from the next one the client could open.
    const lastId = Math.max(-4, ...this.#sessions.keys(), this.#highestRequest);
    this.#control?.write(encodeFrame(FrameType.GOAWAY, encodeVarint(lastId + 4))).catch(() => {});
    this.#goingAway = true;
    return [...this.#sessions.values()];
  }

  /**
   * A client's CONNECT for session `id` is on its way: streams and datagrams the server
   * sends for it before its response are kept until {@link addSession} or {@link endRequest}.
   */
  expectSession(id: number): void {
    this.#pending.add(id);
  }

  /** Registers an established session and hands it what arrived for it early. */
  addSession(session: WebTransportSession): void {
    this.#pending.delete(session.id);
    this.#deciding.delete(session.id);
    this.#sessions.set(session.id, session);
    session.closed.then(() => this.#sessions.delete(session.id));
    const early = this.#early.take(session.id);
    for (const item of early.streams) {
      if (item.kind === "bidi") session._addBidirectional(item.stream);
      else session._addUnidirectional(item.stream);
    }
    for (const datagram of early.datagrams) session._datagram(datagram);
  }

  /** A requested session will not exist (refused, or its request failed): drop its early data. */
  endRequest(id: number): void {
    this.#pending.delete(id);
    this.#deciding.delete(id);
    for (const item of this.#early.take(id).streams) refuse(item);
  }

  async run(): Promise<void> {
    // The peer's streams are taken from the start, not after our control stream is up:
    // waiting for it held every session request back by a few hundred microseconds.
    const tasks = [this.#acceptUni(), this.#acceptBidi(), this.#readDatagrams()];
    const control = (this.#control = (await this.conn.createUnidirectionalStream()).getWriter());
    await control.write(
      new Uint8Array([
        ...encodeVarint(StreamType.CONTROL),
        ...encodeFrame(FrameType.SETTINGS, encodeSettings(this.localSettings)),
      ]),
    );
    // Not released: the writer keeps the control stream open for the connection's life.
    // A peer must send SETTINGS first thing on its control stream (RFC 9114 6.2.1); one that
    // has not within the timeout is closed with H3_MISSING_SETTINGS.
    const settingsTimer = setTimeout(() => {
      if (!this.#settled) {
        this.#fail(
          new H3Error(H3.MISSING_SETTINGS, `No SETTINGS within ${this.#settingsTimeoutMs} ms`),
        );
      }
    }, this.#settingsTimeoutMs);
    await this.conn.closed.catch(() => {});
    clearTimeout(settingsTimer);
    this.#peerSettings.reject(new Error("The connection closed before the peer's SETTINGS"));
    // What arrived before the close is still there to read: a close capsule sent in the same
    // flight as the connection close (Firefox does this) must decide how the session ended,
    // so each CONNECT stream is read to its end first (bounded: a read that neither returns
    // nor fails does not hold the teardown).
    const sessions = [...this.#sessions.values()];
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.all(sessions.map((session) => session._peerDone())),
      new Promise((resolve) => (timer = setTimeout(resolve, CLOSE_READ_MS))),
    ]);
    clearTimeout(timer);
    for (const session of sessions) session._connectionLost();
    for (const item of this.#early.takeAll().streams) refuse(item);
    await Promise.allSettled(tasks);
  }

  #fail(error: unknown): void {
    const code = error instanceof H3Error ? error.code : H3.INTERNAL_ERROR;
    try {
      this.conn.close({
        closeCode: code,
        reason: error instanceof Error ? error.message.slice(0, 100) : "",
      });
    } catch { /* closed */ }
  }

  /**
   * Whether a session `id` may still come to exist here, so that data for it is kept: one
   * awaiting its answer, or (on a server) one whose CONNECT has not arrived yet. Anything
   * else belongs to a session that ended or was refused.
   */
  #mayArrive(id: number): boolean {
    return this.#pending.has(id) || (this.role === "server" && id > this.#highestRequest);
  }

  /** Hands a WebTransport stream to its session, keeps it until the session exists, or refuses it. */
  #deliver(id: number, item: EarlyStream): void {
    // Above 2^53 - 1 a varint is no longer exact as a number, so `% 4` cannot be trusted;
    // no connection opens that many streams, so such an id is an error too.
    if (id % 4 !== 0 || id > Number.MAX_SAFE_INTEGER) {
      refuse(item);
      throw new H3Error(
        H3.ID_ERROR,
        `Session id ${id} is not a client-initiated bidirectional stream`,
      );
    }
    const session = this.#sessions.get(id);
    if (session) {
      if (item.kind === "bidi") session._addBidirectional(item.stream);
      else session._addUnidirectional(item.stream);
      return;
    }
    if (!this.#mayArrive(id) || !this.#early.addStream(id, item)) refuse(item);
  }

  async #acceptUni(): Promise<void> {
    for await (const stream of this.conn.incomingUnidirectionalStreams) {
      // Each stream on its own: Chromium's QPACK streams send nothing for a long time.
      this.#handleUni(stream).catch((error) => this.#fail(error));
    }
  }

  async #handleUni(stream: ReadableStream<Uint8Array>): Promise<void> {
    const source = stream.getReader();
    const type = await readLeadingVarint(source);
    if (!type) return;
    const afterType = type.bytes.subarray(type.length);
    if (type.value === StreamType.WEBTRANSPORT) {
      const id = await readLeadingVarint(source, afterType);
      if (!id) return;
      return this.#deliver(id.value, {
        kind: "uni",
        stream: remainderStream(source, id.bytes.subarray(id.length)),
      });
    }
    if (type.value === StreamType.CONTROL) {
      const frames = new FrameReader();
      frames.push(afterType);
      let first = true;
      for (;;) {
        for (let frame = frames.next(); frame; frame = frames.next()) {
          if (first && frame.type !== FrameType.SETTINGS) {
            throw new H3Error(H3.MISSING_SETTINGS, "Control stream must start with SETTINGS");
          }
          if (frame.type === FrameType.SETTINGS) {
            if (!first) throw new H3Error(H3.FRAME_UNEXPECTED, "Second SETTINGS frame");
            const settings = decodeSettings(frame.payload);
            peerDialects(this.role === "server" ? "client" : "server", settings); // validates
            this.#settled = true;
            this.#peerSettings.resolve(settings);
          }
          if (frame.type === FrameType.GOAWAY) {
            for (const session of this.#sessions.values()) session._draining();
          }
          first = false;
        }
        const { value, done } = await source.read();
        if (done) throw new H3Error(H3.CLOSED_CRITICAL_STREAM, "Control stream closed");
        frames.push(value);
      }
    }
    // QPACK encoder/decoder streams (we use no dynamic table) and unknown types: drain.
    while (!(await source.read()).done);
  }

  async #acceptBidi(): Promise<void> {
    for await (const stream of this.conn.incomingBidirectionalStreams) {
      this.#handleBidi(stream).catch((error) => this.#fail(error));
    }
  }

  async #handleBidi(stream: BidirectionalStream): Promise<void> {
    const source = stream.readable.getReader();
    const signal = await readLeadingVarint(source);
    if (!signal) return;
    if (signal.value === FrameType.WEBTRANSPORT_STREAM) {
      const id = await readLeadingVarint(source, signal.bytes.subarray(signal.length));
      if (!id) return;
      return this.#deliver(id.value, {
        kind: "bidi",
        stream: {
          readable: remainderStream(source, id.bytes.subarray(id.length)),
          writable: stream.writable,
        },
      });
    }
    // An HTTP request stream: HEADERS with the extended CONNECT. Servers never open one.
    if (!this.onRequest) {
      throw new H3Error(H3.STREAM_CREATION_ERROR, "A server opened a request stream");
    }
    // A session is named by its CONNECT stream's QUIC stream id. Known from here on, so
    // that streams and datagrams for it are kept while the request is read and decided.
    const id = Number((stream.readable as Deno.QuicReceiveStream).id);
    this.#highestRequest = Math.max(this.#highestRequest, id);
    this.#pending.add(id);
    try {
      await this.#handleRequest(id, stream, source, signal.bytes, this.onRequest);
    } catch (error) {
      this.endRequest(id);
      throw error;
    }
  }

  async #handleRequest(
    id: number,
    stream: BidirectionalStream,
    source: ReadableStreamDefaultReader<Uint8Array>,
    firstBytes: Uint8Array,
    onRequest: (request: SessionRequest) => void,
  ): Promise<void> {
    const frames = new FrameReader();
    frames.push(firstBytes); // the varint read was the first frame's type
    const frame = await readFrame(frames, source);
    if (!frame) return this.endRequest(id);
    if (frame.type !== FrameType.HEADERS) {
      throw new H3Error(H3.FRAME_UNEXPECTED, "Request must start with HEADERS");
    }
    const fields = decodeFieldSection(frame.payload);
    const headers = new Map(fields);
    const respond = async (status: number, extra: Field[] = []) => {
      const writer = stream.writable.getWriter();
      await writer.write(
        encodeFrame(FrameType.HEADERS, encodeFieldSection([[":status", String(status)], ...extra])),
      );
      writer.releaseLock();
    };
    const refuseRequest = async (status: number) => {
      this.endRequest(id);
      await respond(status).catch(() => {});
      await stream.writable.close().catch(() => {});
    };
    // The dialect of a request depends on the client's SETTINGS, which travel on another
    // stream and may come later: drafts 13-16 say not to process a request before them.
    // Bounded: a few requests may wait for them (more are refused at once), and the SETTINGS
    // must come within SETTINGS_TIMEOUT_MS of the connection's start (run() closes it
    // otherwise), so a client cannot park requests without end.
    let clientSettings: Map<number, number>;
    if (!this.#settled && this.#unsettled >= MAX_UNSETTLED_REQUESTS) {
      source.cancel().catch(() => {});
      return refuseRequest(429);
    }
    this.#unsettled++;
    try {
      clientSettings = await this.peerSettings();
    } catch {
      return this.endRequest(id); // the connection closed
    } finally {
      this.#unsettled--;
    }
    const url = requestUrl(headers);
    const dialect = requestDialect(
      headers.get(":protocol"),
      this.dialects,
      peerDialects("client", clientSettings),
    );
    if (headers.get(":method") !== "CONNECT" || !dialect || !url) return refuseRequest(400);
    if (this.#goingAway) {
      // After our GOAWAY: refused unprocessed, so the client may retry elsewhere.
      return refuseRequest(503);
    }
    // Sessions at once on this connection: the established ones and those the application
    // is deciding. Over the dialect's limit: 429. The drafts ask for a reset with
    // H3_REQUEST_REJECTED, which Deno cannot send (its resets carry code 0).
    if (this.#sessions.size + this.#deciding.size >= sessionsPerConnection(dialect)) {
      source.cancel().catch(() => {});
      return refuseRequest(429);
    }
    this.#deciding.add(id);
    const protocols = parseAvailableProtocols(headers.get(AVAILABLE_PROTOCOLS)) ?? [];
    const connectRest = remainderStream(source, frames.takeRemainder()).getReader();
    let decided = false;
    onRequest({
      url,
      headers,
      origin: headers.get("origin") ?? null,
      remoteAddr: this.conn.remoteAddr,
      dialect,
      protocols,
      accept: async ({ protocol } = {}) => {
        if (protocol !== undefined && !protocols.includes(protocol)) {
          throw new RangeError(
            `Protocol ${JSON.stringify(protocol)} is not one the client offered (${
              protocols.map((p) => JSON.stringify(p)).join(", ") || "none"
            })`,
          );
        }
        if (decided) throw new Error("This session request was already answered");
        decided = true;
        const extra = responseFields(dialect);
        if (protocol !== undefined) extra.push([PROTOCOL, encodeProtocol(protocol)]);
        try {
          await respond(200, extra);
        } catch (error) {
          this.endRequest(id);
          throw error;
        }
        const session = new WebTransportSession({
          id,
          conn: this.conn,
          connect: stream,
          url,
          headers,
          connectRest,
          dialect,
          protocol: protocol ?? "",
          flow: this.flowFor(dialect, clientSettings),
        });
        this.addSession(session);
        return session;
      },
      reject: async (status = 404) => {
        // Checked before anything is sent: a 2xx here would tell the client it has a session.
        if (!Number.isInteger(status) || status < 300 || status > 599) {
          throw new RangeError(`A refusal needs a 3xx, 4xx or 5xx status, got ${status}`);
        }
        if (decided) throw new Error("This session request was already answered");
        decided = true;
        await refuseRequest(status);
      },
    });
  }

  async #readDatagrams(): Promise<void> {
    try {
      for (;;) {
        const { sessionId, payload } = decodeDatagram(await this.conn.readDatagram());
        const session = this.#sessions.get(sessionId);
        if (session) session._datagram(payload);
        else if (this.#mayArrive(sessionId)) this.#early.addDatagram(sessionId, payload);
      }
    } catch (error) {
      if (error instanceof H3Error) this.#fail(error);
    }
  }
}

/**
 * Refuses a stream that has no session: STOP_SENDING on what it reads, FIN on what it
 * writes. The draft asks for WT_BUFFERED_STREAM_REJECTED; Deno sends code 0 and cannot
 * reset a send stream (see the README).
 */
function refuse(item: EarlyStream): void {
  if (item.kind === "bidi") {
    item.stream.readable.cancel().catch(() => {});
    item.stream.writable.close().catch(() => {});
  } else {
    item.stream.cancel().catch(() => {});
  }
}
