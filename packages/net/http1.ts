/**
 * An HTTP/1.1 server for handlers that hold a request open (a rendezvous, a long poll) and
 * must know whether the client is still there: node:http on Deno, with the client's
 * presence watched on its socket, half-closes kept, and accepting supervised.
 *
 * Why not `Deno.serve`: measured on Deno 2.9.6, `Deno.serve` watches a connection for the
 * client leaving only when the whole request (head and body) arrived in the server's first
 * read of 512 bytes (ext/http's `wait_raw_response_ready` polls the peer only for a
 * pre-buffered body). With a body of ~460 bytes or more, Content-Length or chunked, a client
 * that hangs up while its handler waits is never noticed: `request.signal` does not abort.
 * The reproduction is kept in `packages/net/testdata/deno_serve_hangup.ts`. node:http reads
 * the socket for as long as it is open, whatever the body, so a hang-up closes the response.
 *
 * Half-close (RFC 9112 section 9.6 lets a client close its sending side once its request
 * is complete; `nc -N`, socat and `shutdown(SHUT_WR)` do): the client can still read its
 * answer, so the request is kept. But on TCP a client that closed completely sends the same
 * FIN, and the two can only be told apart by writing: a closed socket answers with a reset.
 * So after a FIN the connection is *in doubt* and {@link Presence.confirm} probes it with an
 * interim `100 Continue` response (RFC 9110 section 15.2: an HTTP/1.1 client must accept
 * unexpected 1xx responses), twice, {@link PROBE_GAP_MS} apart: a departed client's reset
 * makes the second write fail. A probe runs at once after the FIN and again whenever the
 * handler asks (before pairing, say). An HTTP/1.0 client cannot be sent a 1xx: its FIN is a
 * departure. The limit of the method: a client whose round trip exceeds the gap can pass a
 * probe after leaving.
 *
 * Accepting: under descriptor exhaustion (EMFILE) node:http on Deno 2.9.6 stops accepting
 * for good and says nothing (no `error` event; `maxConnections` does not prevent it). A
 * watchdog therefore connects to the server every {@link WATCHDOG_MS}: a probe connection
 * that cannot be opened (EMFILE), or {@link UNACCEPTED_PROBES} in a row that are not accepted
 * while nothing else is (a burst only delays them), start an outage, during which
 * the listener is replaced (same port, backoff of backoff.ts) until one accepts again;
 * connections already held keep being served. One outage is logged once when it starts and
 * once when it ends. No library does this, hence the hand-written supervisor.
 *
 * Requests it cannot take are answered here, with the body `onBadRequest` gives (JSON for
 * syncpoint), never a 500: an invalid, missing or repeated Host, a target that is not a
 * path, an unparsable request, a FIN before the body is complete (400); CONNECT (405); a
 * head not in within {@link HEADERS_TIMEOUT_MS} or a request not whole within
 * {@link REQUEST_TIMEOUT_MS} (408); an unknown Expect (417); a head too large (431); a
 * transfer coding other than chunked (501). Pipelined requests are served in order; one
 * still queued when its connection closes is closed with it (its signal aborts).
 *
 * @module
 */
import { checkDuration } from "@duet/core/duration";
import { Buffer } from "node:buffer";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect, Server as NetServer, type Socket } from "node:net";
import { getRequestListener, type HttpBindings } from "@hono/node-server";
import { getLogger } from "@logtape/logtape";
import { delay } from "@duet/core/delay";
import { setLongTimeout } from "@duet/core/long-timeout";
import { durationOption } from "./_duration.ts";
import { AcceptOutage } from "./outage.ts";
import { type AcceptProbe, type WatchdogCounters, watchdogStep } from "./_watchdog.ts";

/** Milliseconds between the two writes of a presence probe (250 ms). */
export const PROBE_GAP_MS = 250;
/**
 * Milliseconds a probe may take beyond its two gaps before it counts as a departure
 * (1,000 ms): its writes wait behind an answer the client is not reading.
 */
export const PROBE_DEADLINE_MS = 1_000;
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
/**
 * Milliseconds between probes of a half-closed connection whose answer is pending (5,000
 * ms): a client that resets later is noticed by the next probe, not only when paired.
 */
export const REPROBE_MS = 5_000;
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
 * 6.1).
 */
