/**
 * An HTTP/1.1 server for handlers that hold a request open (a rendezvous, a long poll) and
 * must know whether the client is still there: our own listener on `Deno.listen`, which
 * reads each socket for as long as it is open, with the client's presence probed after a
 * half-close, and accepting supervised. Framing is `_h1_parse.ts` (pure, RFC 9112); one
 * connection's life is `_h1_connection.ts`.
 *
 * Why a listener of our own: measured on Deno 2.9.6, `Deno.serve` watches a connection for
 * the client leaving only when the whole request (head and body) arrived in the server's
 * first read of 512 bytes (ext/http's `wait_raw_response_ready` polls the peer only for a
 * pre-buffered body). With a body of ~460 bytes or more, Content-Length or chunked, a client
 * that hangs up while its handler waits is never noticed: `request.signal` does not abort.
 * The reproduction is kept in `packages/net/testdata/deno_serve_hangup.ts`. node:http sees
 * every departure but costs a third of the throughput on Deno, and npm's JavaScript parsers
 * accept what RFC 9112 refuses (docs/benchmarks.md, `_h1_parse.ts`). Owning the socket, this
 * listener sees every departure at `Deno.serve`'s speed.
 *
 * Half-close (RFC 9112 section 9.6 lets a client close its sending side once its request
 * is complete; `nc -N`, socat and `shutdown(SHUT_WR)` do): the client can still read its
 * answer, so the request is kept. But on TCP a client that closed completely sends the same
 * FIN, and the two can only be told apart by writing: a closed socket answers with a reset.
 * So after a FIN the connection is *in doubt* and {@link Presence.confirm} probes it with an
 * interim `100 Continue` response (RFC 9110 section 15.2: an HTTP/1.1 client must accept
 * unexpected 1xx responses), three times: {@link PROBE_GAP_MS} apart, then 50 ms apart (at
 * most the gap). A departed client answers a write with a reset, which makes the next write
 * fail; the last, short step catches a client that left after reading an earlier write of
 * the same probe. A probe runs at once after the FIN, again every {@link REPROBE_MS} while
 * answers are pending, and whenever the handler asks (before pairing, say). An HTTP/1.0
 * client cannot be sent a 1xx: its FIN is a departure. The limits of the method: a client
 * that left before a probe and is more than a gap of round trip away, or that leaves during
 * a probe and is more than 50 ms away (or leaves in its last 50 ms), can pass it.
 *
 * Bounds: past 32 requests waiting for their answers, 1 MiB of body unread by its handler,
 * or 1 MiB of answers the client has not taken, the connection's bytes are parsed no more
 * (64 KiB more are read and kept, so that a FIN or reset is still seen; past them the
 * connection is closed, never left unread with requests held); a
 * write that makes no progress for {@link WRITE_TIMEOUT_MS} closes the connection. Nothing
 * pipelined after a request that closes the connection (`Connection: close`, HTTP/1.0, or an
 * answer that closes it) is processed (RFC 9112 section 9.6).
 *
 * Accepting: an accept that fails for the listener (EMFILE, out of descriptors; not a
 * failure of one connection, such as a client that reset before it was taken:
 * `accept_error.ts`) starts an outage, during
 * which the listener is closed (new connections are refused, not queued unseen) and opened
 * again on the same port (backoff of backoff.ts) until one accepts again; connections
 * already held keep being served. A watchdog also connects to the server every
 * {@link WATCHDOG_MS}: a probe connection that cannot be opened (EMFILE), or
 * {@link UNACCEPTED_PROBES} in a row that are not accepted while nothing else is (a burst
 * only delays them), count as accept failures too. One outage is logged once when it starts
 * and once when it ends. No library does this, hence the hand-written supervisor.
 *
 * Requests it cannot take are answered here, with the body `onBadRequest` gives (JSON for
 * syncpoint), never a 500, and the connection is closed: an invalid, missing or repeated
 * Host, a target that is not a path, a request that does not parse (`_h1_parse.ts` lists
 * what), a FIN before the request is complete (400); CONNECT (405); a head not in within
 * {@link HEADERS_TIMEOUT_MS} or a request not whole within {@link REQUEST_TIMEOUT_MS} (408);
 * an unknown Expect (417); a head too large (431); a transfer coding other than chunked
 * (501); an HTTP version other than 1.x (505). Such an answer never takes the place of an
 * earlier request's pending answer: the connection is closed instead. Pipelined requests are
 * served in order; one still queued when its connection closes sees its signal abort.
 * Answers are sent whole: a handler's `Response` body is read before its head is written
 * (with a Content-Length), which suits the short answers of a rendezvous, not a stream.
 *
 * @module
 */
