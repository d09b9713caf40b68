/**
 * The ping client's shell: it sends `ping SEQ PADDING` every interval over one long-lived
 * stream, a new stream per ping, or datagrams, and matches `pong SEQ ...` replies. What to
 * do is decided by two pure state machines: `client_core.ts` (pings, replies, timeouts,
 * heartbeats, outages, failover, backoff, the circuit breaker) and, below it,
 * `fallback.ts` (WebTransport, or the server's WebSocket `/ws` while its QUIC gets no
 * answer, with probes back). This module only opens and closes connections, arms timers,
 * reads the clock and feeds what happened back to them.
 *
 * @module
 */
import { abortable } from "@duet/core/abortable";
import { checkDuration } from "@duet/core/duration";
import {
  type CertificateHash,
  connectWebTransport,
  WebTransportRejectedError,
  type WebTransportSession,
} from "@duet/webtransport";
import { setLongTimeout } from "@duet/core/long-timeout";
import { encodeLine, LineSplitter, PING_PROTOCOL } from "./protocol.ts";
import { TrustError } from "./trust.ts";
import { type BackoffPolicy, RttStats, type RttSummary } from "./stats.ts";
import {
  type FallbackCommand,
  type FallbackEvent,
  INITIAL_FALLBACK_STATE,
  stepFallback,
  type Transport,
  webSocketUrls,
} from "./fallback.ts";
import {
  INITIAL_PING_STATE,
  type PingCoreCommand,
  type PingCoreConfig,
  type PingCoreEvent,
  type PingEvent,
  type PingTally,
  stepPing,
  tally,
} from "./client_core.ts";

export type { PingEvent } from "./client_core.ts";

/** How pings travel. */
export type PingMode = "stream" | "new-stream" | "datagram";

/** How the client trusts the server's certificate. */
export interface PingTrust {
  /** Pinned SHA-256 hashes of the certificate (as browsers' `serverCertificateHashes`). */
  serverCertificateHashes?: CertificateHash[];
  /** CA certificates (PEM) to verify the server's chain with, besides the system's. */
  caCerts?: string[];
}

/** Client settings (durations in milliseconds, any length: timers past 24.8 days are fine). */
export interface PingOptions {
  /**
   * The WebTransport URL, https://HOST:PORT/ping, or several (at least one): tried first
   * to last, the next one whenever the one in use fails, round and round.
   */
  url: URL | readonly URL[];
  /**
   * Trust, or how to get it for a server before each connection attempt to it (hashes
   * fetched anew); a rejection counts as that attempt failing.
   */
  trust: PingTrust | ((url: URL) => Promise<PingTrust>);
  /** Sent as `Authorization: Bearer`. */
  token?: string;
  /** Pings to send (a whole number); 0 sends until stopped. */
  count: number;
  /** Between pings; more than 0. */
  intervalMs: number;
  /** Bytes of padding after the sequence number (a whole number). */
  payloadBytes: number;
  /** How pings travel: one stream, a stream per ping, or datagrams. */
  mode: PingMode;
  /** A ping without a reply this long after it was sent is lost. */
  timeoutMs: number;
  /** A heartbeat goes out when nothing else was sent for this long; more than 0. */
  heartbeatMs: number;
  /** Nothing heard for this long while waiting for replies: the path is dead. */
  deadAfterMs: number;
  /** The reconnect backoff after a whole pass over the servers failed (full jitter). */
  backoff: BackoffPolicy;
  /** The circuit breaker: an outage longer than this ends the run (Infinity: never). */
  giveUpAfterMs: number;
  /**
   * Stops the run (Ctrl-C); the summary still comes back. Honoured whenever it fires,
   * already aborted when `runPing` is called included (then nothing is sent).
   */
  signal?: AbortSignal;
  /** The jitter's randomness, one draw per failed connection attempt (tests make it predictable). */
  random?: () => number;
  /**
   * Ping over the server's WebSocket `/ws` when its QUIC handshake gets no answer in time
   * (UDP blocked?) but the WebSocket opens; default true. False: WebTransport only.
   */
  fallback?: boolean;
  /**
   * While on the WebSocket, milliseconds between WebTransport probes (each probe is one
   * connection attempt, bounded like any other); default 5000.
   */
  probeIntervalMs?: number;
  /**
   * CA certificates (PEM) to verify a `wss:` fallback with, besides the system's; hashes
   * pinned for WebTransport cannot be checked on a WebSocket (Deno shows no certificate).
   */
  webSocketCaCerts?: string[];
}

