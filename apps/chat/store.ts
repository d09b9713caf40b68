/**
 * The chat server's storage: one store over two SQL engines with the same migrations,
 * PostgreSQL through porsager's `postgres` client and the embedded PGlite. The server
 * keeps rooms, the two parties of each, their public key offers, and messages as
 * ciphertext; never a key or a plaintext.
 *
 * @module
 */
import postgres from "postgres";
import { PGlite } from "@electric-sql/pglite";
import { unpackInitialState } from "./pglite_initial.ts";
import { base64 } from "./crypto.ts";
import { bytesToHex } from "@noble/hashes/utils.js";
import { type CodeAttemptRule, takeCodeAttempt } from "./limits.ts";
import type { CodeWire } from "./protocol.ts";

/** What the store needs from an SQL engine. */
export interface SqlDriver {
  /** Runs one statement with `$1`-style parameters. */
  query<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
  /** Runs `fn` in a transaction; its queries go through the given driver. */
  transaction<T>(fn: (tx: Pick<SqlDriver, "query">) => Promise<T>): Promise<T>;
  /**
   * Listens on `channel`. `onListen` runs each time the listener is (re)connected, so
   * the caller can re-read what it may have missed while it was not.
   */
  listen(channel: string, onNotify: (payload: string) => void, onListen: () => void): Promise<void>;
  /**
   * Opens (or checks, reopening it if it was lost) a database session of its own that
   * reports `applicationName` (at most 63 bytes) as its `application_name`, and keeps it
   * open until {@link SqlDriver.close}: other processes on the database see this one alive
   * while it is (`pg_stat_activity`), and see it gone as soon as the process dies. Resolves
   * with the session's backend pid: another pid than the last means the session was lost
   * meanwhile. Absent where no other process can share the database (PGlite).
   *
   * @throws {Error} what the database throws when the session cannot be opened.
   */
  session?(applicationName: string): Promise<number>;
  /** Closes the connections (and the listener); the driver is not used after. */
  close(): Promise<void>;
}

/**
 * The schema, one migration per entry, applied in order and recorded. An entry's statements
 * end with `;` at the end of a line; `$$`-quoted bodies (functions) are kept whole.
 */
