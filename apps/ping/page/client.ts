/**
 * The browser page's client: pings its server over WebTransport (a long-lived stream and
 * datagrams) and over the server's WebSocket `/ws` (through wsping, a new socket per
 * ping), shows the round trips, reconnects by itself with backoff, fails over between the
 * servers named by `?url=`, and says when UDP seems blocked (WebTransport gets no QUIC
 * answer while `/ws` answers). Bundled into `page/client.js` by
 * `deno task build:ping-page`; the lines it sends are `protocol.ts`'s.
 *
 * Every 500 ms one ping per transport; a reply later than 2 s counts as lost; nothing
 * heard for 3 s means the path is dead and the page reconnects (backoff with jitter). A
 * WebTransport session not ready 3 s after it was asked for got no QUIC answer.
 *
 * @module
 */
import type { wsPing as WsPing } from "@duet/wsping";
import type { PingServerInfo } from "../policy.ts";
import { LineSplitter, parseReply, PING_PROTOCOL, pingLine } from "../protocol.ts";
import { backoffDelay } from "../stats.ts";
import { isLoopback } from "../loopback.ts";
import { browser, type PageCanvas, type PageElement } from "./dom.ts";
import {
  cardView,
  chartScale,
  chartSegments,
  clockResolution,
  type FigureEvent,
  type Figures,
  hexBytes,
  initialFigures,
  type Kind,
  type KindFigures,
  type LoopState,
  outageLine,
  type PageMode,
  pageMode,
  parseTargets,
  rttDecimals,
  stepFigures,
  WINDOW_MS,
} from "./model.ts";

const INTERVAL_MS = 500, TIMEOUT_MS = 2000, DEAD_AFTER_MS = 3000, CONNECT_TIMEOUT_MS = 3000;
/** The page's backoff: up to 200 ms after the first failed round, doubling to 5 s. */
const BACKOFF = { initialMs: 200, maxMs: 5000, jitter: "full" } as const;
/** wsping's plain ES module, served beside the page (loaded at run time, not bundled). */
const WSPING_URL = "/wsping.mjs";

/** What the tests read: the same numbers the page shows. */
interface PageState {
  /** The model's figures: replies per connection, up or down, outages (`model.ts`). */
  figures: Figures;
  /** Pings sent and replies taken per kind (the figures' counts, copied). */
  counts: Record<Kind, { sent: number; received: number }>;
  /** The clock's observed resolution (ms) and the decimals round trips get from it. */
  resolutionMs: number;
  decimals: number;
  /**
   * What the last frame drew: per kind, each run of the line as the page times (ms) of its
   * first and last reply; the number of outage bands.
   */
  chart: { runs: Record<Kind, [number, number][]>; outages: number };
  wt: LoopState;
  ws: LoopState;
  reconnects: number;
  /** The WebTransport URL in use or being tried. */
  target: string | null;
  /** Every switch to another server. */
  switches: { to: string; from: string; reason: string }[];
  /** The application protocol the server answered (WT-Protocol). */
  protocol: string | null;
  mode: PageMode;
  /** Why WebTransport is found unreachable, or null. */
  unreachable: string | null;
  /** How often the page moved to WebSocket only, and back. */
  fallbacks: number;
  restores: number;
}

/** The W3C options and fields Chromium has and the DOM library may lack. */
type PingWebTransport = WebTransport & { readonly protocol?: string };
type PingWebTransportOptions = WebTransportOptions & { protocols?: string[] };

/** An error that says WebTransport got no QUIC answer. */
class UnreachableError extends Error {}

/**
 * Distinct `performance.now()` readings (ms), up to 12, watched for at most 50 ms (a busy
 * loop, once at start: about 10 ms where the clock steps by 1 ms), for `clockResolution`.
 */
function clockReadings(): number[] {
  const readings = [performance.now()];
  for (let i = 0; i < 10_000_000 && readings.length < 12; i++) {
    if (readings.at(-1)! - readings[0]! >= 50) break;
    const t = performance.now();
    if (t !== readings.at(-1)) readings.push(t);
  }
  return readings;
}