/** Defaults for everything but the URL and trust. */
export const CLIENT_DEFAULTS = {
  count: 0,
  intervalMs: 1000,
  payloadBytes: 16,
  mode: "stream" as PingMode,
  timeoutMs: 2000,
  heartbeatMs: 500,
  deadAfterMs: 2000,
  backoff: { initialMs: 100, maxMs: 5000, jitter: "full" as const },
  giveUpAfterMs: 60_000,
  fallback: true,
  probeIntervalMs: 5000,
};

/** The account of a run: every ping sent is a reply, a timeout, lost or an error reply. */
export interface PingSummary extends PingTally {
  /** The first server given. */
  url: string;
  /** Every server given, in order (`url` first). */
  urls: string[];
  /** The servers that had a connection during the run, in the order first used. */
  servers: string[];
  /** How pings travelled. */
  mode: PingMode;
  /** Round trips of the replies; null with none. */
  rtt: RttSummary | null;
  /** From the start of the run to the end of its cleanup. */
  elapsedMs: number;
}

/** One connected session and the way pings travel on it. */
interface Link {
  /** What it runs on, and where it goes (the WebTransport or WebSocket URL). */
  transport: Transport;
  href: string;
  send(line: string): void;
  /** Resolves with a reason when the link fails or the session ends. */
  down: Promise<string>;
  /** Ends the session and its connection. */
  close(): Promise<void>;
}

/**
 * Runs pings until `count` are accounted for, the signal aborts, or the budget is spent,
 * failing over along `options.url` when it lists several servers, and over a server's
 * WebSocket `/ws` while its QUIC gets no answer (unless `options.fallback` is false);
 * `onEvent` hears every step (times in milliseconds).
 *
 * @returns The summary, also when stopped by the signal.
 * @throws TypeError when `options.url` is an empty list; RangeError naming the option
 *   when a count or duration is not a number in its range.
 */
export async function runPing(
  options: PingOptions,
  onEvent: (event: PingEvent) => void = () => {},
): Promise<PingSummary> {
  const targets: readonly URL[] = options.url instanceof URL ? [options.url] : options.url;
  if (!targets.length) throw new TypeError("runPing: no URL given");
  validatePingOptions(options);
  return await new PingRun(options, targets, onEvent).run();
}

/**
 * The longest ping line a datagram carries, in bytes of UTF-8. QUIC promises every path
 * UDP payloads of 1,200 bytes (RFC 9000, section 14); on them Deno's QUIC, with the
 * transport settings `openLink` gives `connectWebTransport`, takes datagrams of 1,162 bytes
 * (`Deno.QuicConn.maxDatagramSize` once the handshake is done, measured), and the HTTP
 * datagram's quarter stream id takes 1 of those (our client's session is stream 0, see
 * `encodeDatagram` in packages/webtransport/capsule.ts). Path MTU discovery raises the
 * limit later on some paths (1,414 on loopback, measured after 50 ms), but the first ping
 * goes out at once and other paths never get there: a larger datagram fails with
 * "datagram too large".
 */
export const DATAGRAM_LINE_BYTES = 1161;

/**
 * The most padding (`payloadBytes`) a datagram ping can carry, for a run of `count` pings
 * (0: endless, sequence numbers up to 2^53 - 1): {@link DATAGRAM_LINE_BYTES} less
 * `ping SEQ ` with the longest SEQ.
 */
export function largestDatagramPadding(count: number): number {
  const seq = String(count > 0 ? count : Number.MAX_SAFE_INTEGER);
  return DATAGRAM_LINE_BYTES - `ping ${seq} `.length;
}

