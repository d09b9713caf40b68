/**
 * The ping client's decisions, as a pure state machine: `(state, event) => { state,
 * commands }`. No sockets, timers, clocks or randomness: time and the backoff's jitter
 * come in events, and what to do (send a line, arm a timer, connect, report, stop) goes
 * out as commands. The shell (`runPing` in `client.ts`) performs the commands and feeds
 * back what happened; `fallback.ts` decides, below it, which transport a connection uses.
 *
 * The rules. The run connects to the first server; a failed attempt moves straight to the
 * next server, and only after a whole pass over the list has failed does it back off
 * ({@link backoffDelay}, full jitter) and go round again, until an outage outlasts
 * `giveUpAfterMs` (the circuit breaker) or every server of a pass refused in a way retrying
 * cannot cure (401, a certificate that is not the one pinned, a trust document that is not
 * usable). Pings start with the first connection, one per tick; a ping due while there is
 * no connection is lost at once. Every ping sent is accounted for exactly once: a reply,
 * an error reply, a timeout, lost (for want of a connection, or in flight on a connection
 * found lost: reported when the loss is found, not when its timer fires later), or, when
 * the run stops with it still in flight, counted as timed out in the summary. Heartbeats
 * go out when nothing else was sent for `heartbeatMs`; nothing heard for `deadAfterMs`
 * declares the path dead and the run reconnects. A line the path can never carry (a
 * datagram too large) ends the run at once. After `stop`, nothing more: every event is
 * ignored and no command comes out.
 *
 * Outages. One begins when the connection was lost: for a path found dead, the last time
 * anything was heard on it; for a connection reported lost, then; for a run whose first
 * attempt failed, when that attempt began. It ends at the next connection. The breaker
 * opens when it has lasted `giveUpAfterMs` (a `deadline` timer armed for that moment ends
 * an attempt still under way), or at once when the loss is found later than that. A
 * backoff that would end past the deadline is not announced: the run waits for the
 * deadline instead, so every attempt announced is made. A failure is said once per
 * outage: a `reconnecting` event with the same reason as one before it in the same
 * outage carries `repeated`.
 *
 * @module
 */
import { backoffDelay, type BackoffPolicy, type Outage } from "./stats.ts";
import type { Transport } from "./fallback.ts";
import { parseReply, pingLine } from "./protocol.ts";
import { certificateProblem } from "@duet/core/tls-failure";

/** What happens during a run, in order (what `runPing`'s `onEvent` hears). */
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
  /**
   * Ping `seq` is lost: not sent for want of a connection, or (`inFlight`) sent on a
   * connection found lost before its reply came.
   */
  | { type: "lost"; seq: number; reason: string; inFlight?: true }
  | { type: "error-reply"; seq: number; text: string }
  | { type: "outage"; reason: string }
  /**
   * A whole pass failed: the next in `delayMs` (always made, see the module's doc).
   * `repeated`: `error` was said already in this outage.
   */
  | { type: "reconnecting"; attempt: number; delayMs: number; error?: string; repeated?: true }
  /** The outage lasted `giveUpAfterMs` (`outageMs`, from its start): the run ends. */
  | { type: "gave-up"; outageMs: number }
  | { type: "refused"; status: number; reason: string }
  /**
   * No server can be trusted, in a way retrying cannot cure, so the run ends: the
   * handshake refused the certificate and the trust is the user's own (`fixedTrust`), or
   * (`document`) the server's trust document was reached but is not usable (`reason` then
   * says what to do). `detail`: the runtime's own words for a refused certificate, for
   * debug logs.
   */
  | { type: "untrusted"; reason: string; detail?: string; document?: true }
  /**
   * A ping of `bytes` bytes is more than the path can carry (a datagram too large): no
   * retry could send it, so the run ends.
   */
  | { type: "too-large"; bytes: number; reason: string };

