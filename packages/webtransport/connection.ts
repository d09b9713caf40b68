/**
 * The HTTP/3 side of one QUIC connection, for either end: the control streams and their
 * SETTINGS and GOAWAY, the peer's streams sorted to their sessions (or kept until the
 * session exists, see early.ts), datagrams, and on a server the extended CONNECT requests
 * handed to the application to accept or reject.
 *
 * @module
 */
import { H3, H3Error } from "./errors.ts";
import { decodeFieldSection, encodeFieldSection, type Field } from "./qpack.ts";
import {
  decodeSettings,
  encodeFrame,
  encodeSettings,
  FrameReader,
  FrameType,
  StreamType,
} from "./frames.ts";
import { decodeDatagram } from "./capsule.ts";
import { encodeVarint } from "./varint.ts";
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
  flowControlEnabled,
  type FlowLimits,
  initialLimits,
  SessionFlow,
} from "./flow.ts";
import {
  AVAILABLE_PROTOCOLS,
  encodeProtocol,
  parseAvailableProtocols,
  PROTOCOL,
} from "./protocols.ts";
import { WebTransportSession } from "./session.ts";
import {
  type BidirectionalStream,
  type EarlyStream,
  readFrame,
  readLeadingVarint,
  refuse,
  remainderStream,
} from "./streams.ts";
import { checkDuration, settledWithin } from "./duration.ts";
import { setLongTimeout } from "@duet/core/long-timeout";

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

/** How long a peer has to send its SETTINGS, in ms from the connection's start. */
export const SETTINGS_TIMEOUT_MS = 5_000;

/** Requests that may wait for the client's SETTINGS on one connection; more are refused. */
const MAX_UNSETTLED_REQUESTS = 8;

/**
 * The URL of an extended CONNECT: https, with an authority and a path that make a URL, and
 * no userinfo (RFC 9110 4.2.4 forbids it in an https authority). Undefined otherwise.
 */
