/**
 * The chat client's protocol as a pure reducer: `reduce(state, event) -> { state,
 * commands }`. It decides what to send and when, what to keep or drop from the outbox,
 * and which received messages to show in which order; the shell (client.ts) holds the
 * socket, the timers, the key store and the crypto, and feeds their results back.
 *
 * The guarantee it keeps (docs/chat-protocol.md, "Order"): a sender's messages are stored
 * once and in the order typed. The outbox is sent strictly in `seq` order as a prefix:
 * an entry waiting for a key holds back every entry after it; a refusal stops the
 * sending until every send of that round is answered, then it starts again from the
 * first entry not stored (renumbered when the server expects another `seq`). Received
 * messages are shown in id order: pushes that arrive while history is being read wait
 * until it is read.
 *
 * @module
 */
import { backoffMs } from "@duet/core/backoff";
import {
  BYE_REPLACED,
  type ErrorCode,
  ProtocolError,
  type ServerMessage,
  type StoredMessage,
} from "./protocol.ts";

/** What the reducer knows of an outbox entry (the key store holds the rest). */
export interface OutboxItem {
  clientMsgId: string;
  seq: number;
  /** Encrypted and ready to send (false: waits for a key). */
  ready: boolean;
}

/** Timers the reducer asks for. */
export type TimerKind = "resend" | "history" | "key_offer" | "code";

/** The reducer's state. */
export interface ClientState {
  connection: "down" | "greeting" | "open";
  /** Unacknowledged entries in `seq` order. */
  outbox: OutboxItem[];
  /** How many leading outbox entries were sent in this round and not yet answered. */
  sent: number;
  /** Sends of this round that are still unanswered. */
  outstanding: number;
  /** A send was refused in this round: nothing more is sent until the round is answered. */
  halted: boolean;
  /** The refusal asks for a pause (the server is unavailable), not just a restart. */
  backoff: boolean;
  /** The `seq` the server named in this round's out_of_order refusal of the first entry. */
  expectedSeq: number | null;
  /** Consecutive rounds that ended in `unavailable`: the resend delay doubles with each. */
  failures: number;
  /** A resend timer is set. */
  waiting: boolean;
  /**
   * Highest room id read from a push or history (not from own answers); history is read
   * after it. Pushes and history come in id order, so an id at or below it was shown.
   */
  maxId: number;
  /** Own messages answered `stored` with an id above `maxId`: not shown again from history. */
  ownAbove: ReadonlySet<number>;
  /** History is being read: pushes wait in `held` so that messages show in id order. */
  readingHistory: boolean;
  held: StoredMessage[];
  /**
   * Whether the peer is connected, as the server last said on this connection (null: not
   * said yet on it, or not connected).
   */
  peerPresent: boolean | null;
}

/**
 * The peer's presence as the interfaces tell it: `here` / `away` is the state the server
 * gives on a new connection; `came` / `left` a change while connected.
 */
export type Presence = "here" | "away" | "came" | "left";

/** Most sends in flight at once. */
export const SEND_WINDOW = 256;
/** The first resend delay after `unavailable`, doubled each time up to {@link MAX_RETRY_MS}. */
export const BASE_RETRY_MS = 200;
export const MAX_RETRY_MS = 2_000;

/** The state before the first connection, with the outbox as stored. */
export function initialClientState(outbox: OutboxItem[] = []): ClientState {
  return {
    connection: "down",
    outbox,
    sent: 0,
    outstanding: 0,
    halted: false,
    backoff: false,
    expectedSeq: null,
    failures: 0,
    waiting: false,
    maxId: 0,
    ownAbove: new Set(),
    readingHistory: false,
    held: [],
    peerPresent: null,
  };
}