import { checkDuration } from "@duet/core/duration";
import { concatChunks } from "@duet/core/bytes";
import { getLogger } from "@logtape/logtape";
import { setLongTimeout } from "@duet/core/long-timeout";
import { durationOption } from "./_duration.ts";
import { AcceptOutage } from "./outage.ts";
import { isConnectionAcceptError } from "./accept_error.ts";
import { type AcceptProbe, type WatchdogCounters, watchdogStep } from "./_watchdog.ts";
import {
  Connection,
  type ConnectionHost,
  type Exchange,
  IncompleteRequest,
  PROBE_DEADLINE_MS,
  REPROBE_MS,
  WRITE_TIMEOUT_MS,
} from "./_h1_connection.ts";

export { PROBE_DEADLINE_MS, REPROBE_MS, WRITE_TIMEOUT_MS };

/** Milliseconds between the two writes of a presence probe (250 ms). */
export const PROBE_GAP_MS = 250;
/** Milliseconds between two checks of the accept watchdog (1,000 ms). */
export const WATCHDOG_MS = 1_000;
/** How long an idle keep-alive connection is kept (65,000 ms, above common proxies' 60 s). */
export const KEEP_ALIVE_MS = 65_000;
/**
 * Milliseconds a request has to arrive whole, head and body (30,000 ms): past it node
 * answers 408 and closes the connection. The head alone has {@link HEADERS_TIMEOUT_MS}.
 */
export const REQUEST_TIMEOUT_MS = 30_000;
/** Milliseconds a request's head has to arrive (20,000 ms, or the request timeout if less). */
export const HEADERS_TIMEOUT_MS = 20_000;
/** Watchdog probes in a row that connect but are not accepted before the listener is replaced. */
export const UNACCEPTED_PROBES = 3;
/** An outage ends once accepting has worked for this long (5,000 ms). */
export const RECOVERED_AFTER_MS = 5_000;

/**
 * Whether the client of a held request is still there, when the socket alone cannot tell.
 * See the module documentation for the method.
 */
export interface Presence {
  /**
   * True while the answer is pending and the connection is half-closed (the client sent
   * its FIN) or already closed: ask {@link Presence.confirm} before relying on the client.
   */
  readonly inDoubt: boolean;
  /**
   * Probes the connection if it is in doubt: resolves false if the client has left (the
   * connection is then closed, and the request's signal aborts), true if its answer can
   * still be delivered. At once when not in doubt; within 2 gaps + {@link PROBE_DEADLINE_MS}
   * otherwise. Never rejects.
   */
  confirm(): Promise<boolean>;
}

/** What the handler gets beside the request (the shape of `Deno.ServeHandlerInfo`'s part). */
export interface Http1Info {
  /** The client's address and port. */
  remoteAddr: Deno.NetAddr;
  /** The client's presence while its request is held. */
  presence: Presence;
}

/**
 * One exchange seen before any Web `Request` is built, for a hot path that answers without
 * them (building a `Request` and reading a `Response` took ~40% of the CPU of a rendezvous,
 * measured: docs/benchmarks.md).
 */
export interface DirectExchange {
  /** The request method. */
  readonly method: string;
  /** The request target as sent: path and query. */
  readonly target: string;
  /** A request header by lower-case name, or undefined. */
  header(name: string): string | undefined;
  /** The client's address and port. */
  readonly remoteAddr: Deno.NetAddr;
  /** The client's presence while its request is held. */
  readonly presence: Presence;
  /** Aborts when the client leaves before its answer is written. */
  readonly signal: AbortSignal;
  /**
   * The body, whole: its bytes, or "too_large" once more than `max` bytes came (the rest is
   * not read, and the connection is closed after the answer). Rejects when the body cannot
   * be read (the client left, closed its side mid-body, or sent a broken body).
   */
  body(max: number): Promise<Uint8Array | "too_large">;
  /** Writes the answer in one piece (a body of `text` in UTF-8). */
  respond(status: number, headers: Record<string, string>, text: string): void;
}

