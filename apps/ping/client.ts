/**
 * The ping client: sends `ping SEQ PADDING` every interval over one long-lived stream, a
 * new stream per ping, or datagrams, and matches `pong SEQ ...` replies. It survives the
 * server going away: heartbeats notice a dead path within `deadAfterMs` (well before
 * QUIC's idle timeout), it reconnects with capped exponential backoff and full jitter,
 * keeps counting every ping (those due while down are lost), and gives up when an
 * outage outlasts its budget.
 *
 * Given several servers it fails over: when the one in use fails (a connection attempt
 * fails or the connection is lost) it moves straight to the next in the list, and the
 * backoff comes only after a whole pass over the list has failed; it keeps cycling until
 * the outage budget is spent.
 *
 * When UDP is blocked (a QUIC handshake gets no answer in time) while the server's TCP
 * side answers, it pings over the server's WebSocket `/ws` instead, says so once, probes
 * WebTransport in the background every `probeIntervalMs`, and moves back when a probe
 * connects. The decisions are `fallback.ts`'s pure state machine; this module only opens,
 * closes and times things.
 *
 * @module
 */
import {
  type CertificateHash,
  connectWebTransport,
  WebTransportRejectedError,
  type WebTransportSession,
} from "@duet/webtransport";
import { encodeLine, LineSplitter, PING_PROTOCOL } from "./protocol.ts";
import {
  backoffDelay,
  type BackoffPolicy,
  type Outage,
  OutageBudget,
  RttStats,
  type RttSummary,
} from "./stats.ts";
import {
  type FallbackCommand,
  type FallbackEvent,
  INITIAL_FALLBACK_STATE,
  stepFallback,
  type Transport,
  webSocketUrls,
} from "./fallback.ts";

/** How pings travel. */
export type PingMode = "stream" | "new-stream" | "datagram";

/** How the client trusts the server's certificate. */
export interface PingTrust {
  serverCertificateHashes?: CertificateHash[];
  caCerts?: string[];
}

/** Client settings. */
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
  /** Pings to send; 0 sends until stopped. */
  count: number;
  intervalMs: number;
  /** Bytes of padding after the sequence number. */
  payloadBytes: number;
  mode: PingMode;
  /** A ping without a reply this long after it was sent is lost. */
  timeoutMs: number;
  /** A heartbeat goes out when nothing else was sent for this long. */
  heartbeatMs: number;
  /** Nothing heard for this long while waiting for replies: the path is dead. */
  deadAfterMs: number;
  backoff: BackoffPolicy;
  /** The circuit breaker: an outage longer than this ends the run. */
  giveUpAfterMs: number;
  /** Stops the run (Ctrl-C); the summary still comes back. */
  signal?: AbortSignal;
  /** The jitter's randomness (tests make it predictable). */
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
  backoff: { baseMs: 100, maxMs: 5000 },
  giveUpAfterMs: 60_000,
  fallback: true,
  probeIntervalMs: 5000,
};

/** What happens during a run, in order. */
export type PingEvent =
  /**
   * A connection is up. `first`: the run's first (after failed attempts, if
   * `afterOutageMs` is there); otherwise a reconnection.
   */
  | { type: "connected"; url: string; attempt: number; first: boolean; afterOutageMs?: number }
  /** Moving to another server (only with several): `url` the next, `from` the one left. */
  | { type: "switching"; url: string; from: string; reason: string }
  /** `transport`: what carried it (the WebSocket only while WebTransport is unreachable). */
  | { type: "reply"; seq: number; rttMs: number; bytes: number; transport: Transport }
  /**
   * Pings move to another transport: to the WebSocket at `url` because WebTransport got no
   * QUIC answer (`reason`), or back to WebTransport at `url`. Said once per change.
   */
  | { type: "transport"; transport: Transport; url: string; reason: string }
  | { type: "timeout"; seq: number }
  | { type: "lost"; seq: number; reason: string }
  | { type: "error-reply"; seq: number; text: string }
  | { type: "outage"; reason: string }
  | { type: "reconnecting"; attempt: number; delayMs: number; error?: string }
  | { type: "gave-up"; outageMs: number }
  | { type: "refused"; status: number; reason: string };

