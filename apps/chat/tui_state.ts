/**
 * The terminal interface's state, as a pure reducer: what the client's events and the
 * user's keys do to it. The ink components (tui.ts) only draw it.
 *
 * @module
 */
import stringWidth from "string-width";
import wrapAnsi from "wrap-ansi";
import type { ClientEvent, ConnectionState, MessageView } from "./client.ts";
import { printable } from "@duet/core/printable";

/** A line in the history pane: a message, or a note from the interface itself. */
export type Row =
  | { kind: "message"; message: MessageView }
  | { kind: "note"; text: string; tone: "info" | "warning" };

export interface TuiState {
  rows: Row[];
  connection: ConnectionState;
  connectionDetail: string;
  peer: string | null;
  /**
   * Whether the peer is connected, as the server said on this connection: `here`, `away`
   * (not connected when we came), `left` (was here, is gone); `unknown` while we are not
   * connected or the server does not say (protocol version 3).
   */
  peerPresence: "unknown" | "here" | "away" | "left";
  fingerprint: string | null;
  /** A changed peer key waiting for /accept-key. */
  keyChanged: boolean;
  /**
   * With a code: `waiting` for it to confirm the peer's key, `verified` once it did (also by
   * an earlier run), `failed` when a run failed against the key; null: no code.
   */
  code: "waiting" | "verified" | "failed" | null;
  /** Rows hidden below the view (0: following the newest). */
  scroll: number;
  /** New rows that arrived while scrolled up. */
  unseen: number;
  input: string;
}

export const initialState: TuiState = {
  rows: [],
  connection: "connecting",
  connectionDetail: "",
  peer: null,
  peerPresence: "unknown",
  fingerprint: null,
  keyChanged: false,
  code: null,
  scroll: 0,
  unseen: 0,
  input: "",
};

export type Action =
  | { type: "client"; event: ClientEvent }
  | { type: "note"; text: string; tone?: "info" | "warning" }
  | { type: "scroll"; by: number; page: number }
  | { type: "input"; value: string }
  | { type: "key-accepted" };

/** Where a message goes: stored ones by id, unsent own ones after them in send order. */
function place(rows: Row[], message: MessageView): { rows: Row[]; added: boolean } {
  const index = rows.findIndex((r) =>
    r.kind === "message" &&
    ((r.message.own && message.own && r.message.clientMsgId === message.clientMsgId) ||
      (message.id !== undefined && r.message.id === message.id))
  );
  if (index < 0) return { rows: insertSorted(rows, { kind: "message", message }), added: true };
  const current = (rows[index] as Extract<Row, { kind: "message" }>).message;
  // An update (sending -> stored): the new status and id, the first time and text.
  const merged: MessageView = {
    ...current,
    ...message,
    createdAt: current.createdAt,
    text: message.text ?? current.text,
  };
  const without = [...rows.slice(0, index), ...rows.slice(index + 1)];
  return { rows: insertSorted(without, { kind: "message", message: merged }), added: false };
}

/** Before the first stored message with a larger id or the first unsent one. */
function insertSorted(rows: Row[], row: Extract<Row, { kind: "message" }>): Row[] {
  const id = row.message.id;
  if (id === undefined) return [...rows, row];
  let at = rows.findIndex((r) =>
    r.kind === "message" && (r.message.id === undefined ? r.message.own : r.message.id > id)
  );
  if (at < 0) at = rows.length;
  return [...rows.slice(0, at), row, ...rows.slice(at)];
}

export function reduce(state: TuiState, action: Action): TuiState {
  switch (action.type) {
    case "input":
      return { ...state, input: action.value };
    case "scroll": {
      const max = Math.max(0, state.rows.length - action.page);
      const scroll = Math.min(max, Math.max(0, state.scroll + action.by));
      return { ...state, scroll, unseen: scroll === 0 ? 0 : state.unseen };
    }
    case "note":
      return appendRows(state, [{ kind: "note", text: action.text, tone: action.tone ?? "info" }]);
    case "key-accepted":
      return { ...state, keyChanged: false };
    case "client":
      return onClient(state, action.event);
  }
}

