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
  close(): Promise<void>;
}

/** The schema, one migration per entry, applied in order and recorded. */
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
];

/** A stored message. */
export interface MessageRow {
  id: number;
  room: string;
  sender: string;
  clientMsgId: string;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  createdAt: Date;
}

/** A party's public key offer, as stored. */
export interface KeyOffer {
  party: 0 | 1;
  name: string;
  publicKey: Uint8Array;
  proof: { t: string; s: string };
}

/** What the channel announces. */
export type StoreEvent =
  | { kind: "message"; room: string; id: number; message?: MessageRow }
  | { kind: "key"; room: string; party: 0 | 1 };

/** The outcome of joining a room. */
export type Join =
  | { ok: true; party: 0 | 1; peer: string | null; lastId: number }
  | { ok: false; reason: "room_full"; parties: string[] };

/** The chat store. */
export class ChatStore {
  readonly #sql: SqlDriver;
  readonly #queue: PendingInsert[] = [];
  #inFlight = 0;
  /** The NOTIFY channel; instances that deliver to each other share it. */
  readonly channel: string;

  constructor(driver: SqlDriver, channel = "duet_chat_messages") {
    this.#sql = driver;
    this.channel = channel;
  }

  /** Applies the migrations not yet applied. Safe to run from several instances at once. */
  async migrate(): Promise<number> {
    return await this.#sql.transaction(async (tx) => {
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
        for (const statement of migration.split(/;\s*$/m).map((s) => s.trim()).filter(Boolean)) {
          await tx.query(statement);
        }
        await tx.query("INSERT INTO chat_migrations (version) VALUES ($1)", [version]);
        count++;
      }
      return count;
    });
  }

  /**
   * Joins `name` to `room`: the same name gets its party back, a new name the free party,
   * a third name is refused.
   */
  async join(room: string, name: string): Promise<Join> {
    return await this.#sql.transaction(async (tx) => {
      await tx.query("INSERT INTO rooms (room) VALUES ($1) ON CONFLICT DO NOTHING", [room]);
      // Serializes joins to one room: two new names arriving together get 0 and 1.
      await tx.query("SELECT room FROM rooms WHERE room = $1 FOR UPDATE", [room]);
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
      const [last] = await tx.query<{ id: string | number | null }>(
        "SELECT max(id) AS id FROM messages WHERE room = $1",
        [room],
      );
      return {
        ok: true,
        party: Number(mine) as 0 | 1,
        peer,
        lastId: Number(last?.id ?? 0),
      } as const;
    });
  }

  /** Stores (or replaces) a party's public key offer and announces it on the channel. */
  async saveKeyOffer(
    room: string,
    party: 0 | 1,
    publicKey: Uint8Array,
    proof: { t: string; s: string },
  ): Promise<void> {
    await this.#sql.transaction(async (tx) => {
      await tx.query(
        `UPDATE parties SET public_key = $3, proof = $4, key_updated_at = now()
         WHERE room = $1 AND party = $2`,
        [room, party, publicKey, JSON.stringify(proof)],
      );
      await tx.query("SELECT pg_notify($1, $2)", [
        this.channel,
        JSON.stringify({ room, key: party }),
      ]);
    });
  }

  /** The key offers stored for a room. */
  async keyOffers(room: string): Promise<KeyOffer[]> {
    const rows = await this.#sql.query<
      { party: number; name: string; public_key: Uint8Array; proof: unknown }
    >(
      "SELECT party, name, public_key, proof FROM parties WHERE room = $1 AND public_key IS NOT NULL ORDER BY party",
      [room],
    );
    return rows.map((row) => ({
      party: Number(row.party) as 0 | 1,
      name: row.name,
      publicKey: new Uint8Array(row.public_key),
      proof:
        (typeof row.proof === "string" ? JSON.parse(row.proof) : row.proof) as KeyOffer["proof"],
    }));
  }

  /**
   * Stores a message once: a retry with the same (room, sender, client message id) gets
   * the first one's id back. The NOTIFY goes out with the commit, so every instance
   * (this one included) delivers it from there.
   *
   * One statement, so one round trip in autocommit: the insert and the notification
   * together (measured: a transaction of BEGIN, INSERT, NOTIFY, COMMIT held a room to
   * ~600 messages/s), grouped with other sends under load (see #pump). The notification
   * carries the message itself when it fits in NOTIFY's 8,000-byte payload, so listeners
   * need not read it back.
   */
  insertMessage(
    room: string,
    sender: string,
    clientMsgId: string,
    nonce: Uint8Array,
    ciphertext: Uint8Array,
  ): Promise<{ message: MessageRow; duplicate: boolean }> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ room, sender, clientMsgId, nonce, ciphertext, resolve, reject });
      this.#pump();
    });
  }

  /**
   * Group commit: at most {@link BATCHES_IN_FLIGHT} inserts run at once; sends that arrive
   * meanwhile wait and go together in the next statement (up to {@link MAX_BATCH}). Alone, a
   * send costs one round trip as before; under load, one round trip stores many.
   */
  #pump(): void {
    while (this.#inFlight < BATCHES_IN_FLIGHT && this.#queue.length) {
      const batch = this.#queue.splice(0, MAX_BATCH);
      this.#inFlight++;
      this.#insertBatch(batch)
        .catch((error) => {
          for (const item of batch) item.reject(error);
        })
        .finally(() => {
          this.#inFlight--;
          this.#pump();
        });
    }
  }

  async #insertBatch(batch: PendingInsert[]): Promise<void> {
    const column = <K extends keyof PendingInsert>(key: K) => batch.map((item) => item[key]);
    const inserted = await this.#sql.query<RawMessage>(
      `WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
           WITH ORDINALITY AS t (room, sender, client_msg_id, nonce, ciphertext, ord)
       ), ins AS (
         INSERT INTO messages (room, sender, client_msg_id, nonce, ciphertext)
         SELECT room, sender, client_msg_id, decode(nonce, 'base64'), decode(ciphertext, 'base64')
         FROM input ORDER BY ord
         ON CONFLICT (room, sender, client_msg_id) DO NOTHING
         RETURNING ${COLUMNS}
       )
       SELECT ins.*, pg_notify($6, json_build_object(
         'room', room, 'id', id, 'sender', sender, 'client_msg_id', client_msg_id,
         'nonce', encode(nonce, 'base64'),
         'ciphertext', CASE WHEN octet_length(ciphertext) <= ${INLINE_BYTES}
           THEN translate(encode(ciphertext, 'base64'), E'\\n', '') END,
         'created_at', created_at)::text) IS NULL AS notified
       FROM ins`,
      [
        column("room"),
        column("sender"),
        column("clientMsgId"),
        batch.map((item) => toBase64(item.nonce)),
        batch.map((item) => toBase64(item.ciphertext)),
        this.channel,
      ],
    );
    const key = (room: string, sender: string, id: string) => `${room}\u0000${sender}\u0000${id}`;
    const fresh = new Map(
      inserted.map((row) => [key(row.room, row.sender, row.client_msg_id), row]),
    );
    const missing = batch.filter((item) =>
      !fresh.has(key(item.room, item.sender, item.clientMsgId))
    );
    const existing = new Map<string, RawMessage>();
    if (missing.length) {
      // Retries of stored messages (or a repeat inside this batch): the first copy stands.
      const rows = await this.#sql.query<RawMessage>(
        `SELECT ${COLUMNS} FROM messages
         WHERE (room, sender, client_msg_id) IN (
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))`,
        [
          missing.map((item) => item.room),
          missing.map((item) => item.sender),
          missing.map((item) => item.clientMsgId),
        ],
      );
      for (const row of rows) existing.set(key(row.room, row.sender, row.client_msg_id), row);
    }
    const answered = new Set<string>();
    for (const item of batch) {
      const k = key(item.room, item.sender, item.clientMsgId);
      const row = fresh.get(k);
      if (row && !answered.has(k)) {
        answered.add(k);
        item.resolve({ message: toMessage(row), duplicate: false });
      } else {
        const first = row ?? existing.get(k);
        if (first) item.resolve({ message: toMessage(first), duplicate: true });
        else item.reject(new Error("a stored message could not be read back"));
      }
    }
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
   * Calls `onEvent` for every message stored and every key offered, by any instance on
   * this database; see {@link SqlDriver.listen} for `onListen`.
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
            ...(typeof event.ciphertext === "string"
              ? {
                message: {
                  id,
                  room,
                  sender: event.sender,
                  clientMsgId: event.client_msg_id,
                  nonce: fromBase64(event.nonce),
                  ciphertext: fromBase64(event.ciphertext),
                  createdAt: new Date(event.created_at),
                },
              }
              : {}),
          });
        } else if (key === 0 || key === 1) onEvent({ kind: "key", room, party: key });
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
    for (const table of ["rooms", "parties", "messages", "chat_migrations"]) {
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

  async close(): Promise<void> {
    await this.#sql.close();
  }
}

