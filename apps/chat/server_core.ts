/**
 * The chat server's per-connection protocol as a pure step function:
 * `step(state, event) -> { state, replies, effects }`. No sockets, no timers, no database:
 * the shell (server.ts) feeds it frames and the results of the effects it asked for, sends
 * the replies and runs the effects. Every failure becomes a reply in one place,
 * {@link errorReply}, so no failure is answered with a code that means something else.
 *
 * What it guarantees, and what the tests check (server_core_test.ts):
 * - a connection's pushes are the room's messages from the peer, each once, in id order
 *   (which the store makes commit order), across a database listener that drops and
 *   comes back (pushes wait while the catch-up reads what was missed);
 * - every reply fits a frame by construction: history pages are cut by size as well as
 *   by count;
 * - sends are paced, never refused, by the per-connection rate: the shell stops reading
 *   for the time {@link Effect} `pause` names, so a burst is stored in the order sent;
 * - a name in a room belongs to its key: after the welcome, nothing a connection sends is
 *   handled (and it replaces no older connection) until it has proved possession of the
 *   key its name is bound to, over the connection's fresh challenge; the first key proved
 *   binds the name, another one only with the bound key's signature or an announced reset.
 *
 * @module
 */
import {
  BYE_REPLACED,
  type ClientMessage,
  CODE_VERSION,
  type ErrorContext,
  errorMessage,
  frameSize,
  MAX_CIPHERTEXT_BYTES,
  MAX_FRAME_BYTES,
  MAX_HISTORY_LIMIT,
  OLDEST_PROTOCOL_VERSION,
  parseClientMessage,
  PRESENCE_VERSION,
  PROTOCOL_VERSION,
  ProtocolError,
  type RequestType,
  type ServerMessage,
  type StoredMessage,
} from "./protocol.ts";
import {
  base64,
  possessionContext,
  verifyKeyOffer,
  verifyPossession,
  verifyRotation,
} from "./crypto.ts";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { type Bucket, fullBucket, pace, type Rate as RefillRate } from "@duet/net/rate";
import { frameCost } from "./limits.ts";
import {
  type BindOutcome,
  type CodeOffer,
  type CodeWire,
  isUnavailable,
  type Join,
  type KeyChange,
  type KeyOffer,
  type MessageRow,
  type PutCodeOutcome,
  type StoreOutcome,
} from "./store.ts";

/** Limits a connection is held to. */
export interface ConnectionLimits {
  /**
   * Frames per second, on average (a `key_offer` counts 10, any other frame 1: limits.ts,
   * frameCost); bursts of twice this go through unpaced.
   */
  messagesPerSecond: number;
}

/** A history read: the store's `history()` options. */
export interface HistoryQuery {
  before?: number;
  after?: number;
  limit: number;
}

/** What the shell is asked to do; each result comes back as an {@link Event}. */
export type Effect =
  /**
   * Join the room (store.join) and read its key offers (store.keyOffers); answer with
   * `joined`. Pushes for the room are taken from now on.
   */
  | { type: "join"; room: string; name: string }
  /**
   * The party is in (it proved its key): replace any older connection of this name in
   * this room.
   */
  | { type: "enter"; room: string; name: string; party: 0 | 1 }
  /**
   * Bind the name to a key whose proofs were checked (store.bindKey); answer with
   * `key_bound`.
   */
  | {
    type: "bind_key";
    room: string;
    party: 0 | 1;
    publicKey: Uint8Array;
    proof: ProofWire;
    change: KeyChange;
  }
  /**
   * Store the party's newest `code` frame (store.putCode, which counts the room's attempts);
   * answer with `code_stored`.
   */
  | { type: "put_code"; room: string; party: 0 | 1; frame: CodeWire }
  /** Store a message; answer with `store_outcome`. */
  | {
    type: "store";
    room: string;
    sender: string;
    clientMsgId: string;
    seq: number;
    nonce: Uint8Array;
    ciphertext: Uint8Array;
    /** Which send of the connection this is: its answer goes out in this order. */
    slot: number;
  }
  /** Read a history page (after `delayMs`, if given); answer with `history_rows`. */
  | {
    type: "read_history";
    room: string;
    query: HistoryQuery;
    purpose: "request" | "catch_up";
    delayMs?: number;
  }
  /**
   * Read no further frames for `ms` milliseconds from now (the send rate): the time until
   * the connection's bucket is back at zero, so a later pause replaces an earlier one.
   */
  | { type: "pause"; ms: number }
  /** Close the connection once the replies before this are written. */
  | { type: "close" };

type ProofWire = { t: string; s: string };