function appendRows(state: TuiState, rows: Row[]): TuiState {
  const added = rows.length;
  return {
    ...state,
    rows: [...state.rows, ...rows],
    scroll: state.scroll ? state.scroll + added : 0,
    unseen: state.scroll ? state.unseen + added : 0,
  };
}

function onClient(state: TuiState, event: ClientEvent): TuiState {
  switch (event.type) {
    case "state":
      return {
        ...state,
        connection: event.state,
        connectionDetail: event.detail ?? "",
        // Known only while connected: the server tells it anew on each connection.
        peerPresence: event.state === "connected" ? state.peerPresence : "unknown",
      };
    case "presence":
      return onPresence(state, event);
    case "welcome":
      return { ...state, peer: event.peer ?? state.peer };
    case "message": {
      const { rows, added } = place(state.rows, event.message);
      return {
        ...state,
        rows,
        scroll: state.scroll && added ? state.scroll + 1 : state.scroll,
        unseen: state.scroll && added ? state.unseen + 1 : state.unseen,
      };
    }
    case "key":
      return onKey(state, event);
    case "restored_key":
      // A reopened client: the key it keeps is the key, without a new note about it.
      return {
        ...state,
        fingerprint: event.fingerprint,
        keyChanged: event.pending,
        code: event.verified
          ? "verified"
          : event.codeFailed
          ? "failed"
          : event.awaitingCode
          ? "waiting"
          : state.code,
      };
    case "code":
      return onCode(state, event);
    case "key_restored":
      return appendRows({ ...state, fingerprint: event.fingerprint, keyChanged: false }, [{
        kind: "note",
        tone: "info",
        text: `${event.peer} is back on the key you accepted; messages go out under it again.`,
      }]);
    case "held":
      // Never a message row: nothing signed by an unaccepted key is shown as the peer's.
      if (event.awaitingCode) {
        return appendRows(state, [{
          kind: "note",
          tone: "info",
          text: `Held back a message from ${event.sender} until the code confirms their key.`,
        }]);
      }
      return appendRows(state, [{
        kind: "note",
        tone: "warning",
        text: `Held back a message signed as ${event.sender} under a key you have not ` +
          `accepted (${groupFingerprint(event.fingerprint.slice(0, 16))} ...): whoever holds ` +
          `that key wrote it. Compare the key with ${event.sender} by another channel; ` +
          `/accept-key ${event.fingerprint.slice(0, 8)} shows it.`,
      }]);
    case "notice":
      return appendRows(state, [{ kind: "note", text: event.text, tone: "info" }]);
    case "fatal":
      return appendRows({ ...state, connection: "stopped" }, [{
        kind: "note",
        text: `${event.text}. The client has stopped; /quit or Ctrl-C leaves.`,
        tone: "warning",
      }]);
  }
}

/** A key agreed now: the title, and a note saying what it means. */
function onKey(state: TuiState, event: Extract<ClientEvent, { type: "key" }>): TuiState {
  const next = { ...state, fingerprint: event.fingerprint, peer: event.peer };
  if (event.awaitingCode) {
    return appendRows({ ...next, keyChanged: event.changed, code: "waiting" }, [{
      kind: "note",
      tone: event.changed ? "warning" : "info",
      text: event.changed
        ? `${event.peer}'s key CHANGED. Nothing is sent, and nothing signed by it is ` +
          "shown, until the code confirms it."
        : `Key agreed with ${event.peer}; waiting for the code to confirm it.`,
    }]);
  }
  if (event.changed) {
    return appendRows({ ...next, keyChanged: true }, [{
      kind: "note",
      tone: "warning",
      text: `${event.peer}'s key CHANGED` +
        (event.reset
          ? ` (the name was taken back without the old key, as after a lost key store, by ` +
            `${event.peer} or by someone else)`
          : "") +
        `. Compare the new key (/key) with ${event.peer} by ` +
        "another channel: if it differs, someone is in the middle. Nothing is sent, and " +
        `nothing signed by it is shown, until you type /accept-key ${
          event.fingerprint.slice(0, 8)
        }.`,
    }]);
  }
  return appendRows(next, [{
    kind: "note",
    tone: "info",
    text: `Key agreed with ${event.peer}. Compare /key with them: the same value on both ` +
      "sides means nobody is in the middle.",
  }]);
}