export const MIGRATIONS: string[] = [
  `CREATE TABLE rooms (
     room text PRIMARY KEY,
     created_at timestamptz NOT NULL DEFAULT now()
   );
   CREATE TABLE parties (
     room text NOT NULL REFERENCES rooms (room),
     party smallint NOT NULL CHECK (party IN (0, 1)),
     name text NOT NULL,
     public_key bytea,
     proof jsonb,
     key_updated_at timestamptz,
     joined_at timestamptz NOT NULL DEFAULT now(),
     PRIMARY KEY (room, party),
     UNIQUE (room, name)
   );
   CREATE TABLE messages (
     id bigserial PRIMARY KEY,
     room text NOT NULL REFERENCES rooms (room),
     sender text NOT NULL,
     client_msg_id text NOT NULL,
     nonce bytea NOT NULL,
     ciphertext bytea NOT NULL,
     created_at timestamptz NOT NULL DEFAULT now(),
     UNIQUE (room, sender, client_msg_id)
   );
   -- History pages walk one room by id in either direction.
   CREATE INDEX messages_room_id ON messages (room, id);`,
  `ALTER TABLE messages ADD COLUMN sender_seq bigint;
   UPDATE messages SET sender_seq = numbered.seq
   FROM (
     SELECT id, row_number() OVER (PARTITION BY room, sender ORDER BY id) AS seq FROM messages
   ) AS numbered
   WHERE messages.id = numbered.id;
   ALTER TABLE messages ALTER COLUMN sender_seq SET NOT NULL;
   -- Also the index behind "the sender's highest seq in the room".
   CREATE UNIQUE INDEX messages_room_sender_seq ON messages (room, sender, sender_seq);
   CREATE TABLE chat_service (
     id uuid PRIMARY KEY,
     single boolean NOT NULL DEFAULT true UNIQUE CHECK (single),
     created_at timestamptz NOT NULL DEFAULT now()
   );
   INSERT INTO chat_service (id) VALUES (gen_random_uuid());
   CREATE FUNCTION chat_store_messages(
     p_room text[], p_sender text[], p_client_msg_id text[], p_seq bigint[],
     p_nonce text[], p_ciphertext text[], p_channel text, p_inline_bytes integer
   ) RETURNS TABLE (
     ord integer, status text, expected_seq bigint, msg_id bigint, msg_seq bigint,
     msg_nonce bytea, msg_ciphertext bytea, msg_created_at timestamptz
   ) LANGUAGE plpgsql AS $$
   DECLARE
     locked text[];
     highest bigint;
     found_id text;
     body bytea;
     in_order boolean;
     inserted bigint;
     ins_room text[];
     ins_sender text[];
     ins_seq bigint[];
     ins_id bigint[];
     ins_created_at timestamptz[];
   BEGIN
     -- Every batch locks its rooms in one order, so batches sharing rooms queue rather than
     -- deadlock; the locks last until commit and ids are drawn under them, so within a room
     -- ids increase in commit order, whichever instance stores.
     SELECT coalesce(array_agg(l.room), '{}') INTO locked
     FROM (SELECT r.room FROM rooms r WHERE r.room = ANY (p_room) ORDER BY r.room FOR UPDATE) l;
     -- The usual batch, every message new and next in its sender's order, goes in one
     -- statement (measured: 256 messages in 11-13 ms, the loop 16). It gives the loop's
     -- answers; a client id stored already undoes it and leaves the batch to the loop.
     SELECT bool_and(coalesce(
       b.room = ANY (locked) AND b.seq = coalesce(h.highest, 0) + b.rank, false
     ))
     INTO in_order
     FROM (
       SELECT u.room, u.sender, u.seq,
         row_number() OVER (PARTITION BY u.room, u.sender ORDER BY u.ord) AS rank
       FROM unnest(p_room, p_sender, p_seq) WITH ORDINALITY AS u (room, sender, seq, ord)
     ) b
     LEFT JOIN (
       SELECT g.room, g.sender, (
         SELECT m.sender_seq FROM messages m WHERE m.room = g.room AND m.sender = g.sender
         ORDER BY m.sender_seq DESC LIMIT 1
       ) AS highest
       FROM (SELECT DISTINCT u.room, u.sender FROM unnest(p_room, p_sender) AS u (room, sender)) g
     ) h ON h.room = b.room AND h.sender = b.sender;
     IF in_order THEN
       BEGIN
         WITH ins AS (
           INSERT INTO messages AS m (room, sender, client_msg_id, sender_seq, nonce, ciphertext)
           SELECT u.room, u.sender, u.client_msg_id, u.seq, decode(u.nonce, 'base64'),
             decode(u.ciphertext, 'base64')
           FROM unnest(p_room, p_sender, p_client_msg_id, p_seq, p_nonce, p_ciphertext)
             WITH ORDINALITY AS u (room, sender, client_msg_id, seq, nonce, ciphertext, ord)
           ORDER BY u.ord
           ON CONFLICT (room, sender, client_msg_id) DO NOTHING
           RETURNING m.*
         )
         -- Announced as inserted, so in id order.
         SELECT count(*), array_agg(n.room), array_agg(n.sender), array_agg(n.sender_seq),
           array_agg(n.id), array_agg(n.created_at)
         INTO inserted, ins_room, ins_sender, ins_seq, ins_id, ins_created_at
         FROM (
           SELECT ins.*, pg_notify(p_channel, json_build_object(
             'room', ins.room, 'id', ins.id, 'seq', ins.sender_seq, 'sender', ins.sender,
             'client_msg_id', ins.client_msg_id, 'nonce', encode(ins.nonce, 'base64'),
             'ciphertext', CASE WHEN octet_length(ins.ciphertext) <= p_inline_bytes
               THEN translate(encode(ins.ciphertext, 'base64'), E'\\n', '') END,
             'created_at', ins.created_at)::text) IS NULL AS notified
           FROM ins
         ) n;
         IF inserted < coalesce(array_length(p_room, 1), 0) THEN
           RAISE EXCEPTION USING ERRCODE = 'CH001';
         END IF;
         RETURN QUERY
           SELECT u.ord::integer, 'stored', NULL::bigint, i.id, i.seq, NULL::bytea, NULL::bytea,
             i.created_at
           FROM unnest(p_room, p_sender, p_seq) WITH ORDINALITY AS u (room, sender, seq, ord)
           JOIN unnest(ins_room, ins_sender, ins_seq, ins_id, ins_created_at)
             AS i (room, sender, seq, id, created_at)
             ON i.room = u.room AND i.sender = u.sender AND i.seq = u.seq
           ORDER BY u.ord;
         RETURN;
       EXCEPTION WHEN SQLSTATE 'CH001' THEN
         -- Undone, notifications included; the loop below decides.
       END;
     END IF;
     FOR i IN 1 .. coalesce(array_length(p_room, 1), 0) LOOP
       ord := i;
       status := NULL;
       expected_seq := NULL;
       msg_id := NULL;
       msg_seq := NULL;
       msg_nonce := NULL;
       msg_ciphertext := NULL;
       msg_created_at := NULL;
       IF NOT p_room[i] = ANY (locked) THEN
         status := 'no_room';
         RETURN NEXT;
         CONTINUE;
       END IF;
       -- Only this index gives this order, so the planner cannot pick the client id
       -- index's (room, sender) prefix and scan the sender's rows, as it may for max()
       -- while the table has no statistics.
       SELECT m.sender_seq INTO highest FROM messages m
       WHERE m.room = p_room[i] AND m.sender = p_sender[i]
       ORDER BY m.sender_seq DESC LIMIT 1;
       highest := coalesce(highest, 0);
       IF p_seq[i] IS NOT DISTINCT FROM highest + 1 THEN
         body := decode(p_ciphertext[i], 'base64');
         -- A stored client id makes a conflict here, answered as a duplicate below.
         INSERT INTO messages AS m (room, sender, client_msg_id, sender_seq, nonce, ciphertext)
         VALUES (
           p_room[i], p_sender[i], p_client_msg_id[i], p_seq[i], decode(p_nonce[i], 'base64'), body
         )
         ON CONFLICT (room, sender, client_msg_id) DO NOTHING
         RETURNING m.id, m.created_at INTO msg_id, msg_created_at;
         IF FOUND THEN
           PERFORM pg_notify(p_channel, json_build_object(
             'room', p_room[i], 'id', msg_id, 'seq', p_seq[i], 'sender', p_sender[i],
             'client_msg_id', p_client_msg_id[i], 'nonce', p_nonce[i],
             'ciphertext', CASE WHEN octet_length(body) <= p_inline_bytes THEN p_ciphertext[i] END,
             'created_at', msg_created_at)::text);
           status := 'stored';
           msg_seq := p_seq[i];
           RETURN NEXT;
           CONTINUE;
         END IF;
       END IF;
       -- The first client id from this one on: a range in this order only the client id
       -- index gives, for the same reason as above (an equality lookup may scan the seqs).
       SELECT m.id, m.sender_seq, m.client_msg_id, m.nonce, m.ciphertext, m.created_at
       INTO msg_id, msg_seq, found_id, msg_nonce, msg_ciphertext, msg_created_at
       FROM messages m
       WHERE m.room = p_room[i] AND m.sender = p_sender[i] AND m.client_msg_id >= p_client_msg_id[i]
       ORDER BY m.client_msg_id LIMIT 1;
       IF found_id = p_client_msg_id[i] THEN
         status := 'duplicate';
       ELSE
         status := 'out_of_order';
         expected_seq := highest + 1;
         msg_id := NULL;
         msg_seq := NULL;
         msg_nonce := NULL;
         msg_ciphertext := NULL;
         msg_created_at := NULL;
       END IF;
       RETURN NEXT;
     END LOOP;
   END
   $$;`,
  // Rooms expire after a time without a message, a join or a connected party
  // (ChatStore.expireRooms); joins and the server's sweep mark them active here, messages
  // count through their own created_at, so the store's hot path writes nothing more. Rooms
  // that exist already count as active from now.
  `ALTER TABLE rooms ADD COLUMN last_active_at timestamptz NOT NULL DEFAULT now();
   CREATE INDEX rooms_last_active_at ON rooms (last_active_at);`,
  // Presence across instances (ChatStore.writePresence): a row per (room, name, instance)
  // while the instance has a connection of the name in the room that proved its key. A row
  // counts only while its instance's session is alive (ChatStore.presentIn), so the rows of
  // an instance that died stop counting by themselves; ChatStore.reapPresence deletes them.
  `CREATE TABLE chat_presence (
     room text NOT NULL,
     name text NOT NULL,
     instance text NOT NULL,
     since timestamptz NOT NULL DEFAULT now(),
     PRIMARY KEY (room, name, instance)
   );
   CREATE INDEX chat_presence_instance ON chat_presence (instance);`,
  // Meeting by a code (ChatStore.putCode): each party's newest `code` frame, forgotten when
  // its key changes, and the room's attempts in the current window (limits.ts,
  // takeCodeAttempt).
  `ALTER TABLE parties ADD COLUMN code_frame jsonb;
   ALTER TABLE parties ADD COLUMN code_updated_at timestamptz;
   ALTER TABLE rooms ADD COLUMN code_attempts integer NOT NULL DEFAULT 0;
   ALTER TABLE rooms ADD COLUMN code_window_start timestamptz;`,
];

/** A stored message. */
export interface MessageRow {
  /** Unique in the database; within a room, ids increase in the order messages were stored. */
  id: number;
  /** The room's id (protocol.ts, ROOM). */
  room: string;
  /** The sender's name in the room (protocol.ts, NAME). */
  sender: string;
  /** The sender's id for the message (a UUID from our client): a retry carries the same. */
  clientMsgId: string;
  /** The sender's sequence number in the room: 1, 2, 3, ... in the order the sender wrote. */
  seq: number;
  /** The AES-GCM nonce, 12 bytes. */
  nonce: Uint8Array;
  /** The AES-GCM ciphertext with its 16-byte tag: 16 to MAX_CIPHERTEXT_BYTES bytes. */
  ciphertext: Uint8Array;
  /** When the database stored it (its clock). */
  createdAt: Date;
}

/** A party's public key offer, as stored. */
export interface KeyOffer {
  /** The party that offered it: 0 joined the room first, 1 second. */
  party: 0 | 1;
  /** The party's name, which the key is bound to. */
  name: string;
  /** The compressed secp256k1 public key, 33 bytes. */
  publicKey: Uint8Array;
  /** Its proof of possession for the room and party (a dlog proof; `t`, `s` as hex). */
  proof: { t: string; s: string };
  /** The change to this key was signed by the key before (its public key and proof). */
  rotation?: KeyChange["rotation"];
  /** The name was taken over with this key without the one before. */
  reset?: true;
  /**
   * When it was bound (ms since the epoch, the database's clock): of two offers of one party
   * read at different times, the later bound is the newer. Absent: not known (oldest).
   */
  updatedAt?: number;
}

/**
 * How a key offer may replace the key a name is bound to: signed by that key (`rotation`,
 * checked by the caller), or taken over without it (`reset`); neither: it may not.
 */
export interface KeyChange {
  /** The old key (66 hex) and its proof of possession bound to the new key. */
  rotation?: { public_key: string; proof: { t: string; s: string } };
  /** A take-over without the old key (as after a lost key store): the peer is told. */
  reset?: true;
}