/** What happens to a connection. `now` is in milliseconds, from any monotonic clock. */
export type Event =
  | { type: "frame"; payload: unknown; now: number }
  /** The byte stream broke the framing rules (FrameDecoder threw). */
  | { type: "frame_error"; error: ProtocolError }
  /**
   * The join's outcome, with the room's key offers and this connection's `challenge` (32
   * random bytes, 64 hex, from the shell): the welcome carries it.
   */
  | {
    type: "joined";
    join: Join;
    service: string;
    offers: KeyOffer[];
    /** The room's stored `code` frames (store.codeOffers). */
    codes: CodeOffer[];
    challenge: string;
  }
  | { type: "code_stored"; outcome: PutCodeOutcome }
  /** A `code` frame stored in this connection's room (the peer's, or its own). */
  | { type: "peer_code"; code: CodeOffer }
  | { type: "key_bound"; outcome: BindOutcome }
  | { type: "store_outcome"; clientMsgId: string; slot: number; outcome: StoreOutcome }
  | {
    type: "history_rows";
    purpose: "request" | "catch_up";
    query: HistoryQuery;
    rows: MessageRow[];
    hasMore: boolean;
  }
  /** A message stored in this connection's room, by any instance (the store's channel). */
  | { type: "push"; row: MessageRow }
  /** A key offer stored in this connection's room. */
  | { type: "peer_key"; offer: KeyOffer }
  /**
   * Whether the peer has a connection in the room that proved its key (on this instance):
   * from server_rooms.ts when this connection is in (`name` null when no peer is there and
   * the rooms do not know its name) and at each change. Told to version-4 clients only.
   */
  | { type: "presence"; name: string | null; present: boolean }
  /** The store's listener is back after a gap: what it announced meanwhile is lost. */
  | { type: "listener_back" }
  /** An effect failed; `error` is what it threw. */
  | { type: "failed"; effect: Effect; error: unknown }
  /** A newer connection with this name entered the room (on this instance). */
  | { type: "replaced" }
  | { type: "idle" }
  | { type: "shutdown" };

/** A connection in a room. */
export interface Member {
  name: string;
  room: string;
  party: 0 | 1;
  /** The newest room id this connection has been given or told of (welcome's last_id). */
  delivered: number;
  /** A catch-up is reading; pushes wait in `held` until it ends. */
  catchingUp: boolean;
  /** The listener came back again during a catch-up: read once more when it ends. */
  catchUpAgain: boolean;
  held: MessageRow[];
  /**
   * Answers to this connection's sends, in the order of the sends: one refused at once
   * (too large, bad text) waits behind those the store has yet to answer.
   */
  answers: { slot: number; reply: ServerMessage | null }[];
  nextSlot: number;
  /** The connection's challenge: a later key offer proves possession over it too. */
  challenge: string;
  /** The protocol version of the hello (3 or 4): version 4 is told the peer's presence. */
  version: number;
  /** The peer's name as the join found it (null: nobody else has joined the room yet). */
  peer: string | null;
  /** `updatedAt` of the peer's key offer relayed last (0: none): an older one is not relayed. */
  peerKeyAt: number;
  /** `updatedAt` of the peer's code frame relayed last (0: none). */
  peerCodeAt: number;
}

/** A connection's state. */
export type State =
  | { phase: "greeting"; rate: Rate }
  | {
    phase: "joining";
    rate: Rate;
    name: string;
    room: string;
    /** The hello's protocol version. */
    version: number;
    /** Pushes that came while joining; those after welcome's last_id are delivered. */
    held: MessageRow[];
    /**
     * Key offers and code frames announced while joining, the newest per party: the join's own
     * read may have come before them (else they would be lost until a reconnection).
     */
    heldOffers: KeyOffer[];
    heldCodes: CodeOffer[];
    /** Frames that came before the welcome, handled after it. */
    early: unknown[];
    /** Their size as JSON, in bytes. */
    earlyBytes: number;
    listenerBack: boolean;
  }
  | {
    /**
     * Welcomed, not yet trusted: waiting for a key offer that proves the name's key over
     * the challenge (`binding`: its store call is running). Frames and pushes wait.
     */
    phase: "authenticating";
    rate: Rate;
    member: Member;
    /** The peer's key offer as last known: sent once this connection is in. */
    peerOffer: KeyOffer | undefined;
    /** The peer's `code` frame as last known: sent after the key offer (version 5). */
    peerCode: CodeOffer | undefined;
    binding: boolean;
    held: MessageRow[];
    early: unknown[];
    /** Their size as JSON, in bytes. */
    earlyBytes: number;
    listenerBack: boolean;
  }
  | { phase: "open"; rate: Rate; member: Member }
  | { phase: "closed" };

/**
 * The connection's frame rate: a token bucket (packages/net/rate.ts) that every frame read
 * draws on; below zero is time the reader must pause.
 */
export interface Rate {
  refill: RefillRate;
  bucket: Bucket;
}

