/**
 * The chat wire protocol, version 4 (docs/chat-protocol.md): frames of a 4-byte
 * big-endian length and that many bytes of UTF-8 JSON, each an object with a `type`.
 * Pure: framing, parsing and validation only, shared by server and client.
 *
 * @module
 */
import { z } from "zod";

/**
 * The protocol version a hello names. Version 2 added per-sender sequence numbers (`seq`),
 * the service identity and `last_seq` in `welcome`, and named per-request errors. Version 3
 * binds a name in a room to its key: the welcome carries a fresh `challenge`, and a
 * connection proves possession of the name's key over it (`key_offer.possession`) before
 * anything else it sends is handled. Version 4 adds `presence`: the server tells a client
 * when its peer is connected and when it leaves. Version 5 adds `code` and `peer_code`: the
 * server relays the two parties' CPace messages, so that a code they share confirms their
 * keys (docs/chat-protocol.md, "Meeting by a code").
 */
export const PROTOCOL_VERSION = 5;
/**
 * The oldest version a server still serves: a version-3 client gets a version-3 welcome and
 * no `presence` frames (it would refuse a frame type it does not know).
 */
export const OLDEST_PROTOCOL_VERSION = 3;
/** The first version whose clients are sent `presence`. */
export const PRESENCE_VERSION = 4;
/** The first version whose clients may send `code` and are sent `peer_code`. */
export const CODE_VERSION = 5;
/**
 * The longest CPace message a `code` frame carries, in bytes: `lv_cat(Y, AD)` with a
 * 32-byte share and a 33-byte public key as AD is 67; the rest is room to grow.
 */
export const MAX_CODE_MESSAGE_BYTES = 128;
/** A code confirmation's tag, in bytes: HMAC-SHA-512. */
export const CODE_TAG_BYTES = 64;
/**
 * How often a client sends a `heartbeat` while connected, in ms. A server's idle timeout
 * shorter than twice this closes healthy clients (and tells their peers they left).
 */
export const HEARTBEAT_MS = 20_000;
/** The largest frame payload, in bytes. */
export const MAX_FRAME_BYTES = 65_536;
/** The largest ciphertext a send may carry, in bytes (before base64). */
export const MAX_CIPHERTEXT_BYTES = 32_768;
/** The most messages one history page holds. */
export const MAX_HISTORY_LIMIT = 200;

const hex66 = z.string().regex(/^0[23][0-9a-f]{64}$/, "a compressed secp256k1 point, 66 hex");
const base64 = (min: number, max: number) =>
  z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, "base64").refine((s) => {
    if (s.length % 4 !== 0) return false;
    const bytes = (s.length / 4) * 3 - (s.endsWith("==") ? 2 : s.endsWith("=") ? 1 : 0);
    return bytes >= min && bytes <= max;
  }, `base64 of ${min} to ${max} bytes`);

/** Party names: what people call themselves in a room. */
export const NAME = /^[A-Za-z0-9._-]{1,32}$/;
/** Room ids. */
export const ROOM = /^[A-Za-z0-9._~-]{1,64}$/;

const proof = z.strictObject({ t: hex66, s: z.string().regex(/^[0-9a-f]{64}$/) });
const messageId = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
/** A sender's sequence number: 1 for its first message in a room, then one more each. */
const seq = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
const clientMsgId = z.string().min(1).max(64);
const codeMessage = base64(1, MAX_CODE_MESSAGE_BYTES);
const codeConfirm = z.strictObject({
  tag: base64(CODE_TAG_BYTES, CODE_TAG_BYTES),
  answers: base64(1, MAX_CODE_MESSAGE_BYTES),
});

/**
 * Whether both database engines can store `text` as it is: PostgreSQL refuses U+0000 in
 * text (SQLSTATE 22021), and a lone surrogate cannot be encoded as UTF-8 (it would be
 * stored as U+FFFD, so the text read back would differ from the text sent).
 */
export function storable(text: string): boolean {
  return !text.includes("\u0000") && text.isWellFormed();
}

/**
 * A `code` frame's content (version 5), as it travels and as the server stores it: base64
 * fields (docs/chat-protocol.md, "Meeting by a code").
 */
export interface CodeWire {
  /** The CPace message, `lv_cat(Y, AD)`: 1 to {@link MAX_CODE_MESSAGE_BYTES} bytes. */
  message: string;
  /**
   * The confirmation of the peer message `answers`, once the party has one: `tag` is
   * {@link CODE_TAG_BYTES} bytes.
   */
  confirm?: { tag: string; answers: string };
}