/** What happens to the client. */
export type ClientCoreEvent =
  /** TCP is up: say hello. */
  | { type: "connected" }
  /** The connection ended (any reason). */
  | { type: "disconnected" }
  /**
   * The welcome, with the outbox as the key store holds it after the conversation was
   * bound to the service the welcome names.
   */
  | { type: "welcome"; message: Extract<ServerMessage, { type: "welcome" }>; outbox: OutboxItem[] }
  /** Any other frame from the server. */
  | { type: "frame"; message: Exclude<ServerMessage, { type: "welcome" }> }
  /** An entry was added to the outbox (persisted already). */
  | { type: "queued"; item: OutboxItem }
  /** Entries that waited for a key are encrypted now. */
  | { type: "sealed"; clientMsgIds: string[] }
  | { type: "timer"; timer: TimerKind };

/** What the shell is to do, in order. */
export type ClientCommand =
  | { type: "send_hello" }
  | { type: "send_key_offer" }
  /** Send this party's `code` frame again (the shell has it; nothing if it has none). */
  | { type: "send_code" }
  | { type: "send_history"; after: number }
  /** Send this outbox entry (the shell reads it from the key store). */
  | { type: "transmit"; clientMsgId: string; seq: number }
  /** Acknowledged: remove from the key store's outbox and show as stored. */
  | { type: "stored"; clientMsgId: string; id: number; createdAt: string }
  /** Refused for good: remove from the outbox and show as not sent. */
  | { type: "dropped"; clientMsgId: string; problem: string }
  /** Give the outbox seqs from `firstSeq` on, in order (persisted). */
  | { type: "renumber"; firstSeq: number }
  /** The server holds this sender's messages up to `seq`: new entries continue after it. */
  | { type: "note_stored_seq"; seq: number }
  /** Decrypt and show (in this order). */
  | { type: "show"; message: StoredMessage; fromHistory: boolean }
  | { type: "peer_key"; message: Extract<ServerMessage, { type: "peer_key" }> }
  /** The peer's `code` frame: the shell's code run (code_core.ts) takes it. */
  | { type: "peer_code"; message: Extract<ServerMessage, { type: "peer_code" }> }
  /** The peer (`name`) is connected to the room, is not, came or left ({@link Presence}). */
  | { type: "presence"; name: string; presence: Presence }
  /**
   * Tell the user. With `outage`, the notice is about the connection: the shell tells it once
   * per outage (the same `outage` again, on the next attempt, is not repeated).
   */
  | { type: "notice"; text: string; outage?: string }
  /**
   * Stop for good, telling why and what to do. `discard`: this name can never send in this
   * room (it is full), so the outbox is dropped, each entry shown as not sent.
   */
  | { type: "fatal"; text: string; discard?: boolean }
  | { type: "schedule"; timer: TimerKind; ms: number };

/** A reducer step. */
export interface ClientStep {
  state: ClientState;
  commands: ClientCommand[];
}

/** One step. Pure: the same state and event give the same result. */
export function reduceClient(state: ClientState, event: ClientCoreEvent): ClientStep {
  switch (event.type) {
    case "connected":
      return {
        state: { ...state, connection: "greeting", ...newRound(), peerPresent: null },
        commands: [{ type: "send_hello" }],
      };
    case "disconnected":
      // Unanswered sends are answered by nobody now: the next connection starts over.
      return {
        state: {
          ...state,
          connection: "down",
          ...newRound(),
          readingHistory: false,
          held: [],
          peerPresent: null,
        },
        commands: [],
      };
    case "welcome":
      return onWelcome(state, event.message, event.outbox);
    case "frame":
      return onFrame(state, event.message);
    case "queued":
      return pump({ ...state, outbox: [...state.outbox, event.item] }, []);
    case "sealed": {
      const sealed = new Set(event.clientMsgIds);
      const outbox = state.outbox.map((item) =>
        sealed.has(item.clientMsgId) ? { ...item, ready: true } : item
      );
      return pump({ ...state, outbox }, []);
    }
    case "timer":
      switch (event.timer) {
        case "resend":
          return pump({ ...state, waiting: false }, []);
        case "history":
          return state.connection === "open"
            ? { state, commands: [{ type: "send_history", after: state.maxId }] }
            : { state, commands: [] };
        case "key_offer":
          return state.connection === "open"
            ? { state, commands: [{ type: "send_key_offer" }] }
            : { state, commands: [] };
        case "code":
          return state.connection === "open"
            ? { state, commands: [{ type: "send_code" }] }
            : { state, commands: [] };
      }
  }
}

