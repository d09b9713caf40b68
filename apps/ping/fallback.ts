/**
 * Falling back from WebTransport to the server's WebSocket when UDP is blocked: the
 * decisions alone, as a pure state machine with no sockets and no timers, and where the
 * WebSocket is. The client (`client.ts`) is a thin shell around it: it performs the
 * commands {@link stepFallback} returns (open a connection, arm the probe timer, ...) and
 * feeds back what happened as events.
 *
 * The rules. A connection attempt tries WebTransport first. When the QUIC handshake gets
 * no answer in time (UDP blocked, or the server's UDP side gone) and fallback is enabled,
 * the same server's WebSocket `/ws` (TCP) is tried; if it opens, pings go over it and the
 * user is told once, with why. Any other WebTransport failure (a refusal, a certificate
 * that does not match, a trust fetch that failed) is no reason to fall back: the attempt
 * fails as before. While on the WebSocket a probe timer is always armed or a QUIC probe is
 * in flight; when a probe connects, pings move back to WebTransport (the user is told
 * once) and the WebSocket is retired. Every connection that comes up is either used or
 * discarded, exactly once.
 *
 * @module
 */
import { isLoopback } from "./trust.ts";

/** What carries the pings. */
export type Transport = "webtransport" | "websocket";

/** The fallback settings. */
export interface FallbackConfig {
  /** False: WebTransport only (`--no-fallback`); no WebSocket is ever opened. */
  enabled: boolean;
  /** Milliseconds between the end of one QUIC probe and the next while on the WebSocket. */
  probeIntervalMs: number;
}

/** Where the machine is; a plain value, never mutated. */
export interface FallbackState {
  /**
   * idle: no connection and no attempt (the reconnect loop decides when to connect);
   * connecting-quic / connecting-ws: a connection attempt on that transport; up: a link
   * is in use; stopped: the run ended, everything that comes up is discarded.
   */
  readonly phase: "idle" | "connecting-quic" | "connecting-ws" | "up" | "stopped";
  /** The transport of the link in use (phase up), else null. */
  readonly using: Transport | null;
  /** The id of the link in use (phase up), else null. */
  readonly linkId: number | null;
  /** The QUIC attempt in flight (a connection attempt or a probe), else null. */
  readonly quicAttempt: number | null;
  /** The WebSocket attempt in flight, else null. */
  readonly wsAttempt: number | null;
  /** Whether the probe timer is armed. */
  readonly probeArmed: boolean;
  /** The transport the user was last told pings go over (WebTransport at the start). */
  readonly shown: Transport;
  /** Why QUIC was found unreachable in the current connection attempt. */
  readonly unreachable: string | null;
  /** The next attempt id (ids are 1, 2, 3, ...). */
  readonly nextId: number;
}

/** The state at the start of a run: idle, WebTransport shown, nothing in flight. */
export const INITIAL_FALLBACK_STATE: FallbackState = {
  phase: "idle",
  using: null,
  linkId: null,
  quicAttempt: null,
  wsAttempt: null,
  probeArmed: false,
  shown: "webtransport",
  unreachable: null,
  nextId: 1,
};

/** What the shell reports. `id` is the attempt id of the command that started it. */
export type FallbackEvent =
  /** The reconnect loop wants a connection (ignored unless idle). */
  | { type: "connect" }
  /** A QUIC attempt connected: its link is held by the shell under `id`. */
  | { type: "quic-up"; id: number }
  /** A QUIC attempt got no answer within its deadline (no handshake reply). */
  | { type: "quic-unreachable"; id: number; reason: string }
  /** A QUIC attempt failed otherwise (refused, trust, certificate, ...). */
  | { type: "quic-failed"; id: number; reason: string }
  /** A WebSocket attempt opened: its link is held by the shell under `id`. */
  | { type: "ws-up"; id: number }
  | { type: "ws-failed"; id: number; reason: string }
  /** The link `id` failed or was declared dead (heartbeats). */
  | { type: "lost"; id: number; reason: string }
  /** The probe timer fired. */
  | { type: "probe-due" }
  /** The run ends. */
  | { type: "stop" };