/**
 * Checks the counts and durations of `options`, and that a datagram ping fits in a
 * datagram.
 *
 * @throws RangeError naming the first option out of its range; for a `payloadBytes` too
 *   large for `mode` "datagram", its `cause` is `{ option: "payloadBytes", largest }`, the
 *   most that fits ({@link largestDatagramPadding}).
 */
export function validatePingOptions(options: PingOptions): void {
  const whole = (name: string, value: number) => {
    if (!(Number.isSafeInteger(value) && value >= 0)) {
      throw new RangeError(`runPing: ${name} must be a whole number ≥ 0, got ${value}`);
    }
  };
  const positive = (name: string, value: number) =>
    checkDuration(`runPing: ${name}`, value, { zero: false, infinite: false });
  const duration = (name: string, value: number, infinite = false) =>
    checkDuration(`runPing: ${name}`, value, { infinite });
  whole("count", options.count);
  whole("payloadBytes", options.payloadBytes);
  positive("intervalMs", options.intervalMs);
  // These two become QUIC's keep-alive and idle timeout, which take whole milliseconds.
  const quic = { infinite: false, integer: true, max: Number.MAX_SAFE_INTEGER };
  checkDuration("runPing: heartbeatMs", options.heartbeatMs, { ...quic, zero: false });
  duration("timeoutMs", options.timeoutMs);
  checkDuration("runPing: deadAfterMs", options.deadAfterMs, quic);
  duration("giveUpAfterMs", options.giveUpAfterMs, true);
  duration("backoff.initialMs", options.backoff.initialMs);
  duration("backoff.maxMs", options.backoff.maxMs);
  if (options.probeIntervalMs !== undefined) duration("probeIntervalMs", options.probeIntervalMs);
  const largest = largestDatagramPadding(options.count);
  if (options.mode === "datagram" && options.payloadBytes > largest) {
    throw new RangeError(
      `runPing: payloadBytes ${options.payloadBytes} does not fit in a datagram: at most ` +
        `${largest} with count ${options.count} (${DATAGRAM_LINE_BYTES} bytes a line)`,
      { cause: { option: "payloadBytes", largest } },
    );
  }
}

/** Calls `fn` every `ms` milliseconds (any `ms`, no drift) until the returned function is called. */
function every(ms: number, fn: () => void): () => void {
  let due = performance.now() + ms;
  let cancel = () => {};
  const arm = () => {
    cancel = setLongTimeout(() => {
      const now = performance.now();
      due = Math.max(due + ms, now); // late (a busy loop): no catching up, as setInterval
      arm();
      fn();
    }, Math.max(0, due - performance.now()));
  };
  arm();
  return () => cancel();
}

/** One run: the shell around the two machines. */
class PingRun {
  readonly #options: PingOptions;
  readonly #targets: readonly URL[];
  readonly #onEvent: (event: PingEvent) => void;
  readonly #config: PingCoreConfig;
  readonly #random: () => number;
  readonly #stats = new RttStats();
  readonly #started = now();
  #state = INITIAL_PING_STATE;
  readonly #queue: PingCoreEvent[] = [];
  #draining = false;
  /** Aborted when the run stops: attempts under way give up, timers are cancelled. */
  readonly #stopped = new AbortController();
  readonly #timers = new Set<() => void>();
  /** The link in use, and the fallback machine's id of it. */
  #link: Link | undefined;
  #linkId = 0;
  readonly #fallback: FallbackShell;

