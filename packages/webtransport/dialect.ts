/**
 * The dialects of WebTransport over HTTP/3 (draft-ietf-webtrans-http3) that browsers and
 * servers deploy, told apart by their SETTINGS, and what each needs on the wire. Pure
 * functions: the connection code asks them what to send and what a peer's SETTINGS mean.
 *
 * | dialect   | drafts | announced by (SETTINGS)                     | `:protocol`       | extra header                        |
 * | --------- | ------ | ------------------------------------------- | ----------------- | ----------------------------------- |
 * | `draft02` | 02–06  | `SETTINGS_ENABLE_WEBTRANSPORT` 0x2b603742=1 | `webtransport`    | `sec-webtransport-http3-draft02: 1` |
 * | `draft07` | 07–12  | `SETTINGS_WEBTRANSPORT_MAX_SESSIONS` 0xc671706a>0 | `webtransport` |                               |
 * | `draft14` | 13–14  | `SETTINGS_WT_MAX_SESSIONS` 0x14e9cd29>0     | `webtransport`    |                                     |
 * | `draft16` | 15–16  | `SETTINGS_WT_ENABLED` 0x2c7cf000=1          | `webtransport-h3` |                                     |
 *
 * Both sides announce every dialect they speak, each under its own setting; the newest
 * both announce is used ("Negotiating the Draft Version" in drafts 13–16). Stream headers
 * (0x41 and 0x54 plus the session id), datagrams, and the close and drain capsules are the
 * same in all four.
 *
 * **One session per connection in the newer dialects.** Drafts 13–16 allow several only with
 * session flow control; browsers open one connection per session, and we announce a limit
 * of 1 (a second session on a connection in those dialects is refused).
 *
 * **Flow control in drafts 13–16.** We ask for it (flow.ts): our SETTINGS grant initial
 * windows, and when the peer asks too, each session counts streams and bytes both ways,
 * waits for the peer's credit before sending past it, and raises ours as the application
 * reads. Safari is reported to send nothing without credit. Draft 07–12 peers get none: only
 * draft 12 had it, under rules that changed.
 *
 * @module
 */
import { H3, H3Error } from "./errors.ts";
import type { Field } from "./qpack.ts";
import { Setting } from "./frames.ts";
import { DEFAULT_WINDOWS, type FlowLimits, flowSettings } from "./flow.ts";

/** A deployed dialect of WebTransport over HTTP/3, named by its newest draft. */
export type Dialect = "draft02" | "draft07" | "draft14" | "draft16";

/** Every dialect, newest first: the default offer of our server and client. */
export const DIALECTS: readonly Dialect[] = ["draft16", "draft14", "draft07", "draft02"];

const RANK: Record<Dialect, number> = { draft02: 0, draft07: 1, draft14: 2, draft16: 3 };

/** The setting that announces each dialect, and the value we send for it. */
const ANNOUNCE: Record<Dialect, { setting: number; value: number }> = {
  draft02: { setting: Setting.ENABLE_WEBTRANSPORT, value: 1 },
  // The number of sessions we take on one connection (see the module's note on flow control).
  draft07: { setting: Setting.WEBTRANSPORT_MAX_SESSIONS, value: 1 },
  draft14: { setting: Setting.WT_MAX_SESSIONS, value: 1 },
  draft16: { setting: Setting.WT_ENABLED, value: 1 },
};

/** Which end of the connection. */
export type Role = "client" | "server";

/**
 * The SETTINGS we send: QPACK without a dynamic table, HTTP datagrams, extended CONNECT (a
 * server's promise, RFC 9220), one announcement per dialect in `dialects`, and, when drafts
 * 13–16 are among them, our flow-control windows (`windows`), which ask for session flow
 * control (flow.ts).
 *
 * @throws {RangeError} `dialects` empty or naming an unknown dialect.
 */