/** A stored message as the server hands it out. */
export const StoredMessage = z.strictObject({
  id: messageId,
  sender: z.string().regex(NAME),
  client_msg_id: clientMsgId,
  /** The sender's sequence number: a sender's messages are stored in this order. */
  seq,
  nonce: base64(12, 12),
  ciphertext: base64(16, MAX_CIPHERTEXT_BYTES),
  created_at: z.iso.datetime(),
});
export type StoredMessage = z.infer<typeof StoredMessage>;

/** Frames a client sends. */
export const ClientMessage = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.literal("hello"),
    version: z.number().int(),
    name: z.string().regex(NAME, "1-32 characters of A-Z a-z 0-9 . _ -"),
    room: z.string().regex(ROOM, "1-64 characters of A-Z a-z 0-9 . _ ~ -"),
  }),
  z.strictObject({
    type: z.literal("key_offer"),
    public_key: hex66,
    /** Possession of the key for the room and party: relayed to the peer, who checks it. */
    proof,
    /** Possession over this connection's challenge (the welcome's): fresh, not replayable. */
    possession: proof,
    /**
     * A key change signed by the key the name holds now: a proof of possession of that key
     * bound to the new one (crypto.ts, `rotationContext`). Relayed to the peer.
     */
    rotation: z.strictObject({ public_key: hex66, proof }).optional(),
    /**
     * Take the name over with a new key without the old one (a lost key store). The peer is
     * told, and trusts the new key only when its user accepts it.
     */
    reset: z.literal(true).optional(),
  }),
  z.strictObject({
    type: z.literal("send"),
    client_msg_id: clientMsgId,
    seq,
    nonce: base64(12, 12),
    // Bounded here by the frame only: a ciphertext over MAX_CIPHERTEXT_BYTES is refused for
    // this message alone (message_too_large), not as a bad frame that closes the connection,
    // since a client resends its outbox on every reconnection and one such message would
    // otherwise hold everything after it back for ever.
    ciphertext: base64(16, MAX_FRAME_BYTES),
  }),
  z.strictObject({
    type: z.literal("history"),
    before: messageId.optional(),
    after: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    limit: z.number().int().min(1).max(MAX_HISTORY_LIMIT).optional(),
  }),
  /**
   * Version 5: this party's CPace message for the code run (`lv_cat(Y, AD)`, AD its public
   * key) and, once it has the peer's, its confirmation of the key they share: the tag and
   * the peer message it answers. The server keeps the newest per party and relays it.
   */
  z.strictObject({
    type: z.literal("code"),
    message: codeMessage,
    confirm: codeConfirm.optional(),
  }),
  z.strictObject({ type: z.literal("heartbeat") }),
  z.strictObject({ type: z.literal("bye") }),
]);
export type ClientMessage = z.infer<typeof ClientMessage>;

/**
 * Stable error codes; `retryable` says whether sending the same frame again may work.
 * Each code means one thing (docs/chat-protocol.md, "Errors"); no failure is reported
 * under a code that means something else.
 */
export const ERROR_CODES = {
  bad_frame: false,
  frame_too_large: false,
  bad_message: false,
  unsupported_version: false,
  handshake_required: false,
  room_full: false,
  bad_proof: false,
  key_mismatch: false,
  message_too_large: false,
  bad_text: false,
  unstorable: false,
  too_many_code_attempts: false,
  out_of_order: true,
  too_many_connections: true,
  too_many_rooms: true,
  unavailable: true,
  shutting_down: true,
  internal: true,
} as const;
export type ErrorCode = keyof typeof ERROR_CODES;

/** The requests an error can answer (`in_reply_to`). */
export const REQUEST_TYPES = ["hello", "key_offer", "send", "history", "code"] as const;
export type RequestType = (typeof REQUEST_TYPES)[number];

/**
 * The `bye` reason when a newer connection with the same name joined the room: the older
 * client stops rather than reconnecting, or two copies of one name would push each other
 * out for ever.
 */
export const BYE_REPLACED = "replaced by a newer connection with your name";