export function requestUrl(headers: Map<string, string>): URL | undefined {
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
  /**
   * How long the peer has to send its SETTINGS, in ms from {@link H3Connection.run} (default
   * {@link SETTINGS_TIMEOUT_MS}): any number > 0, past `setTimeout`'s 24.8 days included, or
   * `Infinity` for no limit.
   */
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
    this.#settingsTimeoutMs = checkDuration(
      "settingsTimeoutMs",
      options.settingsTimeoutMs ?? SETTINGS_TIMEOUT_MS,
      { zero: false },
    );
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
    const cancelSettingsTimer = setLongTimeout(() => {
      if (!this.#settled) {
        this.#fail(
          new H3Error(H3.MISSING_SETTINGS, `No SETTINGS within ${this.#settingsTimeoutMs} ms`),
        );
      }
    }, this.#settingsTimeoutMs);
    await this.conn.closed.catch(() => {});
    cancelSettingsTimer();
    this.#peerSettings.reject(new Error("The connection closed before the peer's SETTINGS"));
    // What arrived before the close is still there to read: a close capsule sent in the same
    // flight as the connection close (Firefox does this) must decide how the session ended,
    // so each CONNECT stream is read to its end first (bounded: a read that neither returns
    // nor fails does not hold the teardown).
    const sessions = [...this.#sessions.values()];
    await settledWithin(Promise.all(sessions.map((session) => session._peerDone())), CLOSE_READ_MS);
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
    if (type.value === StreamType.CONTROL) return this.#readControl(source, afterType);
    // QPACK encoder/decoder streams (we use no dynamic table) and unknown types: drain.
    while (!(await source.read()).done);
  }

  /**
   * Reads the peer's control stream: SETTINGS first and once, GOAWAY, and nothing else we
   * act on. It must stay open for the connection's life.
   *
   * @throws {H3Error} the stream does not start with SETTINGS, has a second one, or ends.
   */
  async #readControl(
    source: ReadableStreamDefaultReader<Uint8Array>,
    buffered: Uint8Array,
  ): Promise<never> {
    const frames = new FrameReader();
    frames.push(buffered);
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
    const headers = new Map(decodeFieldSection(frame.payload));
    const answer = new RequestAnswer(id, stream, () => this.endRequest(id));
    // The dialect of a request depends on the client's SETTINGS, which travel on another
    // stream and may come later: drafts 13-16 say not to process a request before them.
    // Bounded: a few requests may wait for them (more are refused at once), and the SETTINGS
    // must come within the SETTINGS timeout of the connection's start (run() closes it
    // otherwise), so a client cannot park requests without end.
    if (!this.#settled && this.#unsettled >= MAX_UNSETTLED_REQUESTS) {
      source.cancel().catch(() => {});
      return answer.refuse(429);
    }
    let clientSettings: Map<number, number>;
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
    if (headers.get(":method") !== "CONNECT" || !dialect || !url) return answer.refuse(400);
    if (this.#goingAway) {
      // After our GOAWAY: refused unprocessed, so the client may retry elsewhere.
      return answer.refuse(503);
    }
    // Sessions at once on this connection: the established ones and those the application
    // is deciding. Over the dialect's limit: 429. The drafts ask for a reset with
    // H3_REQUEST_REJECTED, which Deno cannot send (its resets carry code 0).
    if (this.#sessions.size + this.#deciding.size >= sessionsPerConnection(dialect)) {
      source.cancel().catch(() => {});
      return answer.refuse(429);
    }
    this.#deciding.add(id);
    const connectRest = remainderStream(source, frames.takeRemainder()).getReader();
    onRequest(
      this.#sessionRequest({ id, url, headers, dialect, clientSettings, connectRest, answer }),
    );
  }

  /** The {@link SessionRequest} handed to the application for a valid CONNECT. */
  #sessionRequest(
    { id, url, headers, dialect, clientSettings, connectRest, answer }: {
      id: number;
      url: URL;
      headers: Map<string, string>;
      dialect: Dialect;
      clientSettings: Map<number, number>;
      connectRest: ReadableStreamDefaultReader<Uint8Array>;
      answer: RequestAnswer;
    },
  ): SessionRequest {
    const protocols = parseAvailableProtocols(headers.get(AVAILABLE_PROTOCOLS)) ?? [];
    const accept = async ({ protocol }: { protocol?: string } = {}) => {
      if (protocol !== undefined && !protocols.includes(protocol)) {
        throw new RangeError(
          `Protocol ${JSON.stringify(protocol)} is not one the client offered (${
            protocols.map((p) => JSON.stringify(p)).join(", ") || "none"
          })`,
        );
      }
      answer.decide();
      const extra = responseFields(dialect);
      if (protocol !== undefined) extra.push([PROTOCOL, encodeProtocol(protocol)]);
      try {
        await answer.respond(200, extra);
      } catch (error) {
        this.endRequest(id);
        throw error;
      }
      const session = new WebTransportSession({
        id,
        conn: this.conn,
        connect: answer.stream,
        url,
        headers,
        connectRest,
        dialect,
        protocol: protocol ?? "",
        flow: this.flowFor(dialect, clientSettings),
      });
      this.addSession(session);
      return session;
    };
    const reject = async (status = 404) => {
      // Checked before anything is sent: a 2xx here would tell the client it has a session.
      if (!Number.isInteger(status) || status < 300 || status > 599) {
        throw new RangeError(`A refusal needs a 3xx, 4xx or 5xx status, got ${status}`);
      }
      answer.decide();
      await answer.refuse(status);
    };
    const origin = headers.get("origin") ?? null;
    const remoteAddr = this.conn.remoteAddr;
    return { url, headers, origin, remoteAddr, dialect, protocols, accept, reject };
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

/** The answer to one CONNECT request: its response HEADERS, sent once. */
export class RequestAnswer {
  #decided = false;

  constructor(
    /** The request's stream id. */
    readonly id: number,
    /** The request stream, on which the answer goes. */
    readonly stream: BidirectionalStream,
    /** Forgets the request (its early data is dropped). */
    readonly end: () => void,
  ) {}

  /**
   * Marks the request answered.
   *
   * @throws {Error} it was answered already.
   */
  decide(): void {
    if (this.#decided) throw new Error("This session request was already answered");
    this.#decided = true;
  }

  /** Sends the response HEADERS: `status` and `extra` fields. */
  async respond(status: number, extra: Field[] = []): Promise<void> {
    const writer = this.stream.writable.getWriter();
    await writer.write(
      encodeFrame(FrameType.HEADERS, encodeFieldSection([[":status", String(status)], ...extra])),
    );
    writer.releaseLock();
  }

  /** Refuses the request: forgets it, answers `status` and ends the stream (never throws). */
  async refuse(status: number): Promise<void> {
    this.end();
    await this.respond(status).catch(() => {});
    await this.stream.writable.close().catch(() => {});
  }
}