export function localSettings(
  role: Role,
  dialects: readonly Dialect[],
  windows: FlowLimits = DEFAULT_WINDOWS,
): Map<number, number> {
  if (dialects.length === 0) throw new RangeError("At least one WebTransport dialect is needed");
  const settings = new Map<number, number>([
    [Setting.QPACK_MAX_TABLE_CAPACITY, 0],
    [Setting.QPACK_BLOCKED_STREAMS, 0],
  ]);
  if (role === "server") settings.set(Setting.ENABLE_CONNECT_PROTOCOL, 1);
  settings.set(Setting.H3_DATAGRAM, 1);
  for (const dialect of dialects) {
    const announce = ANNOUNCE[dialect];
    if (!announce) throw new RangeError(`Unknown WebTransport dialect ${String(dialect)}`);
    settings.set(announce.setting, announce.value);
  }
  if (dialects.includes("draft14") || dialects.includes("draft16")) {
    for (const [id, value] of flowSettings(windows)) settings.set(id, value);
  }
  return settings;
}

/**
 * The dialects a peer's SETTINGS announce, newest first; empty when the peer cannot carry
 * WebTransport at all (no HTTP datagrams, or a server without extended CONNECT).
 *
 * @throws {H3Error} H3_SETTINGS_ERROR: a server's SETTINGS_WT_ENABLED above 1 (draft-16,
 * "Establishing a WebTransport-Capable HTTP/3 Connection").
 */
export function peerDialects(peer: Role, settings: ReadonlyMap<number, number>): Dialect[] {
  const enabled = settings.get(Setting.WT_ENABLED);
  if (peer === "server" && enabled !== undefined && enabled > 1) {
    throw new H3Error(H3.SETTINGS_ERROR, `SETTINGS_WT_ENABLED is ${enabled}; at most 1`);
  }
  const datagrams = settings.get(Setting.H3_DATAGRAM) === 1 ||
    settings.get(Setting.H3_DATAGRAM_DRAFT04) === 1;
  if (!datagrams) return [];
  if (peer === "server" && settings.get(Setting.ENABLE_CONNECT_PROTOCOL) !== 1) return [];
  const found: Dialect[] = [];
  if (enabled === 1) found.push("draft16");
  if ((settings.get(Setting.WT_MAX_SESSIONS) ?? 0) > 0) found.push("draft14");
  if ((settings.get(Setting.WEBTRANSPORT_MAX_SESSIONS) ?? 0) > 0) found.push("draft07");
  if (settings.get(Setting.ENABLE_WEBTRANSPORT) === 1) found.push("draft02");
  return found;
}

/** The newest dialect in both lists, or undefined when they share none. */
export function negotiate(
  ours: readonly Dialect[],
  theirs: readonly Dialect[],
): Dialect | undefined {
  let best: Dialect | undefined;
  for (const dialect of ours) {
    if (theirs.includes(dialect) && (!best || RANK[dialect] > RANK[best])) best = dialect;
  }
  return best;
}

/** The upgrade token (`:protocol`) of a dialect's CONNECT request. */
export function upgradeToken(dialect: Dialect): "webtransport" | "webtransport-h3" {
  return dialect === "draft16" ? "webtransport-h3" : "webtransport";
}

/**
 * The dialect of one CONNECT request: the token names the syntax (draft-16 Section 6),
 * so `webtransport-h3` is draft16 and `webtransport` the newest older dialect both sides
 * announced. Undefined: not a WebTransport request we can serve.
 */
export function requestDialect(
  protocol: string | undefined,
  ours: readonly Dialect[],
  theirs: readonly Dialect[],
): Dialect | undefined {
  if (protocol === "webtransport-h3") {
    return negotiate(ours, theirs) === "draft16" ? "draft16" : undefined;
  }
  if (protocol !== "webtransport") return undefined;
  return negotiate(ours.filter((d) => d !== "draft16"), theirs);
}

/** Header fields a client adds to the CONNECT in `dialect`. */
export function requestFields(dialect: Dialect): Field[] {
  return dialect === "draft02" ? [["sec-webtransport-http3-draft02", "1"]] : [];
}

/** Header fields a server adds to its 200 in `dialect`. */
export function responseFields(dialect: Dialect): Field[] {
  return dialect === "draft02" ? [["sec-webtransport-http3-draft", "draft02"]] : [];
}

/**
 * Sessions a server takes at once on one connection in `dialect`: 1 where the dialect
 * announces a limit or forbids sharing without flow control, unbounded in draft02, which
 * has neither.
 */
export function sessionsPerConnection(dialect: Dialect): number {
  return dialect === "draft02" ? Infinity : 1;
}