/** Frames the server sends. */
export const ServerMessage = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.literal("welcome"),
    /** The hello's version, echoed (a server serves versions 3 to 5). */
    version: z.number().int().min(OLDEST_PROTOCOL_VERSION).max(PROTOCOL_VERSION),
    party: z.union([z.literal(0), z.literal(1)]),
    peer: z.string().regex(NAME).nullable(),
    last_id: z.number().int().min(0),
    /** The service this server belongs to: one id for every instance on one database. */
    service: z.uuid(),
    /** The highest `seq` stored from this name in this room (0: none yet). */
    last_seq: z.number().int().min(0),
    /**
     * 32 random bytes (64 hex) for this connection: the `key_offer` proves possession of
     * the name's key over it before anything else is handled.
     */
    challenge: z.string().regex(/^[0-9a-f]{64}$/),
  }),
  z.strictObject({
    type: z.literal("peer_key"),
    name: z.string().regex(NAME),
    party: z.union([z.literal(0), z.literal(1)]),
    public_key: hex66,
    proof,
    /** The key change was signed by the key before (check it against the one you trust). */
    rotation: z.strictObject({ public_key: hex66, proof }).optional(),
    /** The name was taken over with a new key without the old one. */
    reset: z.literal(true).optional(),
  }),
  z.strictObject({
    type: z.literal("stored"),
    client_msg_id: clientMsgId,
    seq,
    id: messageId,
    created_at: z.iso.datetime(),
  }),
  z.strictObject({ type: z.literal("message"), message: StoredMessage }),
  z.strictObject({
    type: z.literal("history_page"),
    messages: z.array(StoredMessage),
    has_more: z.boolean(),
  }),
  z.strictObject({
    type: z.literal("error"),
    code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]),
    message: z.string(),
    retryable: z.boolean(),
    /** The request this error answers; absent for errors about the connection itself. */
    in_reply_to: z.enum(REQUEST_TYPES).optional(),
    /** For a `send`: the message it concerns (that message alone). */
    client_msg_id: z.string().optional(),
    /** With `out_of_order`: the `seq` the server stores next from this sender. */
    expected_seq: seq.optional(),
  }),
  /**
   * Version 4: whether the peer (`name`) has a connection in the room that proved its key,
   * on this server instance. Sent once the client is in (the state then, when a peer is
   * known), then at each change: `present: false` when the peer's last connection ended.
   */
  z.strictObject({
    type: z.literal("presence"),
    name: z.string().regex(NAME),
    present: z.boolean(),
  }),
  /**
   * Version 5: the peer's newest `code` frame, as it sent it (`name`, `party`: whose). Sent
   * once this client is in, when the peer has one stored, then at each new one.
   */
  z.strictObject({
    type: z.literal("peer_code"),
    name: z.string().regex(NAME),
    party: z.union([z.literal(0), z.literal(1)]),
    message: codeMessage,
    confirm: codeConfirm.optional(),
  }),
  z.strictObject({ type: z.literal("heartbeat") }),
  z.strictObject({ type: z.literal("bye"), reason: z.string() }),
]);
export type ServerMessage = z.infer<typeof ServerMessage>;

/**
 * A protocol violation, with the code to answer it with. With `clientMsgId` it concerns
 * that one message (the connection stays); without, the connection.
 */