/** The machine's settings (durations in milliseconds). */
export interface PingCoreConfig {
  /** The servers, in order: `href` for events, `host` for messages. At least one. */
  targets: readonly { href: string; host: string }[];
  /** Pings to send; 0 sends until stopped. */
  count: number;
  intervalMs: number;
  /** Bytes of padding after the sequence number. */
  payloadBytes: number;
  timeoutMs: number;
  heartbeatMs: number;
  deadAfterMs: number;
  backoff: BackoffPolicy;
  giveUpAfterMs: number;
  /**
   * The trust does not change between attempts (pinned hashes, a CA given by the user): a
   * certificate the handshake refuses is refused for good. False when the hashes are
   * fetched from the server again before each attempt (a rotated certificate heals).
   */
  fixedTrust?: boolean;
}

/** Where the run is; a plain value, never mutated. */
export interface PingCoreState {
  /**
   * idle: not started; connecting: a connection attempt is under way; backoff: waiting
   * before the next pass; up: a link is in use; stopped: the run is over.
   */
  readonly phase: "idle" | "connecting" | "backoff" | "up" | "stopped";
  /** The id of the link in use (phase up), else null. */
  readonly linkId: number | null;
  /** Whether pings have started (with the first connection). */
  readonly ticking: boolean;
  readonly transmitted: number;
  readonly received: number;
  /** Of `received`, replies over the WebSocket fallback. */
  readonly receivedOverWebSocket: number;
  /** Timed out, including those still in flight when the run stopped. */
  readonly timeouts: number;
  readonly lostNoConnection: number;
  readonly errors: number;
  /** Pings in flight: sequence number to the time sent. */
  readonly pending: ReadonlyMap<number, number>;
  readonly lastHeard: number;
  readonly lastSent: number;
  readonly heartbeats: number;
  /** The server in use or being tried, an index into `targets`. */
  readonly index: number;
  /** Connection attempts since the last connection (or loss), 0-based. */
  readonly attempt: number;
  /** Backoffs since the last connection (or loss). */
  readonly pass: number;
  /** Final refusals (401, ..., or `null`: the certificate untrusted) in the current pass. */
  readonly refusals: readonly {
    status: number | null;
    reason: string;
    detail?: string;
    document?: true;
  }[];
  /** The servers that had a connection, in the order first used. */
  readonly servers: readonly string[];
  /** Every outage; the last has no `durationMs` while under way. */
  readonly outages: readonly Outage[];
  readonly gaveUp: boolean;
  readonly refusedStatus: number | null;
  /** The run ended because no server's certificate could be trusted (see `fixedTrust`). */
  readonly untrusted: boolean;
  /** The run ended because a ping was more than the path can carry. */
  readonly tooLarge: boolean;
  /** The failure last said in the outage under way (see `repeated`), else null. */
  readonly said: string | null;
  /** When the run started and, once stopped, when it stopped. */
  readonly startedAt: number;
  readonly stoppedAt: number | null;
}

/** What the shell reports; `now` is the monotonic clock in milliseconds. */
export type PingCoreEvent =
  /** The run begins: connect to the first server. */
  | { type: "start"; now: number }
  /** The connection attempt succeeded: link `linkId` is up. */
  | { type: "connected"; now: number; linkId: number }
  /**
   * The connection attempt failed: `reason` for people, `status` the HTTP status of a
   * refusal, `untrusted` when the handshake refused the server's certificate, `permanent`
   * when the server's trust document was reached but cannot be used (retrying that server
   * cannot cure it; `reason` says what to do), `jitter` uniform in [0, 1) for the backoff
   * should this end a pass.
   */
  | {
    type: "connect-failed";
    now: number;
    reason: string;
    status?: number;
    untrusted?: boolean;
    permanent?: boolean;
    jitter: number;
  }
  /** The timer of an `arm-deadline` command fired. */
  | { type: "deadline"; now: number }
  /** Link `linkId` cannot carry a ping this large (a datagram too large): the run ends. */
  | { type: "too-large"; now: number; linkId: number; reason: string }
  /** The delay of a `reconnect-after` command is over. */
  | { type: "retry"; now: number }
  /** Pings move to link `linkId` (the fallback's probe connected); not an outage. */
  | { type: "link-replaced"; now: number; linkId: number }
  /** Link `linkId` failed or the server ended it. */
  | { type: "connection-lost"; now: number; linkId: number; reason: string }
  /** A line from the server, on any link (replies to pings and to heartbeats). */
  | { type: "reply"; now: number; line: string; transport: Transport }
  /** The timer armed for ping `seq` fired. */
  | { type: "timeout"; now: number; seq: number }
  /** The next ping is due. */
  | { type: "tick"; now: number }
  /** The watchdog's turn: heartbeat if idle, and the dead-path verdict. */
  | { type: "watchdog"; now: number }
  /** The user stops the run (the signal aborted). */
  | { type: "abort"; now: number };