// Round trips are shown with the precision the page's clock really has, decided from what
// it is seen to do (see clockResolution in model.ts): Firefox "3 ms", Chromium "3.2 ms".
const resolutionMs = clockResolution(
  clockReadings(),
  (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true,
);

const state: PageState = {
  figures: initialFigures(),
  resolutionMs,
  decimals: rttDecimals(resolutionMs),
  chart: { runs: { stream: [], datagram: [], ws: [] }, outages: 0 },
  counts: {
    stream: { sent: 0, received: 0 },
    datagram: { sent: 0, received: 0 },
    ws: { sent: 0, received: 0 },
  },
  wt: "connecting",
  ws: "connecting",
  reconnects: 0,
  target: null,
  switches: [],
  protocol: null,
  mode: "none",
  unreachable: null,
  fallbacks: 0,
  restores: 0,
};
(globalThis as unknown as { duetPing: PageState }).duetPing = state;

const token = new URLSearchParams(location.search).get("token");
const targets = parseTargets(location.search);
/** The WebSocket pings the server in use: this page's own unless ?url= says otherwise. */
let wsUrl = ownWebSocket();

const $ = (id: string): PageElement => browser.document.getElementById(id)!;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const message = (error: unknown) => error instanceof Error ? error.message : String(error);

function ownWebSocket(): URL {
  const url = new URL("/ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url;
}

/** Adds a line at the top of the log (six lines kept). */
function log(text: string): void {
  const line = `${new Date().toLocaleTimeString()}  ${text}`;
  const el = $("log");
  el.textContent = [line, ...(el.textContent ?? "").split("\n").filter(Boolean)].slice(0, 6)
    .join("\n");
}

/** Feeds `event` to the figures (`stepFigures`), and copies the counts the tests read. */
function apply(event: FigureEvent): void {
  state.figures = stepFigures(state.figures, event);
  for (const [kind, k] of Object.entries(state.figures.kinds) as [Kind, KindFigures][]) {
    state.counts[kind] = { sent: k.sent, received: k.received };
  }
}

/** Counts a ping of `kind` sent now; returns its number. */
function sent(kind: Kind): number {
  apply({ type: "sent", kind, at: performance.now() });
  return state.figures.kinds[kind].sent;
}

/**
 * Sets a loop's state and shows it; a change into or out of "connected" is a connection up
 * or down for the figures, owning the pings from number `firstSeq` (by default, from the
 * next one sent).
 */
function setState(which: "wt" | "ws", loop: LoopState, text?: string, firstSeq?: number): void {
  const was = state[which];
  state[which] = loop;
  if ((was === "connected") !== (loop === "connected")) {
    const kinds: Kind[] = which === "wt" ? ["stream", "datagram"] : ["ws"];
    const at = performance.now();
    apply(loop === "connected" ? { type: "up", kinds, at, firstSeq } : { type: "down", kinds, at });
  }
  const el = $(`${which}-state`);
  el.dataset["state"] = loop;
  el.textContent = `${which === "wt" ? "WebTransport" : "WebSocket"}: ${text ?? loop}`;
  updateMode();
}

/** Says a change of mode once: the status line and the log. */
function updateMode(): void {
  const mode = pageMode(state);
  if (mode === state.mode) return;
  state.mode = mode;
  const line = $("fallback");
  line.hidden = mode !== "websocket-only";
  if (mode === "websocket-only") {
    state.fallbacks++;
    line.textContent =
      `WebTransport unreachable (UDP blocked?): WebSocket only · ${state.unreachable}`;
    log(`WebTransport unreachable (${state.unreachable}; UDP blocked?): WebSocket only`);
  } else if (mode === "webtransport" && state.restores < state.fallbacks) {
    // Back from WebSocket only (perhaps through a moment with neither): said once.
    state.restores++;
    log("WebTransport reachable again: back to WebTransport");
  }
}

/** A reply to ping number `seq` of `kind`, `rtt` ms after it was sent. */
function record(kind: Kind, seq: number, rtt: number): void {
  apply({ type: "reply", kind, seq, at: performance.now(), rtt });
}

/** Writes `text` into `el` unless it is there already (the cards are rendered every frame). */
function put(el: PageElement, text: string): void {
  if (el.textContent !== text) el.textContent = text;
}

/** The cards and the outage line, from the figures at `now` (`cardView`, `outageLine`). */
function renderFigures(now: number): void {
  for (const [kind, k] of Object.entries(state.figures.kinds) as [Kind, KindFigures][]) {
    const view = cardView(k, now, state.decimals);
    const card = $(`card-${kind}`);
    card.dataset["status"] = view.status;
    put(card.querySelector('[data-field="last"]')!, view.last);
    put(card.querySelector('[data-field="detail"]')!, view.detail);
  }
  const outage = outageLine(state.figures, now);
  const line = $("outage");
  line.hidden = outage === null;
  put(line, outage ?? "");
}

async function serverInfo(base: string = location.origin): Promise<PingServerInfo> {
  const where = new URL("/.well-known/duet-ping.json", base);
  const response = await fetch(where, { cache: "no-store" });
  if (!response.ok) throw new Error(`${where}: HTTP ${response.status}`);
  return await response.json();
}

/** Where to connect, whom to trust and which WebSocket to ping, for one server. */
interface Resolved {
  url: URL;
  info: PingServerInfo;
  ws: URL;
}

/**
 * For one entry of `targets`: this page's own server (null) as published, or a given URL
 * with the hashes its own server publishes on the same port over TCP: HTTPS, or plain HTTP
 * on loopback only (as duet ping does).
 */
async function resolveTarget(target: URL | null): Promise<Resolved> {
  if (target === null || target.host === location.host) {
    const info = await serverInfo();
    // A configured public URL if the server publishes one; otherwise the host this page
    // came from, with the published port and path (never a name the server took from a
    // request).
    const url = target
      ? new URL(target)
      : info.url
      ? new URL(info.url)
      : new URL(`https://${location.hostname}:${info.port}${info.path}`);
    return { url, info, ws: ownWebSocket() };
  }
  const failures: string[] = [];
  for (const scheme of isLoopback(target.hostname) ? ["https:", "http:"] : ["https:"]) {
    try {
      const info = await serverInfo(`${scheme}//${target.host}`);
      const ws = new URL(`${scheme === "https:" ? "wss:" : "ws:"}//${target.host}/ws`);
      return { url: new URL(target), info, ws };
    } catch (error) {
      failures.push(`${scheme}//${target.host}: ${message(error)}`);
    }
  }
  throw new Error(`no certificate hashes (${failures.join("; ")})`);
}

/**
 * Opens a session to `url`, trusting the published hashes. Chromium gives up on a silent
 * QUIC handshake only after many seconds; ours is shorter, and it is how the page tells
 * "UDP blocked" from other failures.
 *
 * @throws UnreachableError when it is not ready within CONNECT_TIMEOUT_MS.
 */
async function openSession(url: URL, info: PingServerInfo): Promise<PingWebTransport> {
  const options: PingWebTransportOptions = {
    protocols: [PING_PROTOCOL],
    serverCertificateHashes: info.certificateHashes.map((h) => ({
      algorithm: h.algorithm,
      value: hexBytes(h.value),
    })),
  };
  const wt: PingWebTransport = new WebTransport(url, options);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ready = await Promise.race([
    wt.ready.then(() => true),
    new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), CONNECT_TIMEOUT_MS)),
  ]).finally(() => clearTimeout(timer));
  if (!ready) {
    wt.ready.catch(() => {});
    wt.closed.catch(() => {});
    try {
      wt.close();
    } catch { /* not open */ }
    throw new UnreachableError(`no QUIC answer in ${CONNECT_TIMEOUT_MS / 1000} s`);
  }
  return wt;
}