/** What a step yields. */
export interface Step {
  state: State;
  replies: ServerMessage[];
  effects: Effect[];
}

/** A new connection's state. */
export function initialState(limits: ConnectionLimits): State {
  const refill = { perSecond: limits.messagesPerSecond, burst: limits.messagesPerSecond * 2 };
  return { phase: "greeting", rate: { refill, bucket: fullBucket(refill) } };
}

/**
 * A connection that is refused before its first frame: too many from its address, or
 * the server is stopping.
 */
export function refuse(reason: "too_many_connections" | "shutting_down", detail: string): Step {
  return {
    state: { phase: "closed" },
    replies: [errorMessage(reason, detail)],
    effects: [{ type: "close" }],
  };
}

/** The codes after which a connection cannot go on (the rest concern one request). */
const CLOSING = new Set([
  "bad_frame",
  "frame_too_large",
  "bad_message",
  "unsupported_version",
  "handshake_required",
  "room_full",
  "too_many_connections",
  "shutting_down",
  "internal",
]);

/**
 * The one place where failures become replies. ProtocolError carries its own code;
 * a database that cannot be reached (store.ts, isUnavailable) is `unavailable`; anything else is
 * a bug, `internal`. A failure during
 * the handshake closes the connection whatever its code: there is no session to go on.
 */
export function errorReply(
  state: State,
  error: unknown,
  context: ErrorContext,
): Step {
  let reply: Extract<ServerMessage, { type: "error" }>;
  if (error instanceof ProtocolError) {
    reply = errorMessage(error.code, error.message, {
      ...context,
      ...(error.clientMsgId === undefined ? {} : { clientMsgId: error.clientMsgId }),
    });
  } else if (isUnavailable(error)) {
    reply = errorMessage("unavailable", "the database is unavailable; try again shortly", context);
  } else {
    reply = errorMessage("internal", "the server failed; reconnect", context);
  }
  const closing = CLOSING.has(reply.code) || state.phase !== "open";
  return closing
    ? { state: { phase: "closed" }, replies: [reply], effects: [{ type: "close" }] }
    : { state, replies: [reply], effects: [] };
}

/** The wire form of a stored message. */
export function wire(row: MessageRow): StoredMessage {
  return {
    id: row.id,
    sender: row.sender,
    client_msg_id: row.clientMsgId,
    seq: row.seq,
    nonce: base64.encode(row.nonce),
    ciphertext: base64.encode(row.ciphertext),
    created_at: row.createdAt.toISOString(),
  };
}

/** The wire form of a key offer. */
export function peerKeyMessage(offer: KeyOffer): ServerMessage {
  return {
    type: "peer_key",
    name: offer.name,
    party: offer.party,
    public_key: bytesToHex(offer.publicKey),
    proof: offer.proof,
    ...(offer.rotation ? { rotation: offer.rotation } : {}),
    ...(offer.reset ? { reset: true as const } : {}),
  };
}

/**
 * A history page that fits one frame: `rows` (oldest first) cut to the newest that fit
 * when reading backwards (`fromEnd`), else to the oldest that fit; `has_more` is set when
 * anything was cut. A page always holds at least one message when `rows` has any: one
 * stored message (ciphertext <= MAX_CIPHERTEXT_BYTES) always fits a frame.
 */
export function historyPage(
  rows: MessageRow[],
  hasMore: boolean,
  fromEnd: boolean,
  maxBytes = MAX_FRAME_BYTES,
): Extract<ServerMessage, { type: "history_page" }> {
  const messages = rows.map(wire);
  let size = frameSize({ type: "history_page", messages: [], has_more: true });
  const kept: StoredMessage[] = [];
  const order = fromEnd ? [...messages].reverse() : messages;
  for (const message of order) {
    // Bytes, not UTF-16 units: a client_msg_id may be any text, emoji included.
    const extra = utf8.encode(JSON.stringify(message)).length + (kept.length ? 1 : 0);
    if (size + extra > maxBytes && kept.length) break;
    size += extra;
    kept.push(message);
  }
  if (fromEnd) kept.reverse();
  return { type: "history_page", messages: kept, has_more: hasMore || kept.length < rows.length };
}

const utf8 = new TextEncoder();

const none = (state: State): Step => ({ state, replies: [], effects: [] });

const bye = (reason: string): Step => ({
  state: { phase: "closed" },
  replies: [{ type: "bye", reason }],
  effects: [{ type: "close" }],
});

function merge(first: Step, second: Step): Step {
  return {
    state: second.state,
    replies: [...first.replies, ...second.replies],
    effects: [...first.effects, ...second.effects],
  };
}

