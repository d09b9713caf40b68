/**
 * The client side: a WebTransport session over Deno.connectQuic, on the same session
 * class as the server. Trust comes from pinned certificate hashes, `caCerts` (a private
 * CA, see cert.ts) or the system roots; there is no way to turn verification off.
 *
 * @module
 */
import { encodeFrame, FrameReader, FrameType } from "./frames.ts";
import { decodeFieldSection, encodeFieldSection, type Field } from "./qpack.ts";
import { H3Connection } from "./connection.ts";
import { WebTransportSession } from "./session.ts";
import { readFrame, remainderStream } from "./streams.ts";
import { checkTransport, settledWithin } from "./duration.ts";
import {
  type Dialect,
  DIALECTS,
  negotiate,
  peerDialects,
  requestFields,
  upgradeToken,
} from "./dialect.ts";
import {
  AVAILABLE_PROTOCOLS,
  encodeAvailableProtocols,
  parseProtocol,
  PROTOCOL,
  validateProtocols,
} from "./protocols.ts";
import { H3 } from "./errors.ts";
import type { FlowLimits } from "./flow.ts";

/** A certificate hash to pin, as in the W3C API's `serverCertificateHashes`. */
export interface CertificateHash {
  /** The hash algorithm; only SHA-256 is defined. */
  algorithm: "sha-256";
  /** The certificate's SHA-256 (of its DER), 32 bytes. */
  value: Uint8Array;
}

/** Options of {@link connectWebTransport}. */
export interface ConnectOptions {
  /**
   * Accept only a server certificate whose SHA-256 is one of these, whoever issued it (the
   * browser's `serverCertificateHashes`). Deno checks the hash and the expiry; it does not
   * show us the certificate, so the ECDSA and 14-day rules browsers add are the server's
   * to keep (see `checkPinnable`). Used instead of `caCerts` and the system roots.
   */
  serverCertificateHashes?: CertificateHash[];
  /** PEM roots to trust in addition to the system's (e.g. a private CA's certificate). */
  caCerts?: string[];
  /**
   * QUIC transport settings (idle timeout, keep-alive, stream limits). `maxIdleTimeout`
   * and `keepAliveInterval` are whole milliseconds ≥ 0; QUIC keeps them itself, so values
   * past `setTimeout`'s 24.8 days are honoured.
   */
  transport?: Deno.QuicTransportOptions;
  /** The local QUIC endpoint (UDP socket) to connect from; by default one shared by all. */
  endpoint?: Deno.QuicEndpoint;
  /** The Origin header to send (browsers always send one; servers may require it). */
  origin?: string;
  /** More request header fields (lowercase names). */
  headers?: Field[];
  /**
   * The dialects to offer, any order (default: all four, see dialect.ts). The newest the
   * server also announces is spoken.
   */
  dialects?: readonly Dialect[];
  /** The session flow-control windows granted to the server in drafts 13–16 (see flow.ts). */
  flowWindows?: FlowLimits;
  /**
   * Application protocols to offer, most preferred first (the W3C `protocols` option, sent
   * as `WT-Available-Protocols`). The server's choice is the session's `protocol`.
   */
  protocols?: readonly string[];
  /**
   * Aborts the connect: whenever it fires before the session is returned (before the call,
   * during the QUIC handshake, while waiting for the server's SETTINGS or its answer to the
   * CONNECT), the promise rejects with `signal.reason` and the connection is closed. Once
   * the session is returned the signal has no effect: close the session instead.
   */
  signal?: AbortSignal;
}

/** The server's SETTINGS announce no WebTransport dialect this client offers. */
export class WebTransportUnsupportedError extends Error {
  /** Always "WebTransportUnsupportedError". */
  override name = "WebTransportUnsupportedError";
  /** The dialects the server announced (possibly none). */
  readonly offered: Dialect[];
  /**
   * The error for a server that speaks none of `wanted`.
   *
   * @param offered the dialects the server announced
   * @param wanted the dialects the client offered
   */
  constructor(offered: Dialect[], wanted: readonly Dialect[]) {
    super(
      offered.length
        ? `The server speaks WebTransport ${offered.join(", ")}; this client offered ${
          wanted.join(", ")
        }`
        : "The server does not offer WebTransport (its HTTP/3 SETTINGS announce no dialect)",
    );
    this.offered = offered;
  }
}