/** A party's `code` frame as it travels, and as it is stored. */
export type { CodeWire };

/** A party's newest `code` frame, as stored. */
export interface CodeOffer {
  /** The party that sent it. */
  party: 0 | 1;
  /** Its name in the room. */
  name: string;
  /** The frame's content. */
  frame: CodeWire;
  /** When it was stored (ms since the epoch, the database's clock); absent: not known (oldest). */
  updatedAt?: number;
}

/** The outcome of {@link ChatStore.putCode}. */
export type PutCodeOutcome =
  | { kind: "stored" }
  /** The room has made its attempts for the window; the next is possible in `retryAfterMs`. */
  | { kind: "limited"; retryAfterMs: number };

/** The outcome of {@link ChatStore.bindKey}. */
export type BindOutcome =
  | { kind: "bound"; changed: boolean }
  | { kind: "mismatch"; boundKey: Uint8Array };

/**
 * What the channel announces, in commit order. A message event carries the message when its
 * ciphertext is at most 5,000 bytes; otherwise only the id, to read with {@link ChatStore.message}.
 */
export type StoreEvent =
  | { kind: "message"; room: string; id: number; message?: MessageRow }
  | { kind: "key"; room: string; party: 0 | 1 }
  /** A party stored a new `code` frame ({@link ChatStore.putCode}). */
  | { kind: "code"; room: string; party: 0 | 1 }
  /**
   * The presence rows of `instance` in `room` changed ({@link ChatStore.writePresence}), or
   * were deleted because the instance died ({@link ChatStore.reapPresence}).
   */
  | { kind: "presence"; room: string; instance: string };

/**
 * The outcome of joining a room. `lastId` is the room's newest message id (0 if none),
 * `lastSeq` the joining name's highest seq in the room (0 if none): its next send is
 * `lastSeq + 1`. `created` is true when this join created the room (absent: not said).
 * `no_room`: the room does not exist and the join was not to create it.
 */
export type Join =
  | {
    ok: true;
    party: 0 | 1;
    peer: string | null;
    lastId: number;
    lastSeq: number;
    created?: boolean;
  }
  | { ok: false; reason: "room_full"; parties: string[] }
  | { ok: false; reason: "no_room" };

/**
 * The outcome of {@link ChatStore.insertMessage}, one per message.
 *
 * - `stored`: the message is stored; `duplicate` says this (room, sender, client message id)
 *   was stored before, and `message` is then that first copy (its seq and bytes, whatever
 *   the retry carried).
 * - `out_of_order`: nothing stored, because `seq` was not the sender's highest stored seq in
 *   the room plus one; `expectedSeq` is that number.
 * - `unstorable`: the database refused this message (its room does not exist, or its content:
 *   SQLSTATE class 22 or 23, say); `reason` is the database's message. Retrying will not help.
 */
export type StoreOutcome =
  | { kind: "stored"; message: MessageRow; duplicate: boolean }
  | { kind: "out_of_order"; expectedSeq: number }
  | { kind: "unstorable"; reason: string };

/**
 * The database could not be reached or the connection was lost (see {@link isUnavailable}).
 * A message sent meanwhile may or may not be stored: retry it with the same client message id.
 */
export class StoreUnavailable extends Error {
  constructor(cause: unknown) {
    super(`The database is unavailable: ${cause instanceof Error ? cause.message : cause}`, {
      cause,
    });
    this.name = "StoreUnavailable";
  }
}

/**
 * Whether an error from a driver means the database is unreachable or the connection was
 * lost, rather than that it refused a statement: SQLSTATE class 08 (connection) or 53
 * (insufficient resources), 57P01-57P03 (shutting down, cannot connect now), or the
 * client's own connection codes (`ECONNREFUSED`, `CONNECTION_CLOSED`, ...).
 */
export function isUnavailable(error: unknown): boolean {
  if (error instanceof StoreUnavailable) return true;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string") {
    return /^(08|53)[0-9A-Z]{3}$|^57P0[123]$/.test(code) || CONNECTION_CODES.has(code);
  }
  return error instanceof Deno.errors.ConnectionRefused ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.TimedOut;
}