/** What the shell must do, in the order given. */
export type PingCoreCommand =
  /** Open a connection to `url` (the fallback machine picks the transport). */
  | { type: "connect"; url: string }
  /** Send `line` on the link in use. */
  | { type: "send"; line: string }
  /** Feed `timeout` for `seq` after `ms`. */
  | { type: "arm-timeout"; seq: number; ms: number }
  /** Feed `tick` every `ms` from now on (once per run). */
  | { type: "start-ticking"; ms: number }
  /** Feed `retry` after `ms`. */
  | { type: "reconnect-after"; ms: number }
  /** Feed `deadline` after `ms`: when the outage under way reaches `giveUpAfterMs`. */
  | { type: "arm-deadline"; ms: number }
  /** Close link `linkId`, declared dead (`reason`); the machine has moved on already. */
  | { type: "drop-link"; linkId: number; reason: string }
  /** Tell the user. */
  | { type: "report"; event: PingEvent }
  /** The run is over: release everything and summarise. */
  | { type: "stop" };

/** One step's result. */
export interface PingCoreStep {
  /** The state after the event. */
  state: PingCoreState;
  /** What the shell must do, in order. */
  commands: PingCoreCommand[];
}

/** Refusals that retrying cannot cure, by HTTP status. */
export const FINAL_STATUSES: Readonly<Record<number, string>> = {
  400: "the server did not understand the request",
  401: "missing or wrong token (--token)",
  403: "origin not allowed",
  404: "no ping service at this path (a duet ping server's is /ping: https://HOST:PORT/ping)",
};

/** The state before `start`. */
export const INITIAL_PING_STATE: PingCoreState = {
  phase: "idle",
  linkId: null,
  ticking: false,
  transmitted: 0,
  received: 0,
  receivedOverWebSocket: 0,
  timeouts: 0,
  lostNoConnection: 0,
  errors: 0,
  pending: new Map(),
  lastHeard: 0,
  lastSent: 0,
  heartbeats: 0,
  index: 0,
  attempt: 0,
  pass: 0,
  refusals: [],
  servers: [],
  outages: [],
  gaveUp: false,
  refusedStatus: null,
  untrusted: false,
  tooLarge: false,
  said: null,
  startedAt: 0,
  stoppedAt: null,
};

/** A step under construction: the state so far and the commands so far. */
interface Draft {
  state: PingCoreState;
  commands: PingCoreCommand[];
  config: PingCoreConfig;
}

const patch = (draft: Draft, change: Partial<PingCoreState>): void => {
  draft.state = { ...draft.state, ...change };
};
const report = (draft: Draft, event: PingEvent): void => {
  draft.commands.push({ type: "report", event });
};

/**
 * The transition function: what to do when `event` happens in `state`. Pure and total:
 * events that do not fit (a reply to a ping already timed out, a loss of a link no longer
 * in use, anything after the stop) are ignored, never thrown on.
 */
