import { hexToBytes } from "@noble/hashes/utils.js";
/**
 * The browser page's decisions and figures, pure (no DOM, no sockets, no clock), so they
 * are tested under Deno: which servers to use, what carries pings, the reply statistics
 * the cards show (and what they show during an outage), the chart's lines and scale, the
 * precision of a round trip. `client.ts` does the rest.
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

/** A reply as charted: a {@link Sample} with the connection it came on and its ping's number. */
export interface ChartSample extends Sample {
  /** The connection of its kind it came on: 1 for the first, 2 after a reconnect, ... */
  connection: number;
  /** Its ping's number among the pings of its kind sent since the page opened (1, 2, ...). */
  seq: number;
}

/** What the page knows of one kind of ping, for its card and its line on the chart. */
export interface KindFigures {
  /** Whether a connection carrying this kind is up now. */
  up: boolean;
  /** Connections opened so far: the current one's number while up; 0 before the first. */
  connection: number;
  /** When it last came up or went down (ms, page clock); null before either. */
  changedAt: number | null;
  /**
   * The number of the first ping of the current connection; while down, of the first ping
   * sent since (which the next connection may claim: see {@link FigureEvent}).
   */
  firstSeq: number;
  /** Pings sent and replies taken since the page opened. */
  sent: number;
  received: number;
  /** The replies of the last {@link WINDOW_MS}, in the order they came. */
  samples: ChartSample[];
  /** The last reply taken, on any connection: shown, labelled, while there is none newer. */
  lastReply: ChartSample | null;
}

/** An interval of the page clock (ms); `to` is null while it lasts. */
export interface Interval {
  from: number;
  to: number | null;
}

/** Everything the cards and the chart show, per kind, and the outages of the last minute. */
export interface Figures {
  kinds: Record<Kind, KindFigures>;
  /**
   * When no connection at all was up, after one had been (the server unreachable), oldest
   * first: from the last reply before (or the going down, if none came) to the first
   * connection up again. Those that ended more than {@link WINDOW_MS} before the latest
   * up or down are dropped.
   */
  outages: Interval[];
}

/**
 * What changes the figures, times in ms on the page clock: connections carrying `kinds` came
 * up or went down; a ping of `kind` was sent (its number is the kind's `sent` afterwards); a
 * reply to ping number `seq` came with round trip `rtt` ms. A connection that comes up owns
 * the pings sent from then on, or from ping number `firstSeq` when given (the WebSocket's
 * ping that found the server again was sent before it knew). A reply while its kind is
 * down, or to a ping sent before its connection, is ignored: it is not current.
 */
export type FigureEvent =
  | { type: "up"; kinds: readonly Kind[]; at: number; firstSeq?: number }
  | { type: "down"; kinds: readonly Kind[]; at: number }
  | { type: "sent"; kind: Kind; at: number }
  | { type: "reply"; kind: Kind; seq: number; at: number; rtt: number };

/** A reply older than this (ms) while connected is no longer shown as current. */
export const SILENT_MS = 2000;

const KINDS: readonly Kind[] = ["stream", "datagram", "ws"];

/** The figures of a page that has sent nothing yet. */
export function initialFigures(): Figures {
  const none = (): KindFigures => ({
    up: false,
    connection: 0,
    changedAt: null,
    firstSeq: 1,
    sent: 0,
    received: 0,
    samples: [],
    lastReply: null,
  });
  return { kinds: { stream: none(), datagram: none(), ws: none() }, outages: [] };
}

/** The figures after `event` (a new object; `figures` is not changed). */
export function stepFigures(figures: Figures, event: FigureEvent): Figures {
  const kinds = { ...figures.kinds };
  if (event.type === "sent") {
    const k = kinds[event.kind];
    kinds[event.kind] = { ...k, sent: k.sent + 1 };
  } else if (event.type === "reply") {
    const k = kinds[event.kind];
    if (!k.up || event.seq < k.firstSeq || event.seq > k.sent) return figures;
    const sample = { at: event.at, rtt: event.rtt, connection: k.connection, seq: event.seq };
    const samples = [...k.samples, sample].filter((s) => event.at - s.at <= WINDOW_MS);
    kinds[event.kind] = { ...k, received: k.received + 1, samples, lastReply: sample };
  } else {
    const up = event.type === "up";
    for (const kind of new Set(event.kinds)) {
      const k = kinds[kind];
      if (k.up === up) continue;
      kinds[kind] = up
        ? {
          ...k,
          up,
          changedAt: event.at,
          connection: k.connection + 1,
          firstSeq: Math.min(k.sent + 1, Math.max(k.firstSeq, event.firstSeq ?? k.sent + 1)),
        }
        : { ...k, up, changedAt: event.at, firstSeq: k.sent + 1 };
    }
  }
  return { kinds, outages: nextOutages(figures, kinds, event.at) };
}

/** The outages after a change of `kinds` at `at`: one opens when the last connection goes. */
function nextOutages(before: Figures, kinds: Figures["kinds"], at: number): Interval[] {
  const wasUp = KINDS.some((k) => before.kinds[k].up);
  const isUp = KINDS.some((k) => kinds[k].up);
  let outages = before.outages.filter((o) => o.to === null || at - o.to <= WINDOW_MS);
  if (wasUp && !isUp) {
    // From the last reply of any kind: the silence before the loss was noticed is part of it.
    const replies = KINDS.flatMap((k) => kinds[k].lastReply?.at ?? []);
    const from = replies.length ? Math.min(at, Math.max(...replies)) : at;
    outages = [...outages, { from, to: null }];
  }
  if (!wasUp && isUp && outages.at(-1)?.to === null) {
    outages = [...outages.slice(0, -1), { from: outages.at(-1)!.from, to: at }];
  }
  return outages;
}

