/**
 * A WebTransport-over-HTTP/3 server on Deno's raw QUIC API, speaking every deployed dialect
 * of draft-ietf-webtrans-http3 (02, 07, 14 and 16; see dialect.ts). It replaces Deno's
 * WebTransport wrapper: streams are taken straight from the QUIC connection, so closing
 * one sends a real FIN and stream credit is returned as soon as a stream ends. This module
 * is the listening part (certificates, connection caps, shutdown); each connection is an
 * `H3Connection` (connection.ts) and each session a `WebTransportSession` (session.ts).
 *
 * @module
 */
import { H3 } from "./errors.ts";
import type { Dialect } from "./dialect.ts";
import type { EarlyLimits } from "./early.ts";
import type { FlowLimits } from "./flow.ts";
import { H3Connection, type SessionRequest } from "./connection.ts";
import { checkDuration, checkTransport, settledWithin } from "./duration.ts";

/**
 * Streams a client may have open at once per connection. QUIC's usual 100 counts the
 * CONNECT stream too, so a page with 100 streams open would find its 100th refused
 * (Chromium fails createBidirectionalStream() rather than wait); 256 leaves room.
 */
const DEFAULT_TRANSPORT: Deno.QuicTransportOptions = {
  maxConcurrentBidirectionalStreams: 256,
  maxConcurrentUnidirectionalStreams: 256,
};

/** How long {@link WebTransportServer.shutdown} waits by default for sessions to end, in ms. */
export const DEFAULT_GRACE_MS = 5_000;

/** How long shutdown gives clients to receive the close capsules and hang up, in ms. */
const HANG_UP_MS = 1_000;

/** Options of {@link serveWebTransport}. */
export interface ServeOptions {
  /** The address to listen on (default 127.0.0.1). */
  hostname?: string;
  /** The UDP port to listen on (default 0: one the system picks, see `addr`). */
  port?: number;
  /** Certificate and key, PEM. {@link WebTransportServer.setCertificate} replaces them. */
  cert: string;
  /** The certificate's private key, PEM (PKCS #8). */
  key: string;
  /**
   * QUIC transport settings: idle timeout, keep-alive, and the number of streams a client
   * may have open at once per connection (default 256 of each kind; Deno's otherwise).
   * `maxIdleTimeout` and `keepAliveInterval` are whole milliseconds ≥ 0; QUIC keeps them
   * itself, so values past `setTimeout`'s 24.8 days are honoured.
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
   * not is closed with H3_MISSING_SETTINGS, and its requests with it. Any number > 0, past
   * `setTimeout`'s 24.8 days included, or `Infinity` for no limit.
   */
  settingsTimeoutMs?: number;
  /**
   * QUIC connections one client address may hold at once (0 or absent: no cap); more are
   * closed as soon as their handshake ends, with H3_EXCESSIVE_LOAD. Behind a proxy or NAT
   * that gives many clients one address, a cap per address caps them all.
   */
  maxConnectionsPerAddress?: number;
}

/** Options of {@link WebTransportServer.shutdown}. */
export interface ShutdownOptions {
  /**
   * How long sessions have to end by themselves after the DRAIN, in ms (default 5,000): any
   * number ≥ 0, past `setTimeout`'s 24.8 days included, or `Infinity` to wait for them all.
   */
  graceMs?: number;
  /** The close reason sent to the sessions still open after the grace period. */
  reason?: string;
}

/** A listening server. */
export interface WebTransportServer {
  /** Where it listens (UDP). */
  addr: Deno.NetAddr;
  /** Session requests, for the application to accept or reject. */
  requests: ReadableStream<SessionRequest>;
  /**
   * Presents a new certificate to connections from now on; established connections keep
   * theirs. For rotation: see `CertificateRotation` (cert.ts).
   */
  setCertificate(cert: string, key: string): void;
  /**
   * Winds down: stops taking connections, sends GOAWAY on every connection and a DRAIN
   * capsule on every session, waits up to `graceMs` (default 5,000) for the sessions to
   * end, then closes what is left with a close capsule and closes the endpoint.
   *
   * @throws {RangeError} `graceMs` is not a number ≥ 0 (the promise rejects; nothing is
   *   stopped).
   */
  shutdown(options?: ShutdownOptions): Promise<void>;
  /** Stops listening and closes every connection at once. */
  close(): void;
}

/**
 * Counts the connections each client address holds, for `maxConnectionsPerAddress`.
 */
export class AddressCap {
  readonly #held = new Map<string, number>();

  /** @param max connections per address; 0 or undefined: no cap. */
  constructor(readonly max: number | undefined) {}

  /**
   * Takes a place for `address`. Returns the function that gives it back (once), or
   * undefined when the address holds `max` already.
   */
  take(address: string): (() => void) | undefined {
    const held = this.#held.get(address) ?? 0;
    if (this.max && held >= this.max) return undefined;
    this.#held.set(address, held + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#held.get(address) ?? 1) - 1;
      if (left > 0) this.#held.set(address, left);
      else this.#held.delete(address);
    };
  }

  /** Connections `address` holds now. */
  held(address: string): number {
    return this.#held.get(address) ?? 0;
  }
}

/** What the server's parts share. */
interface ServerState {
  readonly options: ServeOptions;
  readonly connections: Set<H3Connection>;
  readonly cap: AddressCap;
  /** Hands a request to the application, or refuses it (503) once requests ended. */
  readonly offer: (request: SessionRequest) => void;
}