/**
 * Takes an exchange on a direct path: true when it will answer it (then the handler is not
 * called), false to leave it to the handler.
 */
export type DirectHandler = (exchange: DirectExchange) => boolean;

/** A request handler: the Web `Request` (its `signal` aborts when the client leaves). */
export type Http1Handler = (request: Request, info: Http1Info) => Response | Promise<Response>;

/**
 * Why a request cannot be taken: 400 an invalid, missing (HTTP/1.1) or repeated `Host` (RFC
 * 9112 section 3.2), a target that is neither a path nor an absolute URL (such as `*`), a
 * request that cannot be parsed, or one that ended (FIN) before its body was complete; 405
 * `CONNECT`; 408 a request not whole in time; 417 an `Expect` other than `100-continue`;
 * 431 a head too large; 501 a transfer coding other than `chunked` alone (RFC 9112 section
 * 6.1); 505 an HTTP version other than 1.x.
 */
export type BadRequestStatus = 400 | 405 | 408 | 417 | 431 | 501 | 505;

/** Options of {@link serveHttp1}. */
export interface Http1Options {
  /** Interface to listen on. */
  hostname: string;
  /** TCP port; 0 picks a free one (kept when the listener is replaced). */
  port: number;
  /** Answers a handler that threw; a bare 500 by default. */
  onError?: (error: unknown) => Response | Promise<Response>;
  /**
   * The body of an answer to a request that cannot be taken, sent with `status` and the
   * connection closed; `reason` is a short English phrase. By default no body.
   */
  onBadRequest?: (
    status: BadRequestStatus,
    reason: string,
  ) => { headers: Record<string, string>; text: string };
  /**
   * Milliseconds a request has to arrive whole, a finite number > 0 (also past
   * `setTimeout`'s 2^31 − 1 ms: deadlines are compared with the clock); {@link REQUEST_TIMEOUT_MS}
   * by default.
   */
  requestTimeoutMs?: number;
  /** Offered every exchange first; what it takes never reaches the handler. */
  direct?: DirectHandler;
  /**
   * Milliseconds between the two writes of a probe, a finite number ≥ 0 (any size: long
   * waits are chained); {@link PROBE_GAP_MS} by default.
   */
  probeGapMs?: number;
  /**
   * Milliseconds between accept checks, a finite number > 0 (any size: long waits are
   * chained); {@link WATCHDOG_MS} by default.
   */
  watchdogMs?: number;
  /**
   * Milliseconds of accepting that end an outage, a finite number ≥ 0;
   * {@link RECOVERED_AFTER_MS} by default.
   */
  recoveredAfterMs?: number;
}

/** A server started by {@link serveHttp1}. */
export interface Http1Server {
  /** Where it listens. */
  readonly addr: Deno.NetAddr;
  /** False while no listener accepts (during an outage, until one is replaced). */
  readonly listening: boolean;
  /** True from an accept failure until accepting has worked for `recoveredAfterMs`. */
  readonly outage: boolean;
  /** Accept failures (unopenable or unaccepted watchdog probes) since the start. */
  readonly acceptFailures: number;
  /** Requests being handled now. */
  readonly inFlight: number;
  /**
   * Stops listening, waits for the requests in flight to be answered (the caller answers
   * held ones first), then closes every connection. Idempotent.
   */
  shutdown(): Promise<void>;
}

const log = getLogger(["duet", "net"]);

/**
 * Starts the server; resolves once it listens.
 *
 * @param options Where to listen, timings (milliseconds, checked), bad-request bodies, the
 *   direct path.
 * @param handler Answers each request taken (not the direct path's).
 * @returns The running server, once it listens.
 * @throws {RangeError} (as a rejection) when a duration option is not a finite number of
 *   milliseconds in its range (`requestTimeoutMs` and `watchdogMs` > 0, `probeGapMs` and
 *   `recoveredAfterMs` ≥ 0); the message names the option.
 * @throws what listening throws at the first start, as the `Deno.errors` class
 *   `Deno.serve` would throw (`AddrInUse`, `PermissionDenied`, ...).
 *
 * @example A long poll that notices its client leaving
 * ```ts ignore
 * import { serveHttp1 } from "@duet/net/http1";
 * const server = await serveHttp1({ hostname: "127.0.0.1", port: 0 }, async (request) => {
 *   await new Promise((resolve) => request.signal.addEventListener("abort", resolve));
 *   return new Response("too late: nobody reads this");
 * });
 * await server.shutdown();
 * ```
 */