/** One step of a connection. Pure: the same state and event give the same result. */
export function step(state: State, event: Event): Step {
  if (state.phase === "closed") return none(state);
  switch (event.type) {
    case "frame": {
      // Every frame read costs, whatever its kind or phase: none is free to repeat.
      const paced = pace(state.rate.bucket, state.rate.refill, event.now, frameCost(event.payload));
      const charged = { ...state, rate: { ...state.rate, bucket: paced.bucket } } as typeof state;
      const out = onFrame(charged, event.payload);
      return paced.waitMs > 0
        ? { ...out, effects: [...out.effects, { type: "pause", ms: paced.waitMs }] }
        : out;
    }
    case "frame_error":
      return errorReply(state, event.error, {});
    case "joined":
      return onJoined(state, event);
    case "peer_key":
      return onPeerKey(state, event.offer);
    case "peer_code":
      return onPeerCode(state, event.code);
    case "code_stored":
      return onCodeStored(state, event.outcome);
    case "presence":
      return onPresence(state, event);
    case "key_bound":
      return onKeyBound(state, event.outcome);
    case "store_outcome": {
      const answered = onStoreOutcome(state, event.clientMsgId, event.outcome);
      return answer(answered.state, event.slot, answered.replies[0]!);
    }
    case "history_rows":
      return onHistoryRows(state, event);
    case "push":
      return onPush(state, event.row);
    case "listener_back":
      return onListenerBack(state);
    case "failed":
      return onFailed(state, event.effect, event.error);
    case "replaced":
      return bye(BYE_REPLACED);
    case "idle":
      return bye("idle");
    case "shutdown":
      return bye("the server is shutting down");
  }
}

/**
 * A frame, by the connection's phase: a key offer while authenticating is checked at once;
 * other frames before the key is proved wait; then the hello, then the session's requests.
 */
function onFrame(state: Exclude<State, { phase: "closed" }>, payload: unknown): Step {
  if (state.phase === "authenticating" && !state.binding && requestType(payload) === "key_offer") {
    return onClaim(state, payload);
  }
  if (state.phase === "joining" || state.phase === "authenticating") {
    return holdEarly(state, payload);
  }
  let message: ClientMessage;
  try {
    message = parseClientMessage(payload);
  } catch (error) {
    return onBadFrame(state, payload, error);
  }
  if (state.phase === "greeting") return onHello(state, message);
  switch (message.type) {
    case "hello":
      return errorReply(state, new ProtocolError("bad_message", "hello comes once, first"), {
        inReplyTo: "hello",
      });
    case "bye":
      return { state: { phase: "closed" }, replies: [], effects: [{ type: "close" }] };
    case "heartbeat":
      return { state, replies: [{ type: "heartbeat" }], effects: [] };
    case "key_offer":
      return checkClaim(state, message);
    case "history":
      return onHistory(state, message);
    case "send":
      return onSend(state, message);
    case "code":
      return onCode(state, message);
  }
}

/** The wire form of a stored `code` frame. */
export function peerCodeMessage(code: CodeOffer): ServerMessage {
  return {
    type: "peer_code",
    name: code.name,
    party: code.party,
    message: code.frame.message,
    ...(code.frame.confirm ? { confirm: code.frame.confirm } : {}),
  };
}

/** A `code` frame from a client that is in: stored (and counted) for the peer to read. */
function onCode(
  state: Extract<State, { phase: "open" }>,
  message: Extract<ClientMessage, { type: "code" }>,
): Step {
  if (state.member.version < CODE_VERSION) {
    return errorReply(
      state,
      new ProtocolError("bad_message", `code frames need protocol version ${CODE_VERSION}`),
      { inReplyTo: "code" },
    );
  }
  return {
    state,
    replies: [],
    effects: [{
      type: "put_code",
      room: state.member.room,
      party: state.member.party,
      frame: {
        message: message.message,
        ...(message.confirm ? { confirm: message.confirm } : {}),
      },
    }],
  };
}

/**
 * The newer of two offers of one party (by `updatedAt`, absent counting as oldest; on a tie
 * the one given second): the join's read and the store's announcements race, so either may
 * come with the older state.
 */
export function newer<T extends { updatedAt?: number }>(
  a: T | undefined,
  b: T | undefined,
): T | undefined {
  if (!a) return b;
  if (!b) return a;
  return (b.updatedAt ?? 0) >= (a.updatedAt ?? 0) ? b : a;
}

/** Keeps `item` in `held` as its party's newest. */
function holdNewest<T extends { party: 0 | 1; updatedAt?: number }>(held: T[], item: T): T[] {
  const same = held.find((h) => h.party === item.party);
  return newer(same, item) === same ? held : [...held.filter((h) => h !== same), item];
}

/**
 * The peer's key offer: held while joining, kept (the newest) while authenticating, relayed
 * once in unless it is older than the one relayed last.
 */