/** What the shell must do, in the order given. */
export type FallbackCommand =
  /** Open a WebTransport session to the server in use; `probe` while on the WebSocket. */
  | { type: "try-quic"; id: number; probe: boolean }
  /** Open the server's WebSocket. */
  | { type: "try-ws"; id: number }
  /**
   * Send pings over link `id` from now on. `kind` connect: it ends a connection attempt;
   * probe: it replaces the link in use (which a `retire` command follows). `announce`:
   * tell the user the transport changed (`reason` says why, for a move to the WebSocket).
   */
  | {
    type: "use";
    id: number;
    transport: Transport;
    kind: "connect" | "probe";
    announce?: { reason: string };
  }
  /** Link `id` was replaced: close it once replies in flight on it had their time. */
  | { type: "retire"; id: number }
  /** Link `id` came up but is not wanted (stale or after the end): close it now. */
  | { type: "discard"; id: number }
  /** The connection attempt failed; `reason` is the WebTransport failure's. */
  | { type: "failed"; reason: string }
  /** The link in use is gone: begin an outage (the reconnect loop takes over). */
  | { type: "outage"; reason: string }
  | { type: "arm-probe"; ms: number }
  | { type: "disarm-probe" };

/** One step's result: the new state and the commands to perform, in order. */
export interface FallbackStep {
  /** The state after the event. */
  state: FallbackState;
  /** What the shell must do, in order. */
  commands: FallbackCommand[];
}

/**
 * The transition function: what to do when `event` happens in `state`. Pure and total:
 * events that do not fit (a late answer to an abandoned attempt, a second `connect`) are
 * handled (a late link is discarded) or ignored, never thrown on.
 */
export function stepFallback(
  state: FallbackState,
  event: FallbackEvent,
  config: FallbackConfig,
): FallbackStep {
  switch (event.type) {
    case "connect":
      return onConnect(state);
    case "quic-up":
      return onQuicUp(state, event.id);
    case "quic-unreachable":
    case "quic-failed":
      return onQuicFailed(state, event, config);
    case "ws-up":
      return onWebSocketUp(state, event.id, config);
    case "ws-failed": {
      if (event.id !== state.wsAttempt) return { state, commands: [] };
      // The WebTransport failure is the one to report: the WebSocket was only a fallback.
      return {
        state: { ...state, phase: "idle", wsAttempt: null },
        commands: [{ type: "failed", reason: state.unreachable ?? event.reason }],
      };
    }
    case "lost":
      return onLost(state, event.id, event.reason);
    case "probe-due":
      return onProbeDue(state);
    case "stop":
      return {
        state: {
          ...state,
          phase: "stopped",
          quicAttempt: null,
          wsAttempt: null,
          probeArmed: false,
        },
        commands: disarm(state),
      };
  }
}

/** A disarm command if the probe timer is armed. */
function disarm(state: FallbackState): FallbackCommand[] {
  return state.probeArmed ? [{ type: "disarm-probe" }] : [];
}

function onConnect(state: FallbackState): FallbackStep {
  if (state.phase !== "idle") return { state, commands: [] };
  const id = state.nextId;
  return {
    state: {
      ...state,
      phase: "connecting-quic",
      quicAttempt: id,
      unreachable: null,
      nextId: id + 1,
    },
    commands: [{ type: "try-quic", id, probe: false }],
  };
}

const AGAIN = { reason: "WebTransport answers again" };

function onQuicUp(state: FallbackState, id: number): FallbackStep {
  if (id !== state.quicAttempt) return { state, commands: [{ type: "discard", id }] };
  if (state.phase === "connecting-quic") {
    return {
      state: {
        ...state,
        phase: "up",
        using: "webtransport",
        linkId: id,
        quicAttempt: null,
        shown: "webtransport",
      },
      commands: [{
        type: "use",
        id,
        transport: "webtransport",
        kind: "connect",
        ...(state.shown === "websocket" ? { announce: AGAIN } : {}),
      }],
    };
  }
  // A probe connected while on the WebSocket: back to WebTransport.
  return {
    state: {
      ...state,
      using: "webtransport",
      linkId: id,
      quicAttempt: null,
      probeArmed: false,
      shown: "webtransport",
    },
    commands: [
      { type: "use", id, transport: "webtransport", kind: "probe", announce: AGAIN },
      ...(state.linkId !== null ? [{ type: "retire" as const, id: state.linkId }] : []),
      ...disarm(state),
    ],
  };
}