export function serveHttp1(
  options: Http1Options,
  handler: Http1Handler,
): Promise<Http1Server> {
  // A throw (a bad option, listening refused) becomes the promise's rejection.
  return new Promise((resolve) => resolve(startHttp1(options, handler)));
}

function startHttp1(options: Http1Options, handler: Http1Handler): Http1Server {
  const timings: Http1Timings = {
    probeGapMs: durationOption("probeGapMs", options.probeGapMs, PROBE_GAP_MS),
    watchdogMs: durationOption("watchdogMs", options.watchdogMs, WATCHDOG_MS, true),
    recoveredAfterMs: durationOption(
      "recoveredAfterMs",
      options.recoveredAfterMs,
      RECOVERED_AFTER_MS,
    ),
    requestTimeoutMs: Math.ceil(
      options.requestTimeoutMs === undefined ? REQUEST_TIMEOUT_MS : checkDuration(
        "requestTimeoutMs",
        options.requestTimeoutMs,
        { zero: false, max: Number.MAX_SAFE_INTEGER },
      ),
    ),
  };
  const listener = new Http1Listener(options, handler, timings);
  listener.start();
  listener.watch();
  const addr: Deno.NetAddr = { transport: "tcp", hostname: options.hostname, port: listener.port };
  return {
    addr,
    get listening() {
      return listener.listening;
    },
    get outage() {
      return listener.outage;
    },
    get acceptFailures() {
      return listener.acceptFailures;
    },
    get inFlight() {
      return listener.inFlight;
    },
    shutdown: () => listener.shutdown(),
  };
}

/** The checked durations of {@link Http1Options}, in milliseconds. */
interface Http1Timings {
  probeGapMs: number;
  watchdogMs: number;
  recoveredAfterMs: number;
  /** Whole milliseconds. */
  requestTimeoutMs: number;
}

/** What a request that cannot be taken is answered: its status and a short reason. */
type Refusal = { status: BadRequestStatus; reason: string };

/**
 * The state of one server of {@link serveHttp1} and its steps: the listener (one at a time,
 * replaced in an outage) and its accept loop, the connections accepted, the requests in
 * flight, the timeouts' sweep, the accept watchdog (see the module documentation), the
 * shutdown.
 */
class Http1Listener implements ConnectionHost {
  readonly #options: Http1Options;
  readonly #timings: Http1Timings;
  readonly #handler: Http1Handler;
  readonly #connections = new Set<Connection>();
  readonly #outage: AcceptOutage;
  #listener: Deno.TcpListener | undefined;
  #port: number;
  #inFlight = 0;
  #drained: (() => void) | undefined;
  #stopped = false;
  /** Connections accepted since the start: a watchdog probe looks for one more. */
  #accepted = 0;
  #watchdog: WatchdogCounters = { unaccepted: 0, healthySince: 0 };
  #cancelWatchdog = () => {};
  #sweep: ReturnType<typeof setInterval> | undefined;
  #stopping: Promise<void> | undefined;

  constructor(options: Http1Options, handler: Http1Handler, timings: Http1Timings) {
    this.#options = options;
    this.#timings = timings;
    this.#handler = handler;
    this.#port = options.port;
    this.#outage = new AcceptOutage({ log, port: () => this.#port });
  }

  get port(): number {
    return this.#port;
  }
  get listening(): boolean {
    return this.#listener !== undefined;
  }
  get outage(): boolean {
    return this.#outage.active;
  }
  get acceptFailures(): number {
    return this.#outage.failures;
  }
  get inFlight(): number {
    return this.#inFlight;
  }

