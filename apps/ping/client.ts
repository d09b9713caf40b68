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
};

/** What happens during a run, in order. */
export type PingEvent =
  | { type: "connected"; url: string; attempt: number; afterOutageMs?: number }
  /** Moving to another server (only with several): `url` the next, `from` the one left. */
  | { type: "switching"; url: string; from: string; reason: string }
  | { type: "reply"; seq: number; rttMs: number; bytes: number }
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
  mode: PingMode;
  transmitted: number;
  received: number;
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
  send(line: string): void;
  /** Resolves with a reason when the link fails or the session ends. */
  down: Promise<string>;
  /** Ends the session and its connection. */
  close(): Promise<void>;
}

/**
 * Runs pings until `count` are accounted for, the signal aborts, or the budget is spent,
 * failing over along `options.url` when it lists several servers; `onEvent` hears every
 * step (times in milliseconds).
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
  let transmitted = 0, timeouts = 0, lostNoConnection = 0, errors = 0;
  let link: Link | undefined;
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

  const onLine = (line: string) => {
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
      onEvent({ type: "reply", seq, rttMs, bytes: new TextEncoder().encode(line).length });
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

  let connecting: Promise<void> | undefined;
  const lose = (reason: string) => {
    if (!link || finishedFlag) return; // our own close at the end is no outage
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
        const fresh = await openLink(options, target, onLine);
        if (finishedFlag) return fresh.close();
        link = fresh;
        lastHeard = lastSent = performance.now();
        const afterOutageMs = budget.end(performance.now());
        onEvent({
          type: "connected",
          url: target.href,
          attempt,
          ...(afterOutageMs === undefined ? {} : { afterOutageMs }),
        });
        fresh.down.then((reason) => link === fresh && lose(reason));
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
  finished.promise.then(() => (finishedFlag = true));
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
  options.signal?.removeEventListener("abort", stop);
  // Pings still in flight when stopped count as lost by timeout.
  for (const { timer } of pending.values()) clearTimeout(timer);
  timeouts += pending.size;
  pending.clear();
  await link?.close();
  await connecting;
  const end = performance.now();
  budget.end(end);
  const received = stats.count;
  return {
    url: targets[0]!.href,
    urls: targets.map((target) => target.href),
    mode: options.mode,
    transmitted,
    received,
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

/** Connects and sets up the chosen way of sending pings. */
async function openLink(
  options: PingOptions,
  url: URL,
  onLine: (line: string) => void,
): Promise<Link> {
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
  const session = await withDeadline(connecting, deadlineMs, "connecting").catch((error) => {
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
  switch (options.mode) {
    case "stream":
      return { ...await streamLink(session, onLine, fail), down: down.promise, close };
    case "new-stream":
      return { send: (line) => newStreamPing(session, line, onLine), down: down.promise, close };
    case "datagram":
      return { ...datagramLink(session, onLine, fail), down: down.promise, close };
  }
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

function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<T>((_, reject) =>
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
    ),
  ]).finally(() => clearTimeout(timer));
}