/** Codes porsager's client (and Node's sockets under it) give connection failures. */
const CONNECTION_CODES = new Set([
  "CONNECTION_ENDED",
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/**
 * The chat store: rooms, their two parties with the keys their names are bound to, and
 * their messages, in PostgreSQL (or PGlite) through an {@link SqlDriver}; the NOTIFY channel
 * announces each message and key offer to every server instance on the database.
 *
 * @example
 * ```ts ignore
 * import { ChatStore, openPglite } from "@duet/chat";
 *
 * const store = new ChatStore(await openPglite(await Deno.makeTempDir()));
 * await store.migrate();
 * console.log(store.serviceId); // the id clients key their conversations by
 * await store.close();
 * ```
 */
export class ChatStore {
  readonly #sql: SqlDriver;
  /** Sends not yet in a batch, per room, in arrival order. */
  readonly #waiting = new Map<string, PendingInsert[]>();
  /** Rooms with a batch in flight. */
  readonly #busyRooms = new Set<string>();
  #inFlight = 0;
  #serviceId: string | undefined;
  /** The NOTIFY channel; instances that deliver to each other share it. */
  readonly channel: string;
  /**
   * This store's name among the instances on its database: its presence rows carry it, and
   * its database session reports it as `application_name` (SqlDriver.session). Random, made
   * at construction: `duet-chat-presence ` and 16 hex digits.
   */
  readonly instance: string = `duet-chat-presence ${
    bytesToHex(crypto.getRandomValues(new Uint8Array(8)))
  }`;
  /** The backend pid of the instance's session, once opened. */
  #sessionPid: number | undefined;

  /**
   * A store over `driver`, which it owns from now on ({@link ChatStore.close} closes it).
   * Nothing is read before {@link ChatStore.migrate}.
   *
   * @param channel The NOTIFY channel: instances that deliver to each other share it.
   */
  constructor(driver: SqlDriver, channel = "duet_chat_messages") {
    this.#sql = driver;
    this.channel = channel;
  }

  /**
   * This database's identity: a UUID made once, by the migration that created it, and the
   * same for every instance on the database. Clients can tell from it that the seqs they hold
   * belong to this database and not to one that replaced it.
   *
   * @throws {Error} before {@link migrate} has resolved.
   */
  get serviceId(): string {
    if (this.#serviceId === undefined) {
      throw new Error("ChatStore.serviceId is known once migrate() has resolved");
    }
    return this.#serviceId;
  }

  /**
   * Applies the migrations not yet applied and loads {@link serviceId}; resolves with the
   * number applied. Safe to run from several instances at once.
   */
  async migrate(): Promise<number> {
    const { count, serviceId } = await this.#sql.transaction(async (tx) => {
      // One instance migrates at a time; the others wait here, then find nothing to do.
      await tx.query("SELECT pg_advisory_xact_lock(784112)");
      await tx.query(
        `CREATE TABLE IF NOT EXISTS chat_migrations (
           version integer PRIMARY KEY,
           applied_at timestamptz NOT NULL DEFAULT now()
         )`,
      );
      const done = await tx.query<{ version: number }>("SELECT version FROM chat_migrations");
      const applied = new Set(done.map((row) => Number(row.version)));
      let count = 0;
      for (const [index, migration] of MIGRATIONS.entries()) {
        const version = index + 1;
        if (applied.has(version)) continue;
        for (const statement of statements(migration)) await tx.query(statement);
        await tx.query("INSERT INTO chat_migrations (version) VALUES ($1)", [version]);
        count++;
      }
      const [service] = await tx.query<{ id: string }>("SELECT id FROM chat_service");
      if (!service) throw new Error("chat_service holds no row: the database was altered by hand");
      return { count, serviceId: String(service.id) };
    });
    this.#serviceId = serviceId;
    return count;
  }

  /**
   * Joins `name` to `room`: the same name gets its party back, a new name the free party,
   * a third name is refused. The room is created if missing, unless `options.create` is
   * false (then the answer is `no_room`), and marked active (see {@link expireRooms}).
   *
   * @throws {Error} if the room keeps vanishing between two statements (an expiry sweep
   *   racing the join, more than a few times in a row).
   */
  async join(room: string, name: string, options: { create?: boolean } = {}): Promise<Join> {
    const create = options.create ?? true;
    return await this.#sql.transaction(async (tx) => {
      // The room's row lock, taken here and held to the commit, serializes joins to one
      // room: two new names arriving together get 0 and 1.
      let created = false;
      for (let attempt = 0;; attempt++) {
        const touched = await tx.query(
          "UPDATE rooms SET last_active_at = now() WHERE room = $1 RETURNING room",
          [room],
        );
        if (touched.length) break;
        if (!create) return { ok: false, reason: "no_room" } as const;
        const inserted = await tx.query(
          "INSERT INTO rooms (room) VALUES ($1) ON CONFLICT DO NOTHING RETURNING room",
          [room],
        );
        if (inserted.length) {
          created = true;
          break;
        }
        // Created by another join since the update looked: lock it as above.
        if (attempt >= 5) throw new Error(`room ${JSON.stringify(room)} keeps vanishing`);
      }
      const parties = await tx.query<{ party: number; name: string }>(
        "SELECT party, name FROM parties WHERE room = $1 ORDER BY party",
        [room],
      );
      let mine = parties.find((p) => p.name === name)?.party;
      if (mine === undefined) {
        if (parties.length >= 2) {
          return { ok: false, reason: "room_full", parties: parties.map((p) => p.name) } as const;
        }
        mine = parties.some((p) => Number(p.party) === 0) ? 1 : 0;
        await tx.query("INSERT INTO parties (room, party, name) VALUES ($1, $2, $3)", [
          room,
          mine,
          name,
        ]);
      }
      const peer = parties.find((p) => p.name !== name)?.name ?? null;
      const [last] = await tx.query<{ id: string | number | null; seq: string | number | null }>(
        `SELECT (SELECT max(id) FROM messages WHERE room = $1) AS id,
                (SELECT max(sender_seq) FROM messages WHERE room = $1 AND sender = $2) AS seq`,
        [room, name],
      );
      return {
        ok: true,
        party: Number(mine) as 0 | 1,
        peer,
        lastId: Number(last?.id ?? 0),
        lastSeq: Number(last?.seq ?? 0),
        created,
      } as const;
    });
  }

  /**
   * Marks rooms active now (the server's rooms with a connected party, before each
   * {@link expireRooms}: a conversation held open for weeks is not expired under it).
   * Rooms that do not exist are skipped.
   */
  async touchRooms(rooms: string[]): Promise<void> {
    for (let start = 0; start < rooms.length; start += TOUCH_BATCH) {
      await this.#sql.query(
        "UPDATE rooms SET last_active_at = now() WHERE room = ANY($1::text[])",
        [rooms.slice(start, start + TOUCH_BATCH)],
      );
    }
  }

  /**
   * Deletes rooms idle for `idleMs` milliseconds or more, by the database's clock, with
   * their parties and messages: no join since (nor {@link touchRooms}) and no message
   * stored since. Works in transactions of up to `batch` rooms, each room under its row
   * lock (rooms locked by a join or a store right now are skipped: they are in use), and
   * checked again under it, so a message or join committed before the lock keeps its room.
   * A room kept for a message newer than its last join is marked active as of that
   * message. Safe to run from several instances at once.
   *
   * @param idleMs how long a room must have been idle, in ms (> 0; 30 days by default in
   *   the server).
   * @returns the number of rooms deleted.
   * @throws {StoreUnavailable}-like driver errors when the database is away (nothing of an
   *   unfinished batch is deleted).
   */
  async expireRooms(idleMs: number, batch = 500): Promise<number> {
    let total = 0;
    for (;;) {
      const { deleted, more } = await this.#sql.transaction(async (tx) => {
        const cutoff = "now() - $2::float8 * interval '1 millisecond'";
        const candidates = await tx.query<{ room: string }>(
          `SELECT room FROM rooms WHERE last_active_at < now() - $1::float8 * interval '1 millisecond'
           ORDER BY last_active_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
          [idleMs, batch],
        );
        if (!candidates.length) return { deleted: 0, more: false };
        // A statement of its own: under READ COMMITTED it sees what committed before the
        // locks were taken. The newest message of a room is its highest id (one index step).
        const rows = await tx.query<{ room: string; expired: boolean; last_message: unknown }>(
          `SELECT r.room, r.last_active_at < ${cutoff} AND coalesce(l.created_at < ${cutoff}, true)
                    AS expired,
                  l.created_at AS last_message
           FROM rooms r
           LEFT JOIN LATERAL (
             SELECT m.created_at FROM messages m WHERE m.room = r.room ORDER BY m.id DESC LIMIT 1
           ) l ON true
           WHERE r.room = ANY($1::text[])`,
          [candidates.map((row) => row.room), idleMs],
        );
        const doomed = rows.filter((row) => row.expired).map((row) => row.room);
        const kept = rows.filter((row) => !row.expired).map((row) => row.room);
        if (doomed.length) {
          for (const table of ["messages", "parties", "rooms"]) {
            await tx.query(`DELETE FROM ${table} WHERE room = ANY($1::text[])`, [doomed]);
          }
        }
        if (kept.length) {
          // Kept for a newer message: active as of it, so no later batch looks at it again.
          await tx.query(
            `UPDATE rooms r SET last_active_at = greatest(r.last_active_at, (
               SELECT m.created_at FROM messages m WHERE m.room = r.room ORDER BY m.id DESC LIMIT 1
             )) WHERE r.room = ANY($1::text[])`,
            [kept],
          );
        }
        return { deleted: doomed.length, more: candidates.length === batch };
      });
      total += deleted;
      if (!more) return total;
    }
  }

  /**
   * Binds a party's name in a room to a key, or confirms the binding. The first key proved
   * for a name binds it; the same key again changes nothing; another key replaces it only
   * when `change` says how (`rotation`: signed by the bound key, which the caller has
   * verified; `reset`: a take-over the peer is told of). A new binding is announced on the
   * channel. Checked and written under the party's row lock, so two connections cannot
   * both win.
   *
   * @returns `bound` (`changed`: the key is new for this name), or `mismatch` with the
   *   key the name is bound to.
   */
  async bindKey(
    room: string,
    party: 0 | 1,
    publicKey: Uint8Array,
    proof: { t: string; s: string },
    change: KeyChange = {},
  ): Promise<BindOutcome> {
    return await this.#sql.transaction(async (tx) => {
      const [row] = await tx.query<{ public_key: Uint8Array | null }>(
        "SELECT public_key FROM parties WHERE room = $1 AND party = $2 FOR UPDATE",
        [room, party],
      );
      const bound = row?.public_key ? new Uint8Array(row.public_key) : null;
      if (bound && bytesToHex(bound) === bytesToHex(publicKey)) {
        return { kind: "bound", changed: false };
      }
      if (bound) {
        const rotatesBound = change.rotation !== undefined &&
          change.rotation.public_key === bytesToHex(bound);
        if (!rotatesBound && !change.reset) return { kind: "mismatch", boundKey: bound };
      }
      // The offer's proof material: the relayed proof and, for a changed key, how it changed
      // (the peer checks a rotation against the key it trusts).
      const material = {
        ...proof,
        ...(bound && change.rotation ? { rotation: change.rotation } : {}),
        ...(bound && change.reset ? { reset: true } : {}),
      };
      // A code frame was made for the key before: the party's next run makes a new one.
      await tx.query(
        `UPDATE parties SET public_key = $3, proof = $4, key_updated_at = clock_timestamp(),
           code_frame = NULL
         WHERE room = $1 AND party = $2`,
        [room, party, publicKey, JSON.stringify(material)],
      );
      await tx.query("SELECT pg_notify($1, $2)", [
        this.channel,
        JSON.stringify({ room, key: party }),
      ]);
      return { kind: "bound", changed: true };
    });
  }

  /** The key offers stored for a room. */
  async keyOffers(room: string): Promise<KeyOffer[]> {
    const rows = await this.#sql.query<
      { party: number; name: string; public_key: Uint8Array; proof: unknown; updated_ms: unknown }
    >(
      `SELECT party, name, public_key, proof, extract(epoch FROM key_updated_at) * 1000 AS updated_ms
       FROM parties WHERE room = $1 AND public_key IS NOT NULL ORDER BY party`,
      [room],
    );
    return rows.map((row) => {
      const { t, s, rotation, reset } =
        (typeof row.proof === "string" ? JSON.parse(row.proof) : row.proof) as
          & KeyOffer["proof"]
          & Pick<KeyOffer, "rotation" | "reset">;
      return {
        party: Number(row.party) as 0 | 1,
        name: row.name,
        publicKey: new Uint8Array(row.public_key),
        proof: { t, s },
        ...(rotation ? { rotation } : {}),
        ...(reset ? { reset } : {}),
        ...(row.updated_ms === null ? {} : { updatedAt: Number(row.updated_ms) }),
      };
    });
  }

  /**
   * Stores a party's newest `code` frame and announces it on the channel. A frame with a new
   * CPace message while the other party has one stored is a new attempt (a pair's first
   * meeting is one): the room may make `rule.perWindow` of them in each window (limits.ts,
   * takeCodeAttempt, on the database's clock); past that it is refused and nothing is stored.
   * The same message again (a confirmation added, a reconnection) is no new attempt, nor is
   * a new one while the other party has none (nothing can answer it, so no guess is tested). Under the room's row lock, so attempts from two instances are counted once
   * each.
   *
   * @returns `stored`, or `limited` with the time until the window ends.
   */
  async putCode(
    room: string,
    party: 0 | 1,
    frame: CodeWire,
    rule: CodeAttemptRule,
  ): Promise<PutCodeOutcome> {
    return await this.#sql.transaction(async (tx) => {
      const [row] = await tx.query<
        {
          count: number;
          start_ms: unknown;
          now_ms: unknown;
          code_frame: unknown;
          peer_has_code: boolean | null;
        }
      >(
        `SELECT r.code_attempts AS count,
                extract(epoch FROM r.code_window_start) * 1000 AS start_ms,
                extract(epoch FROM now()) * 1000 AS now_ms, p.code_frame,
                (SELECT q.code_frame IS NOT NULL FROM parties q
                 WHERE q.room = r.room AND q.party = 1 - p.party) AS peer_has_code
         FROM rooms r JOIN parties p ON p.room = r.room AND p.party = $2
         WHERE r.room = $1 FOR UPDATE OF r`,
        [room, party],
      );
      if (!row) throw new Error(`no party ${party} in the room`);
      const stored =
        (typeof row.code_frame === "string" ? JSON.parse(row.code_frame) : row.code_frame) as
          | CodeWire
          | null;
      // An attempt is a new message that the other party's can answer: one sent while the
      // room holds no message of the other party's tests no guess (a party waiting alone may
      // restart as often as it likes), and when that one comes, it is the attempt.
      if (stored?.message !== frame.message && row.peer_has_code === true) {
        const taken = takeCodeAttempt(
          {
            count: Number(row.count),
            windowStartMs: row.start_ms === null ? null : Number(row.start_ms),
          },
          Number(row.now_ms),
          rule,
        );
        if (!taken.ok) return { kind: "limited", retryAfterMs: taken.retryAfterMs };
        await tx.query(
          `UPDATE rooms SET code_attempts = $2,
             code_window_start = to_timestamp($3::double precision / 1000)
           WHERE room = $1`,
          [room, taken.attempts.count, taken.attempts.windowStartMs],
        );
      }
      await tx.query(
        `UPDATE parties SET code_frame = $3, code_updated_at = clock_timestamp()
         WHERE room = $1 AND party = $2`,
        [
          room,
          party,
          JSON.stringify(frame),
        ],
      );
      await tx.query("SELECT pg_notify($1, $2)", [
        this.channel,
        JSON.stringify({ room, code: party }),
      ]);
      return { kind: "stored" };
    });
  }

  /** The newest `code` frame of each party of a room that has one. */
  async codeOffers(room: string): Promise<CodeOffer[]> {
    const rows = await this.#sql.query<
      { party: number; name: string; code_frame: unknown; updated_ms: unknown }
    >(
      `SELECT party, name, code_frame, extract(epoch FROM code_updated_at) * 1000 AS updated_ms
       FROM parties WHERE room = $1 AND code_frame IS NOT NULL ORDER BY party`,
      [room],
    );
    return rows.map((row) => ({
      party: Number(row.party) as 0 | 1,
      name: row.name,
      frame:
        (typeof row.code_frame === "string"
          ? JSON.parse(row.code_frame)
          : row.code_frame) as CodeWire,
      ...(row.updated_ms === null ? {} : { updatedAt: Number(row.updated_ms) }),
    }));
  }

  /**
   * Stores a message once, in its sender's order. Checked in this order: a (room, sender,
   * client message id) stored before answers `stored` with `duplicate: true` and the first
   * copy, whatever `seq` the retry carries; otherwise `seq` must be the sender's highest
   * stored seq in the room plus one (1 for a first message), or the answer is
   * `out_of_order`. A message whose room does not exist, or whose content the database
   * refuses, is `unstorable`; the messages sent along with it are not affected. The NOTIFY
   * goes out with the commit, so every instance (this one included) delivers it from there.
   *
   * Sends are grouped (see #pump) into one call of `chat_store_messages` (migration 2), one
   * round trip in autocommit for the check, the insert and the notification of up to
   * {@link MAX_BATCH} messages (measured: a transaction of BEGIN, INSERT, NOTIFY, COMMIT
   * held a room to ~600 messages/s). The notification carries the message itself when it
   * fits in NOTIFY's 8,000-byte payload, so listeners need not read it back.
   *
   * @param seq the sender's sequence number for this message in this room: 1, 2, 3, ...
   *   A value that is not a safe integer is never the expected one.
   * @throws {StoreUnavailable} only when the database is unreachable or the connection was
   *   lost; the message may then be stored or not (a retry with the same client message id
   *   is safe).
   */
  insertMessage(
    room: string,
    sender: string,
    clientMsgId: string,
    seq: number,
    nonce: Uint8Array,
    ciphertext: Uint8Array,
  ): Promise<StoreOutcome> {
    return new Promise((resolve, reject) => {
      const item = { room, sender, clientMsgId, seq, nonce, ciphertext, resolve, reject };
      const waiting = this.#waiting.get(room);
      if (waiting) waiting.push(item);
      else this.#waiting.set(room, [item]);
      this.#pump();
    });
  }

  /**
   * Group commit: at most {@link BATCHES_IN_FLIGHT} batches run at once; sends that arrive
   * meanwhile wait and go together in a next one (up to {@link MAX_BATCH}). Alone, a send
   * costs one round trip; under load, one round trip stores many. A room is in one batch at
   * a time, so this instance's batches never wait for each other's room locks and a
   * sender's sends are checked in the order they were made.
   */
  #pump(): void {
    while (this.#inFlight < BATCHES_IN_FLIGHT) {
      const batch: PendingInsert[] = [];
      const rooms: string[] = [];
      for (const [room, waiting] of this.#waiting) {
        if (batch.length >= MAX_BATCH) break;
        if (this.#busyRooms.has(room)) continue;
        batch.push(...waiting.splice(0, MAX_BATCH - batch.length));
        if (!waiting.length) this.#waiting.delete(room);
        this.#busyRooms.add(room);
        rooms.push(room);
      }
      if (!batch.length) return;
      this.#inFlight++;
      this.#storeBatch(batch)
        .catch((error) => {
          // Settled items ignore this; the others may or may not be stored.
          for (const item of batch) item.reject(error);
        })
        .finally(() => {
          for (const room of rooms) this.#busyRooms.delete(room);
          this.#inFlight--;
          this.#pump();
        });
    }
  }

  /**
   * Settles each item of `batch`. Rejects only when the database is unavailable; a batch
   * the database refuses for another reason is retried one message at a time, so that only
   * the message at fault is answered `unstorable`.
   */
  async #storeBatch(batch: PendingInsert[]): Promise<void> {
    let rows: (BatchRow | undefined)[] | undefined;
    try {
      rows = await this.#callStore(batch);
    } catch (error) {
      if (isUnavailable(error)) throw new StoreUnavailable(error);
      if (batch.length === 1) {
        batch[0]!.resolve(unstorable(error));
        return;
      }
    }
    if (rows) {
      for (const [index, item] of batch.entries()) item.resolve(outcome(item, rows[index]));
      return;
    }
    // The failed statement stored nothing, and this batch still holds its rooms: storing
    // the items alone, in order, gives each sender the outcomes the batch would have.
    for (const item of batch) {
      try {
        const [row] = await this.#callStore([item]);
        item.resolve(outcome(item, row));
      } catch (error) {
        if (isUnavailable(error)) throw new StoreUnavailable(error);
        item.resolve(unstorable(error));
      }
    }
  }

  /** One call of chat_store_messages: one result row per item, in item order. */
  async #callStore(batch: PendingInsert[]): Promise<(BatchRow | undefined)[]> {
    const rows = await this.#sql.query<BatchRow>(
      `SELECT * FROM chat_store_messages(
         $1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7, $8)`,
      [
        batch.map((item) => item.room),
        batch.map((item) => item.sender),
        batch.map((item) => item.clientMsgId),
        // Text, as the other arrays: both clients pass text arrays through unchanged.
        batch.map((item) => (Number.isSafeInteger(item.seq) ? String(item.seq) : null)),
        batch.map((item) => base64.encode(item.nonce)),
        batch.map((item) => base64.encode(item.ciphertext)),
        this.channel,
        INLINE_BYTES,
      ],
    );
    const byOrdinal: (BatchRow | undefined)[] = [];
    for (const row of rows) byOrdinal[Number(row.ord) - 1] = row;
    return byOrdinal;
  }

  /** One message by id. */
  async message(id: number): Promise<MessageRow | undefined> {
    const [row] = await this.#sql.query<RawMessage>(
      `SELECT ${COLUMNS} FROM messages WHERE id = $1`,
      [id],
    );
    return row ? toMessage(row) : undefined;
  }

  /**
   * A page of a room's history, oldest first: the newest `limit` before `before` (or
   * overall), or the oldest `limit` after `after`. `hasMore` says whether the page was cut.
   */
  async history(
    room: string,
    options: { before?: number; after?: number; limit: number },
  ): Promise<{ messages: MessageRow[]; hasMore: boolean }> {
    const params: unknown[] = [room, options.limit + 1];
    let rows: RawMessage[];
    if (options.after !== undefined) {
      params.push(options.after);
      const below = options.before === undefined ? "" : ` AND id < $${params.push(options.before)}`;
      rows = await this.#sql.query<RawMessage>(
        `SELECT ${COLUMNS} FROM messages WHERE room = $1 AND id > $3${below} ORDER BY id ASC LIMIT $2`,
        params,
      );
    } else {
      const below = options.before === undefined ? "" : ` AND id < $${params.push(options.before)}`;
      rows = await this.#sql.query<RawMessage>(
        `SELECT ${COLUMNS} FROM messages WHERE room = $1${below} ORDER BY id DESC LIMIT $2`,
        params,
      );
      rows.reverse();
    }
    const hasMore = rows.length > options.limit;
    if (hasMore) {
      if (options.after !== undefined) rows.pop();
      else rows.shift();
    }
    return { messages: rows.map(toMessage), hasMore };
  }

  /**
   * Opens, or checks and reopens, the session that shows this instance alive to the others
   * on the database ({@link SqlDriver.session}; on an engine no other process shares, this
   * process's live stores count instead). Call it before the first
   * {@link ChatStore.writePresence}, and now and then after.
   *
   * @returns true when the session is new (the first call, or it was lost and is back):
   *   meanwhile, others may have taken this instance for dead and deleted its rows, so
   *   they are to be written again.
   * @throws {StoreUnavailable} when the database is away.
   */
  async holdSession(): Promise<boolean> {
    LIVE_HERE.add(this.instance);
    if (!this.#sql.session) {
      const first = this.#sessionPid === undefined;
      this.#sessionPid = 0;
      return first;
    }
    const pid = await this.#sql.session(this.instance).catch((error) => {
      throw isUnavailable(error) ? new StoreUnavailable(error) : error;
    });
    const renewed = pid !== this.#sessionPid;
    this.#sessionPid = pid;
    return renewed;
  }

  /**
   * Makes this instance's presence rows what `rows` say (a row for each (room, name) with
   * `present: true`, none for each with `false`), in one statement, and announces each room whose rows changed
   * on the channel (a {@link StoreEvent} of kind `presence`); with `announceAll`, every room
   * of a present row too, changed or not.
   *
   * @throws {StoreUnavailable} when the database is away (the rows may or may not be written).
   */
  async writePresence(
    rows: readonly { room: string; name: string; present: boolean }[],
    announceAll = false,
  ): Promise<void> {
    if (!rows.length) return;
    await this.#presenceQuery(
      `WITH added AS (
         INSERT INTO chat_presence (room, name, instance)
         SELECT room, name, $2::text FROM unnest($3::text[], $4::text[]) AS w (room, name)
         ON CONFLICT DO NOTHING
         RETURNING room
       ), removed AS (
         DELETE FROM chat_presence p USING unnest($5::text[], $6::text[]) AS w (room, name)
         WHERE p.instance = $2::text AND p.room = w.room AND p.name = w.name
         RETURNING p.room
       )
       SELECT pg_notify($1, json_build_object('room', room, 'presence', $2::text)::text)
       FROM (
         SELECT room FROM added UNION SELECT room FROM removed
         UNION SELECT room FROM unnest($3::text[]) AS w (room) WHERE $7::boolean
       ) changed`,
      [
        this.channel,
        this.instance,
        ...[true, false].flatMap((present) => {
          const these = rows.filter((row) => row.present === present);
          return [these.map((row) => row.room), these.map((row) => row.name)];
        }),
        announceAll,
      ],
    );
  }

  /**
   * The names present in `room` on other instances than this one: those with a row of an
   * instance whose session is alive (a dead instance's rows do not count, reaped or not).
   *
   * @throws {StoreUnavailable} when the database is away.
   */
  async presentIn(room: string): Promise<string[]> {
    const rows = await this.#presenceQuery<{ name: string }>(
      `SELECT DISTINCT p.name FROM chat_presence p
       WHERE p.room = $1 AND p.instance <> $2 AND ${LIVE_INSTANCE}
       ORDER BY p.name`,
      [room, this.instance, ...this.#liveness()],
    );
    return rows.map((row) => row.name);
  }

  /**
   * Deletes the presence rows of instances whose session is gone (they died, or lost the
   * database for a while: they write their rows again when back) and announces each room
   * they were in. Resolves with the number of (room, instance) pairs deleted.
   *
   * @throws {StoreUnavailable} when the database is away.
   */
  async reapPresence(): Promise<number> {
    const rows = await this.#presenceQuery(
      `WITH gone AS (
         DELETE FROM chat_presence p
         WHERE p.instance <> $2 AND NOT ${LIVE_INSTANCE}
         RETURNING p.room, p.instance
       )
       SELECT pg_notify($1, json_build_object('room', room, 'presence', instance)::text)
       FROM (SELECT DISTINCT room, instance FROM gone) dead`,
      [this.channel, this.instance, ...this.#liveness()],
    );
    return rows.length;
  }

  /**
   * Deletes every presence row of this instance and announces the rooms (a clean shutdown:
   * its parties are seen leaving at once, not at the next reap).
   *
   * @throws {StoreUnavailable} when the database is away.
   */
  async clearPresence(): Promise<void> {
    await this.#presenceQuery(
      `WITH gone AS (DELETE FROM chat_presence WHERE instance = $2 RETURNING room)
       SELECT pg_notify($1, json_build_object('room', room, 'presence', $2::text)::text)
       FROM (SELECT DISTINCT room FROM gone) rooms`,
      [this.channel, this.instance],
    );
  }

  /** The parameters of {@link LIVE_INSTANCE}: this process's live stores, and whether shared. */
  #liveness(): [string[], boolean] {
    return this.#sql.session ? [[], true] : [[...LIVE_HERE], false];
  }

  async #presenceQuery<T = Record<string, unknown>>(text: string, params: unknown[]): Promise<T[]> {
    try {
      return await this.#sql.query<T>(text, params);
    } catch (error) {
      throw isUnavailable(error) ? new StoreUnavailable(error) : error;
    }
  }

  /**
   * Calls `onEvent` for every message stored, every key offered and every change of
   * presence rows, by any instance on this database; see {@link SqlDriver.listen} for
   * `onListen`.
   */
  async listen(onEvent: (event: StoreEvent) => void, onListen: () => void): Promise<void> {
    await this.#sql.listen(this.channel, (payload) => {
      try {
        const event = JSON.parse(payload);
        const { room, id, key } = event;
        if (typeof room !== "string") return;
        if (Number.isSafeInteger(id)) {
          onEvent({
            kind: "message",
            room,
            id,
            ...(typeof event.ciphertext === "string" && Number.isSafeInteger(event.seq)
              ? {
                message: {
                  id,
                  room,
                  sender: event.sender,
                  clientMsgId: event.client_msg_id,
                  seq: event.seq,
                  nonce: base64.decode(event.nonce),
                  ciphertext: base64.decode(event.ciphertext),
                  createdAt: new Date(event.created_at),
                },
              }
              : {}),
          });
        } else if (key === 0 || key === 1) onEvent({ kind: "key", room, party: key });
        else if (event.code === 0 || event.code === 1) {
          onEvent({ kind: "code", room, party: event.code });
        } else if (typeof event.presence === "string") {
          onEvent({ kind: "presence", room, instance: event.presence });
        }
      } catch {
        // not ours
      }
    }, onListen);
  }

  /**
   * Every row of every chat table, as text (JSON) and the raw bytes of bytea columns:
   * for tests that check what the database holds.
   */
  async dumpForTests(): Promise<{ text: string; bytes: Uint8Array[] }> {
    const bytes: Uint8Array[] = [];
    const rows: unknown[] = [];
    for (const table of ["rooms", "parties", "messages", "chat_migrations", "chat_service"]) {
      for (const row of await this.#sql.query<Record<string, unknown>>(`SELECT * FROM ${table}`)) {
        for (const value of Object.values(row)) {
          if (value instanceof Uint8Array) bytes.push(new Uint8Array(value));
        }
        rows.push(row);
      }
    }
    const text = JSON.stringify(rows, (_, v) => (v instanceof Uint8Array ? Array.from(v) : v));
    return { text, bytes };
  }

  /** A cheap round trip: is the database there? */
  async ping(): Promise<void> {
    await this.#sql.query("SELECT 1");
  }

  /** Closes the driver (and the instance's session); the store is not used after. */
  async close(): Promise<void> {
    LIVE_HERE.delete(this.instance);
    await this.#sql.close();
  }
}

/**
 * The stores of this process whose instance is live (ChatStore.holdSession to close): on an
 * engine no other process shares, these are all the live instances there are.
 */
const LIVE_HERE = new Set<string>();

/**
 * Whether the instance of presence row `p` is alive: one of this process's live stores
 * (`$3`, text[]), or, on a shared database (`$4`), one with a session open.
 */
const LIVE_INSTANCE = `(p.instance = ANY($3::text[]) OR ($4::boolean AND EXISTS (
  SELECT 1 FROM pg_stat_activity a WHERE a.application_name = p.instance
)))`;

const COLUMNS = "id, room, sender, client_msg_id, sender_seq, nonce, ciphertext, created_at";
/** Rooms one statement of {@link ChatStore.touchRooms} marks at most. */
const TOUCH_BATCH = 10_000;
/** Insert statements running at once (the pool has 8 connections; reads need some). */
const BATCHES_IN_FLIGHT = 4;
/** Messages in one insert statement at most. */
const MAX_BATCH = 256;

interface PendingInsert {
  room: string;
  sender: string;
  clientMsgId: string;
  seq: number;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  resolve(result: StoreOutcome): void;
  reject(error: unknown): void;
}

/** A result row of chat_store_messages; the msg_ columns are those of the stored row. */
interface BatchRow {
  ord: number;
  status: "stored" | "duplicate" | "out_of_order" | "no_room";
  expected_seq: string | number | bigint | null;
  msg_id: string | number | bigint | null;
  msg_seq: string | number | bigint | null;
  /** Only for a duplicate: a fresh message's bytes are the caller's. */
  msg_nonce: Uint8Array | null;
  msg_ciphertext: Uint8Array | null;
  msg_created_at: Date | string | null;
}

function outcome(item: PendingInsert, row: BatchRow | undefined): StoreOutcome {
  switch (row?.status) {
    case "stored":
    case "duplicate": {
      const duplicate = row.status === "duplicate";
      return {
        kind: "stored",
        duplicate,
        message: {
          id: Number(row.msg_id),
          room: item.room,
          sender: item.sender,
          clientMsgId: item.clientMsgId,
          seq: Number(row.msg_seq),
          nonce: new Uint8Array(duplicate ? row.msg_nonce! : item.nonce),
          ciphertext: new Uint8Array(duplicate ? row.msg_ciphertext! : item.ciphertext),
          createdAt: new Date(row.msg_created_at!),
        },
      };
    }
    case "out_of_order":
      return { kind: "out_of_order", expectedSeq: Number(row.expected_seq) };
    case "no_room":
      return { kind: "unstorable", reason: `no room ${JSON.stringify(item.room)}` };
    default:
      return { kind: "unstorable", reason: "the database returned no outcome for it" };
  }
}

function unstorable(error: unknown): StoreOutcome {
  return { kind: "unstorable", reason: error instanceof Error ? error.message : String(error) };
}

/** A migration's statements: split at `;` ending a line, outside `$$` quotes. */
function statements(migration: string): string[] {
  const found: string[] = [];
  let current = "";
  for (const [index, part] of migration.split("$$").entries()) {
    if (index % 2) {
      current += `$$${part}$$`;
      continue;
    }
    const [first, ...rest] = part.split(/;\s*$/m);
    current += first;
    for (const next of rest) {
      found.push(current);
      current = next;
    }
  }
  found.push(current);
  return found.map((statement) => statement.trim()).filter(Boolean);
}

/** Ciphertexts up to this size travel inside the notification (base64 keeps it < 8,000). */
const INLINE_BYTES = 5_000;

interface RawMessage {
  id: string | number;
  room: string;
  sender: string;
  client_msg_id: string;
  sender_seq: string | number | bigint;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  created_at: Date | string;
}

function toMessage(row: RawMessage): MessageRow {
  return {
    id: Number(row.id),
    room: row.room,
    sender: row.sender,
    clientMsgId: row.client_msg_id,
    seq: Number(row.sender_seq),
    nonce: new Uint8Array(row.nonce),
    ciphertext: new Uint8Array(row.ciphertext),
    createdAt: new Date(row.created_at),
  };
}

/** Options of {@link connectPostgres}. */
export interface PostgresOptions {
  /** A schema to work in (created if missing): tests and several deployments per database. */
  schema?: string;
  /** The `application_name` the connections report (operators see it in pg_stat_activity). */
  applicationName?: string;
}

/** A driver over a PostgreSQL server (porsager's `postgres`: pooled, reconnecting). */
export async function connectPostgres(
  url: string,
  options: PostgresOptions = {},
): Promise<SqlDriver> {
  const connection: Record<string, string> = {
    application_name: options.applicationName ?? "duet-chat",
  };
  if (options.schema) {
    const admin = postgres(url, { max: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`CREATE SCHEMA IF NOT EXISTS "${options.schema.replaceAll('"', '""')}"`)
        .catch((error) => {
          // IF NOT EXISTS still fails when another instance creates it at the same moment.
          if (!["23505", "42P06"].includes(error?.code)) throw error;
        });
    } finally {
      await admin.end({ timeout: 1 });
    }
    connection["search_path"] = options.schema;
  }
  const sql = postgres(url, {
    max: 8,
    connection,
    onnotice: () => {},
    // Fail fast while the server is away: a send is answered "unavailable, retry".
    connect_timeout: 5,
    // The client's default waits (0.5-1) x min(3^n / 100, 20) s before its n-th reconnection
    // after a failure: after a few seconds of outage it waits up to 20 s, so messages kept
    // being refused long after the database was back (measured: stores resumed 3-4 s after
    // a 3 s outage, and up to a minute after longer ones). Capped at 1 s: once the database
    // is back, the next attempt is at most a second away.
    backoff: (retries: number) => (0.5 + Math.random() / 2) * Math.min(0.05 * 2 ** retries, 1),
    idle_timeout: 60,
  });
  const sessions = new Map<string, postgres.Sql>();
  const driver: SqlDriver = {
    query: async <T>(text: string, params: unknown[] = []) =>
      (await sql.unsafe(text, params as postgres.ParameterOrJSON<never>[])) as unknown as T[],
    transaction: async <T>(fn: (tx: Pick<SqlDriver, "query">) => Promise<T>) =>
      (await sql.begin((tx) =>
        fn({
          query: async <R>(text: string, params: unknown[] = []) =>
            (await tx.unsafe(text, params as postgres.ParameterOrJSON<never>[])) as unknown as R[],
        })
      )) as T,
    listen: async (channel, onNotify, onListen) => {
      // postgres reconnects a dropped listener by itself and calls onListen each time.
      await sql.listen(channel, onNotify, onListen);
    },
    session: async (applicationName) => {
      // One connection that lives as long as the driver (no idle timeout, no recycling):
      // a query on it reconnects it when it was lost, under a new pid.
      let session = sessions.get(applicationName);
      if (!session) {
        session = postgres(url, {
          max: 1,
          connection: { ...connection, application_name: applicationName },
          onnotice: () => {},
          connect_timeout: 5,
          max_lifetime: null, // never recycled (idle connections are not closed by default)
          fetch_types: false,
        });
        sessions.set(applicationName, session);
      }
      const [row] = await session.unsafe<{ pid: number }[]>("SELECT pg_backend_pid() AS pid");
      return Number(row!.pid);
    },
    // postgres.js' `end()` has been seen to hang after the connection dropped: the timeout
    // (in seconds) bounds it.
    close: async () => {
      await Promise.all([sql, ...sessions.values()].map((s) => s.end({ timeout: 2 })));
    },
  };
  return driver;
}