export function stepPing(
  state: PingCoreState,
  event: PingCoreEvent,
  config: PingCoreConfig,
): PingCoreStep {
  const draft: Draft = { state, commands: [], config };
  if (state.phase === "stopped") return draft;
  switch (event.type) {
    case "start":
      if (state.phase !== "idle") break;
      patch(draft, { startedAt: event.now });
      armDeadline(draft, config.giveUpAfterMs);
      nextAttempt(draft, event.now);
      break;
    case "connected":
      onConnected(draft, event.now, event.linkId);
      break;
    case "connect-failed":
      if (state.phase === "connecting") onConnectFailed(draft, event);
      break;
    case "retry":
      if (state.phase !== "backoff") break;
      if (exhausted(draft.state, config, event.now)) {
        giveUp(draft, event.now); // a late timer: the budget is spent, no attempt is due
        break;
      }
      switchTarget(draft, `all ${config.targets.length} servers failed; going round again`);
      patch(draft, { attempt: draft.state.attempt + 1 });
      nextAttempt(draft, event.now);
      break;
    case "deadline":
      if (state.phase === "up") break;
      if (exhausted(state, config, event.now)) giveUp(draft, event.now);
      else if (outageStart(state) !== undefined) {
        // Timers may fire a fraction of a millisecond early (they count whole milliseconds;
        // the clock does not): wait out the rest, or nothing would ever end the outage.
        armDeadline(draft, outageStart(state)! + config.giveUpAfterMs - event.now);
      }
      break;
    case "link-replaced":
      if (state.phase !== "up") break;
      patch(draft, { linkId: event.linkId, lastHeard: event.now, lastSent: event.now });
      break;
    case "connection-lost":
      if (state.phase !== "up" || event.linkId !== state.linkId) break;
      beginOutage(draft, event.now, event.reason, event.now);
      break;
    case "too-large":
      if (state.phase !== "up" || event.linkId !== state.linkId) break;
      onTooLarge(draft, event.now, event.reason);
      break;
    case "reply":
      onReply(draft, event);
      break;
    case "timeout":
      if (!state.pending.has(event.seq)) break; // answered already
      patch(draft, { pending: without(state.pending, event.seq), timeouts: state.timeouts + 1 });
      report(draft, { type: "timeout", seq: event.seq });
      settleIfDone(draft, event.now);
      break;
    case "tick":
      if (state.ticking) tick(draft, event.now);
      break;
    case "watchdog":
      if (state.phase === "up") watchdog(draft, event.now);
      break;
    case "abort":
      stop(draft, event.now);
      break;
  }
  return { state: draft.state, commands: draft.commands };
}

/** Arms the breaker's timer for `ms` from now (none when the budget is endless). */
function armDeadline(draft: Draft, ms: number): void {
  if (Number.isFinite(ms)) draft.commands.push({ type: "arm-deadline", ms: Math.max(0, ms) });
}

/** Tries the server at `index`, unless the outage has used up the budget. */
function nextAttempt(draft: Draft, now: number): void {
  if (exhausted(draft.state, draft.config, now)) {
    giveUp(draft, now);
    return;
  }
  patch(draft, { phase: "connecting" });
  draft.commands.push({ type: "connect", url: draft.config.targets[draft.state.index]!.href });
}

/** The breaker opens: the outage (recorded now if the first attempt is still under way) ends the run. */
function giveUp(draft: Draft, now: number): void {
  const startedAt = outageStart(draft.state) ?? now;
  if (!currentOutage(draft.state)) {
    const reason = "no connection yet";
    patch(draft, { outages: [...draft.state.outages, { reason, startedAt }] });
  }
  patch(draft, { gaveUp: true });
  report(draft, { type: "gave-up", outageMs: now - startedAt });
  stop(draft, now);
}

function onConnected(draft: Draft, now: number, linkId: number): void {
  const { state, config } = draft;
  if (state.phase !== "connecting") return;
  const href = config.targets[state.index]!.href;
  const outage = currentOutage(state);
  patch(draft, {
    phase: "up",
    linkId,
    lastHeard: now,
    lastSent: now,
    said: null,
    servers: state.servers.includes(href) ? state.servers : [...state.servers, href],
    ...(outage ? { outages: endOutage(state.outages, now) } : {}),
  });
  report(draft, {
    type: "connected",
    url: href,
    attempt: state.attempt,
    first: state.servers.length === 0,
    ...(outage ? { afterOutageMs: now - outage.startedAt } : {}),
  });
  if (!state.ticking) {
    // Pings start with the first connection: one now, then one per interval.
    patch(draft, { ticking: true });
    draft.commands.push({ type: "start-ticking", ms: config.intervalMs });
    tick(draft, now);
  }
}