/** The code run waits, confirmed the key or failed: the title, and a note. */
function onCode(state: TuiState, event: Extract<ClientEvent, { type: "code" }>): TuiState {
  const next = {
    ...state,
    code: event.state,
    fingerprint: event.fingerprint ?? state.fingerprint,
    keyChanged: event.state === "verified" ? false : state.keyChanged,
  };
  // A failure is told by the fatal event that follows.
  if (event.state === "failed") return next;
  const peer = event.peer;
  return appendRows(next, [{
    kind: "note",
    tone: "info",
    text: event.state === "waiting"
      ? (peer
        ? `Waiting for ${peer} to confirm the code; nothing is sent until then.`
        : "Waiting for the other party to come and confirm the code; nothing is sent until " +
          "then.")
      : event.earlier
      ? `${peer ?? "Your peer"}'s key was confirmed by a code before: nobody is in the middle ` +
        "(the code given now was not needed)."
      : `Code confirmed: ${peer ?? "your peer"} has the same code, and your keys reached each ` +
        "other unchanged, so nobody is in the middle. No fingerprint to compare.",
  }]);
}

/** The peer came, left, or is (not) there on a new connection: the title, and a note on a change. */
function onPresence(state: TuiState, event: Extract<ClientEvent, { type: "presence" }>): TuiState {
  // Told on a connection only; a late one after it ended says nothing true any more.
  if (state.connection !== "connected") return state;
  const peerPresence = event.presence === "came" ? "here" : event.presence;
  const next = { ...state, peer: event.peer, peerPresence };
  if (event.presence === "came") {
    return appendRows(next, [{ kind: "note", tone: "info", text: `${event.peer} is here.` }]);
  }
  if (event.presence === "left") {
    return appendRows(next, [{
      kind: "note",
      tone: "info",
      text: `${event.peer} has left; the server keeps what you send for them.`,
    }]);
  }
  return next;
}

/** A fingerprint in groups of four, for reading aloud: "5cd9 b98b ...". */
export function groupFingerprint(hex: string): string {
  return hex.match(/.{1,4}/g)!.join(" ");
}

/** HH:MM in local time. */
export function clock(date: Date): string {
  return `${String(date.getHours()).padStart(2, "0")}:${
    String(date.getMinutes()).padStart(2, "0")
  }`;
}

/** The mark after an own message. */
export function deliveryMark(message: MessageView): string {
  if (!message.own) return "";
  switch (message.status) {
    case "waiting for key":
      return " (waiting for a key)";
    case "waiting for code":
      return " (waiting for the code)";
    case "sending":
      return " …";
    case "stored":
      return " ✓";
    case "failed":
      return ` ✗ not sent: ${message.problem ?? "refused"}`;
  }
}

/** How the parts of a row are styled (terminal escapes); plain by default, as in tests. */
export interface RowStyle {
  time(text: string): string;
  sender(text: string, own: boolean): string;
  mark(text: string, failed: boolean): string;
  problem(text: string): string;
  note(text: string, warning: boolean): string;
}

const same = (text: string) => text;
export const plainStyle: RowStyle = {
  time: same,
  sender: same,
  mark: same,
  problem: same,
  note: same,
};

