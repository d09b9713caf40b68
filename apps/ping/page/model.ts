import { hexToBytes } from "@noble/hashes/utils.js";
/**
 * The browser page's decisions and figures, pure (no DOM, no sockets, no clock), so they
 * are tested under Deno: which servers to use, what carries pings, the reply statistics
 * the cards show, the chart's scale. `client.ts` does the rest.
 *
 * @module
 */

/** Replies kept for the cards and the chart: the last minute. */
export const WINDOW_MS = 60_000;

/** What the page pings over. */
export type Kind = "stream" | "datagram" | "ws";

/** A reply: when it came and its round trip, in milliseconds. */
export interface Sample {
  at: number;
  rtt: number;
}

/** The state of one connection loop, as shown. */
export type LoopState = "connecting" | "connected" | "reconnecting" | "failed";

/**
 * What carries pings: "webtransport" (and the WebSocket beside it), "websocket-only"
 * (WebTransport got no QUIC answer; UDP blocked?), or "none" (connecting, or neither
 * answers).
 */
export type PageMode = "webtransport" | "websocket-only" | "none";

/**
 * The servers to fail over between, from the page's query: every `?url=` that is an https
 * URL, first to last; none given (or none valid): `[null]`, the server the page came from.
 */
export function parseTargets(search: string): (URL | null)[] {
  const given = new URLSearchParams(search).getAll("url").flatMap((text) => {
    try {
      const url = new URL(text);
      if (url.protocol === "https:") return [url];
    } catch { /* not a URL */ }
    return [];
  });
  return given.length ? given : [null];
}

/**
 * The transport in use, from the two loops' states alone: WebTransport when a session is
 * up; WebSocket only when WebTransport got no QUIC answer and `/ws` answers.
 */
export function pageMode(
  state: { wt: LoopState; ws: LoopState; unreachable: string | null },
): PageMode {
  if (state.wt === "connected") return "webtransport";
  return state.unreachable && state.ws === "connected" ? "websocket-only" : "none";
}

/** Adds a reply to `series` (mutated) and drops those older than {@link WINDOW_MS}. */
export function addSample(series: Sample[], sample: Sample): void {
  series.push(sample);
  while (series.length && sample.at - series[0]!.at > WINDOW_MS) series.shift();
}

/** The median round trip of `series` (the upper one of an even count); NaN when empty. */
export function median(series: readonly Sample[]): number {
  const sorted = series.map((s) => s.rtt).sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** A card's detail line: `p50 1.23 ms · 4 replies · 1 lost or pending`. */
export function cardDetail(series: readonly Sample[], sent: number, received: number): string {
  return `p50 ${median(series).toFixed(2)} ms · ${received} replies · ${
    Math.max(0, sent - received)
  } lost or pending`;
}

/**
 * The chart's vertical scale: 1.5 times the 95th percentile of the round trips (at least
 * 1 ms), so that one cold-start spike does not flatten a minute of 1 ms replies; `above`
 * counts the replies cut at the top.
 */
export function chartScale(rtts: readonly number[]): { top: number; above: number } {
  const sorted = [...rtts].sort((a, b) => a - b);
  const p95 = sorted[Math.floor(0.95 * (sorted.length - 1))] ?? 1;
  const top = Math.max(1, p95 * 1.5);
  return { top, above: sorted.filter((rtt) => rtt > top).length };
}

/** Hex digits to bytes (the published certificate hashes). */
export function hexBytes(hex: string): Uint8Array<ArrayBuffer> {
  return hexToBytes(hex) as Uint8Array<ArrayBuffer>;
}