/**
 * The chart's lines for one kind: runs of replies to consecutive pings on one connection.
 * Two replies are joined only when they came on the same connection and no ping between
 * them went unanswered, so the line never crosses a disconnection or a loss; a run of one
 * is drawn as a dot.
 */
export function chartSegments(samples: readonly ChartSample[]): ChartSample[][] {
  const segments: ChartSample[][] = [];
  let previous: ChartSample | undefined;
  for (const sample of samples) {
    const joined = previous && previous.connection === sample.connection &&
      sample.seq === previous.seq + 1;
    if (joined) segments.at(-1)!.push(sample);
    else segments.push([sample]);
    previous = sample;
  }
  return segments;
}

/** The replies of a kind that are current: those on its connection now; none while down. */
export function currentReplies(k: KindFigures): ChartSample[] {
  return k.up ? k.samples.filter((s) => s.connection === k.connection) : [];
}

/** The median round trip of `series` (the upper one of an even count); NaN when empty. */
export function median(series: readonly Sample[]): number {
  const sorted = series.map((s) => s.rtt).sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/**
 * The resolution of the page's clock (ms), from successive distinct `performance.now()`
 * readings: the smallest step seen, and never finer than the spec's floor for the page's
 * state (100 µs, or 5 µs when cross-origin isolated: High Resolution Time, "coarsen
 * time"). Browsers may be coarser than the floor, and are: Firefox steps by 1 ms unless
 * isolated, Chromium by 100 µs. Observed rather than assumed from the browser's name, so a
 * browser or a setting that coarsens more (Firefox's resistFingerprinting) is honoured too.
 * Fewer than two readings (the clock never moved while it was watched): 1 ms.
 */
export function clockResolution(readings: readonly number[], crossOriginIsolated: boolean): number {
  const steps = readings.slice(1).map((t, i) => t - readings[i]!).filter((d) => d > 0);
  if (!steps.length) return 1;
  return Math.max(Math.min(...steps), crossOriginIsolated ? 0.005 : 0.1);
}

/**
 * How many decimals of a millisecond a round trip measured with a clock of `resolution` ms
 * may show: none finer than the clock's step (1 ms: "3 ms"; 100 µs: "3.2 ms"; 5 µs:
 * "3.21 ms"), at most 3. A round trip is the difference of two readings, so even its last
 * digit may be one step off.
 */
export function rttDecimals(resolution: number): number {
  return Math.min(3, Math.max(0, Math.floor(-Math.log10(resolution) + 1e-3)));
}

/**
 * A round trip in ms as shown: `3.2 ms` with `decimals` 1; one that rounds to nothing is
 * below the clock's step, `<0.1 ms` (`<1 ms` with none).
 */
export function formatRtt(rtt: number, decimals: number): string {
  const text = rtt.toFixed(decimals);
  return Number(text) === 0 ? `<${(10 ** -decimals).toFixed(decimals)} ms` : `${text} ms`;
}

/** A duration in ms, roughly: `4 s`, `3 min`. */
function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s} s` : `${Math.round(s / 60)} min`;
}

/**
 * What a card shows: `idle` before any connection, `waiting` connected with no reply yet on
 * this connection, `live` with a reply on it within {@link SILENT_MS}, `silent` connected but
 * with none as recent, `down` no connection (reconnecting).
 */
export interface CardView {
  status: "idle" | "waiting" | "live" | "silent" | "down";
  /** The big figure: the current round trip, or what there is instead. */
  last: string;
  /** The line under it. */
  detail: string;
}

/**
 * A card at page time `now` (ms), round trips with `decimals`. Only replies on the current
 * connection are shown as current (the figure and the p50); while down or silent the last
 * reply is shown only labelled, with its age.
 */
export function cardView(k: KindFigures, now: number, decimals: number): CardView {
  const counts = `${k.received} replies · ${Math.max(0, k.sent - k.received)} lost or pending`;
  const before = k.lastReply
    ? `last reply ${formatRtt(k.lastReply.rtt, decimals)}, ${ago(now - k.lastReply.at)} ago`
    : "no replies yet";
  if (!k.up) {
    return k.connection === 0
      ? { status: "idle", last: "–", detail: "connecting…" }
      : { status: "down", last: "unreachable", detail: `reconnecting · ${before}` };
  }
  const current = currentReplies(k);
  const latest = current.at(-1);
  if (!latest) {
    return { status: "waiting", last: "–", detail: `connected, waiting for a reply · ${counts}` };
  }
  if (now - latest.at > SILENT_MS) {
    return { status: "silent", last: `no reply for ${ago(now - latest.at)}`, detail: before };
  }
  return {
    status: "live",
    last: formatRtt(latest.rtt, decimals),
    detail: `p50 ${formatRtt(median(current), decimals)} · ${counts}`,
  };
}

/**
 * The page's outage line at `now` (ms): null unless no connection is up after one had been;
 * then since when nothing has answered.
 */
export function outageLine(figures: Figures, now: number): string | null {
  const open = figures.outages.at(-1);
  if (!open || open.to !== null) return null;
  return `Server unreachable: no reply for ${ago(now - open.from)} · reconnecting`;
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