/** The account of a run: every ping sent is a reply, a timeout, lost or an error reply. */
export interface PingSummary {
  /** The first server given. */
  url: string;
  /** Every server given, in order (`url` first). */
  urls: string[];
  /** The servers that had a connection during the run, in the order first used. */
  servers: string[];
  mode: PingMode;
  transmitted: number;
  received: number;
  /** Of `received`, the replies that came over the WebSocket fallback. */
  receivedOverWebSocket: number;
  timeouts: number;
  /** Due while there was no connection. */
  lostNoConnection: number;
  errors: number;
  lossPercent: number;
  rtt: RttSummary | null;
  outages: Outage[];
  outageMs: number;
  gaveUp: boolean;
  /** The HTTP status of a refusal that ended the run (a wrong token, say). */
  refusedStatus?: number;
  elapsedMs: number;
}

/** Refusals that retrying cannot cure. */
const FINAL_STATUSES: Record<number, string> = {
  400: "the server did not understand the request",
  401: "missing or wrong token (--token)",
  403: "origin not allowed",
  404: "no ping service at this path",
};

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
 * @throws TypeError when `options.url` is an empty list.
 */
export async function runPing(
  options: PingOptions,
  onEvent: (event: PingEvent) => void = () => {},
): Promise<PingSummary> {
  const random = options.random ?? Math.random;
  const stats = new RttStats();
  const budget = new OutageBudget(options.giveUpAfterMs);
  const pending = new Map<number, { sentAt: number; timer: ReturnType<typeof setTimeout> }>();
  const padding = "x".repeat(options.payloadBytes);
  let transmitted = 0, timeouts = 0, lostNoConnection = 0, errors = 0, overWebSocket = 0;
  /** The servers a connection was made to, in the order first used. */
  const servers: string[] = [];
  let link: Link | undefined;
  /** The fallback machine's id of `link`. */
  let linkId = 0;
  let lastHeard = 0, lastSent = 0, heartbeats = 0;
  let gaveUp = false;
  let refusedStatus: number | undefined;
  const targets: readonly URL[] = options.url instanceof URL ? [options.url] : options.url;
  if (!targets.length) throw new TypeError("runPing: no URL given");
  /** The server in use, or being tried. */
  let index = 0;
  const started = performance.now();
  const finished = Promise.withResolvers<void>();
  const stop = () => finished.resolve();
  options.signal?.addEventListener("abort", stop, { once: true });

  const onLine = (line: string, transport: Transport) => {
    lastHeard = performance.now();
    const [word, key] = line.split(" ", 3);
    if (key?.startsWith("hb")) return; // a heartbeat's answer: the path is alive
    const seq = Number(key);
    const entry = pending.get(seq);
    if (!entry) return; // late (already timed out) or not ours
    clearTimeout(entry.timer);
    pending.delete(seq);
    if (word === "pong") {
      const rttMs = lastHeard - entry.sentAt;
      stats.add(rttMs);
      if (transport === "websocket") overWebSocket++;
      onEvent({
        type: "reply",
        seq,
        rttMs,
        bytes: new TextEncoder().encode(line).length,
        transport,
      });
    } else {
      errors++;
      onEvent({ type: "error-reply", seq, text: line });
    }
    settleIfDone();
  };

  const settleIfDone = () => {
    if (options.count && transmitted >= options.count && pending.size === 0) stop();
  };

  const tick = () => {
    if (options.count && transmitted >= options.count) return;
    const seq = ++transmitted;
    if (!link) {
      lostNoConnection++;
      onEvent({ type: "lost", seq, reason: "no connection" });
      settleIfDone();
      return;
    }
    const sentAt = performance.now();
    const timer = setTimeout(() => {
      if (!pending.delete(seq)) return;
      timeouts++;
      onEvent({ type: "timeout", seq });
      settleIfDone();
    }, options.timeoutMs);
    pending.set(seq, { sentAt, timer });
    lastSent = sentAt;
    link.send(`ping ${seq}${padding ? ` ${padding}` : ""}`);
  };

  // The watchdog: heartbeats while idle, and the dead-path verdict.
  const watchdog = setInterval(() => {
    if (!link) return;
    const now = performance.now();
    if (now - lastSent >= options.heartbeatMs) {
      lastSent = now;
      link.send(`ping hb${++heartbeats}`);
    }
    if (now - lastHeard > options.deadAfterMs) {
      link.close();
      lose(`no answer for ${Math.round(now - lastHeard)} ms`);
    }
  }, Math.max(10, Math.min(options.heartbeatMs, options.deadAfterMs) / 4));

  // ---- The fallback shell: performs what fallback.ts decides, reports what happened ----
  const fallbackConfig = {
    enabled: options.fallback ?? CLIENT_DEFAULTS.fallback,
    probeIntervalMs: options.probeIntervalMs ?? CLIENT_DEFAULTS.probeIntervalMs,
  };
  let machine = INITIAL_FALLBACK_STATE;
  /** Links that came up and wait for the machine's verdict (use or discard), by id. */
  const arrived = new Map<number, Link>();
  /** Replaced links, open a little longer for the replies still in flight on them. */
  const retiring = new Set<{ link: Link; timer: ReturnType<typeof setTimeout> }>();
  /** Connections being opened; awaited at the end, so nothing outlives the run. */
  const opening = new Set<Promise<void>>();
  let probeTimer: ReturnType<typeof setTimeout> | undefined;
  /** The connection attempt under way: its WebTransport error, and how it ends. */
  let attempt:
    | { target: URL; quicError?: unknown; done: PromiseWithResolvers<[Link, number]> }
    | undefined;

  const dispatch = (event: FallbackEvent) => {
    const step = stepFallback(machine, event, fallbackConfig);
    machine = step.state;
    for (const command of step.commands) perform(command);
  };

  const track = (promise: Promise<void>) => {
    opening.add(promise);
    promise.finally(() => opening.delete(promise));
  };

  const perform = (command: FallbackCommand) => {
    switch (command.type) {
      case "try-quic": {
        const { id } = command;
        const target = attempt?.target ?? targets[index]!;
        track(
          openLink(options, target, onLine).then(
            (fresh) => {
              arrived.set(id, fresh);
              dispatch({ type: "quic-up", id });
            },
            (error) => {
              if (!command.probe && attempt) attempt.quicError = error;
              const reason = error instanceof NoQuicAnswerError
                ? `no QUIC answer in ${formatSeconds(error.ms)}`
                : describeError(error);
              dispatch({
                type: error instanceof NoQuicAnswerError ? "quic-unreachable" : "quic-failed",
                id,
                reason,
              });
            },
          ),
        );
        return;
      }
      case "try-ws": {
        const { id } = command;
        const target = attempt?.target ?? targets[index]!;
        track(
          openWebSocketLink(options, target, onLine).then(
            (fresh) => {
              arrived.set(id, fresh);
              dispatch({ type: "ws-up", id });
            },
            (error) => dispatch({ type: "ws-failed", id, reason: describeError(error) }),
          ),
        );
        return;
      }
      case "use": {
        const fresh = arrived.get(command.id)!;
        arrived.delete(command.id);
        if (command.announce) {
          onEvent({
            type: "transport",
            transport: command.transport,
            url: fresh.href,
            reason: command.announce.reason,
          });
        }
        if (command.kind === "connect") {
          attempt?.done.resolve([fresh, command.id]);
          attempt = undefined;
        } else {
          install(fresh, command.id);
        }
        return;
      }
      case "retire":
      case "discard": {
        const old = command.type === "discard"
          ? arrived.get(command.id)
          : link && linkId === command.id
          ? link
          : undefined;
        arrived.delete(command.id);
        if (!old) return;
        if (command.type === "discard") {
          old.close();
          return;
        }
        const entry = {
          link: old,
          timer: setTimeout(() => {
            retiring.delete(entry);
            old.close();
          }, options.timeoutMs),
        };
        retiring.add(entry);
        return;
      }
      case "failed":
        attempt?.done.reject(attempt.quicError ?? new Error(command.reason));
        attempt = undefined;
        return;
      case "outage":
        beginOutage(command.reason);
        return;
      case "arm-probe":
        clearTimeout(probeTimer);
        probeTimer = setTimeout(() => dispatch({ type: "probe-due" }), command.ms);
        return;
      case "disarm-probe":
        clearTimeout(probeTimer);
        probeTimer = undefined;
        return;
    }
  };

  /** Sends pings over `fresh` from now on; its failure is an outage. */
  const install = (fresh: Link, id: number) => {
    link = fresh;
    linkId = id;
    lastHeard = lastSent = performance.now();
    // Only the link in use can fail the run: a retired one's end is no outage.
    fresh.down.then((reason) => link === fresh && lose(reason));
  };

  /**
   * One connection attempt to `target`: WebTransport, or the WebSocket when QUIC gets no
   * answer (fallback). Rejects with the WebTransport error when it fails.
   */
  const connectOnce = (target: URL): Promise<[Link, number]> => {
    const done = Promise.withResolvers<[Link, number]>();
    attempt = { target, done };
    dispatch({ type: "connect" });
    return done.promise;
  };

  let connecting: Promise<void> | undefined;
  /** The link in use failed or went silent. */
  const lose = (reason: string) => {
    if (!link || finishedFlag) return; // our own close at the end is no outage
    dispatch({ type: "lost", id: linkId, reason });
  };
  const beginOutage = (reason: string) => {
    if (!link || finishedFlag) return;
    link = undefined;
    budget.begin(reason, performance.now());
    onEvent({ type: "outage", reason });
    // Pings in flight on the dead link will never be answered: they time out as usual.
    connecting ??= reconnect(reason).finally(() => (connecting = undefined));
  };

  /** Moves to the next server in the list, saying so once (nothing with one server). */
  const switchTarget = (reason: string) => {
    const from = targets[index]!;
    index = (index + 1) % targets.length;
    const to = targets[index]!;
    if (to.href !== from.href) {
      onEvent({ type: "switching", url: to.href, from: from.href, reason });
    }
  };

  /**
   * Connects to the server at `index`, failing over along the list: straight to the next
   * server after each failure, the backoff only after a whole pass (as many failures in a
   * row as there are servers). `lostReason`: the server in use was lost, so start with
   * the next one.
   */
  const reconnect = async (lostReason?: string): Promise<void> => {
    if (lostReason !== undefined) switchTarget(`${targets[index]!.host} lost (${lostReason})`);
    let refusals: { status: number; reason: string }[] = [];
    for (let attempt = 0, pass = 0; !finishedFlag; attempt++) {
      const now = performance.now();
      if (budget.current && budget.exhausted(now)) {
        gaveUp = true;
        onEvent({ type: "gave-up", outageMs: now - budget.current.startedAt });
        stop();
        return;
      }
      const target = targets[index]!;
      try {
        const [fresh, id] = await connectOnce(target);
        if (finishedFlag) return fresh.close();
        install(fresh, id);
        const afterOutageMs = budget.end(performance.now());
        const first = !servers.length;
        if (!servers.includes(target.href)) servers.push(target.href);
        onEvent({
          type: "connected",
          url: target.href,
          attempt,
          first,
          ...(afterOutageMs === undefined ? {} : { afterOutageMs }),
        });
        return;
      } catch (error) {
        if (finishedFlag) return;
        const reason = describeError(error);
        if (error instanceof WebTransportRejectedError && FINAL_STATUSES[error.status]) {
          refusals.push({ status: error.status, reason: FINAL_STATUSES[error.status]! });
          if (refusals.length === targets.length) {
            // Every server of this pass refused in a way retrying cannot cure: the run
            // ends at once.
            const last = refusals.at(-1)!;
            refusedStatus = last.status;
            onEvent({ type: "refused", ...last });
            stop();
            return;
          }
        }
        if (!budget.current) budget.begin(reason, performance.now());
        if ((attempt + 1) % targets.length !== 0) {
          // More servers to try in this pass: the next one at once.
          switchTarget(`${target.host} failed (${reason})`);
          continue;
        }
        // A whole pass failed: back off, then go round again.
        const delayMs = backoffDelay(options.backoff, pass++, random);
        onEvent({ type: "reconnecting", attempt: pass, delayMs, error: reason });
        refusals = [];
        await sleep(delayMs, finished.promise);
        if (finishedFlag) return;
        // No switch to announce when the next turn of the loop gives up instead.
        if (!budget.exhausted(performance.now())) {
          switchTarget(`all ${targets.length} servers failed; going round again`);
        }
      }
    }
  };

  let finishedFlag = false;
  finished.promise.then(() => {
    finishedFlag = true;
    dispatch({ type: "stop" });
    // A connection attempt still under way ends as failed; what it opens is discarded.
    attempt?.done.reject(new Error("stopped"));
    attempt = undefined;
  });
  // The first connection counts as an outage from the start if it fails.
  connecting = reconnect().finally(() => (connecting = undefined));
  await Promise.race([connecting, finished.promise]);
  let interval: ReturnType<typeof setInterval> | undefined;
  if (!finishedFlag) {
    tick();
    interval = setInterval(tick, options.intervalMs);
  }
  await finished.promise;
  clearInterval(interval);
  clearInterval(watchdog);
  clearTimeout(probeTimer);
  options.signal?.removeEventListener("abort", stop);
  // Pings still in flight when stopped count as lost by timeout.
  for (const { timer } of pending.values()) clearTimeout(timer);
  timeouts += pending.size;
  pending.clear();
  await link?.close();
  for (const entry of retiring) {
    clearTimeout(entry.timer);
    await entry.link.close();
  }
  await connecting;
  // Attempts still opening end within their deadlines; what they open is discarded.
  while (opening.size) await Promise.all(opening);
  const end = performance.now();
  budget.end(end);
  const received = stats.count;
  return {
    url: targets[0]!.href,
    urls: targets.map((target) => target.href),
    servers,
    mode: options.mode,
    transmitted,
    received,
    receivedOverWebSocket: overWebSocket,
    timeouts,
    lostNoConnection,
    errors,
    lossPercent: transmitted ? (100 * (transmitted - received)) / transmitted : 0,
    rtt: stats.summary(),
    outages: budget.outages,
    outageMs: budget.totalMs(end),
    gaveUp,
    ...(refusedStatus === undefined ? {} : { refusedStatus }),
    elapsedMs: end - started,
  };
}