/** What ends the run at once in a failed attempt, or undefined when retrying may cure it. */
function finalRefusal(
  event: Extract<PingCoreEvent, { type: "connect-failed" }>,
  config: PingCoreConfig,
): { status: number | null; reason: string; detail?: string; document?: true } | undefined {
  if (event.status !== undefined) {
    const reason = FINAL_STATUSES[event.status];
    return reason === undefined ? undefined : { status: event.status, reason };
  }
  if (event.permanent) return { status: null, reason: event.reason, document: true };
  if (event.untrusted && config.fixedTrust) {
    return {
      status: null,
      reason: `the server's certificate is not one you trust: ${certificateProblem(event.reason)}`,
      detail: event.reason,
    };
  }
  return undefined;
}

function onConnectFailed(
  draft: Draft,
  event: Extract<PingCoreEvent, { type: "connect-failed" }>,
): void {
  const { config } = draft;
  const refusal = finalRefusal(event, config);
  if (refusal !== undefined) {
    const refusals = [...draft.state.refusals, refusal];
    patch(draft, { refusals });
    if (refusals.length === config.targets.length) {
      endRefused(draft, event.now, refusals);
      return;
    }
  }
  if (!currentOutage(draft.state)) {
    // The first connection failed: the outage began with the run's first attempt.
    const startedAt = outageStart(draft.state) ?? event.now;
    patch(draft, { outages: [...draft.state.outages, { reason: event.reason, startedAt }] });
  }
  const { attempt, pass, index } = draft.state;
  if ((attempt + 1) % config.targets.length !== 0) {
    // More servers to try in this pass: the next one at once (no switch announced when
    // the budget is spent instead).
    if (exhausted(draft.state, config, event.now)) {
      giveUp(draft, event.now);
      return;
    }
    switchTarget(draft, `${config.targets[index]!.host} failed (${event.reason})`);
    patch(draft, { attempt: attempt + 1 });
    nextAttempt(draft, event.now);
    return;
  }
  // A whole pass failed: back off, then go round again. A backoff ending at or past the
  // give-up deadline is not announced: the deadline's timer ends the run then.
  const left = outageStart(draft.state)! + config.giveUpAfterMs - event.now;
  if (left <= 0) {
    giveUp(draft, event.now);
    return;
  }
  const delayMs = backoffDelay(config.backoff, pass, () => event.jitter);
  patch(draft, { phase: "backoff", pass: pass + 1, refusals: [] });
  if (delayMs >= left) return;
  const repeated = draft.state.said === event.reason;
  patch(draft, { said: event.reason });
  report(draft, {
    type: "reconnecting",
    attempt: pass + 1,
    delayMs,
    error: event.reason,
    ...(repeated ? { repeated: true as const } : {}),
  });
  draft.commands.push({ type: "reconnect-after", ms: delayMs });
}

/** Every server of the pass refused for good: say so once and end the run. */
function endRefused(
  draft: Draft,
  now: number,
  refusals: readonly { status: number | null; reason: string; detail?: string; document?: true }[],
): void {
  const last = refusals.at(-1)!;
  if (last.status === null) {
    const { targets } = draft.config;
    // One line naming each server when they differ in what is wrong.
    const reasons = new Set(refusals.map((r) => r.reason));
    const reason = reasons.size === 1
      ? last.reason
      : refusals.map((r, i) => `${targets[i]!.host}: ${r.reason}`).join("; ");
    patch(draft, { untrusted: true });
    report(draft, {
      type: "untrusted",
      reason,
      ...(last.detail === undefined ? {} : { detail: last.detail }),
      ...(last.document ? { document: true } : {}),
    });
  } else {
    patch(draft, { refusedStatus: last.status });
    report(draft, { type: "refused", status: last.status, reason: last.reason });
  }
  stop(draft, now);
}

/**
 * The link in use is gone (found at `now`, lost since `lostAt`): an outage begins, the
 * pings in flight on it are lost at once, and the next server is tried at once.
 */