/** One session: a long-lived stream and datagrams, until it fails or goes quiet. */
async function session(wt: PingWebTransport): Promise<void> {
  const pending = new Map<string, { at: number; seq: number }>();
  let lastHeard = performance.now();
  const onLine = (line: string) => {
    lastHeard = performance.now();
    const { word, key } = parseReply(line);
    const ping = key === undefined ? undefined : pending.get(key);
    if (word !== "pong" || ping === undefined) return;
    pending.delete(key!);
    record(key!.startsWith("s") ? "stream" : "datagram", ping.seq, lastHeard - ping.at);
  };
  const stream = await wt.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  const datagrams = wt.datagrams.writable.getWriter();
  const encoder = new TextEncoder();
  const reading = (async () => {
    const splitter = new LineSplitter();
    for await (const chunk of stream.readable as ReadableStream<Uint8Array>) {
      for (const event of splitter.push(chunk)) {
        if (event.kind !== "line") throw new Error("the server sent a malformed line");
        onLine(event.line);
      }
    }
    throw new Error("the server ended the stream");
  })();
  const receiving = (async () => {
    const decoder = new TextDecoder();
    for await (const d of wt.datagrams.readable as ReadableStream<Uint8Array>) {
      onLine(decoder.decode(d));
    }
    throw new Error("datagrams ended");
  })();
  const ticking = (async () => {
    for (let n = 1;; n++) {
      const now = performance.now();
      for (const [key, ping] of pending) if (now - ping.at > TIMEOUT_MS) pending.delete(key);
      if (now - lastHeard > DEAD_AFTER_MS) {
        throw new Error(`no answer for ${Math.round(now - lastHeard)} ms`);
      }
      pending.set(`s${n}`, { at: now, seq: sent("stream") });
      writer.write(encoder.encode(`${pingLine(`s${n}`)}\n`)).catch(() => {});
      pending.set(`d${n}`, { at: now, seq: sent("datagram") });
      datagrams.write(encoder.encode(pingLine(`d${n}`))).catch(() => {});
      await sleep(INTERVAL_MS);
    }
  })();
  await Promise.race([
    reading,
    receiving,
    ticking,
    wt.closed.then((info) => {
      throw new Error(`session closed${info?.reason ? `: ${info.reason}` : ""}`);
    }),
  ]);
}