/** Seconds for a message: "2 s", "1.5 s". */
function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function sleep(ms: number, interrupt: Promise<void>): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
    interrupt,
  ]).finally(() => clearTimeout(timer));
}

/**
 * A QUIC handshake got no answer within `ms` milliseconds: UDP blocked on the way, or
 * nothing listening on the server's UDP port. The message keeps its older wording.
 */
export class NoQuicAnswerError extends Error {
  /** How long the handshake waited, in milliseconds. */
  readonly ms: number;
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
 *   WebTransportRejectedError when the server refuses it; whatever trust throws.
 */
async function openLink(
  options: PingOptions,
  url: URL,
  onLineFrom: (line: string, transport: Transport) => void,
): Promise<Link> {
  const onLine = (line: string) => onLineFrom(line, "webtransport");
  const trust = typeof options.trust === "function" ? await options.trust(url) : options.trust;
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
 * @throws Error naming each URL tried and why it did not open (HTTP 401 included).
 */
async function openWebSocketLink(
  options: PingOptions,
  target: URL,
  onLineFrom: (line: string, transport: Transport) => void,
): Promise<Link> {
  const deadlineMs = Math.max(options.timeoutMs, options.deadAfterMs);
  const tried: string[] = [];
  for (const url of webSocketUrls(target)) {
    const client = url.protocol === "wss:" && options.webSocketCaCerts?.length
      ? Deno.createHttpClient({ caCerts: options.webSocketCaCerts })
      : undefined;
    try {
      const socket = await openWebSocket(url, {
        ...(options.token ? { headers: { authorization: `Bearer ${options.token}` } } : {}),
        ...(client ? { client } : {}),
      }, deadlineMs);
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
      tried.push(`${url.href}: ${describeError(error)}`);
    }
  }
  throw new Error(`no WebSocket (${tried.join("; ")})`);
}

/** Resolves with the socket once open; rejects with why it did not, or after `ms`. */
function openWebSocket(url: URL, init: WebSocketOptions, ms: number): Promise<WebSocket> {
  const socket = new WebSocket(url, init);
  const opened = new Promise<WebSocket>((resolve, reject) => {
    socket.onopen = () => resolve(socket);
    socket.onerror = (event) =>
      reject(new Error((event as ErrorEvent).message || "the WebSocket failed"));
    socket.onclose = (event) => reject(new Error(`closed (${event.code})`));
  });
  return withDeadline(opened, ms, () => new Error(`no answer in ${ms} ms`)).catch((error) => {
    // A socket that opens after we gave up on it is closed, not leaked.
    try {
      socket.close();
    } catch { /* never opened */ }
    throw error;
  });
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

/** `promise`, or a rejection with `error()` after `ms` milliseconds, whichever comes first. */
function withDeadline<T>(promise: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => timer = setTimeout(() => reject(error()), ms)),
  ]).finally(() => clearTimeout(timer));
}