function onPeerKey(state: State, offer: KeyOffer): Step {
  if (state.phase === "joining") {
    return none({ ...state, heldOffers: holdNewest(state.heldOffers, offer) });
  }
  if (state.phase === "authenticating") {
    if (offer.party === state.member.party) return none(state);
    return none({ ...state, peerOffer: newer(state.peerOffer, offer) });
  }
  if (state.phase !== "open" || offer.party === state.member.party) return none(state);
  const member = state.member;
  if ((offer.updatedAt ?? 0) < member.peerKeyAt) return none(state);
  return {
    state: { ...state, member: { ...member, peerKeyAt: offer.updatedAt ?? 0 } },
    replies: [peerKeyMessage(offer)],
    effects: [],
  };
}

/** The peer's `code` frame: relayed to a version-5 client that is in, kept until then. */
function onPeerCode(state: State, code: CodeOffer): Step {
  if (state.phase === "joining") {
    return none({ ...state, heldCodes: holdNewest(state.heldCodes, code) });
  }
  if (state.phase === "authenticating") {
    if (code.party === state.member.party) return none(state);
    return none({ ...state, peerCode: newer(state.peerCode, code) });
  }
  if (
    state.phase !== "open" || code.party === state.member.party ||
    state.member.version < CODE_VERSION || (code.updatedAt ?? 0) < state.member.peerCodeAt
  ) return none(state);
  return {
    state: { ...state, member: { ...state.member, peerCodeAt: code.updatedAt ?? 0 } },
    replies: [peerCodeMessage(code)],
    effects: [],
  };
}

/** A `code` frame stored, or refused: the room made its attempts for now. */
function onCodeStored(state: State, outcome: PutCodeOutcome): Step {
  if (state.phase !== "open" || outcome.kind === "stored") return none(state);
  const minutes = Math.max(1, Math.ceil(outcome.retryAfterMs / 60_000));
  return errorReply(
    state,
    new ProtocolError(
      "too_many_code_attempts",
      "this room has made as many code attempts as it may for now; the next is possible " +
        `in ${minutes} minute${minutes === 1 ? "" : "s"}`,
    ),
    { inReplyTo: "code" },
  );
}

/**
 * A frame before the welcome, or behind the key offer: a client may send before its
 * welcome, or pipeline sends behind its key offer; those frames are handled once it is in,
 * up to a bound (a join can take seconds while the database is away).
 */
function holdEarly(
  state: Extract<State, { phase: "joining" | "authenticating" }>,
  payload: unknown,
): Step {
  // Bounded in count and in bytes: 256 frames of 64 KiB each would be 16 MiB held for a
  // connection that has proved nothing (measured: 96 such connections, 1.4 GB).
  const bytes = state.earlyBytes + utf8.encode(JSON.stringify(payload) ?? "").length;
  if (state.early.length >= MAX_EARLY_FRAMES || bytes > MAX_EARLY_BYTES) {
    return errorReply(
      state,
      new ProtocolError(
        "bad_message",
        `more than ${MAX_EARLY_FRAMES} frames or ${MAX_EARLY_BYTES} bytes before the key ` +
          "offer was accepted; wait for it",
      ),
      {},
    );
  }
  return none({ ...state, early: [...state.early, payload], earlyBytes: bytes });
}

/** A frame that is no valid request: refused, naming the request it claims to be. */
function onBadFrame(
  state: Extract<State, { phase: "greeting" | "open" }>,
  payload: unknown,
  error: unknown,
): Step {
  const inReplyTo = requestType(payload);
  const refused = errorReply(state, error, inReplyTo ? { inReplyTo } : {});
  // A send refused for itself alone (bad_text) is answered in its turn among the sends.
  if (state.phase === "open" && inReplyTo === "send" && refused.state.phase === "open") {
    return answerInTurn(refused.state, refused.replies[0]!);
  }
  return refused;
}

/** The first frame: a hello in this protocol's version starts the join. */
function onHello(state: Extract<State, { phase: "greeting" }>, message: ClientMessage): Step {
  if (message.type !== "hello") {
    return errorReply(
      state,
      new ProtocolError("handshake_required", "the first frame must be hello"),
      {},
    );
  }
  if (message.version < OLDEST_PROTOCOL_VERSION || message.version > PROTOCOL_VERSION) {
    return errorReply(
      state,
      new ProtocolError(
        "unsupported_version",
        `this server speaks versions ${OLDEST_PROTOCOL_VERSION} to ${PROTOCOL_VERSION}`,
      ),
      { inReplyTo: "hello" },
    );
  }
  return {
    state: {
      phase: "joining",
      rate: state.rate,
      name: message.name,
      room: message.room,
      version: message.version,
      held: [],
      heldOffers: [],
      heldCodes: [],
      early: [],
      earlyBytes: 0,
      listenerBack: false,
    },
    replies: [],
    effects: [{ type: "join", room: message.room, name: message.name }],
  };
}