export class ProtocolError extends Error {
  override name = "ProtocolError";
  readonly code: ErrorCode;
  readonly clientMsgId: string | undefined;
  constructor(code: ErrorCode, message: string, clientMsgId?: string) {
    super(message);
    this.code = code;
    this.clientMsgId = clientMsgId;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A message of either direction as {@link encodeFrame} takes it: a JSON object whose `type`
 * names it. The fields of each type are specified in docs/chat-protocol.md; the receiver
 * checks them (`parseClientMessage`, `parseServerMessage` here).
 */
export interface WireMessage {
  /** The message's type: `hello`, `send`, `welcome`, `error`, ... */
  readonly type: string;
  /** Its other fields, by the protocol's names (`client_msg_id`, `last_id`, ...). */
  readonly [field: string]: unknown;
}

/**
 * Encodes one message as a frame: its JSON in UTF-8 behind a 4-byte big-endian length.
 *
 * @param message A client or server message (its fields are not checked here).
 * @returns The frame, 4 bytes longer than the JSON.
 * @throws {ProtocolError} `frame_too_large` when the JSON is over MAX_FRAME_BYTES
 *   (65,536 bytes).
 *
 * @example
 * ```ts
 * import { encodeFrame, PROTOCOL_VERSION } from "@duet/chat";
 * const frame = encodeFrame({ type: "hello", version: PROTOCOL_VERSION, name: "alice", room: "tea" });
 * new DataView(frame.buffer).getUint32(0) === frame.length - 4; // true
 * ```
 */
export function encodeFrame(message: WireMessage): Uint8Array {
  const payload = encoder.encode(JSON.stringify(message));
  if (payload.length > MAX_FRAME_BYTES) {
    throw new ProtocolError("frame_too_large", `frame of ${payload.length} bytes`);
  }
  const frame = new Uint8Array(4 + payload.length);
  new DataView(frame.buffer).setUint32(0, payload.length);
  frame.set(payload, 4);
  return frame;
}

/** The largest buffer a frame decoder keeps while it holds no bytes. */
const KEPT_DECODER_BYTES = 4_096;

/**
 * Splits a byte stream into frame payloads. After it throws, the connection is beyond
 * repair: the caller answers with an error frame and closes.
 */
export class FrameDecoder {
  /** Bytes received and not yet taken, at `#start` to `#end` of a buffer that grows. */
  #buffer = new Uint8Array(0);
  #start = 0;
  #end = 0;

  /**
   * Feeds bytes; returns the complete payloads, parsed as JSON. Each byte is copied once
   * (amortized): a frame fed a byte at a time costs its length, not its length squared.
   */
  push(chunk: Uint8Array): unknown[] {
    this.#append(chunk);
    const out: unknown[] = [];
    while (this.#end - this.#start >= 4) {
      const length = new DataView(this.#buffer.buffer, this.#start, 4).getUint32(0);
      if (length === 0) throw new ProtocolError("bad_frame", "empty frame");
      if (length > MAX_FRAME_BYTES) {
        throw new ProtocolError(
          "frame_too_large",
          `frame of ${length} bytes, the limit is ${MAX_FRAME_BYTES}`,
        );
      }
      if (this.#end - this.#start - 4 < length) break;
      const payload = this.#buffer.subarray(this.#start + 4, this.#start + 4 + length);
      this.#start += 4 + length;
      let text: string;
      try {
        text = decoder.decode(payload);
      } catch {
        throw new ProtocolError("bad_frame", "payload is not UTF-8");
      }
      try {
        out.push(JSON.parse(text));
      } catch {
        throw new ProtocolError("bad_frame", "payload is not JSON");
      }
    }
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
      // A buffer grown for one large frame is not kept for the rest of a quiet connection.
      if (this.#buffer.length > KEPT_DECODER_BYTES) this.#buffer = new Uint8Array(0);
    }
    return out;
  }

  #append(chunk: Uint8Array): void {
    const pending = this.#end - this.#start;
    if (this.#end + chunk.length > this.#buffer.length) {
      // Move what is pending to the front; if that would leave the buffer over half full,
      // into one twice as large, so that each byte is moved a bounded number of times.
      const needed = pending + chunk.length;
      if (needed <= this.#buffer.length / 2) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
      } else {
        const grown = new Uint8Array(Math.max(this.#buffer.length * 2, 256, needed));
        grown.set(this.#buffer.subarray(this.#start, this.#end));
        this.#buffer = grown;
      }
      this.#start = 0;
      this.#end = pending;
    }
    this.#buffer.set(chunk, this.#end);
    this.#end += chunk.length;
  }

  /** Bytes of an unfinished frame. */
  get pendingBytes(): number {
    return this.#end - this.#start;
  }
}

function describe(error: z.ZodError): string {
  const issue = error.issues[0]!;
  const where = issue.path.length ? issue.path.join(".") : "message";
  return `${where}: ${issue.message}`;
}

/**
 * Validates a client frame's payload. Throws ProtocolError: `bad_message` for a frame
 * that fails its schema, `bad_text` (naming the message) for a `send` whose
 * client_msg_id no database can store as it is (see {@link storable}).
 */
export function parseClientMessage(value: unknown): ClientMessage {
  const result = ClientMessage.safeParse(value);
  if (!result.success) throw new ProtocolError("bad_message", describe(result.error));
  const message = result.data;
  if (message.type === "send" && !storable(message.client_msg_id)) {
    throw new ProtocolError(
      "bad_text",
      "client_msg_id holds U+0000 or a lone surrogate, which cannot be stored",
      message.client_msg_id,
    );
  }
  return message;
}

/** Validates a server frame's payload (the client's side). */
export function parseServerMessage(value: unknown): ServerMessage {
  const result = ServerMessage.safeParse(value);
  if (!result.success) throw new ProtocolError("bad_message", describe(result.error));
  return result.data;
}

/** What an error frame may name besides its code and text. */
export interface ErrorContext {
  inReplyTo?: RequestType;
  clientMsgId?: string;
  expectedSeq?: number;
}

/** An error frame for `code`; `retryable` comes from {@link ERROR_CODES}. */
export function errorMessage(
  code: ErrorCode,
  message: string,
  context: ErrorContext = {},
): Extract<ServerMessage, { type: "error" }> {
  return {
    type: "error",
    code,
    message,
    retryable: ERROR_CODES[code],
    ...(context.inReplyTo === undefined ? {} : { in_reply_to: context.inReplyTo }),
    ...(context.clientMsgId === undefined ? {} : { client_msg_id: context.clientMsgId }),
    ...(context.expectedSeq === undefined ? {} : { expected_seq: context.expectedSeq }),
  };
}

/** The size of `message` as a frame payload, in bytes. */
export function frameSize(message: ClientMessage | ServerMessage): number {
  return encoder.encode(JSON.stringify(message)).length;
}