const newRound = () => ({
  sent: 0,
  outstanding: 0,
  halted: false,
  backoff: false,
  expectedSeq: null,
});

function onWelcome(
  state: ClientState,
  welcome: Extract<ServerMessage, { type: "welcome" }>,
  outbox: OutboxItem[],
): ClientStep {
  const commands: ClientCommand[] = [
    { type: "note_stored_seq", seq: welcome.last_seq },
    { type: "send_key_offer" },
    { type: "send_history", after: state.maxId },
  ];
  let next: ClientState = {
    ...state,
    connection: "open",
    outbox,
    ...newRound(),
    readingHistory: true,
    held: [],
    // Nobody else has joined the room: nobody is there (a peer who joins "came").
    peerPresent: welcome.peer === null ? false : null,
  };
  // The outbox always starts at the server's next seq. After a gap (one refused for good
  // and dropped while offline) its entries move down; numbered at or below last_seq (an
  // answer lost, or numbered before this key store knew last_seq) they move up: sent as
  // they were, a later entry could carry exactly the server's next seq and be stored before
  // an earlier one that is then refused (seen: after a refused first connection, the line
  // typed second was stored first). An entry already stored is still recognised by its
  // client id, whatever seq it now carries.
  const first = outbox[0];
  if (first && first.seq !== welcome.last_seq + 1) {
    const renumbered = renumber(outbox, welcome.last_seq + 1);
    next = { ...next, outbox: renumbered };
    commands.push({ type: "renumber", firstSeq: welcome.last_seq + 1 });
  }
  return pump(next, commands);
}

function renumber(outbox: OutboxItem[], firstSeq: number): OutboxItem[] {
  return outbox.map((item, index) => ({ ...item, seq: firstSeq + index }));
}

/** Sends what may be sent now: ready entries after those sent, in order, up to the window. */
function pump(state: ClientState, commands: ClientCommand[]): ClientStep {
  if (state.connection !== "open" || state.halted || state.waiting) return { state, commands };
  let { sent, outstanding } = state;
  const out = [...commands];
  while (sent < state.outbox.length && outstanding < SEND_WINDOW) {
    const item = state.outbox[sent]!;
    if (!item.ready) break; // holds back every later entry: order
    out.push({ type: "transmit", clientMsgId: item.clientMsgId, seq: item.seq });
    sent++;
    outstanding++;
  }
  return { state: { ...state, sent, outstanding }, commands: out };
}

function onFrame(
  state: ClientState,
  message: Exclude<ServerMessage, { type: "welcome" }>,
): ClientStep {
  switch (message.type) {
    case "stored":
      return onStored(state, message);
    case "error":
      return onError(state, message);
    case "message":
      if (state.readingHistory) {
        return { state: { ...state, held: [...state.held, message.message] }, commands: [] };
      }
      return show(state, [message.message], false, []);
    case "history_page": {
      const shown = show(state, message.messages, true, []);
      if (message.has_more) {
        return {
          state: shown.state,
          commands: [...shown.commands, { type: "send_history", after: shown.state.maxId }],
        };
      }
      const held = [...shown.state.held].sort((a, b) => a.id - b.id);
      return show({ ...shown.state, readingHistory: false, held: [] }, held, false, shown.commands);
    }
    case "peer_key":
      return { state, commands: [{ type: "peer_key", message }] };
    case "peer_code":
      return { state, commands: [{ type: "peer_code", message }] };
    case "presence":
      return onPresence(state, message);
    case "bye":
      return { state, commands: [byeCommand(message.reason)] };
    case "heartbeat":
      return { state, commands: [] };
  }
}