/**
 * A driver over an embedded PGlite database in `dataDir` (created on first use, which
 * takes several seconds; reopening is quick). One process only: PGlite is not shared.
 */
export async function openPglite(dataDir: string): Promise<SqlDriver> {
  await Deno.mkdir(dataDir, { recursive: true });
  // PGlite keeps the database in this process's memory and writes it back: a second
  // process on the same directory would not see the first's writes, and the last to stop
  // would win. An advisory lock held while open refuses the second.
  const lock = await Deno.open(`${dataDir}/${LOCK_FILE}`, { create: true, write: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const locked = await Promise.race([
    lock.lock(true).then(() => true),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), LOCK_WAIT_MS))),
  ]);
  clearTimeout(timer);
  if (!locked) {
    lock.close();
    throw new Error(
      `the embedded database in ${dataDir} is in use by another process (a chat server ` +
        "already running on it?); PGlite serves one process at a time",
    );
  }
  try {
    // A new data directory is filled from the shipped initial state (pglite_initial.ts):
    // a fraction of initdb's time, none of its memory. Without it (a compiled binary built
    // without the file) PGlite runs initdb here.
    if (!(await exists(`${dataDir}/PG_VERSION`))) await unpackInitialState(dataDir);
    const driver = pgliteDriver(
      await PGlite.create(dataDir, { startParams: [...PGLITE_START_PARAMS] }),
    );
    const close = driver.close;
    driver.close = async () => {
      try {
        await close();
      } finally {
        lock.close(); // closing the file releases the lock
      }
    };
    return driver;
  } catch (error) {
    lock.close();
    throw error;
  }
}