function beginOutage(draft: Draft, now: number, reason: string, lostAt: number): void {
  const { state, config } = draft;
  const inFlight = [...state.pending.keys()].sort((a, b) => a - b);
  patch(draft, {
    phase: "connecting",
    linkId: null,
    outages: currentOutage(state)
      ? state.outages
      : [...state.outages, { reason, startedAt: lostAt }],
    pending: new Map(),
    lostNoConnection: state.lostNoConnection + inFlight.length,
    attempt: 0,
    pass: 0,
    refusals: [],
    said: null,
  });
  report(draft, { type: "outage", reason });
  for (const seq of inFlight) {
    report(draft, { type: "lost", seq, reason: "connection lost", inFlight: true });
  }
  if (settleIfDone(draft, now)) return;
  armDeadline(draft, lostAt + config.giveUpAfterMs - now);
  switchTarget(draft, `${config.targets[state.index]!.host} lost (${reason})`);
  nextAttempt(draft, now);
}

/** A ping the link can never carry: no retry would send it, so the run ends. */
function onTooLarge(draft: Draft, now: number, reason: string): void {
  const { state, config } = draft;
  const line = pingLine(String(Math.max(1, state.transmitted)), config.payloadBytes);
  patch(draft, { tooLarge: true });
  report(draft, { type: "too-large", bytes: new TextEncoder().encode(line).length, reason });
  stop(draft, now);
}

/** Moves to the next server in the list, saying so (nothing with one server). */
function switchTarget(draft: Draft, reason: string): void {
  const { targets } = draft.config;
  const from = targets[draft.state.index]!;
  const index = (draft.state.index + 1) % targets.length;
  const to = targets[index]!;
  patch(draft, { index });
  if (to.href !== from.href) {
    report(draft, { type: "switching", url: to.href, from: from.href, reason });
  }
}

function onReply(draft: Draft, event: Extract<PingCoreEvent, { type: "reply" }>): void {
  patch(draft, { lastHeard: event.now });
  const { word, key } = parseReply(event.line);
  if (key?.startsWith("hb")) return; // a heartbeat's answer: the path is alive
  const seq = Number(key);
  const sentAt = draft.state.pending.get(seq);
  if (sentAt === undefined) return; // late (already timed out), duplicated, or not ours
  const { state } = draft;
  patch(draft, { pending: without(state.pending, seq) });
  if (word === "pong") {
    const websocket = event.transport === "websocket";
    patch(draft, {
      received: state.received + 1,
      receivedOverWebSocket: state.receivedOverWebSocket + (websocket ? 1 : 0),
    });
    report(draft, {
      type: "reply",
      seq,
      rttMs: event.now - sentAt,
      bytes: new TextEncoder().encode(event.line).length,
      transport: event.transport,
    });
  } else {
    patch(draft, { errors: state.errors + 1 });
    report(draft, { type: "error-reply", seq, text: event.line });
  }
  settleIfDone(draft, event.now);
}

function tick(draft: Draft, now: number): void {
  const { state, config } = draft;
  if (config.count && state.transmitted >= config.count) return;
  const seq = state.transmitted + 1;
  patch(draft, { transmitted: seq });
  if (state.phase !== "up") {
    patch(draft, { lostNoConnection: state.lostNoConnection + 1 });
    report(draft, { type: "lost", seq, reason: "no connection" });
    settleIfDone(draft, now);
    return;
  }
  patch(draft, { pending: new Map(state.pending).set(seq, now), lastSent: now });
  draft.commands.push({ type: "arm-timeout", seq, ms: config.timeoutMs });
  draft.commands.push({ type: "send", line: pingLine(String(seq), config.payloadBytes) });
}

function watchdog(draft: Draft, now: number): void {
  const { state, config } = draft;
  if (now - state.lastSent >= config.heartbeatMs) {
    const heartbeats = state.heartbeats + 1;
    patch(draft, { lastSent: now, heartbeats });
    draft.commands.push({ type: "send", line: `ping hb${heartbeats}` });
  }
  if (now - state.lastHeard > config.deadAfterMs) {
    const reason = `no answer for ${Math.round(now - state.lastHeard)} ms`;
    draft.commands.push({ type: "drop-link", linkId: state.linkId!, reason });
    // The path died after the last thing heard on it: the outage began then.
    beginOutage(draft, now, reason, state.lastHeard);
  }
}