  constructor(options: PingOptions, targets: readonly URL[], onEvent: (event: PingEvent) => void) {
    this.#options = options;
    this.#targets = targets;
    this.#onEvent = onEvent;
    this.#random = options.random ?? Math.random;
    this.#config = {
      targets: targets.map((url) => ({ href: url.href, host: url.host })),
      count: options.count,
      intervalMs: options.intervalMs,
      payloadBytes: options.payloadBytes,
      timeoutMs: options.timeoutMs,
      heartbeatMs: options.heartbeatMs,
      deadAfterMs: options.deadAfterMs,
      backoff: options.backoff,
      giveUpAfterMs: options.giveUpAfterMs,
      // Trust given as a value is the same on every attempt; a function fetches it anew.
      fixedTrust: typeof options.trust !== "function",
    };
    this.#fallback = new FallbackShell(options, this.#stopped.signal, {
      onLine: (line, transport) => this.#feed({ type: "reply", now: now(), line, transport }),
      install: (link, id) => this.#install(link, id),
      current: () => (this.#link ? { link: this.#link, id: this.#linkId } : undefined),
      feed: (event) => this.#feed(event),
      report: (event) => this.#onEvent(event),
      random: this.#random,
    });
  }

  async run(): Promise<PingSummary> {
    const { signal } = this.#options;
    const abort = () => this.#feed({ type: "abort", now: now() });
    // Honoured whenever it fires: already (nothing is sent), or at any later point.
    if (signal?.aborted) abort();
    else signal?.addEventListener("abort", abort, { once: true });
    const watchdogMs = Math.max(
      10,
      Math.min(this.#options.heartbeatMs, this.#options.deadAfterMs) / 4,
    );
    this.#timers.add(every(watchdogMs, () => this.#feed({ type: "watchdog", now: now() })));
    this.#feed({ type: "start", now: now() });
    await new Promise<void>((resolve) => {
      if (this.#stopped.signal.aborted) resolve();
      else this.#stopped.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    signal?.removeEventListener("abort", abort);
    return await this.#finish();
  }

  /** Feeds the core one event; events fed while commands run wait their turn (FIFO). */
  #feed(event: PingCoreEvent): void {
    this.#queue.push(event);
    if (this.#draining) return;
    this.#draining = true;
    try {
      for (let next; (next = this.#queue.shift());) {
        const step = stepPing(this.#state, next, this.#config);
        this.#state = step.state;
        for (const command of step.commands) this.#perform(command);
      }
    } finally {
      this.#draining = false;
    }
  }

  #perform(command: PingCoreCommand): void {
    switch (command.type) {
      case "connect":
        this.#fallback.connect(new URL(command.url));
        return;
      case "send":
        this.#link?.send(command.line);
        return;
      case "arm-timeout":
        this.#after(
          command.ms,
          () => this.#feed({ type: "timeout", now: now(), seq: command.seq }),
        );
        return;
      case "start-ticking":
        this.#timers.add(every(command.ms, () => this.#feed({ type: "tick", now: now() })));
        return;
      case "reconnect-after":
        this.#after(command.ms, () => this.#feed({ type: "retry", now: now() }));
        return;
      case "arm-deadline":
        this.#after(command.ms, () => this.#feed({ type: "deadline", now: now() }));
        return;
      case "drop-link":
        this.#link?.close();
        this.#link = undefined;
        this.#fallback.lost(command.linkId, command.reason);
        return;
      case "report":
        if (command.event.type === "reply") this.#stats.add(command.event.rttMs);
        this.#onEvent(command.event);
        return;
      case "stop":
        this.#fallback.stop();
        this.#stopped.abort();
        return;
    }
  }

  /** A one-shot timer, cancelled if the run stops first. */
  #after(ms: number, fn: () => void): void {
    const cancel = setLongTimeout(() => {
      this.#timers.delete(cancel);
      fn();
    }, ms);
    this.#timers.add(cancel);
  }

  /** Pings go over `link` from now on; its failure is reported as the loss of `id`. */
  #install(link: Link, id: number): void {
    this.#link = link;
    this.#linkId = id;
    // Only the link in use can fail the run: a retired one's end is no outage.
    link.down.then((reason) => {
      if (this.#link !== link) return;
      // A line the path can never carry: no reconnection would send it.
      if (/datagram too large/i.test(reason)) {
        this.#feed({ type: "too-large", now: now(), linkId: id, reason });
      } else {
        this.#fallback.lost(id, reason);
      }
    });
  }

  async #finish(): Promise<PingSummary> {
    for (const cancel of this.#timers) cancel();
    this.#timers.clear();
    const link = this.#link;
    this.#link = undefined;
    await link?.close();
    await this.#fallback.close();
    const end = now();
    const state = this.#state;
    return {
      url: this.#targets[0]!.href,
      urls: this.#targets.map((target) => target.href),
      servers: [...state.servers],
      mode: this.#options.mode,
      ...tally(state, end),
      rtt: this.#stats.summary(),
      elapsedMs: end - this.#started,
    };
  }
}

const now = () => performance.now();

/** What the fallback shell needs of the run. */
interface FallbackHooks {
  onLine(line: string, transport: Transport): void;
  /** Pings go over `link` (machine id `id`) from now on. */
  install(link: Link, id: number): void;
  /** The link in use and its id, if any. */
  current(): { link: Link; id: number } | undefined;
  /** Tells the core what became of a connection attempt or of the link in use. */
  feed(event: PingCoreEvent): void;
  report(event: PingEvent): void;
  random(): number;
}

/**
 * The fallback machine's shell: performs what `fallback.ts` decides (open a WebTransport
 * session or a WebSocket, use, retire or discard a link, arm the probe timer) and tells the
 * core how each connection attempt ended.
 */
class FallbackShell {
  readonly #options: PingOptions;
  readonly #stopped: AbortSignal;
  readonly #hooks: FallbackHooks;
  readonly #config: { enabled: boolean; probeIntervalMs: number };
  #machine = INITIAL_FALLBACK_STATE;
  /** Links that came up and wait for the machine's verdict (use or discard), by id. */
  readonly #arrived = new Map<number, Link>();
  /** Replaced links, open a little longer for the replies still in flight on them. */
  readonly #retiring = new Map<Link, () => void>();
  /** Connections being opened; awaited at the end, so nothing outlives the run. */
  readonly #opening = new Set<Promise<void>>();
  /** Links replaced by a probe's, by id, until the machine retires them. */
  readonly #replaced = new Map<number, Link>();
  /** The server of the last connection attempt: probes go there. */
  #server: URL | undefined;
  #cancelProbe = () => {};
  /** The connection attempt under way: its server and its WebTransport error. */
  #attempt: { target: URL; quicError?: unknown } | undefined;

  constructor(options: PingOptions, stopped: AbortSignal, hooks: FallbackHooks) {
    this.#options = options;
    this.#stopped = stopped;
    this.#hooks = hooks;
    this.#config = {
      enabled: options.fallback ?? CLIENT_DEFAULTS.fallback,
      probeIntervalMs: options.probeIntervalMs ?? CLIENT_DEFAULTS.probeIntervalMs,
    };
  }

  /** One connection attempt to `target`; its end comes to the core as an event. */
  connect(target: URL): void {
    this.#attempt = { target };
    this.#server = target;
    this.#dispatch({ type: "connect" });
  }

  /** Link `id` failed or was declared dead. */
  lost(id: number, reason: string): void {
    this.#dispatch({ type: "lost", id, reason });
  }

  stop(): void {
    this.#dispatch({ type: "stop" });
    this.#attempt = undefined;
  }

  /** Closes retiring links and waits for attempts still opening (they give up on stop). */
  async close(): Promise<void> {
    for (const [link, cancel] of this.#retiring) {
      cancel();
      await link.close();
    }
    this.#retiring.clear();
    for (const link of this.#replaced.values()) await link.close();
    this.#replaced.clear();
    while (this.#opening.size) await Promise.all(this.#opening);
  }

  #dispatch(event: FallbackEvent): void {
    const lostId = this.#machine.linkId;
    const step = stepFallback(this.#machine, event, this.#config);
    this.#machine = step.state;
    for (const command of step.commands) this.#perform(command, lostId);
  }

  #perform(command: FallbackCommand, lostId: number | null): void {
    switch (command.type) {
      case "try-quic":
        return this.#tryQuic(command.id, command.probe);
      case "try-ws":
        return this.#tryWebSocket(command.id);
      case "use":
        return this.#use(command);
      case "retire":
        return this.#retire(command.id);
      case "discard":
        this.#arrived.get(command.id)?.close();
        this.#arrived.delete(command.id);
        return;
      case "failed":
        return this.#failed(command.reason);
      case "outage":
        this.#hooks.feed({
          type: "connection-lost",
          now: now(),
          linkId: lostId ?? -1,
          reason: command.reason,
        });
        return;
      case "arm-probe":
        this.#cancelProbe();
        this.#cancelProbe = setLongTimeout(
          () => this.#dispatch({ type: "probe-due" }),
          command.ms,
        );
        return;
      case "disarm-probe":
        this.#cancelProbe();
        return;
    }
  }

  #track(promise: Promise<void>): void {
    this.#opening.add(promise);
    promise.finally(() => this.#opening.delete(promise));
  }

  #tryQuic(id: number, probe: boolean): void {
    const target = this.#attempt?.target ?? this.#server;
    if (!target) return;
    this.#track(
      openLink(this.#options, target, this.#hooks.onLine, this.#stopped).then(
        (fresh) => {
          this.#arrived.set(id, fresh);
          this.#dispatch({ type: "quic-up", id });
        },
        (error) => {
          if (!probe && this.#attempt) this.#attempt.quicError = error;
          const unreachable = error instanceof NoQuicAnswerError;
          this.#dispatch({
            type: unreachable ? "quic-unreachable" : "quic-failed",
            id,
            reason: unreachable
              ? `no QUIC answer in ${formatSeconds(error.ms)}`
              : describeError(error),
          });
        },
      ),
    );
  }

  #tryWebSocket(id: number): void {
    const target = this.#attempt?.target;
    if (!target) return;
    this.#track(
      openWebSocketLink(this.#options, target, this.#hooks.onLine, this.#stopped).then(
        (fresh) => {
          this.#arrived.set(id, fresh);
          this.#dispatch({ type: "ws-up", id });
        },
        (error) => this.#dispatch({ type: "ws-failed", id, reason: describeError(error) }),
      ),
    );
  }

  #use(command: Extract<FallbackCommand, { type: "use" }>): void {
    const fresh = this.#arrived.get(command.id)!;
    this.#arrived.delete(command.id);
    if (command.announce) {
      this.#hooks.report({
        type: "transport",
        transport: command.transport,
        url: fresh.href,
        reason: command.announce.reason,
      });
    }
    const previous = this.#hooks.current();
    if (command.kind === "probe" && previous) this.#replaced.set(previous.id, previous.link);
    this.#hooks.install(fresh, command.id);
    if (command.kind === "connect") {
      this.#attempt = undefined;
      this.#hooks.feed({ type: "connected", now: now(), linkId: command.id });
    } else {
      this.#hooks.feed({ type: "link-replaced", now: now(), linkId: command.id });
    }
  }

  /** The replaced link stays open for the replies in flight on it, then closes. */
  #retire(id: number): void {
    const link = this.#replaced.get(id);
    this.#replaced.delete(id);
    if (!link) return;
    const cancel = setLongTimeout(() => {
      this.#retiring.delete(link);
      link.close();
    }, this.#options.timeoutMs);
    this.#retiring.set(link, cancel);
  }

  #failed(reason: string): void {
    const error = this.#attempt?.quicError;
    this.#attempt = undefined;
    this.#hooks.feed({
      type: "connect-failed",
      now: now(),
      reason: error === undefined ? reason : describeError(error),
      ...(error instanceof WebTransportRejectedError ? { status: error.status } : {}),
      ...(error !== undefined && certificateRefused(error) ? { untrusted: true } : {}),
      // The trust document was reached and is not usable: retrying cannot cure that.
      ...(error instanceof TrustError && error.permanent ? { permanent: true } : {}),
      jitter: this.#hooks.random(),
    });
  }
}