export type BadRequestStatus = 400 | 405 | 408 | 417 | 431 | 501;

/** The reason phrases of {@link BadRequestStatus}. */
const REASONS: Record<BadRequestStatus, string> = {
  400: "Bad Request",
  405: "Method Not Allowed",
  408: "Request Timeout",
  417: "Expectation Failed",
  431: "Request Header Fields Too Large",
  501: "Not Implemented",
};

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
   * `setTimeout`'s 2^31 − 1 ms: node:http compares timestamps); {@link REQUEST_TIMEOUT_MS}
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
export async function serveHttp1(
  options: Http1Options,
  handler: Http1Handler,
): Promise<Http1Server> {
  const timings: Http1Timings = {
    probeGapMs: durationOption("probeGapMs", options.probeGapMs, PROBE_GAP_MS),
    watchdogMs: durationOption("watchdogMs", options.watchdogMs, WATCHDOG_MS, true),
    recoveredAfterMs: durationOption(
      "recoveredAfterMs",
      options.recoveredAfterMs,
      RECOVERED_AFTER_MS,
    ),
    // node:http wants whole milliseconds, at most 2^53 − 1 (it throws its own RangeError,
    // naming its own option, past that).
    requestTimeoutMs: Math.ceil(
      options.requestTimeoutMs === undefined ? REQUEST_TIMEOUT_MS : checkDuration(
        "requestTimeoutMs",
        options.requestTimeoutMs,
        { zero: false, max: Number.MAX_SAFE_INTEGER },
      ),
    ),
  };
  const listener = new Http1Listener(options, handler, timings);
  await listener.start().catch((error: Error & { code?: string }) => {
    throw listenError(error);
  });
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
  /** Whole milliseconds (node:http's). */
  requestTimeoutMs: number;
}

/** A socket with the response node's HTTP server has put on it (the first one pending). */
type HttpSocket = Socket & { _httpMessage?: ServerResponse & { req?: IncomingMessage } | null };

/**
 * The state of one server of {@link serveHttp1} and its steps: the node:http listener (one
 * at a time, replaced in an outage) and its event handlers, the connections accepted, the
 * requests in flight, the accept watchdog (see the module documentation), the shutdown.
 */
class Http1Listener {
  readonly #options: Http1Options;
  readonly #timings: Http1Timings;
  readonly #adapter: ReturnType<typeof getRequestListener>;
  readonly #servers = new Set<Server>();
  readonly #sockets = new Set<Socket>();
  readonly #outage: AcceptOutage;
  #port: number;
  #inFlight = 0;
  #drained: (() => void) | undefined;
  #stopped = false;
  #listening = false;
  /** Connections accepted since the start: a watchdog probe looks for one more. */
  #accepted = 0;
  #watchdog: WatchdogCounters = { unaccepted: 0, healthySince: 0 };
  #cancelWatchdog = () => {};
  #stopping: Promise<void> | undefined;

  constructor(options: Http1Options, handler: Http1Handler, timings: Http1Timings) {
    this.#options = options;
    this.#timings = timings;
    this.#port = options.port;
    this.#outage = new AcceptOutage({ log, port: () => this.#port });
    this.#adapter = requestAdapter(handler, options, timings.probeGapMs, this.#badRequest);
  }

  /** The port listened on (the one picked, once listening, when asked for 0). */
  get port(): number {
    return this.#port;
  }
  /** See {@link Http1Server.listening}. */
  get listening(): boolean {
    return this.#listening;
  }
  /** See {@link Http1Server.outage}. */
  get outage(): boolean {
    return this.#outage.active;
  }
  /** See {@link Http1Server.acceptFailures}. */
  get acceptFailures(): number {
    return this.#outage.failures;
  }
  /** See {@link Http1Server.inFlight}. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** The body of an answer to a request that cannot be taken (`onBadRequest`'s). */
  readonly #badRequest = (status: BadRequestStatus, reason: string) =>
    this.#options.onBadRequest?.(status, reason) ?? { headers: {}, text: "" };