/**
 * Shows messages not shown before, in the order given (ids ascending): those above
 * `maxId`, but for own ones already shown from their `stored` answer.
 */
function show(
  state: ClientState,
  messages: StoredMessage[],
  fromHistory: boolean,
  commands: ClientCommand[],
): ClientStep {
  let maxId = state.maxId;
  const out = [...commands];
  for (const message of messages) {
    if (message.id <= maxId) continue;
    maxId = message.id;
    if (!state.ownAbove.has(message.id)) out.push({ type: "show", message, fromHistory });
  }
  const ownAbove = maxId === state.maxId
    ? state.ownAbove
    : new Set([...state.ownAbove].filter((id) => id > maxId));
  return { state: { ...state, ownAbove, maxId }, commands: out };
}

function answered(state: ClientState): ClientState {
  return { ...state, outstanding: Math.max(0, state.outstanding - 1) };
}

function onStored(
  state: ClientState,
  message: Extract<ServerMessage, { type: "stored" }>,
): ClientStep {
  const index = state.outbox.findIndex((item) => item.clientMsgId === message.client_msg_id);
  const commands: ClientCommand[] = [];
  let next = answered(state);
  if (index >= 0) {
    next = {
      ...next,
      outbox: [...next.outbox.slice(0, index), ...next.outbox.slice(index + 1)],
      sent: index < next.sent ? next.sent - 1 : next.sent,
      failures: 0,
    };
    commands.push({
      type: "stored",
      clientMsgId: message.client_msg_id,
      id: message.id,
      createdAt: message.created_at,
    });
  }
  // Our own message is not shown again from history, but it does not move the history
  // cursor: its answer can come before the push of a peer message committed just before
  // it, and a reconnection must still read that one.
  if (message.id > next.maxId) {
    next = { ...next, ownAbove: new Set(next.ownAbove).add(message.id) };
  }
  commands.push({ type: "note_stored_seq", seq: message.seq });
  return endOfRound(next, commands);
}

function onError(
  state: ClientState,
  error: Extract<ServerMessage, { type: "error" }>,
): ClientStep {
  if (error.client_msg_id !== undefined) return onSendRefused(state, error);
  if (error.in_reply_to === "history") {
    return error.retryable
      ? { state, commands: [{ type: "schedule", timer: "history", ms: retryDelay(state) }] }
      : {
        state,
        commands: [{
          type: "notice",
          text: `The server would not read the history (${error.message}, ${error.code}); ` +
            "what is shown is what this client has.",
        }],
      };
  }
  if (error.in_reply_to === "key_offer" && error.retryable) {
    return { state, commands: [{ type: "schedule", timer: "key_offer", ms: retryDelay(state) }] };
  }
  if (error.in_reply_to === "code" && error.retryable) {
    return { state, commands: [{ type: "schedule", timer: "code", ms: retryDelay(state) }] };
  }
  return { state, commands: [connectionErrorCommand(error)] };
}

/**
 * What an error about the connection itself (not one message, not history) tells the user:
 * what happened, in words, and what to do or what the client does about it; the server's
 * own words and code follow in parentheses. Every code has its sentence (client_core_test.ts
 * checks them all): the refusals that no retry mends stop the client (`fatal`), the others
 * are said once per outage while the client reconnects by itself.
 */