/** A history request: read the page it asks for. */
function onHistory(
  state: Extract<State, { phase: "open" }>,
  message: Extract<ClientMessage, { type: "history" }>,
): Step {
  const query: HistoryQuery = {
    ...(message.before === undefined ? {} : { before: message.before }),
    ...(message.after === undefined ? {} : { after: message.after }),
    limit: message.limit ?? 50,
  };
  return {
    state,
    replies: [],
    effects: [{ type: "read_history", room: state.member.room, query, purpose: "request" }],
  };
}

/**
 * A send: stored in its slot (answers go out in the order of the sends), or refused in its
 * turn when its ciphertext is too large.
 */
function onSend(
  state: Extract<State, { phase: "open" }>,
  message: Extract<ClientMessage, { type: "send" }>,
): Step {
  const member = state.member;
  const ciphertext = base64.decode(message.ciphertext);
  if (ciphertext.length > MAX_CIPHERTEXT_BYTES) {
    return answerInTurn(
      state,
      errorMessage(
        "message_too_large",
        `a ciphertext of ${ciphertext.length} bytes; at most ${MAX_CIPHERTEXT_BYTES}`,
        { inReplyTo: "send", clientMsgId: message.client_msg_id },
      ),
    );
  }
  const slot = member.nextSlot;
  return {
    state: {
      ...state,
      member: {
        ...member,
        answers: [...member.answers, { slot, reply: null }],
        nextSlot: slot + 1,
      },
    },
    replies: [],
    effects: [{
      type: "store",
      room: member.room,
      sender: member.name,
      clientMsgId: message.client_msg_id,
      seq: message.seq,
      nonce: base64.decode(message.nonce),
      ciphertext,
      slot,
    }],
  };
}

type KeyOfferMessage = Extract<ClientMessage, { type: "key_offer" }>;

/** A key offer while authenticating: parsed here (it never waits with the early frames). */
function onClaim(state: Extract<State, { phase: "authenticating" }>, payload: unknown): Step {
  let message: ClientMessage;
  try {
    message = parseClientMessage(payload);
  } catch (error) {
    return errorReply(state, error, { inReplyTo: "key_offer" });
  }
  return checkClaim(state, message as KeyOfferMessage);
}

/**
 * Checks a key offer's proofs: the relayed one (room, party), possession over this
 * connection's challenge, and a rotation's signature by the old key; then asks the store
 * to bind. Any proof that fails is `bad_proof` (and closes a connection not yet in).
 */
function checkClaim(
  state: Extract<State, { phase: "authenticating" | "open" }>,
  message: KeyOfferMessage,
): Step {
  const member = state.member;
  const problem = !verifyKeyOffer(member.room, member.party, message)
    ? "the proof does not show possession of this key for this room and party"
    : !verifyPossession(
        possessionContext(member.room, member.name, member.challenge),
        member.party,
        message.public_key,
        message.possession,
      )
    ? "the possession proof does not answer this connection's challenge"
    : message.rotation &&
        !verifyRotation(member.room, member.party, message.public_key, message.rotation)
    ? "the key change is not signed by the key it names"
    : null;
  if (problem) {
    return errorReply(state, new ProtocolError("bad_proof", problem), { inReplyTo: "key_offer" });
  }
  const change: KeyChange = {
    ...(message.rotation ? { rotation: message.rotation } : {}),
    ...(message.reset ? { reset: true as const } : {}),
  };
  return {
    state: state.phase === "authenticating" ? { ...state, binding: true } : state,
    replies: [],
    effects: [{
      type: "bind_key",
      room: member.room,
      party: member.party,
      publicKey: hexToBytes(message.public_key),
      proof: message.proof,
      change,
    }],
  };
}

/** The store bound the name (the connection is in) or refused: the name has another key. */
function onKeyBound(state: State, outcome: BindOutcome): Step {
  if (state.phase !== "authenticating" && state.phase !== "open") return none(state);
  if (outcome.kind === "mismatch") {
    const settled = state.phase === "authenticating" ? { ...state, binding: false } : state;
    return errorReply(
      settled,
      new ProtocolError(
        "key_mismatch",
        `the name ${state.member.name} in this room belongs to another key ` +
          `(${bytesToHex(outcome.boundKey).slice(0, 16)}...); prove that one, sign the change ` +
          "with it, or reset the name (your peer is told)",
      ),
      { inReplyTo: "key_offer" },
    );
  }
  if (state.phase === "open") return none(state);
  const { member } = state;
  const sent = {
    ...member,
    peerKeyAt: state.peerOffer?.updatedAt ?? 0,
    peerCodeAt: state.peerCode?.updatedAt ?? 0,
  };
  let out: Step = {
    state: { phase: "open", rate: state.rate, member: sent },
    replies: [
      ...(state.peerOffer ? [peerKeyMessage(state.peerOffer)] : []),
      ...(state.peerCode && member.version >= CODE_VERSION
        ? [peerCodeMessage(state.peerCode)]
        : []),
    ],
    effects: [{ type: "enter", room: member.room, name: member.name, party: member.party }],
  };
  // A listener gap while joining: catch up first, so that the pushes held meanwhile wait
  // behind what the gap lost instead of moving `delivered` past it.
  if (state.listenerBack) out = merge(out, onListenerBack(out.state));
  for (const row of state.held) out = merge(out, onPush(out.state, row));
  for (const payload of state.early) {
    if (out.state.phase !== "open") break;
    out = merge(out, onFrame(out.state, payload));
  }
  return out;
}