/**
 * PGlite's start parameters: its defaults, and less memory. PGlite's PostgreSQL zeroes its
 * shared memory at start, so each MB of `shared_buffers` is a MB of resident memory: the
 * 128 MB initdb chooses become 32 MB (the chat tables' hot pages fit; the rest is in the
 * kernel's page cache), and room for 5 backends (one is ever used) instead of 100.
 * Measured (VmRSS after start, docs/benchmarks.md): 340-365 MB on an existing data
 * directory before, ... after. Applied at every start: nothing is written to the data
 * directory's postgresql.conf.
 */
export const PGLITE_START_PARAMS: readonly string[] = [
  ...PGlite.defaultStartParams,
  "-c",
  "shared_buffers=32MB",
  "-c",
  "max_connections=5",
];

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The lock file openPglite holds in the data directory while the database is open. */
const LOCK_FILE = ".duet-chat.lock";
/** How long openPglite waits for another process to let the data directory go. */
const LOCK_WAIT_MS = 1_000;

/**
 * Wraps an open PGlite instance (tests load one from a snapshot). Once the instance is
 * closing or closed, its errors carry the code `CONNECTION_ENDED`, as porsager's do.
 */
export function pgliteDriver(db: PGlite): SqlDriver {
  const closed = (error: unknown) =>
    db.ready ? error : Object.assign(
      new Error("PGlite is closed", { cause: error }),
      { code: "CONNECTION_ENDED" },
    );
  return {
    query: async <T>(text: string, params: unknown[] = []) => {
      try {
        return (await db.query<T>(text, params)).rows;
      } catch (error) {
        throw closed(error);
      }
    },
    transaction: (fn) =>
      db.transaction((tx) =>
        fn({
          query: async <T>(text: string, params: unknown[] = []) =>
            (await tx.query<T>(text, params)).rows,
        })
      ).catch((error) => {
        throw closed(error);
      }),
    listen: async (channel, onNotify, onListen) => {
      await db.listen(channel, onNotify);
      onListen(); // one in-process instance: it never disconnects
    },
    close: () => db.close(),
  };
}