/** The server chose an application protocol the client did not offer (WT_ALPN_ERROR). */
export class WebTransportProtocolError extends Error {
  /** Always "WebTransportProtocolError". */
  override name = "WebTransportProtocolError";
  /**
   * The error for a server that chose `chosen`, not one of `offered`.
   *
   * @param chosen the protocol the server chose
   * @param offered the protocols the client offered
   */
  constructor(chosen: string, offered: readonly string[]) {
    super(
      `The server chose protocol ${JSON.stringify(chosen)}, not one of ${
        offered.map((p) => JSON.stringify(p)).join(", ")
      }`,
    );
  }
}

/** The server answered the CONNECT with something other than 200. */
export class WebTransportRejectedError extends Error {
  /** Always "WebTransportRejectedError". */
  override name = "WebTransportRejectedError";
  /** The HTTP status the server answered with (0 when the stream ended without one). */
  readonly status: number;
  /**
   * The error for a refusal with `status`.
   *
   * @param status the HTTP status the server answered with
   */
  constructor(status: number) {
    super(`The server refused the WebTransport session with status ${status}`);
    this.status = status;
  }
}

let shared: Deno.QuicEndpoint | undefined;

/**
 * One client endpoint for every connection, as a browser keeps one socket: without it each
 * connectQuic binds a socket and builds an endpoint, which was a quarter of the CPU time of
 * connection setup here (setup p50 2.9 ms -> 2.2 ms, measured). Dual-stack where the host
 * has IPv6, IPv4 only where it does not.
 */
function sharedEndpoint(): Deno.QuicEndpoint {
  if (!shared) {
    try {
      shared = new Deno.QuicEndpoint({ hostname: "::", port: 0 });
    } catch {
      shared = new Deno.QuicEndpoint({ hostname: "0.0.0.0", port: 0 });
    }
  }
  return shared;
}

/**
 * The abort of a connect, watched from the call on: the listener is attached before the
 * first await, so an abort at any point is seen. {@link race} makes each await give way
 * to it.
 */
class ConnectAbort {
  readonly #signal?: AbortSignal;
  readonly #aborted = Promise.withResolvers<never>();
  readonly #onAbort = () => this.#aborted.reject(this.#signal!.reason);