/** The request type a payload claims, for naming it in an error. */
function requestType(payload: unknown): RequestType | undefined {
  const type = (payload as { type?: unknown } | null)?.type;
  return type === "hello" || type === "key_offer" || type === "send" || type === "history" ||
      type === "code"
    ? type
    : undefined;
}

function onJoined(state: State, event: Extract<Event, { type: "joined" }>): Step {
  if (state.phase !== "joining") return none(state);
  const { join, service, offers, codes, challenge } = event;
  if (!join.ok) {
    return errorReply(
      state,
      new ProtocolError("room_full", "this room already has its two parties"),
      { inReplyTo: "hello" },
    );
  }
  const member: Member = {
    name: state.name,
    room: state.room,
    party: join.party,
    delivered: join.lastId,
    catchingUp: false,
    catchUpAgain: false,
    held: [],
    answers: [],
    nextSlot: 0,
    challenge,
    version: state.version,
    peer: join.peer,
    peerKeyAt: 0,
    peerCodeAt: 0,
  };
  // Nothing but the welcome until the key offer proves the name's key: the connection
  // replaces no older one, and what it sent meanwhile waits.
  return {
    state: {
      phase: "authenticating",
      rate: state.rate,
      member,
      peerOffer: newer(
        offers.find((o) => o.party !== join.party),
        state.heldOffers.find((o) => o.party !== join.party),
      ),
      peerCode: newer(
        codes.find((c) => c.party !== join.party),
        state.heldCodes.find((c) => c.party !== join.party),
      ),
      binding: false,
      held: state.held,
      early: state.early,
      earlyBytes: state.earlyBytes,
      listenerBack: state.listenerBack,
    },
    replies: [{
      type: "welcome",
      version: state.version,
      party: join.party,
      peer: join.peer,
      last_id: join.lastId,
      service,
      last_seq: join.lastSeq,
      challenge,
    }],
    effects: [],
  };
}

function onStoreOutcome(state: State, clientMsgId: string, outcome: StoreOutcome): Step {
  if (state.phase !== "open") return none(state);
  const context: ErrorContext = { inReplyTo: "send", clientMsgId };
  switch (outcome.kind) {
    case "stored":
      return {
        state,
        replies: [{
          type: "stored",
          client_msg_id: clientMsgId,
          seq: outcome.message.seq,
          id: outcome.message.id,
          created_at: outcome.message.createdAt.toISOString(),
        }],
        effects: [],
      };
    case "out_of_order":
      return {
        state,
        replies: [
          errorMessage(
            "out_of_order",
            `this sender's next message is seq ${outcome.expectedSeq}`,
            { ...context, expectedSeq: outcome.expectedSeq },
          ),
        ],
        effects: [],
      };
    case "unstorable":
      return {
        state,
        replies: [
          errorMessage("unstorable", `the database refused it: ${outcome.reason}`, context),
        ],
        effects: [],
      };
  }
}

/**
 * The peer's presence, told to a version-4 client that is in; a peer without a name (none
 * there, none known) is not told of. The client's own name is never its peer.
 */
function onPresence(state: State, event: Extract<Event, { type: "presence" }>): Step {
  if (state.phase !== "open" || state.member.version < PRESENCE_VERSION) return none(state);
  const name = event.name ?? state.member.peer;
  if (name === null || name === state.member.name) return none(state);
  const member = name === state.member.peer ? state.member : { ...state.member, peer: name };
  return {
    state: { ...state, member },
    replies: [{ type: "presence", name, present: event.present }],
    effects: [],
  };
}

/** Answers a send that needs no store at once, in its turn. */
function answerInTurn(state: State, reply: ServerMessage): Step {
  if (state.phase !== "open") return { state, replies: [reply], effects: [] };
  const member = state.member;
  const slot = member.nextSlot;
  return answer(
    {
      ...state,
      member: {
        ...member,
        answers: [...member.answers, { slot, reply: null }],
        nextSlot: slot + 1,
      },
    },
    slot,
    reply,
  );
}