  /** The whole answer of a request that cannot be taken, as bytes for the socket. */
  #badRaw(status: BadRequestStatus, reason: string): string {
    const bad = this.#badRequest(status, reason);
    return rawAnswer(`${status} ${REASONS[status]}`, bad.text, bad.headers);
  }

  /** One request, counted in flight until its response closes: refused, direct or handled. */
  readonly #onRequest = (incoming: IncomingMessage, outgoing: ServerResponse): void => {
    const socket = incoming.socket;
    this.#countInFlight(socket, outgoing);
    const invalid = invalidRequest(incoming);
    if (invalid) {
      const answer = this.#badRequest(invalid.status, invalid.reason);
      writeWhole(outgoing, invalid.status, { ...answer.headers, connection: "close" }, answer.text);
      return;
    }
    // A FIN before the request is complete: it never will be (half-open connections are
    // allowed, so node would wait). On the direct path the body read sees it and answers
    // 400 (the client can still read). Through the adapter, which must not be written
    // around: the connection is closed (a departure).
    const { direct } = this.#options;
    const { probeGapMs } = this.#timings;
    if (direct?.(new NodeExchange(incoming, outgoing, probeGapMs, this.#badRequest))) return;
    if (!incoming.complete) {
      const cut = () => {
        if (!incoming.complete && !outgoing.headersSent) socket.destroy();
      };
      if (socket.readableEnded) cut();
      else outgoing.once("close", onSocket(socket, "end", cut));
    }
    this.#adapter(incoming, outgoing);
  };

  /** Counts a request in flight until its response closes. */
  #countInFlight(socket: HttpSocket, outgoing: ServerResponse): void {
    this.#inFlight++;
    if (socket._httpMessage === outgoing && !socket.destroyed) {
      // The response holds the open socket: node closes it when the connection closes.
      outgoing.once("close", this.#onClosed);
      return;
    }
    // A pipelined request's response still queued behind another's when the connection
    // closes never closes by itself (node emits it only for the response holding the
    // socket): close it, so its handler's signal aborts and it is not counted in flight.
    let closed = false;
    const unwatch = onSocket(socket, "close", () => {
      if (!closed) outgoing.destroy().emit("close");
    });
    outgoing.once("close", () => {
      closed = true;
      unwatch();
      this.#onClosed();
    });
  }

  /** A request's response closed. */
  readonly #onClosed = (): void => {
    if (--this.#inFlight === 0) this.#drained?.();
  };

  /** Listens (again, on the port of the first listener); rejects with node's listen error. */
  start(): Promise<void> {
    const server = this.#createServer();
    return new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#port, this.#options.hostname, () => {
        server.off("error", reject);
        server.on("error", (error: Error) => log.debug("Listener error: {error}", { error }));
        this.#port = (server.address() as { port: number }).port;
        this.#servers.add(server);
        this.#listening = true;
        resolve();
      });
    });
  }

  /** A node:http server with this listener's settings and event handlers, not listening. */
  #createServer(): Server {
    const requestTimeoutMs = this.#timings.requestTimeoutMs;
    const server = createServer({
      // A missing Host on HTTP/1.1 is answered by invalidRequest, with onBadRequest's body.
      requireHostHeader: false,
      requestTimeout: requestTimeoutMs,
      headersTimeout: Math.min(HEADERS_TIMEOUT_MS, requestTimeoutMs),
      // How often node looks for requests past those timeouts (30 s by default).
      connectionsCheckingInterval: Math.min(1_000, requestTimeoutMs),
    }, this.#onRequest);
    // Keep a half-closed client's request (see the module documentation).
    (server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    // node's 5 s default closes idle keep-alive connections, which a proxy or a client
    // reusing its connection (and the tests) expect to stay usable longer.
    server.keepAliveTimeout = KEEP_ALIVE_MS;
    server.on("connection", (socket: Socket) => this.#onConnection(socket));
    server.on(
      "clientError",
      (error: Error & { code?: string }, socket: Socket) => this.#onClientError(error, socket),
    );
    server.on(
      "checkExpectation",
      (_incoming: IncomingMessage, outgoing: ServerResponse) => this.#onCheckExpectation(outgoing),
    );
    server.on("connect", (_incoming: IncomingMessage, socket: Socket) => this.#onConnect(socket));
    return server;
  }

  /** A connection accepted: kept until it closes, for the watchdog and the shutdown. */
  #onConnection(socket: Socket): void {
    this.#accepted++;
    this.#sockets.add(socket);
    socket.once("close", () => this.#sockets.delete(socket));
  }

  /** A request node could not take (unparsable, too large, not whole in time). */
  #onClientError(error: Error & { code?: string }, socket: HttpSocket): void {
    // What node does without this listener, with onBadRequest's body: an answer when it
    // is this request's to give, then close. Not in place of the answer of an earlier
    // request still pending on the connection (a pipelined request behind a held one):
    // the connection is closed then, which that request sees as its client leaving.
    const code = error.code ?? "";
    let answer: string | undefined;
    if (code === "ERR_HTTP_REQUEST_TIMEOUT") {
      answer = this.#badRaw(408, "the request was not whole in time");
    } else if (code === "HPE_HEADER_OVERFLOW") {
      answer = this.#badRaw(431, "the request head is too large");
    } else if (code.startsWith("HPE_")) {
      answer = this.#badRaw(400, "the request could not be parsed");
    }
    const held = socket._httpMessage;
    // The held response is the failing request's own when its request is not complete.
    const ours = !held || (!held.headersSent && held.req?.complete === false);
    if (answer && socket.writable && ours) socket.write(answer);
    socket.destroy();
  }

  /** An Expect other than 100-continue (node answers 417 with no body). */
  #onCheckExpectation(outgoing: ServerResponse): void {
    const bad = this.#badRequest(417, "the only expectation supported is 100-continue");
    writeWhole(outgoing, 417, { ...bad.headers, connection: "close" }, bad.text);
  }

  /** CONNECT is not served (node closes without a word). */
  #onConnect(socket: HttpSocket): void {
    // node hands the socket over with no error listener: a reset would be uncaught and end
    // the process (found by an attacker). With an answer of an earlier request still
    // pending, nothing may be written ahead of it: the connection is closed.
    socket.on("error", () => socket.destroy());
    const held = socket._httpMessage;
    if (held && !held.writableFinished) socket.destroy();
    else socket.end(this.#badRaw(405, "CONNECT is not served here"));
  }

  /** Starts the accept watchdog. */
  watch(): void {
    this.#schedule(this.#timings.watchdogMs);
  }

  #schedule(ms: number): void {
    if (!this.#stopped) this.#cancelWatchdog = setLongTimeout(() => this.#tick(), ms);
  }

  /** One check of the accept watchdog: listen again if out, probe, act on what it found. */
  async #tick(): Promise<void> {
    if (this.#stopped) return;
    if (!this.#listening && !await this.#relisten()) return;
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
  async #relisten(): Promise<boolean> {
    try {
      await this.start();
      log.debug("Listening again on port {port}", { port: this.#port });
      return true;
    } catch (error) {
      // Still out of descriptors (a listening socket needs one too), or the port taken.
      this.#outage.relistenFailed(error);
      this.#schedule(this.#outage.nextAttemptMs());
      return false;
    }
  }

  /** An accept failure: the outage goes on, and the listener is replaced. */
  #failed(reason: string): void {
    this.#outage.failed(reason);
    // Replace the listener: the old one keeps its connections, accepts no more.
    for (const server of this.#servers) {
      stopListening(server);
      // node destroys a connection after its response when its server is not listening
      // (_http_server.js, resOnFinish); a replaced listener's connections are still served.
      Object.defineProperty(server, "listening", { get: () => !this.#stopped });
      this.#servers.delete(server);
    }
    this.#listening = false;
  }

  /**
   * Connects to the server: undefined when a connection was accepted in time (the probe or
   * any other), else why not.
   */
  #probeAccept(): Promise<AcceptProbe> {
    const before = this.#accepted;
    const hostname = this.#options.hostname;
    const host = hostname === "0.0.0.0" ? "127.0.0.1" : hostname === "::" ? "::1" : hostname;
    return new Promise((resolve) => {
      const socket = connect(this.#port, host);
      const done = (result: AcceptProbe) => {
        cancelTimer();
        socket.destroy();
        resolve(result);
      };
      const cancelTimer = setLongTimeout(
        () =>
          done(
            this.#accepted !== before ? undefined : {
              kind: "unaccepted",
              reason: "connections were not accepted",
            },
          ),
        this.#timings.watchdogMs,
      );
      socket.once(
        "error",
        (error: Error & { code?: string }) =>
          done({ kind: "unopened", reason: error.code ?? error.message }),
      );
      socket.once("connect", () => {
        const check = () => {
          if (this.#accepted !== before) done(undefined);
          else if (!socket.destroyed) setTimeout(check, 5);
        };
        check();
      });
    });
  }

  /** See {@link Http1Server.shutdown}. */
  shutdown(): Promise<void> {
    return this.#stopping ??= this.#stop();
  }

  async #stop(): Promise<void> {
    this.#stopped = true;
    this.#listening = false;
    this.#cancelWatchdog();
    for (const server of this.#servers) stopListening(server);
    this.#servers.clear();
    // Idle keep-alive connections go now; busy ones once their response is out.
    for (const socket of this.#sockets) {
      if (!(socket as HttpSocket)._httpMessage) socket.destroy();
    }
    if (this.#inFlight > 0) await new Promise<void>((resolve) => (this.#drained = resolve));
    for (const socket of this.#sockets) socket.end();
    await new Promise((resolve) => setTimeout(resolve, 0));
    for (const socket of this.#sockets) socket.destroy();
  }
}

/**
 * The adapter from a node request to the handler's Web `Request` (@hono/node-server), with
 * the handler's {@link Http1Info}.
 */
function requestAdapter(
  handler: Http1Handler,
  options: Http1Options,
  probeGapMs: number,
  badRequest: (
    status: BadRequestStatus,
    reason: string,
  ) => { headers: Record<string, string>; text: string },
): ReturnType<typeof getRequestListener> {
  return getRequestListener(
    (request: Request, env) => {
      // Only HTTP/1.1 here (createServer from node:http), so the bindings are node:http's.
      const { incoming, outgoing } = env as HttpBindings;
      return handler(request, {
        remoteAddr: remoteAddrOf(incoming),
        presence: watchPresence(incoming, outgoing, probeGapMs),
      });
    },
    {
      // The adapter hands a request it could not build (its URL) to errorHandler as a
      // RequestError: that is the client's fault, answered 400, not a 500.
      errorHandler: (error) => {
        if (error instanceof Error && error.name === "RequestError") {
          const answer = badRequest(400, error.message);
          return new Response(answer.text, {
            status: 400,
            headers: { ...answer.headers, connection: "close" },
          });
        }
        return options.onError?.(error) ?? new Response(null, { status: 500 });
      },
      // What an HTTP/1.0 request without Host is taken to name (HTTP/1.1 requires Host:
      // node answers 400 without it), so that a plain health check gets its answer.
      hostname: "localhost",
      // By default the adapter replaces the global Request and Response with its own, which
      // breaks every Deno.serve handler in the same process (duet serve runs ping beside).
      overrideGlobalObjects: false,
    },
  );
}

/**
 * The presence of one request's client: a FIN seen on a socket whose response is pending
 * makes it in doubt (or, for HTTP/1.0, a departure), and so does a closed socket (a queued
 * pipelined response may not have seen it yet); probes settle it.
 */
function watchPresence(
  incoming: IncomingMessage,
  outgoing: ServerResponse,
  probeGapMs: number,
): Presence {
  const socket = incoming.socket;
  const onEnd = () => {
    if (outgoing.writableFinished) return;
    // No 1xx can be sent to an HTTP/1.0 request: its FIN is a departure, unless an HTTP/1.1
    // request ahead of it on the connection can carry the probe (writeProbe decides).
    // Probe now, and again every REPROBE_MS while the answer is pending: a client that
    // resets later sends nothing a socket that has read its FIN would notice.
    const probe = async () => {
      if (await probeConnection(socket, probeGapMs) && !outgoing.writableFinished) {
        reprobe = setTimeout(probe, REPROBE_MS);
      }
    };
    void probe();
  };
  let reprobe: ReturnType<typeof setTimeout> | undefined;
  const unwatch = socket.readableEnded ? (onEnd(), () => {}) : onSocket(socket, "end", onEnd);
  outgoing.once("close", () => (unwatch(), clearTimeout(reprobe)));
  return {
    get inDoubt() {
      return !outgoing.writableFinished && (socket.destroyed || socket.readableEnded);
    },
    confirm() {
      if (outgoing.writableFinished) return Promise.resolve(true);
      if (socket.destroyed) return Promise.resolve(false);
      if (!socket.readableEnded) return Promise.resolve(true);
      return probeConnection(socket, probeGapMs);
    },
  };
}

/** The probe running on a connection, shared by every request on it (pipelined ones too). */
const probes = new WeakMap<Socket, Promise<boolean>>();

/**
 * Probes a half-closed connection (see the module documentation): true when the client can
 * still read, false when it has left (the connection is then destroyed). Settles within
 * 2 gaps + {@link PROBE_DEADLINE_MS}: a probe that cannot be written by then (the answer
 * ahead of it is not being read) counts as a departure.
 */
function probeConnection(socket: Socket, gapMs: number): Promise<boolean> {
  let probe = probes.get(socket);
  if (!probe) {
    probe = (async () => {
      // Long timers (setLongTimeout, delay): a gap given past 2^31 − 1 ms must not fire at once.
      // A connection that closes ends the probe at once: with a long gap, nothing may wait on.
      let cancelDeadline = () => {};
      let unwatchClose = () => {};
      const deadline = new Promise<false>((resolve) => {
        cancelDeadline = setLongTimeout(() => resolve(false), 2 * gapMs + PROBE_DEADLINE_MS);
        unwatchClose = onSocket(socket, "close", () => resolve(false));
      });
      const gapOver = new AbortController(); // no gap timer outlives the probe
      const probing = (async () =>
        await writeProbe(socket) &&
        await delay(gapMs, { signal: gapOver.signal }).then(() => true, () => false) &&
        await writeProbe(socket) && !socket.destroyed)();
      const present = await Promise.race([probing, deadline]);
      cancelDeadline();
      unwatchClose();
      gapOver.abort();
      // A reset seen by the second write: the client is gone; close so the signals abort.
      if (!present) socket.destroy();
      probes.delete(socket);
      return present;
    })();
    probes.set(socket, probe);
  }
  return probe;
}

/**
 * Writes one `100 Continue` on the connection, through the response that holds it (the
 * first one pending; a pipelined request's own response may be queued behind it), once
 * that response has not started its answer: true when written, false on a write error.
 */
function writeProbe(socket: Socket): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const attempt = () => {
      if (socket.destroyed) return resolve(false);
      const holder = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
      if (!holder || holder.writableFinished) {
        // Between two answers, or none pending: nothing can be written; look again soon.
        return void setTimeout(attempt, 5);
      }
      if (holder.headersSent) {
        // An answer is going out: a 1xx cannot be put in it. Its end is the next chance.
        const next = () => (holder.off("finish", next).off("close", next), attempt());
        return void holder.once("finish", next).once("close", next);
      }
      const request = (holder as ServerResponse & { req?: IncomingMessage }).req;
      if (request?.httpVersion === "1.0") {
        // No 1xx for HTTP/1.0: the connection cannot be probed, its FIN is a departure.
        return resolve(false);
      }
      holder.writeContinue(((error?: Error | null) => resolve(!error)) as () => void);
    };
    attempt();
  });
}

/** Callbacks waiting for each socket's end (FIN) and close, behind one listener each. */
const socketWatchers = {
  end: new WeakMap<Socket, Set<() => void>>(),
  close: new WeakMap<Socket, Set<() => void>>(),
};

/**
 * Calls `fn` once when the socket emits `event` (for "close", in a microtask if it is
 * destroyed already); returns the function that stops watching. One listener per socket and
 * event however many requests it carries, so pipelined requests do not pile up listeners.
 */
function onSocket(socket: Socket, event: "end" | "close", fn: () => void): () => void {
  if (event === "close" && socket.destroyed) {
    let live = true;
    queueMicrotask(() => live && fn());
    return () => (live = false);
  }
  const registry = socketWatchers[event];
  let watchers = registry.get(socket);
  if (!watchers) {
    const set = new Set<() => void>();
    watchers = set;
    registry.set(socket, set);
    socket.once(event, () => {
      for (const watcher of [...set]) watcher();
      set.clear();
    });
  }
  const set = watchers;
  set.add(fn);
  return () => void set.delete(fn);
}

/** node's listen error as the `Deno.errors` class callers of `Deno.serve` expect. */
function listenError(error: Error & { code?: string }): Error {
  const kinds: Record<string, new (message: string) => Error> = {
    EADDRINUSE: Deno.errors.AddrInUse,
    EACCES: Deno.errors.PermissionDenied,
    EADDRNOTAVAIL: Deno.errors.AddrNotAvailable,
    // node says EINVAL for an address that is not this machine's (Deno.serve: AddrNotAvailable).
    EINVAL: Deno.errors.AddrNotAvailable,
    // A host name that does not resolve (getaddrinfo).
    ENOTFOUND: Deno.errors.NotFound,
    EAI_AGAIN: Deno.errors.NotFound,
  };
  const Kind = error.code ? kinds[error.code] : undefined;
  return Kind ? new Kind(error.message) : error;
}

/**
 * Closes the listening socket only. `http.Server.close()` also closes the idle keep-alive
 * connections (Node 19 and later, and Deno), which a replaced listener must keep serving.
 */
function stopListening(server: Server): void {
  NetServer.prototype.close.call(server);
}

function remoteAddrOf(incoming: IncomingMessage): Deno.NetAddr {
  const socket = incoming.socket;
  return { transport: "tcp", hostname: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
}

/** The {@link DirectExchange} of one node request (a class: no closures per request). */
class NodeExchange implements DirectExchange {
  readonly method: string;
  readonly target: string;
  #controller: AbortController | undefined;
  #presence: Presence | undefined;
  #unread = false;
  constructor(
    readonly incoming: IncomingMessage,
    readonly outgoing: ServerResponse,
    readonly probeGapMs: number,
    readonly badRequest: (
      status: BadRequestStatus,
      reason: string,
    ) => { headers: Record<string, string>; text: string },
  ) {
    this.method = incoming.method ?? "GET";
    this.target = incoming.url ?? "/";
  }
  header(name: string): string | undefined {
    const value = this.incoming.headers[name];
    return Array.isArray(value) ? value[0] : value;
  }
  get remoteAddr(): Deno.NetAddr {
    return remoteAddrOf(this.incoming);
  }
  get presence(): Presence {
    return this.#presence ??= watchPresence(this.incoming, this.outgoing, this.probeGapMs);
  }
  get signal(): AbortSignal {
    if (!this.#controller) {
      const abort = new AbortController();
      this.#controller = abort;
      const outgoing = this.outgoing;
      if (outgoing.destroyed) abort.abort();
      else {
        outgoing.once("close", () => {
          if (!outgoing.writableFinished) abort.abort();
        });
      }
    }
    return this.#controller.signal;
  }
  async body(max: number): Promise<Uint8Array | "too_large"> {
    let body: Uint8Array | "too_large";
    try {
      body = await readBody(this.incoming, max);
    } catch (error) {
      if (error instanceof IncompleteRequest) {
        // The client can still read: tell it, and close.
        const answer = this.badRequest(400, "the request ended before its body was complete");
        writeWhole(this.outgoing, 400, { ...answer.headers, connection: "close" }, answer.text);
      }
      throw error;
    }
    this.#unread = body === "too_large";
    return body;
  }
  respond(status: number, headers: Record<string, string>, text: string): void {
    // A body left unread is not worth reading to keep the connection: close it.
    writeWhole(
      this.outgoing,
      status,
      this.#unread ? { ...headers, connection: "close" } : headers,
      text,
    );
  }
}

/** A whole answer as bytes on the wire, for a connection node gave up on (clientError). */
function rawAnswer(status: string, text: string, headers: Record<string, string> = {}): string {
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join("");
  return `HTTP/1.1 ${status}\r\n${lines}Connection: close\r\n` +
    `Content-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`;
}

/** Writes a whole answer with a body of `text` in UTF-8; nothing if the response is gone. */
function writeWhole(
  outgoing: ServerResponse,
  status: number,
  headers: Record<string, string>,
  text: string,
): void {
  if (outgoing.destroyed || outgoing.headersSent || outgoing.writableEnded) return;
  // The head is left to end(): with no head stored yet, Deno's node:http writes head and body
  // as one string, straight to the socket (no cork, no writev of buffered chunks), and it
  // adds Content-Length itself (the byte length of `text`), on that path or its fallback.
  outgoing.statusCode = status;
  for (const name in headers) outgoing.setHeader(name, headers[name]!);
  outgoing.end(text);
}

/**
 * The authority form of RFC 3986 a `Host` may hold: an IP literal in brackets or a
 * registered name (unreserved, sub-delims, percent escapes), and an optional port.
 */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::(\d{1,5}))?$/;

/** The last `Host` value found valid (clients send the same one again and again). */
let validHost: string | undefined;

/**
 * Why the request cannot be taken, or undefined. 400 for a repeated or invalid `Host` (RFC
 * 9112 section 3.2; node answers a missing one on HTTP/1.1 itself and keeps only the first
 * of several in `headers`); 501 for a transfer coding other than `chunked` alone, which
 * node would hand over still coded (RFC 9112 section 6.1: a server that does not know a
 * coding answers 501).
 */
function invalidRequest(
  incoming: IncomingMessage,
): { status: BadRequestStatus; reason: string } | undefined {
  const codings = incoming.headers["transfer-encoding"];
  if (codings !== undefined && codings.trim().toLowerCase() !== "chunked") {
    return { status: 501, reason: `transfer coding not implemented: ${codings}` };
  }
  const host = incoming.headers.host;
  if (host === undefined) {
    return incoming.httpVersion === "1.0"
      ? undefined
      : { status: 400, reason: "an HTTP/1.1 request needs a Host header" };
  }
  if (host !== validHost) {
    const match = HOST.exec(host);
    if (!match || (match[1] !== undefined && Number(match[1]) > 65_535)) {
      return { status: 400, reason: "invalid Host header" };
    }
    validHost = host;
  }
  const raw = incoming.rawHeaders;
  let hosts = 0;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === "host" && ++hosts > 1) {
      return { status: 400, reason: "more than one Host header" };
    }
  }
  return undefined;
}

/** A FIN came before the request's body was complete. */
class IncompleteRequest extends Error {
  override name = "IncompleteRequest";
}

/** See {@link DirectExchange.body}. */
async function readBody(incoming: IncomingMessage, max: number): Promise<Uint8Array | "too_large"> {
  // A body that came in the packet of the head is parsed right after the request event, in
  // the same task: one microtask later it is complete and buffered, and taken without the
  // listeners (and their removal) that reading a body still arriving needs.
  if (!incoming.complete) await undefined;
  if (incoming.complete && !incoming.readableEnded && incoming.readableLength <= max) {
    // Not flowing: read() hands over what is buffered. Deno's node:http gives it one chunk
    // per call (seen: a body that came in two reads of the socket lost its second), so it is
    // called until the buffer is empty.
    const chunks: Buffer[] = [];
    for (let chunk = incoming.read() as Buffer | null; chunk; chunk = incoming.read()) {
      chunks.push(chunk);
    }
    const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  return readStreamed(incoming, max);
}

/** Reads a body as it arrives (see {@link DirectExchange.body}). */
function readStreamed(incoming: IncomingMessage, max: number): Promise<Uint8Array | "too_large"> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const socket = incoming.socket;
    let unwatch = () => {};
    const settle = () => {
      incoming.off("data", onData).off("end", onEnd).off("error", onFail).off("close", onClose);
      unwatch();
    };
    const onData = (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size > max) {
        settle();
        incoming.pause();
        resolve("too_large");
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      settle();
      const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      resolve(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    };
    const onFail = (error: Error) => (settle(), reject(error));
    const onClose = () => onFail(new Error("the connection closed before the body was complete"));
    // A FIN before the body is complete: the request can never be completed (with half-open
    // connections allowed, node would wait for the rest).
    const onSocketEnd = () => {
      // The whole request may be parsed already, its end event still to come: that is a
      // half-close after a complete request, which keeps the party.
      if (!incoming.complete) onFail(new IncompleteRequest("the client closed its side mid-body"));
    };
    incoming.on("data", onData).on("end", onEnd).on("error", onFail).on("close", onClose);
    if (incoming.complete && incoming.readableEnded) onEnd();
    else if (socket.readableEnded) onSocketEnd();
    else if (incoming.destroyed && !incoming.complete) onClose();
    else unwatch = onSocket(socket, "end", onSocketEnd);
  });
}