  constructor(signal?: AbortSignal) {
    this.#signal = signal;
    this.#aborted.promise.catch(() => {}); // observed through race()
    if (signal?.aborted) this.#onAbort();
    else signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /**
   * `promise`, unless the signal aborts first: then the signal's reason, and `late` gets
   * what `promise` brings afterwards (to close a connection nobody will use).
   */
  race<T>(promise: Promise<T>, late?: (value: T) => void): Promise<T> {
    return Promise.race([promise, this.#aborted.promise]).catch((error) => {
      if (late && this.#signal?.aborted) promise.then(late, () => {});
      throw error;
    });
  }

  /** Throws the signal's reason if it aborted (for the synchronous stretches). */
  check(): void {
    this.#signal?.throwIfAborted();
  }

  /** Stops watching: the session is returned, or the connect failed. */
  stop(): void {
    this.#signal?.removeEventListener("abort", this.#onAbort);
  }
}

/** A connect's options, checked, and what follows from them. */
interface ConnectPlan {
  url: URL;
  hashes?: CertificateHash[];
  dialects: readonly Dialect[];
  protocols: readonly string[];
}

/**
 * Checks the options of a connect before anything is sent.
 *
 * @throws {TypeError} not an https: URL, bad hashes, no dialects, bad protocols.
 * @throws {RangeError} a transport duration out of range.
 */
function plan(target: string | URL, options: ConnectOptions): ConnectPlan {
  const url = new URL(target);
  if (url.protocol !== "https:") {
    throw new TypeError(`WebTransport needs an https: URL, got ${url.protocol}`);
  }
  const hashes = options.serverCertificateHashes;
  for (const hash of hashes ?? []) {
    if (hash.algorithm !== "sha-256" || hash.value.length !== 32) {
      throw new TypeError(
        `serverCertificateHashes takes sha-256 values of 32 bytes, got ${hash.algorithm} of ${hash.value.length}`,
      );
    }
  }
  if (hashes?.length === 0) throw new TypeError("serverCertificateHashes is empty");
  const dialects = options.dialects ?? DIALECTS;
  if (dialects.length === 0) throw new TypeError("dialects is empty");
  const protocols = options.protocols ?? [];
  validateProtocols(protocols);
  checkTransport(options.transport);
  return { url, hashes, dialects, protocols };
}

/** Starts the QUIC handshake of a connect. */
function openQuic(plan: ConnectPlan, options: ConnectOptions): Promise<Deno.QuicConn> {
  return Deno.connectQuic({
    ...options.transport,
    endpoint: options.endpoint ?? sharedEndpoint(),
    hostname: plan.url.hostname.replace(/^\[|\]$/g, ""),
    port: Number(plan.url.port || 443),
    alpnProtocols: ["h3"],
    ...(options.caCerts ? { caCerts: options.caCerts } : {}),
    // Not in Deno's published types, but the option its own WebTransport client passes:
    // the handshake then checks the hash (and expiry) instead of the chain (measured).
    ...(plan.hashes ? { serverCertificateHashes: plan.hashes } : {}),
  } as Deno.ConnectQuicOptions<false>);
}

/**
 * The server's SETTINGS. They come in its first flight; a client must wait for them
 * before its CONNECT (every draft), as the dialect is known from them.
 *
 * @throws {Error} the server closed the connection first (saying how, when it did).
 */
function serverSettings(h3: H3Connection, conn: Deno.QuicConn): Promise<Map<number, number>> {
  return h3.peerSettings().catch(async () => {
    // Closed before its SETTINGS: say how the server closed it (a cap per address, say).
    const info = await conn.closed.catch(() => undefined);
    throw new Error(
      `The server closed the connection before its HTTP/3 SETTINGS${
        info
          ? ` (code 0x${info.closeCode.toString(16)}${info.reason ? `: ${info.reason}` : ""})`
          : ""
      }`,
    );
  });
}

/** The extended CONNECT's header fields. */
function connectRequest(plan: ConnectPlan, dialect: Dialect, options: ConnectOptions): Field[] {
  const { url, protocols } = plan;
  return [
    [":method", "CONNECT"],
    [":protocol", upgradeToken(dialect)],
    [":scheme", "https"],
    [":authority", url.host],
    [":path", `${url.pathname}${url.search}`],
    ...requestFields(dialect),
    ...(protocols.length
      ? [[AVAILABLE_PROTOCOLS, encodeAvailableProtocols(protocols)] as Field]
      : []),
    ...(options.origin ? [["origin", options.origin] as Field] : []),
    ...(options.headers ?? []),
  ];
}

/**
 * One client session per connection: when the session ends, the connection goes too, but
 * only once the server's FIN has answered (or 200 ms passed): closing a QUIC connection
 * discards what is unsent, our close capsule included. close() waits for this, so a
 * process may exit right after it without leaving the server to time out.
 */
function closeConnectionAfter(session: WebTransportSession, conn: Deno.QuicConn): void {
  let teardown: Promise<void> | undefined;
  session._afterClose = () =>
    teardown ??= (async () => {
      await settledWithin(session._peerDone(), 200);
      conn.close({ closeCode: 0, reason: "" });
      await conn.closed.catch(() => {});
    })();
  session.closed.then(() => session._afterClose?.());
}

/** Where a connect stands: what the steps after the handshake share. */
interface Handshake {
  plan: ConnectPlan;
  options: ConnectOptions;
  conn: Deno.QuicConn;
  h3: H3Connection;
  abort: ConnectAbort;
  /** The QUIC close code if the connect fails from here (an H3 error code). */
  closeCode: number;
}

/**
 * Negotiates the dialect, sends the CONNECT and reads the answer.
 *
 * @throws {WebTransportUnsupportedError} no dialect in common.
 * @throws {WebTransportRejectedError} the answer is not 200.
 * @throws {WebTransportProtocolError} the server chose a protocol not offered.
 */
async function requestSession(state: Handshake): Promise<WebTransportSession> {
  const { plan, options, conn, h3, abort } = state;
  const settings = await abort.race(serverSettings(h3, conn));
  const offered = peerDialects("server", settings);
  const dialect = negotiate(plan.dialects, offered);
  if (!dialect) {
    state.closeCode = H3.WT_REQUIREMENTS_NOT_MET;
    throw new WebTransportUnsupportedError(offered, plan.dialects);
  }
  const stream = await abort.race(conn.createBidirectionalStream());
  const id = Number(stream.writable.id);
  // Streams and datagrams the server sends right behind its 200 may overtake it.
  h3.expectSession(id);
  const request = connectRequest(plan, dialect, options);
  const writer = stream.writable.getWriter();
  await abort.race(writer.write(encodeFrame(FrameType.HEADERS, encodeFieldSection(request))));
  writer.releaseLock();
  const source = stream.readable.getReader();
  const frames = new FrameReader();
  const frame = await abort.race(readFrame(frames, source));
  if (!frame) throw new WebTransportRejectedError(0);
  const response = new Map(decodeFieldSection(frame.payload));
  const status = Number(response.get(":status"));
  if (frame.type !== FrameType.HEADERS || status !== 200) {
    h3.endRequest(id);
    throw new WebTransportRejectedError(status);
  }
  // A WT-Protocol that is malformed or absent means none was chosen; one the client did
  // not offer is an error (WT_ALPN_ERROR).
  const protocols = plan.protocols;
  const protocol = protocols.length ? parseProtocol(response.get(PROTOCOL)) ?? "" : "";
  if (protocol && !protocols.includes(protocol)) {
    h3.endRequest(id);
    state.closeCode = H3.WT_ALPN_ERROR;
    throw new WebTransportProtocolError(protocol, protocols);
  }
  abort.check(); // the last await was answered, but the signal may have fired with it
  const session = new WebTransportSession({
    id,
    conn,
    connect: stream,
    url: plan.url,
    headers: new Map(request),
    connectRest: remainderStream(source, frames.takeRemainder()).getReader(),
    dialect,
    protocol,
    flow: h3.flowFor(dialect, settings),
  });
  h3.addSession(session);
  closeConnectionAfter(session, conn);
  return session;
}

/**
 * Opens a WebTransport session to an https: URL, over a QUIC connection of its own that
 * closes when the session ends.
 *
 * @param target The server's https: URL; its path and query are the CONNECT's.
 * @param options Trust, transport, dialects, protocols, headers and an abort signal.
 * @returns The session, ready: the server answered 200.
 * @throws {TypeError} (the promise rejects) not an https: URL, malformed hashes, no
 *   dialects, malformed protocols.
 * @throws {RangeError} a transport duration out of range.
 * @throws {WebTransportUnsupportedError} the server speaks no dialect offered.
 * @throws {WebTransportRejectedError} the server refused the session (its status).
 * @throws {WebTransportProtocolError} the server chose a protocol not offered.
 * @throws {Error} the handshake failed (the certificate is not trusted, say), or the server
 *   closed the connection before its SETTINGS.
 * @throws `options.signal.reason` when the signal aborts before the session is returned.
 *
 * @example Pin the server's certificate hash and send a datagram
 * ```ts ignore
 * import { connectWebTransport } from "@duet/webtransport";
 *
 * const session = await connectWebTransport("https://127.0.0.1:4433/echo", {
 *   serverCertificateHashes: [{ algorithm: "sha-256", value: pinnedSha256 }],
 *   signal: AbortSignal.timeout(5_000),
 * });
 * const writer = session.datagrams.writable.getWriter();
 * await writer.write(new TextEncoder().encode("ping"));
 * await session.close({ closeCode: 0, reason: "done" });
 * ```
 */
export async function connectWebTransport(
  target: string | URL,
  options: ConnectOptions = {},
): Promise<WebTransportSession> {
  const abort = new ConnectAbort(options.signal);
  try {
    abort.check();
    const connectPlan = plan(target, options);
    const conn = await abort.race(
      openQuic(connectPlan, options),
      (late) => late.close({ closeCode: H3.REQUEST_CANCELLED, reason: "" }),
    );
    const h3 = new H3Connection(conn, undefined, {
      role: "client",
      dialects: connectPlan.dialects,
      flowWindows: options.flowWindows,
    });
    h3.run().catch(() => {});
    const state: Handshake = {
      plan: connectPlan,
      options,
      conn,
      h3,
      abort,
      closeCode: H3.REQUEST_CANCELLED,
    };
    try {
      return await requestSession(state);
    } catch (error) {
      try {
        conn.close({ closeCode: state.closeCode, reason: "" });
      } catch { /* closed already */ }
      throw error;
    }
  } finally {
    abort.stop();
  }
}