function onQuicFailed(
  state: FallbackState,
  event: Extract<FallbackEvent, { type: "quic-unreachable" | "quic-failed" }>,
  config: FallbackConfig,
): FallbackStep {
  if (event.id !== state.quicAttempt) return { state, commands: [] };
  if (state.phase !== "connecting-quic") {
    // A probe failed: still on the WebSocket; probe again later.
    return {
      state: { ...state, quicAttempt: null, probeArmed: true },
      commands: [{ type: "arm-probe", ms: config.probeIntervalMs }],
    };
  }
  if (event.type === "quic-unreachable" && config.enabled) {
    const id = state.nextId;
    return {
      state: {
        ...state,
        phase: "connecting-ws",
        quicAttempt: null,
        wsAttempt: id,
        unreachable: event.reason,
        nextId: id + 1,
      },
      commands: [{ type: "try-ws", id }],
    };
  }
  return {
    state: { ...state, phase: "idle", quicAttempt: null },
    commands: [{ type: "failed", reason: event.reason }],
  };
}

function onWebSocketUp(state: FallbackState, id: number, config: FallbackConfig): FallbackStep {
  if (id !== state.wsAttempt) return { state, commands: [{ type: "discard", id }] };
  return {
    state: {
      ...state,
      phase: "up",
      using: "websocket",
      linkId: id,
      wsAttempt: null,
      probeArmed: true,
      shown: "websocket",
    },
    commands: [
      {
        type: "use",
        id,
        transport: "websocket",
        kind: "connect",
        ...(state.shown === "websocket"
          ? {}
          : { announce: { reason: state.unreachable ?? "no QUIC answer" } }),
      },
      { type: "arm-probe", ms: config.probeIntervalMs },
    ],
  };
}

function onLost(state: FallbackState, id: number, reason: string): FallbackStep {
  if (state.phase !== "up" || id !== state.linkId) return { state, commands: [] };
  // A probe still in flight is abandoned: its link, if it comes, is discarded.
  return {
    state: {
      ...state,
      phase: "idle",
      using: null,
      linkId: null,
      quicAttempt: null,
      probeArmed: false,
    },
    commands: [...disarm(state), { type: "outage", reason }],
  };
}

function onProbeDue(state: FallbackState): FallbackStep {
  if (!state.probeArmed) return { state, commands: [] };
  if (state.phase !== "up" || state.using !== "websocket" || state.quicAttempt !== null) {
    return { state: { ...state, probeArmed: false }, commands: [] };
  }
  const id = state.nextId;
  return {
    state: { ...state, probeArmed: false, quicAttempt: id, nextId: id + 1 },
    commands: [{ type: "try-quic", id, probe: true }],
  };
}

/**
 * Where a WebTransport server's WebSocket is, in the order to try: `wss://HOST:PORT/ws`
 * (TLS, verified like any HTTPS), then, for a loopback host only, `ws://HOST:PORT/ws`
 * (the TCP side is plain HTTP when the server has no certificate of its own). The TCP
 * side listens on the same port as QUIC (see README), so HOST and PORT are the
 * WebTransport URL's (443 when it names none). Plain `ws:` is never offered for another
 * host: the token would travel in the clear and anyone on the path could answer.
 *
 * @param target The WebTransport URL, `https://HOST[:PORT]/PATH`.
 * @returns One or two URLs, each with path `/ws` and no query, credentials or fragment.
 * @throws TypeError when `target` is not an https URL with a host.
 */
export function webSocketUrls(target: URL): URL[] {
  if (target.protocol !== "https:" || !target.hostname) {
    throw new TypeError(`not a WebTransport URL (https://HOST:PORT/PATH): ${target.href}`);
  }
  const port = target.port || "443";
  const urls = [new URL(`wss://${target.hostname}:${port}/ws`)];
  if (isLoopback(target.hostname)) urls.push(new URL(`ws://${target.hostname}:${port}/ws`));
  return urls;
}

/**
 * The user-facing line for a change of transport, without the trailing newline:
 * `WebTransport unreachable (REASON; UDP blocked?); pinging over WebSocket URL`, or
 * `WebTransport reachable again; pinging over WebTransport URL`.
 */
export function describeTransportChange(
  change: { transport: Transport; url: string; reason: string },
): string {
  return change.transport === "websocket"
    ? `WebTransport unreachable (${change.reason}; UDP blocked?); pinging over WebSocket ${change.url}`
    : `WebTransport reachable again; pinging over WebTransport ${change.url}`;
}