/** Seconds for a message: "2 s", "1.5 s". */
function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/**
 * Whether a connection failed because the TLS handshake refused the server's certificate
 * (rustls' words through Deno: "invalid peer certificate: UnknownIssuer", "BadSignature",
 * "Expired", "NotValidForName"), not because the server was away.
 */
export function certificateRefused(error: unknown): boolean {
  return /invalid peer certificate/i.test(describeError(error));
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * A QUIC handshake got no answer within `ms` milliseconds: UDP blocked on the way, or
 * nothing listening on the server's UDP port. The message keeps its older wording.
 */
export class NoQuicAnswerError extends Error {
  /** How long the handshake waited, in milliseconds. */
  readonly ms: number;
  /**
   * The error for one handshake.
   *
   * @param ms How long the handshake waited, in milliseconds.
   */
  constructor(ms: number) {
    super(`connecting timed out after ${ms} ms`);
    this.name = "NoQuicAnswerError";
    this.ms = ms;
  }
}

/**
 * Connects over WebTransport and sets up the chosen way of sending pings.
 *
 * @throws NoQuicAnswerError when the session is not up within max(timeoutMs, deadAfterMs);
 *   WebTransportRejectedError when the server refuses it; whatever trust throws;
 *   `signal.reason` when the signal aborts first (a session that comes later is closed).
 */
async function openLink(
  options: PingOptions,
  url: URL,
  onLineFrom: (line: string, transport: Transport) => void,
  signal: AbortSignal,
): Promise<Link> {
  const onLine = (line: string) => onLineFrom(line, "webtransport");
  const trust = typeof options.trust === "function"
    ? await abortable(options.trust(url), signal)
    : options.trust;
  const connecting = connectWebTransport(url, {
    ...trust,
    protocols: [PING_PROTOCOL],
    ...(options.token ? { headers: [["authorization", `Bearer ${options.token}`]] } : {}),
    transport: {
      // QUIC's own liveness: keep-alives, and an idle timeout well above deadAfterMs.
      keepAliveInterval: options.heartbeatMs,
      maxIdleTimeout: Math.max(10_000, options.deadAfterMs * 3),
    },
  });
  const deadlineMs = Math.max(options.timeoutMs, options.deadAfterMs);
  const session = await withDeadline(
    connecting,
    deadlineMs,
    () => new NoQuicAnswerError(deadlineMs),
    signal,
  ).catch((error) => {
    // A session that arrives after we gave up on it is closed, not leaked.
    connecting.then((late) => late.close()).catch(() => {});
    throw error;
  });
  const down = Promise.withResolvers<string>();
  session.closed.then((info) =>
    down.resolve(
      info.reason || info.closeCode
        ? `session closed by the server (${info.closeCode}${info.reason ? `: ${info.reason}` : ""})`
        : "connection closed",
    )
  );
  session.draining.then(() => down.resolve("the server is going away"));
  const close = () => session.close({ closeCode: 0, reason: "" }).catch(() => {});
  const fail = (error: unknown) => down.resolve(describeError(error));
  const common = { transport: "webtransport" as const, href: url.href, down: down.promise, close };
  switch (options.mode) {
    case "stream":
      return { ...await streamLink(session, onLine, fail), ...common };
    case "new-stream":
      return { send: (line) => newStreamPing(session, line, onLine), ...common };
    case "datagram":
      return { ...datagramLink(session, onLine, fail), ...common };
  }
}

/**
 * Opens the server's WebSocket `/ws` (see {@link webSocketUrls}: `wss:`, then `ws:` on
 * loopback only), each try bounded by max(timeoutMs, deadAfterMs). Every ping is one text
 * message, answered as a datagram is, whatever `options.mode` says. The token goes in the
 * Authorization header, as on WebTransport.
 *
 * @throws Error naming each URL tried and why it did not open (HTTP 401 included);
 *   `signal.reason` when the signal aborts first.
 */
async function openWebSocketLink(
  options: PingOptions,
  target: URL,
  onLineFrom: (line: string, transport: Transport) => void,
  signal: AbortSignal,
): Promise<Link> {
  const deadlineMs = Math.max(options.timeoutMs, options.deadAfterMs);
  const tried: string[] = [];
  for (const url of webSocketUrls(target)) {
    const client = url.protocol === "wss:" && options.webSocketCaCerts?.length
      ? Deno.createHttpClient({ caCerts: options.webSocketCaCerts })
      : undefined;
    try {
      const socket = await openWebSocket(
        url,
        {
          ...(options.token ? { headers: { authorization: `Bearer ${options.token}` } } : {}),
          ...(client ? { client } : {}),
        },
        deadlineMs,
        signal,
      );
      const down = Promise.withResolvers<string>();
      socket.onmessage = (event: MessageEvent<unknown>) => {
        if (typeof event.data === "string") onLineFrom(event.data, "websocket");
      };
      socket.onclose = (event) => {
        client?.close();
        down.resolve(
          `WebSocket closed${
            event.code ? ` (${event.code}${event.reason ? `: ${event.reason}` : ""})` : ""
          }`,
        );
      };
      const closed = Promise.withResolvers<void>();
      socket.addEventListener("close", () => closed.resolve());
      return {
        transport: "websocket",
        href: url.href,
        send: (line) => {
          if (socket.readyState === WebSocket.OPEN) socket.send(line);
        },
        down: down.promise,
        close: async () => {
          if (socket.readyState === WebSocket.CLOSED) return;
          socket.close(1000);
          // Bounded: a peer that never answers the close frame does not hold the run.
          await withDeadline(closed.promise, 1000, () => new Error("close")).catch(() => {});
        },
      };
    } catch (error) {
      client?.close();
      if (signal.aborted) throw signal.reason;
      tried.push(`${url.href}: ${describeError(error)}`);
    }
  }
  throw new Error(`no WebSocket (${tried.join("; ")})`);
}

/**
 * Resolves with the socket once open; rejects with why it did not, after `ms`, or when
 * `signal` aborts.
 */
function openWebSocket(
  url: URL,
  init: WebSocketOptions,
  ms: number,
  signal: AbortSignal,
): Promise<WebSocket> {
  const socket = new WebSocket(url, init);
  const opened = new Promise<WebSocket>((resolve, reject) => {
    socket.onopen = () => resolve(socket);
    socket.onerror = (event) =>
      reject(new Error((event as ErrorEvent).message || "the WebSocket failed"));
    socket.onclose = (event) => reject(new Error(`closed (${event.code})`));
  });
  return withDeadline(opened, ms, () => new Error(`no answer in ${ms} ms`), signal).catch(
    (error) => {
      // A socket that opens after we gave up on it is closed, not leaked.
      try {
        socket.close();
      } catch { /* never opened */ }
      throw error;
    },
  );
}

async function streamLink(
  session: WebTransportSession,
  onLine: (line: string) => void,
  fail: (error: unknown) => void,
): Promise<Pick<Link, "send">> {
  const stream = await session.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  readLines(stream.readable, onLine).then(() => fail("the server ended the stream"), fail);
  return { send: (line) => void writer.write(encodeLine(line)).catch(fail) };
}

function newStreamPing(
  session: WebTransportSession,
  line: string,
  onLine: (line: string) => void,
): void {
  (async () => {
    const stream = await session.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    writer.write(encodeLine(line)).catch(() => {});
    writer.close().catch(() => {});
    await readLines(stream.readable, onLine);
  })().catch(() => {}); // a failed stream shows up as that ping's timeout
}

function datagramLink(
  session: WebTransportSession,
  onLine: (line: string) => void,
  fail: (error: unknown) => void,
): Pick<Link, "send"> {
  const writer = session.datagrams.writable.getWriter();
  (async () => {
    const decoder = new TextDecoder();
    for await (const datagram of session.datagrams.readable) onLine(decoder.decode(datagram));
  })().catch(fail);
  const encoder = new TextEncoder();
  return { send: (line) => void writer.write(encoder.encode(line)).catch(fail) };
}

async function readLines(
  readable: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  const splitter = new LineSplitter();
  for await (const chunk of readable) {
    for (const event of splitter.push(chunk)) {
      if (event.kind !== "line") throw new Error("the server sent a malformed line");
      onLine(event.line);
    }
  }
}

/**
 * `promise`, or a rejection with `error()` after `ms` milliseconds (any `ms`, past
 * `setTimeout`'s 24.8 days included), or with `signal.reason` when it aborts (already
 * aborted: at once), whichever comes first.
 */
function withDeadline<T>(
  promise: Promise<T>,
  ms: number,
  error: () => Error,
  signal?: AbortSignal,
): Promise<T> {
  let cancel = () => {};
  return Promise.race([
    abortable(promise, signal),
    new Promise<T>((_, reject) => cancel = setLongTimeout(() => reject(error()), ms)),
  ]).finally(() => cancel());
}