  // ConnectionHost: what each connection needs from its server.
  get probeGapMs(): number {
    return this.#timings.probeGapMs;
  }
  get requestTimeoutMs(): number {
    return this.#timings.requestTimeoutMs;
  }
  get headersTimeoutMs(): number {
    return HEADERS_TIMEOUT_MS;
  }
  get keepAliveMs(): number {
    return KEEP_ALIVE_MS;
  }
  counted(delta: 1 | -1): void {
    this.#inFlight += delta;
    if (this.#inFlight === 0) this.#drained?.();
  }
  closed(connection: Connection): void {
    this.#connections.delete(connection);
  }
  refusal(status: BadRequestStatus, reason: string): Uint8Array {
    let bad = { headers: {} as Record<string, string>, text: "" };
    try {
      bad = this.#options.onBadRequest?.(status, reason) ?? bad;
    } catch (error) {
      log.error("onBadRequest failed: {error}", { error });
    }
    return encodeAnswer(status, { ...bad.headers, connection: "close" }, bad.text);
  }

  /** A request's head was taken: refused, taken by the direct path, or handled. */
  dispatch(exchange: Exchange): void {
    const refused = refusalOf(exchange);
    if (refused) {
      exchange.failBody(new IncompleteRequest(refused.reason));
      return exchange.answer(this.refusal(refused.status, refused.reason), true);
    }
    const direct = this.#options.direct;
    let taken = false;
    try {
      taken = direct?.(new H1Exchange(exchange)) ?? false;
    } catch (error) {
      void this.#onError(error).then((response) => this.#send(exchange, response));
      return;
    }
    if (!taken) {
      this.#handle(exchange).catch((error) => {
        log.error("A request failed: {error}", { error });
        exchange.connection.destroy();
      });
    }
  }

  /** A request through the Web handler: a `Request` in, the `Response` written whole. */
  async #handle(exchange: Exchange): Promise<void> {
    let request: Request;
    try {
      request = webRequest(exchange);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      return exchange.answer(this.refusal(400, reason), true);
    }
    let response: Response;
    try {
      response = await this.#handler(request, {
        remoteAddr: exchange.connection.remoteAddr,
        presence: presenceOf(exchange),
      });
    } catch (error) {
      response = await this.#onError(error);
    }
    await this.#send(exchange, response);
  }

  /** Writes a handler's `Response`, read whole first (see the module documentation). */
  async #send(exchange: Exchange, response: Response): Promise<void> {
    let body: Uint8Array;
    try {
      body = new Uint8Array(await response.arrayBuffer());
    } catch (error) {
      response = await this.#onError(error);
      body = new Uint8Array(await response.arrayBuffer().catch(() => new ArrayBuffer(0)));
    }
    const headers: Record<string, string> = {};
    response.headers.forEach((value, name) => (headers[name] = value));
    const close = /(?:^|,)\s*close\s*(?:,|$)/i.test(headers["connection"] ?? "");
    setConnection(exchange, headers, close);
    if (exchange.head.method === "HEAD") {
      // The length GET would have: the handler's, else its body's (which is not sent).
      const length = response.headers.get("content-length") ?? String(body.length);
      return exchange.answer(
        encodeAnswer(response.status, headers, new Uint8Array(0), length),
        close,
      );
    }
    exchange.answer(encodeAnswer(response.status, headers, body), close);
  }

  async #onError(error: unknown): Promise<Response> {
    try {
      return await (this.#options.onError?.(error) ?? new Response(null, { status: 500 }));
    } catch {
      return new Response(null, { status: 500 });
    }
  }

  /** Listens (again, on the port of the first listener); throws as `Deno.listen` does. */
  start(): void {
    const listener = Deno.listen({ hostname: this.#options.hostname, port: this.#port });
    this.#port = (listener.addr as Deno.NetAddr).port;
    this.#listener = listener;
    void this.#accept(listener);
    this.#sweep ??= setInterval(
      () => {
        const now = Date.now();
        for (const connection of this.#connections) connection.sweep(now);
      },
      Math.min(1_000, this.#timings.requestTimeoutMs),
    );
  }

  /** Accepts until this listener is closed; an accept failure starts an outage. */
  async #accept(listener: Deno.TcpListener): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#listener !== listener) return; // closed on purpose
        // One client's connection failed before it was taken: accept the next.
        if (isConnectionAcceptError(error)) {
          this.#accepted++; // accepting works: the watchdog must not take it for an outage
          continue;
        }
        const reason = (error as { code?: string }).code ?? (error as Error).message;
        this.#failed(reason);
        this.#schedule(this.#outage.nextAttemptMs());
        return;
      }
      this.#accepted++;
      if (this.#stopped) {
        conn.close();
        continue;
      }
      try {
        conn.setNoDelay(true);
      } catch { /* closed already */ }
      const connection = new Connection(conn, this);
      this.#connections.add(connection);
      connection.run().catch((error) => {
        // A fault of ours: it costs this connection, never the process.
        log.error("A connection failed: {error}", { error });
        connection.destroy();
      });
    }
  }

  /** Starts the accept watchdog. */
  watch(): void {
    this.#schedule(this.#timings.watchdogMs);
  }

  #schedule(ms: number): void {
    this.#cancelWatchdog();
    if (!this.#stopped) this.#cancelWatchdog = setLongTimeout(() => this.#tick(), ms);
  }

  /** One check of the accept watchdog: listen again if out, probe, act on what it found. */
  async #tick(): Promise<void> {
    if (this.#stopped) return;
    if (!this.#listener && !this.#relisten()) return;
    const probe = await this.#probeAccept();
    if (this.#stopped) return;
    const { watchdogMs, recoveredAfterMs } = this.#timings;
    const step = watchdogStep(
      { ...this.#watchdog, probe, outage: this.#outage.active, now: Date.now() },
      { watchdogMs, recoveredAfterMs, unacceptedProbes: UNACCEPTED_PROBES },
    );
    this.#watchdog = { unaccepted: step.unaccepted, healthySince: step.healthySince };
    if (step.action === "fail") {
      this.#failed(step.reason);
      this.#schedule(this.#outage.nextAttemptMs());
      return;
    }
    if (step.recovered) this.#outage.recovered();
    this.#schedule(step.ms);
  }

  /** Listens again during an outage: false (the next attempt scheduled) when it cannot. */
  #relisten(): boolean {
    try {
      this.start();
      log.debug("Listening again on port {port}", { port: this.#port });
      return true;
    } catch (error) {
      // Still out of descriptors (a listening socket needs one too), or the port taken.
      this.#outage.relistenFailed(error);
      this.#schedule(this.#outage.nextAttemptMs());
      return false;
    }
  }

  /** An accept failure: the outage goes on, and the listener is closed until replaced. */
  #failed(reason: string): void {
    this.#outage.failed(reason);
    const listener = this.#listener;
    this.#listener = undefined;
    try {
      listener?.close();
    } catch { /* closed already */ }
  }

  /**
   * Connects to the server: undefined when a connection was accepted in time (the probe or
   * any other), else why not.
   */
  async #probeAccept(): Promise<AcceptProbe> {
    const before = this.#accepted;
    const hostname = this.#options.hostname;
    const host = hostname === "0.0.0.0" ? "127.0.0.1" : hostname === "::" ? "::1" : hostname;
    let conn: Deno.TcpConn | undefined;
    const deadline = Date.now() + this.#timings.watchdogMs;
    try {
      conn = await Deno.connect({ hostname: host, port: this.#port });
      while (this.#accepted === before && Date.now() < deadline && !this.#stopped) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      return this.#accepted !== before
        ? undefined
        : { kind: "unaccepted", reason: "connections were not accepted" };
    } catch (error) {
      return { kind: "unopened", reason: (error as { code?: string }).code ?? String(error) };
    } finally {
      try {
        conn?.close();
      } catch { /* closed already */ }
    }
  }

  /** See {@link Http1Server.shutdown}. */
  shutdown(): Promise<void> {
    return this.#stopping ??= this.#stop();
  }

  async #stop(): Promise<void> {
    this.#stopped = true;
    this.#cancelWatchdog();
    const listener = this.#listener;
    this.#listener = undefined;
    try {
      listener?.close();
    } catch { /* closed already */ }
    // Idle keep-alive connections go now; busy ones once their answers are out.
    for (const connection of this.#connections) if (connection.idle) connection.destroy();
    if (this.#inFlight > 0) await new Promise<void>((resolve) => (this.#drained = resolve));
    for (const connection of this.#connections) connection.end();
    // Answers still being written get a moment to leave; then everything closes.
    for (let i = 0; i < 20 && this.#connections.size > 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    for (const connection of this.#connections) connection.destroy();
    clearInterval(this.#sweep);
  }
}

/** Why a parsed request cannot be taken (see {@link BadRequestStatus}), or undefined. */
function refusalOf(exchange: Exchange): Refusal | undefined {
  const head = exchange.head;
  if (head.method === "CONNECT") return { status: 405, reason: "CONNECT is not served here" };
  if (head.expect !== undefined && head.expect !== "100-continue") {
    return { status: 417, reason: "the only expectation supported is 100-continue" };
  }
  const fields = head.fields;
  let host: string | undefined;
  for (let i = 0; i < fields.length; i += 2) {
    if (fields[i] !== "host") continue;
    if (host !== undefined) return { status: 400, reason: "more than one Host header" };
    host = fields[i + 1]!;
  }
  if (host === undefined) {
    if (head.version === "1.1") {
      return { status: 400, reason: "an HTTP/1.1 request needs a Host header" };
    }
  } else if (!validHost(host)) return { status: 400, reason: "invalid Host header" };
  const target = head.target;
  if (!target.startsWith("/") && !/^https?:\/\//i.test(target)) {
    return { status: 400, reason: "the request target is not a path" };
  }
  return undefined;
}

/**
 * The authority form of RFC 3986 a `Host` may hold: an IP literal in brackets or a
 * registered name (unreserved, sub-delims, percent escapes), and an optional port.
 */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::(\d{1,5}))?$/;

/** The last `Host` value found valid (clients send the same one again and again). */
let lastValidHost: string | undefined;

/**
 * Whether `host` may name this server: RFC 3986's form, and a URL can be made of it (the
 * Web handler's `Request` needs one: `[:::::::]` has the form and is no address).
 */
function validHost(host: string): boolean {
  if (host === lastValidHost) return true;
  const match = HOST.exec(host);
  if (!match || (match[1] !== undefined && Number(match[1]) > 65_535)) return false;
  try {
    new URL(`http://${host}/`);
  } catch {
    return false;
  }
  lastValidHost = host;
  return true;
}

/** The Web `Request` of an exchange; throws (a 400) when its URL cannot be built. */
function webRequest(exchange: Exchange): Request {
  const head = exchange.head;
  // An HTTP/1.0 request may come without Host: it names this server (say, a health check).
  const host = exchange.field("host") ?? "localhost";
  const url = head.target.startsWith("/") ? `http://${host}${head.target}` : head.target;
  try {
    new URL(url);
  } catch {
    throw new Error("the request target is not a valid URL");
  }
  const headers = new Headers();
  const fields = head.fields;
  for (let i = 0; i < fields.length; i += 2) headers.append(fields[i]!, fields[i + 1]!);
  const init: RequestInit & { duplex?: "half" } = { method: head.method, headers };
  init.signal = exchange.signal;
  if (head.body !== 0 && head.method !== "GET" && head.method !== "HEAD") {
    init.body = bodyStream(exchange);
    init.duplex = "half";
  }
  return new Request(url, init);
}

/**
 * The body of an exchange as a stream, read from the socket as the reader pulls: what it
 * holds unread counts toward the connection's read-ahead bound. A stream the handler
 * cancelled (or answered without reading) takes nothing more.
 */
function bodyStream(exchange: Exchange): ReadableStream<Uint8Array> {
  let live = true;
  const unblock = () => exchange.connection.unblock();
  return new ReadableStream<Uint8Array>({
    start(controller) {
      // The stream may be cancelled (or errored by its reader) at any moment: then its
      // controller throws, which must not reach the connection's read loop.
      const guard = (step: () => void) => {
        if (!live) return;
        try {
          step();
        } catch {
          live = false;
        }
      };
      exchange.read({
        data: (bytes) => guard(() => controller.enqueue(bytes)),
        end: () => guard(() => controller.close()),
        fail: (error) => guard(() => controller.error(error)),
        // With no high-water mark, the queue's size is minus the desired size.
        backlog: () => live ? Math.max(0, -(controller.desiredSize ?? 0)) : 0,
      });
    },
    // A read asks for the body: a client waiting for `100 Continue` is sent it then.
    pull() {
      exchange.wantBody();
      unblock();
    },
    cancel() {
      live = false;
      unblock();
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: 0 }));
}

/** The presence of one exchange's client (see {@link Presence}). */
function presenceOf(exchange: Exchange): Presence {
  const connection = exchange.connection;
  return {
    get inDoubt() {
      return !exchange.answered && (connection.isClosed || connection.readEnded);
    },
    confirm() {
      if (exchange.answered) return Promise.resolve(true);
      return connection.probe();
    },
  };
}

/** The {@link DirectExchange} of one exchange. */
class H1Exchange implements DirectExchange {
  readonly #exchange: Exchange;
  #presence: Presence | undefined;
  #unread = false;
  constructor(exchange: Exchange) {
    this.#exchange = exchange;
  }
  get method(): string {
    return this.#exchange.head.method;
  }
  get target(): string {
    return this.#exchange.head.target;
  }
  header(name: string): string | undefined {
    return this.#exchange.field(name);
  }
  get remoteAddr(): Deno.NetAddr {
    return this.#exchange.connection.remoteAddr;
  }
  get presence(): Presence {
    return this.#presence ??= presenceOf(this.#exchange);
  }
  get signal(): AbortSignal {
    return this.#exchange.signal;
  }
  body(max: number): Promise<Uint8Array | "too_large"> {
    this.#exchange.wantBody();
    return new Promise((resolve, reject) => {
      const chunks: Uint8Array[] = [];
      let size = 0;
      let done = false;
      this.#exchange.read({
        data: (bytes) => {
          if (done) return;
          size += bytes.length;
          if (size > max) {
            done = true;
            this.#unread = true;
            resolve("too_large");
          } else chunks.push(bytes);
        },
        end: () => {
          if (done) return;
          done = true;
          resolve(chunks.length === 1 ? chunks[0]! : concatChunks(chunks));
          chunks.length = 0;
        },
        fail: (error) => {
          if (!done) (done = true, reject(error));
        },
      });
    });
  }
  respond(status: number, headers: Record<string, string>, text: string): void {
    // A body left unread is not worth reading to keep the connection: close it.
    const close = this.#unread || headers["connection"] === "close";
    const fields = { ...headers };
    setConnection(this.#exchange, fields, close);
    this.#exchange.answer(encodeAnswer(status, fields, text), close);
  }
}

/**
 * Sets the answer's `Connection` field: `close` when the connection ends with it (asked,
 * or the request's own keep-alive rules: HTTP/1.0 without `keep-alive`, or `close`), and
 * `keep-alive` to an HTTP/1.0 client that asked to keep it.
 */
function setConnection(exchange: Exchange, headers: Record<string, string>, close: boolean): void {
  for (const name in headers) if (name.toLowerCase() === "connection") delete headers[name];
  if (close || !exchange.head.keepAlive) headers["connection"] = "close";
  else if (exchange.head.version === "1.0") headers["connection"] = "keep-alive";
}

const encoder = new TextEncoder();

/** RFC 9110's reason phrases of the statuses a handler is likely to answer. */
const STATUS_TEXT: Record<number, string> = {
  100: "Continue",
  200: "OK",
  201: "Created",
  202: "Accepted",
  204: "No Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  411: "Length Required",
  413: "Content Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  417: "Expectation Failed",
  422: "Unprocessable Content",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** The `Date` field, made once a second (RFC 9110 section 6.6.1: an origin server sends it). */
let date = { second: 0, text: "" };
function dateField(): string {
  const second = Math.floor(Date.now() / 1_000);
  if (second !== date.second) date = { second, text: new Date(second * 1_000).toUTCString() };
  return date.text;
}

/**
 * A whole answer as bytes: status line, the given fields (Content-Length and Date are set
 * here), body. `headLength` is the Content-Length of a HEAD answer, which has no body.
 */
function encodeAnswer(
  status: number,
  headers: Record<string, string>,
  body: string | Uint8Array,
  headLength: string | null = null,
): Uint8Array {
  let head = `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? ""}\r\ndate: ${dateField()}\r\n`;
  for (const name in headers) {
    const lower = name.toLowerCase();
    if (lower === "content-length" || lower === "transfer-encoding" || lower === "date") continue;
    head += `${name}: ${headers[name]}\r\n`;
  }
  const bytes = typeof body === "string" ? encoder.encode(body) : body;
  const noBody = status === 204 || status === 304 || (status >= 100 && status < 200);
  if (!noBody) head += `content-length: ${headLength ?? bytes.length}\r\n`;
  head += "\r\n";
  const whole = new Uint8Array(head.length * 3 + bytes.length);
  const { written } = encoder.encodeInto(head, whole);
  whole.set(bytes, written);
  return whole.subarray(0, written + bytes.length);
}