export function connectionErrorCommand(
  error: Pick<Extract<ServerMessage, { type: "error" }>, "code" | "message" | "in_reply_to">,
): Extract<ClientCommand, { type: "notice" | "fatal" }> {
  const said = `(server: ${error.message}; ${error.code})`;
  const fatal = (text: string, discard?: true) =>
    ({ type: "fatal", text: `${text} ${said}`, ...(discard ? { discard } : {}) }) as const;
  const notice = (text: string) =>
    ({ type: "notice", text: `${text} ${said}`, outage: error.code }) as const;
  const code: ErrorCode = error.code;
  switch (code) {
    case "room_full":
      return fatal(
        "This room already has its two people, and neither uses your name, so you cannot " +
          "join it: choose another room with --room (or, if you are one of the two, start " +
          "with the --name you joined it with). Nothing was sent",
        true,
      );
    case "key_mismatch":
      return fatal(
        "This name in this room belongs to another key than this client's. If you lost " +
          "your key store, start again with --reset-key (your peer is told and must accept " +
          "your new key); if not, someone else has claimed your name: tell your peer",
      );
    case "unsupported_version":
      return fatal(
        "The server speaks another version of the chat protocol than this client: run the " +
          "same version of duet as the server",
      );
    case "too_many_code_attempts":
      return fatal(
        "The server refuses more code attempts in this room for now: more were made than " +
          "two people who share a code need, so someone may be guessing it. Nothing was " +
          "sent. Make a new code (--code new) and meet in another room, or wait",
      );
    case "bad_proof":
      return fatal(
        "The server did not accept this client's proof of its key: the key store " +
          "(--key-store) may be damaged, or the client and the server are different " +
          "versions of duet",
      );
    case "too_many_connections":
      return notice("The server has no room for another connection now; retrying by itself.");
    case "too_many_rooms":
      return notice(
        "The server refuses new rooms from your address for now; retrying by itself (an " +
          "existing room can be joined meanwhile).",
      );
    case "unavailable":
      return notice(
        "The server cannot reach its database; nothing is lost, the client retries by itself.",
      );
    case "shutting_down":
      return notice("The server is shutting down; the client reconnects when it is back.");
    case "internal":
      return notice(
        "The server failed; the client reconnects by itself. If this keeps coming, tell the " +
          "server's operator.",
      );
    case "bad_frame":
    case "frame_too_large":
    case "bad_message":
    case "handshake_required":
    case "message_too_large":
    case "bad_text":
    case "unstorable":
    case "out_of_order":
      // Before the key is in, the same offer would be refused again: no retry mends it;
      // nor would the same code frame be taken.
      return error.in_reply_to === "key_offer" || error.in_reply_to === "code"
        ? fatal(
          `The server refused this client's ${
            error.in_reply_to === "code" ? "code frame" : "key offer"
          }, a bug or a server of another duet version`,
        )
        : notice(
          "The server refused what this client sent, a bug or a server of another duet " +
            "version; the client reconnects by itself.",
        );
  }
}

/** The peer's presence: said when it is new on this connection or changed, not repeated. */
function onPresence(
  state: ClientState,
  message: Extract<ServerMessage, { type: "presence" }>,
): ClientStep {
  const was = state.peerPresent;
  const next = { ...state, peerPresent: message.present };
  if (was === message.present) return { state: next, commands: [] };
  const presence: Presence = was === null
    ? (message.present ? "here" : "away")
    : (message.present ? "came" : "left");
  return { state: next, commands: [{ type: "presence", name: message.name, presence }] };
}

/** What a `bye` tells the user, by its reason. */
function byeCommand(reason: string): Extract<ClientCommand, { type: "notice" | "fatal" }> {
  if (reason === BYE_REPLACED) {
    return {
      type: "fatal",
      text: "Another client joined this room with your name, so this one stops (two " +
        "clients with one name would push each other out); your messages go on from there",
    };
  }
  if (reason === "idle") {
    return {
      type: "notice",
      text: "The server closed the connection as idle; the client reconnects by itself.",
      outage: "bye",
    };
  }
  return {
    type: "notice",
    text: `The server closed the connection (${reason}); the client reconnects by itself.`,
    outage: "bye",
  };
}

/**
 * Why a connection attempt (or a connection) to `server` (HOST:PORT as typed) failed, in
 * words for the person at the keyboard: what happened and what to do, never the runtime's
 * text alone (the shell logs that at debug level). The client retries by itself, and says
 * so.
 */