/** Serves one QUIC connection once its handshake is done. */
function serveConnection(state: ServerState, conn: Deno.QuicConn): void {
  // Connections per address. Counted after the handshake: reading the address of a
  // QuicIncoming makes Deno drop it (accept() then fails with BadResource; repro in
  // testdata/deno_incoming_remote_addr.ts), so the refusal cannot come before.
  const release = state.cap.take(conn.remoteAddr.hostname);
  if (!release) {
    conn.close({
      closeCode: H3.EXCESSIVE_LOAD,
      reason: "too many connections from this address",
    });
    return;
  }
  const { options } = state;
  const h3 = new H3Connection(conn, state.offer, {
    role: "server",
    dialects: options.dialects,
    earlyLimits: options.earlyLimits,
    flowWindows: options.flowWindows,
    settingsTimeoutMs: options.settingsTimeoutMs,
  });
  state.connections.add(h3);
  // run() fails when the peer is gone before our control stream opens: that is the
  // peer's problem, never a reason for the server to stop.
  h3.run().catch(() => {}).finally(() => {
    state.connections.delete(h3);
    release();
  });
}

/** Accepts the connections `listener` takes, until it stops. */
async function acceptConnections(state: ServerState, listener: Deno.QuicListener) {
  for await (const incoming of listener) {
    Promise.resolve(incoming.accept())
      .then((conn: Deno.QuicConn) => serveConnection(state, conn))
      .catch(() => {});
  }
}

/**
 * Winds the server down (see {@link WebTransportServer.shutdown}); `stopTaking` stops the
 * listener and ends the requests, `closeAll` closes what is left.
 */
async function shutdownServer(
  connections: Set<H3Connection>,
  { graceMs = DEFAULT_GRACE_MS, reason = "server shutting down" }: ShutdownOptions,
  stopTaking: () => void,
  closeAll: () => void,
): Promise<void> {
  checkDuration("graceMs", graceMs);
  stopTaking();
  const sessions = [...connections].flatMap((h3) => h3.goAway());
  await Promise.all(sessions.map((session) => session.drain()));
  await settledWithin(Promise.all(sessions.map((session) => session.closed)), graceMs);
  await Promise.all(sessions.map((session) => session.close({ closeCode: 0, reason })));
  // Closing a QUIC connection discards what is unsent, the close capsules included: give
  // the clients a moment to receive them and hang up themselves.
  await settledWithin(
    Promise.all([...connections].map((h3) => h3.conn.closed.catch(() => {}))),
    HANG_UP_MS,
  );
  closeAll();
}

/**
 * Listens for WebTransport sessions on a new QUIC endpoint.
 *
 * @throws {RangeError} a duration option (`settingsTimeoutMs`, `transport.maxIdleTimeout`,
 *   `transport.keepAliveInterval`) is out of range; nothing is bound then.
 * @throws {Deno.errors.AddrInUse} the port is taken.
 *
 * @example Accept every session and echo its datagrams
 * ```ts ignore
 * import { generateCertificate, serveWebTransport } from "@duet/webtransport";
 *
 * const certificate = await generateCertificate();
 * const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
 * for await (const request of server.requests) {
 *   if (request.url.pathname !== "/echo") {
 *     await request.reject(404);
 *     continue;
 *   }
 *   const session = await request.accept();
 *   session.datagrams.readable.pipeTo(session.datagrams.writable).catch(() => {});
 * }
 * ```
 */
export function serveWebTransport(options: ServeOptions): WebTransportServer {
  checkTransport(options.transport);
  if (options.settingsTimeoutMs !== undefined) {
    checkDuration("settingsTimeoutMs", options.settingsTimeoutMs, { zero: false });
  }
  const endpoint = new Deno.QuicEndpoint({
    hostname: options.hostname ?? "127.0.0.1",
    port: options.port ?? 0,
  });
  let requests!: ReadableStreamDefaultController<SessionRequest>;
  const state: ServerState = {
    options,
    connections: new Set(),
    cap: new AddressCap(options.maxConnectionsPerAddress),
    offer: (request) => {
      try {
        requests.enqueue(request);
      } catch {
        request.reject(503).catch(() => {}); // shutting down
      }
    },
  };
  let listener: Deno.QuicListener | undefined;
  const listen = (cert: string, key: string) => {
    listener?.stop();
    // A stopped listener's connections live on; the endpoint takes a new listener, which
    // is how Deno lets a server change certificates without dropping anyone.
    listener = endpoint.listen({
      ...DEFAULT_TRANSPORT,
      ...options.transport,
      cert,
      key,
      alpnProtocols: ["h3"],
    });
    acceptConnections(state, listener).catch(() => {});
  };
  listen(options.cert, options.key);
  const endRequests = () => {
    try {
      requests.close();
    } catch { /* closed */ }
  };
  const close = () => {
    for (const h3 of state.connections) h3.conn.close({ closeCode: H3.NO_ERROR, reason: "" });
    endpoint.close();
    endRequests();
  };
  return {
    addr: endpoint.addr,
    requests: new ReadableStream({ start: (c) => void (requests = c) }),
    setCertificate: listen,
    shutdown: (shutdownOptions = {}) =>
      shutdownServer(state.connections, shutdownOptions, () => {
        listener?.stop();
        endRequests();
      }, close),
    close,
  };
}