/**
 * Connects to one server and pings until the session fails (`onConnected` is called once
 * it is up); rejects with why it failed or ended.
 */
async function connectAndPing(
  target: URL | null,
  everConnected: boolean,
  onConnected: () => void,
): Promise<never> {
  const { url, info, ws } = await resolveTarget(target);
  state.target = url.href;
  if (token) url.searchParams.set("token", token);
  wsUrl = ws;
  $("target").textContent = `${url.origin}${url.pathname} · certificate sha-256 ${
    info.certificateHashes[0]?.value.slice(0, 16)
  }…`;
  const wt = await openSession(url, info);
  state.unreachable = null;
  state.protocol = wt.protocol ?? null;
  if (everConnected) state.reconnects++;
  setState("wt", "connected");
  log(everConnected ? "WebTransport connected again" : "WebTransport connected");
  onConnected();
  try {
    await session(wt);
  } finally {
    try {
      wt.close();
    } catch { /* closed */ }
  }
  throw new Error("the session ended");
}

/**
 * Connects to targets[index]; when it fails (cannot connect, or the session ends) moves
 * to the next at once, and backs off (jittered) only after a whole round has failed.
 */
async function webTransportLoop(): Promise<void> {
  let index = 0, failures = 0, round = 0;
  let everConnected = false; // "connected again" only after a first connection
  for (;;) {
    let reason = "", connected = false;
    try {
      await connectAndPing(targets[index]!, everConnected, () => {
        everConnected = connected = true;
        failures = round = 0;
      });
    } catch (error) {
      reason = message(error);
      state.unreachable = error instanceof UnreachableError ? reason : null;
      log(`WebTransport: ${reason}`);
    }
    failures++;
    if (targets.length > 1) {
      const from = state.target ?? String(targets[index]);
      index = (index + 1) % targets.length;
      const to = String(targets[index]);
      state.switches.push({ to, from, reason });
      log(`switching to ${to}: ${new URL(from).host} ${connected ? "lost" : "failed"} (${reason})`);
      state.target = to;
      $("target").textContent = `${to} · switching`;
    }
    if (failures % targets.length !== 0) {
      setState("wt", "connecting", "switching servers");
      continue;
    }
    const delay = backoffDelay(BACKOFF, round++, Math.random);
    setState("wt", "reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)} s`);
    await sleep(delay);
  }
}

/** One ping over a new WebSocket every interval, to the server in use. */
async function webSocketLoop(): Promise<void> {
  const { wsPing } = await import(WSPING_URL) as { wsPing: typeof WsPing };
  for (let n = 1;; n++) {
    const url = new URL(wsUrl);
    if (token) url.searchParams.set("token", token); // /ws asks for it as WebTransport does
    const started = performance.now();
    const seq = sent("ws");
    try {
      const reply = await Promise.race([
        wsPing(url.href, pingLine(`w${n}`)),
        sleep(TIMEOUT_MS).then(() => {
          throw new Error("timed out");
        }),
      ]);
      if (reply !== `pong w${n}`) throw new Error(`unexpected reply ${reply}`);
      const rtt = performance.now() - started;
      // First: a reply counts on a connection that is up, and this ping found it.
      setState("ws", "connected", "answering", seq);
      record("ws", seq, rtt);
    } catch (error) {
      if (state.ws !== "reconnecting") log(`WebSocket: ${message(error)}`);
      setState("ws", "reconnecting", "not answering, retrying");
    }
    await sleep(INTERVAL_MS);
  }
}

const COLORS: Record<Kind, string> = { stream: "#2f7ed8", datagram: "#e4572e", ws: "#3aa655" };

/**
 * The chart of the last minute's round trips, redrawn every frame with the cards: each
 * kind's runs of replies (`chartSegments`: never joined across a disconnection or a lost
 * ping; a run of one is a dot), over shaded bands where the server was unreachable.
 */
function draw(): void {
  const canvas = $("chart") as PageCanvas, ctx = canvas.getContext("2d")!;
  const w = canvas.width, h = canvas.height, pad = 48, now = performance.now();
  const x = (at: number) => pad + ((WINDOW_MS - (now - at)) / WINDOW_MS) * (w - pad);
  renderFigures(now);
  ctx.clearRect(0, 0, w, h);
  const kinds = Object.entries(state.figures.kinds) as [Kind, KindFigures][];
  const recent = kinds.flatMap(([, k]) => k.samples).filter((s) => now - s.at < WINDOW_MS);
  // Spikes are cut at the top and counted in the legend.
  const { top, above } = chartScale(recent.map((s) => s.rtt));
  const y = (rtt: number) => h - pad / 2 - (Math.min(rtt, top) / top) * (h - pad);
  ctx.font = "22px system-ui";
  const outages = state.figures.outages.filter((o) => o.to === null || now - o.to < WINDOW_MS);
  ctx.fillStyle = "#e4572e22";
  for (const o of outages) {
    const from = Math.max(pad, x(o.from));
    ctx.fillRect(from, 0, x(o.to ?? now) - from, h);
  }
  ctx.fillStyle = "#888";
  ctx.strokeStyle = "#8883";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const tick = h - pad / 2 - (i / 4) * (h - pad);
    ctx.beginPath();
    ctx.moveTo(pad, tick);
    ctx.lineTo(w, tick);
    ctx.stroke();
    ctx.fillText(`${((i / 4) * top).toFixed(top < 10 ? 1 : 0)}`, 4, tick + 7);
  }
  const legend = `ms · last 60 s${above ? ` · ${above} above the scale` : ""}${
    outages.length ? " · shaded: server unreachable" : ""
  }`;
  ctx.fillText(legend, w - 12 - ctx.measureText(legend).width, 26);
  const runs: Record<Kind, [number, number][]> = { stream: [], datagram: [], ws: [] };
  for (const [kind, k] of kinds) {
    ctx.strokeStyle = ctx.fillStyle = COLORS[kind];
    ctx.lineWidth = 3;
    const segments = chartSegments(k.samples.filter((s) => now - s.at < WINDOW_MS));
    for (const segment of segments) {
      ctx.beginPath();
      segment.forEach((s, i) => i ? ctx.lineTo(x(s.at), y(s.rtt)) : ctx.moveTo(x(s.at), y(s.rtt)));
      ctx.stroke();
      if (segment.length === 1) ctx.fillRect(x(segment[0]!.at) - 3, y(segment[0]!.rtt) - 3, 6, 6);
    }
    runs[kind] = segments.map((segment) => [segment[0]!.at, segment.at(-1)!.at]);
  }
  state.chart = { runs, outages: outages.length };
  browser.requestAnimationFrame(draw);
}

if (!("WebTransport" in globalThis)) {
  setState("wt", "failed", "not supported by this browser");
} else {
  webTransportLoop();
}
webSocketLoop();
browser.requestAnimationFrame(draw);