export function connectFailureText(error: unknown, server: string): string {
  const retrying = "The client keeps trying; Ctrl-C stops it.";
  const host = server.slice(0, server.lastIndexOf(":"));
  if (error instanceof ProtocolError) {
    // A length prefix that is too large is another protocol's bytes read as one ("HTTP").
    const said = error.code === "frame_too_large"
      ? "what it sent is not a duet chat frame"
      : error.message;
    return `${server} does not answer in duet chat's protocol (${said}): is it a ` +
      `duet chat-server? Check --server. ${retrying}`;
  }
  if (error instanceof Deno.errors.ConnectionRefused) {
    return `Nothing answers at ${server}: is the chat server running, and on this port? ` +
      retrying;
  }
  const text = error instanceof Error ? error.message : String(error);
  if (/failed to lookup address|Name or service not known|nodename nor servname/i.test(text)) {
    return `The host ${host} is not known (its name does not resolve): check --server. ` +
      retrying;
  }
  if (
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.BrokenPipe || error instanceof Deno.errors.UnexpectedEof ||
    // Deno's words for a socket read after the peer reset it.
    /underlying resource was closed or consumed/i.test(text)
  ) {
    return `The connection to ${server} broke off. ${retrying}`;
  }
  if (error instanceof Deno.errors.TimedOut) {
    return `${server} did not answer in time (a firewall, or the wrong address?). ${retrying}`;
  }
  const detail = text.replace(/ \(os error \d+\)$/, "");
  return `Cannot reach ${server} (${detail}). ${retrying}`;
}

/**
 * The wait before a reconnection, in words for a status line: "now" below a tenth of a
 * second (what one decimal would show as 0.0 s), else "in S.S s" (seconds, one decimal).
 *
 * @param ms The delay in milliseconds (>= 0).
 */
export function retryText(ms: number): string {
  return ms < 100 ? "now" : `in ${(Math.round(ms / 100) / 10).toFixed(1)} s`;
}

function onSendRefused(
  state: ClientState,
  error: Extract<ServerMessage, { type: "error" }>,
): ClientStep {
  const id = error.client_msg_id!;
  const index = state.outbox.findIndex((item) => item.clientMsgId === id);
  let next = answered(state);
  const commands: ClientCommand[] = [];
  if (!error.retryable) {
    if (index >= 0) {
      next = {
        ...next,
        outbox: [...next.outbox.slice(0, index), ...next.outbox.slice(index + 1)],
        sent: index < next.sent ? next.sent - 1 : next.sent,
      };
      commands.push({ type: "dropped", clientMsgId: id, problem: error.message });
    }
    // Entries sent after it are refused as out of order: this round is over.
    return endOfRound({ ...next, halted: true }, commands);
  }
  next = { ...next, halted: true };
  if (error.code === "out_of_order") {
    if (index === 0 && error.expected_seq !== undefined) {
      next = { ...next, expectedSeq: error.expected_seq };
    }
  } else {
    next = { ...next, backoff: true };
  }
  return endOfRound(next, commands);
}

function retryDelay(state: ClientState): number {
  return backoffMs(
    { initialMs: BASE_RETRY_MS, maxMs: MAX_RETRY_MS, jitter: "none" },
    state.failures + 1,
    0,
  );
}

/** When a halted round has every send answered: renumber if asked, then send again. */
function endOfRound(state: ClientState, commands: ClientCommand[]): ClientStep {
  if (!state.halted || state.outstanding > 0) return pump(state, commands);
  let next: ClientState = { ...state, ...newRound() };
  const out = [...commands];
  const first = next.outbox[0];
  if (state.expectedSeq !== null && first && first.seq !== state.expectedSeq) {
    next = { ...next, outbox: renumber(next.outbox, state.expectedSeq) };
    out.push({ type: "renumber", firstSeq: state.expectedSeq });
  }
  if (state.backoff) {
    out.push({ type: "schedule", timer: "resend", ms: retryDelay(state) });
    return { state: { ...next, waiting: true, failures: state.failures + 1 }, commands: out };
  }
  return pump(next, out);
}