/** Narrower than this, a message's text is not indented under itself but runs to the edge. */
const MIN_TEXT_COLUMNS = 20;

/**
 * A row as the lines it takes in a pane `width` columns wide: wrapped between words (no
 * space carried to the start of a line, as ink's own wrapping leaves it), a message's
 * continuation lines indented under its text, and whatever came from elsewhere made
 * printable.
 */
export function rowLines(row: Row, me: string, width: number, style = plainStyle): string[] {
  const wrap = (text: string, columns: number) =>
    wrapAnsi(text, Math.max(1, columns), { hard: true, trim: true }).split("\n");
  if (row.kind === "note") {
    return wrap(style.note(`* ${printable(row.text)}`, row.tone === "warning"), width);
  }
  const m = row.message;
  const who = m.sender === me ? "you" : m.sender;
  const lead = `${clock(m.createdAt)} ${who}: `;
  const [prefix, body] = m.text === null
    ? [style.problem(lead), style.problem(`[${printable(m.problem ?? "")}]`)]
    : [
      `${style.time(`${clock(m.createdAt)} `)}${style.sender(who, m.own)}: `,
      // Tabs (pasted code, say) as spaces, the one control character worth keeping here.
      printable(m.text.replaceAll("\t", "    ")) +
      style.mark(printable(deliveryMark(m)), m.status === "failed"),
    ];
  const indent = stringWidth(lead);
  if (width - indent < MIN_TEXT_COLUMNS) return wrap(prefix + body, width);
  const [first = "", ...rest] = wrap(body, width - indent);
  return [prefix + first, ...rest.map((line) => " ".repeat(indent) + line)];
}

/**
 * The title bar's text for `width` columns: the full form when it fits; else what matters
 * most first (connection, key, room, peer), cut with "…" if even that is too wide.
 */
export function titleText(state: TuiState, room: string, width: number): string {
  const connection = state.connection === "connected"
    ? "● connected to server"
    : state.connection === "stopped"
    ? "■ stopped"
    : `○ ${state.connection}${state.connectionDetail ? ` ${state.connectionDetail}` : ""}`;
  const code = state.code === "verified"
    ? " ✓ verified by code"
    : state.code === "waiting"
    ? " (code not confirmed yet)"
    : state.code === "failed"
    ? " ✗ the code did not match"
    : "";
  // A key that waits for a code (or failed one) is not a changed key: the code part says it.
  const changed = state.keyChanged && state.code === null ? " CHANGED" : "";
  const key = state.fingerprint
    ? `key ${state.fingerprint.slice(0, 8)}${changed}${code}`
    : state.code === "waiting"
    ? "waiting for the code"
    : "no key yet";
  const [peer, peerShort] = peerText(state);
  const full = [` duet chat · ${room}`, peer, connection, key].join("  ·  ");
  if (stringWidth(full) <= width) return full.padEnd(width);
  const short = ` ${[connection, key, room, peerShort].join(" · ")}`;
  if (stringWidth(short) <= width) return short.padEnd(width);
  return `${[...short].slice(0, Math.max(0, width - 1)).join("")}…`;
}

/** The peer in the title bar, in full and short: who, and whether they are connected. */
function peerText(state: TuiState): [string, string] {
  const peer = state.peer;
  if (peer === null) return ["waiting for the other party", "alone"];
  switch (state.peerPresence) {
    case "here":
      return [`${peer} is here`, `${peer} here`];
    case "away":
      return [`${peer} is not connected`, `${peer} away`];
    case "left":
      return [`${peer} has left`, `${peer} left`];
    case "unknown":
      return [`with ${peer}`, peer];
  }
}

/** Removes the last grapheme (an emoji with its modifiers, a letter with its accents). */
export function backspace(text: string): string {
  const graphemes = [...new Intl.Segmenter(undefined, { granularity: "grapheme" }).segment(text)];
  return graphemes.slice(0, -1).map((g) => g.segment).join("");
}