/** Stops the run once `count` pings are all accounted for; whether it did. */
function settleIfDone(draft: Draft, now: number): boolean {
  const { state, config } = draft;
  if (config.count && state.transmitted >= config.count && state.pending.size === 0) {
    stop(draft, now);
    return true;
  }
  return false;
}

/** The end: pings still in flight count as timed out (no event: the run is over). */
function stop(draft: Draft, now: number): void {
  const { state } = draft;
  patch(draft, {
    phase: "stopped",
    linkId: null,
    timeouts: state.timeouts + state.pending.size,
    pending: new Map(),
    stoppedAt: now,
  });
  draft.commands.push({ type: "stop" });
}

function currentOutage(state: PingCoreState): Outage | undefined {
  const last = state.outages.at(-1);
  return last && last.durationMs === undefined ? last : undefined;
}

function endOutage(outages: readonly Outage[], now: number): Outage[] {
  return outages.map((o) =>
    o.durationMs === undefined ? { ...o, durationMs: now - o.startedAt } : o
  );
}

/**
 * When the outage under way began: the one recorded, or, while the run has never been
 * connected, its start (the first attempt began then); undefined when connected.
 */
function outageStart(state: PingCoreState): number | undefined {
  const outage = currentOutage(state);
  if (outage) return outage.startedAt;
  const waiting = state.phase === "connecting" || state.phase === "backoff";
  return waiting && state.servers.length === 0 ? state.startedAt : undefined;
}

/** Whether the outage under way has lasted `giveUpAfterMs` at `now`. */
function exhausted(state: PingCoreState, config: PingCoreConfig, now: number): boolean {
  const startedAt = outageStart(state);
  return startedAt !== undefined && now - startedAt >= config.giveUpAfterMs;
}

function without<K, V>(map: ReadonlyMap<K, V>, key: K): Map<K, V> {
  const copy = new Map(map);
  copy.delete(key);
  return copy;
}

/** The counts and outages of a run's summary (the shell adds the rest). */
export interface PingTally {
  /** Pings sent (or due: those lost for want of a connection count). */
  transmitted: number;
  /** `pong` replies. */
  received: number;
  /** Of `received`, the replies that came over the WebSocket fallback. */
  receivedOverWebSocket: number;
  /** Without a reply in time, including those in flight when the run stopped. */
  timeouts: number;
  /** Due while there was no connection. */
  lostNoConnection: number;
  /** `error` replies. */
  errors: number;
  /** 100 × (transmitted − received) / transmitted; 0 when nothing was sent. */
  lossPercent: number;
  /** Every outage, in order; one under way at the end ends there. */
  outages: Outage[];
  /** Time spent in outages. */
  outageMs: number;
  /** The outage budget (`giveUpAfterMs`) ran out. */
  gaveUp: boolean;
  /** The HTTP status of a refusal that ended the run (a wrong token, say). */
  refusedStatus?: number;
  /**
   * Present when the run ended because no server could be trusted in a way no retry
   * changes (see the `untrusted` event).
   */
  untrusted?: true;
  /** Present when the run ended because a ping was more than the path can carry. */
  tooLarge?: true;
}

/**
 * The account of a run: every ping sent is a reply, a timeout, lost or an error reply. An
 * outage still under way ends when the run stopped, or at `end` for a run not stopped.
 */
export function tally(state: PingCoreState, end: number): PingTally {
  const outages = endOutage(state.outages, state.stoppedAt ?? end);
  const { transmitted, received } = state;
  return {
    transmitted,
    received,
    receivedOverWebSocket: state.receivedOverWebSocket,
    timeouts: state.timeouts,
    lostNoConnection: state.lostNoConnection,
    errors: state.errors,
    lossPercent: transmitted ? (100 * (transmitted - received)) / transmitted : 0,
    outages,
    outageMs: outages.reduce((sum, o) => sum + o.durationMs!, 0),
    gaveUp: state.gaveUp,
    ...(state.refusedStatus === null ? {} : { refusedStatus: state.refusedStatus }),
    ...(state.untrusted ? { untrusted: true as const } : {}),
    ...(state.tooLarge ? { tooLarge: true as const } : {}),
  };
}