const COLUMNS = "id, room, sender, client_msg_id, nonce, ciphertext, created_at";
/** Insert statements running at once (the pool has 8 connections; reads need some). */
const BATCHES_IN_FLIGHT = 4;
/** Messages in one insert statement at most. */
const MAX_BATCH = 256;

interface PendingInsert {
  room: string;
  sender: string;
  clientMsgId: string;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  resolve(result: { message: MessageRow; duplicate: boolean }): void;
  reject(error: unknown): void;
}

function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}
/** Ciphertexts up to this size travel inside the notification (base64 keeps it < 8,000). */
const INLINE_BYTES = 5_000;

interface RawMessage {
  id: string | number;
  room: string;
  sender: string;
  client_msg_id: string;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  created_at: Date | string;
}

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function toMessage(row: RawMessage): MessageRow {
  return {
    id: Number(row.id),
    room: row.room,
    sender: row.sender,
    clientMsgId: row.client_msg_id,
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
      await admin.unsafe(`CREATE SCHEMA IF NOT EXISTS "${options.schema.replaceAll('"', '""')}"`);
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
    idle_timeout: 60,
  });
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
    // `end` can hang after a disconnect (stack-facts): bounded.
    close: () => sql.end({ timeout: 2 }),
  };
  return driver;
}

/**
 * A driver over an embedded PGlite database in `dataDir` (created on first use, which
 * takes several seconds; reopening is quick). One process only: PGlite is not shared.
 */
export async function openPglite(dataDir: string): Promise<SqlDriver> {
  await Deno.mkdir(dataDir, { recursive: true });
  const db = await PGlite.create(dataDir);
  return pgliteDriver(db);
}

/** Wraps an open PGlite instance (tests load one from a snapshot). */
export function pgliteDriver(db: PGlite): SqlDriver {
  return {
    query: async <T>(text: string, params: unknown[] = []) =>
      (await db.query<T>(text, params)).rows,
    transaction: (fn) =>
      db.transaction((tx) =>
        fn({
          query: async <T>(text: string, params: unknown[] = []) =>
            (await tx.query<T>(text, params)).rows,
        })
      ),
    listen: async (channel, onNotify, onListen) => {
      await db.listen(channel, onNotify);
      onListen(); // one in-process instance: it never disconnects
    },
    close: () => db.close(),
  };
}