/** Fills a send's answer, then sends every answer whose turn has come. */
function answer(state: State, slot: number, reply: ServerMessage): Step {
  if (state.phase !== "open") return none(state);
  const answers = state.member.answers.map((a) => a.slot === slot ? { slot, reply } : a);
  const replies: ServerMessage[] = [];
  while (answers.length && answers[0]!.reply) replies.push(answers.shift()!.reply!);
  return { state: { ...state, member: { ...state.member, answers } }, replies, effects: [] };
}

function onPush(state: State, row: MessageRow): Step {
  if (state.phase === "joining" || state.phase === "authenticating") {
    return none({ ...state, held: [...state.held, row] });
  }
  if (state.phase !== "open") return none(state);
  const member = state.member;
  if (member.catchingUp) {
    return none({ ...state, member: { ...member, held: [...member.held, row] } });
  }
  if (row.id <= member.delivered) return none(state);
  const next: State = { ...state, member: { ...member, delivered: row.id } };
  return row.sender === member.name
    ? none(next)
    : { state: next, replies: [{ type: "message", message: wire(row) }], effects: [] };
}

/** Frames a client may send before its key offer is accepted (they wait until then). */
export const MAX_EARLY_FRAMES = 256;

/** Bytes (as JSON) the frames waiting for the key offer may hold together. */
export const MAX_EARLY_BYTES = 256 * 1024;

/** How long a failed catch-up waits before it reads again. */
export const CATCH_UP_RETRY_MS = 500;

function catchUpRead(member: Member): Extract<Effect, { type: "read_history" }> {
  return {
    type: "read_history",
    room: member.room,
    query: { after: member.delivered, limit: MAX_HISTORY_LIMIT },
    purpose: "catch_up",
  };
}

function onListenerBack(state: State): Step {
  if (state.phase === "joining" || state.phase === "authenticating") {
    return none({ ...state, listenerBack: true });
  }
  if (state.phase !== "open") return none(state);
  const member = state.member;
  if (member.catchingUp) return none({ ...state, member: { ...member, catchUpAgain: true } });
  const next: Member = { ...member, catchingUp: true, catchUpAgain: false };
  return { state: { ...state, member: next }, replies: [], effects: [catchUpRead(next)] };
}

function onHistoryRows(
  state: State,
  event: Extract<Event, { type: "history_rows" }>,
): Step {
  if (state.phase !== "open") return none(state);
  if (event.purpose === "request") {
    const fromEnd = event.query.after === undefined;
    return { state, replies: [historyPage(event.rows, event.hasMore, fromEnd)], effects: [] };
  }
  // A catch-up page: each message pushed as if live, then the next page or the end.
  let member: Member = state.member;
  const replies: ServerMessage[] = [];
  for (const row of event.rows) {
    if (row.id <= member.delivered) continue;
    member = { ...member, delivered: row.id };
    if (row.sender !== member.name) replies.push({ type: "message", message: wire(row) });
  }
  if (event.hasMore || member.catchUpAgain) {
    member = { ...member, catchUpAgain: false };
    return { state: { ...state, member }, replies, effects: [catchUpRead(member)] };
  }
  const held = member.held;
  let out: Step = {
    state: { ...state, member: { ...member, catchingUp: false, held: [] } },
    replies,
    effects: [],
  };
  for (const row of held) out = merge(out, onPush(out.state, row));
  return out;
}

function onFailed(state: State, effect: Effect, error: unknown): Step {
  switch (effect.type) {
    case "join":
      return errorReply(state, error, { inReplyTo: "hello" });
    case "bind_key":
      return errorReply(
        state.phase === "authenticating" ? { ...state, binding: false } : state,
        error,
        { inReplyTo: "key_offer" },
      );
    case "store": {
      const refused = errorReply(state, error, {
        inReplyTo: "send",
        clientMsgId: effect.clientMsgId,
      });
      return refused.state.phase === "open"
        ? answer(refused.state, effect.slot, refused.replies[0]!)
        : refused;
    }
    case "read_history":
      if (effect.purpose === "request") {
        return errorReply(state, error, { inReplyTo: "history" });
      }
      // A catch-up is read again until it succeeds: pushes stay held meanwhile, since
      // delivering a newer one first would skip what the catch-up has yet to read.
      if (state.phase !== "open") return none(state);
      return {
        state,
        replies: [],
        effects: [{ ...catchUpRead(state.member), delayMs: CATCH_UP_RETRY_MS }],
      };
    case "put_code":
      return errorReply(state, error, { inReplyTo: "code" });
    case "enter":
    case "pause":
    case "close":
      return errorReply(state, error, {});
  }
}
