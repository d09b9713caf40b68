/**
 * The client's local key store: one SQLite file (node:sqlite), mode 0600, holding per
 * (server, room, name) the client's secret key and party, every peer key it has seen with
 * the shared key derived from it and whether the user accepted it, and the outbox of
 * messages not yet acknowledged. A restarted client finds its keys (and can read the whole
 * history) and its unsent messages here.
 *
 * @module
 */
import { DatabaseSync } from "node:sqlite";

/** Which conversation: the server, the room and our name in it. */
export interface Conversation {
  server: string;
  room: string;
  name: string;
}

/** A peer key and the key shared under it. */
export interface PeerKey {
  peerPublicKey: string;
  sharedKey: Uint8Array;
  accepted: boolean;
  createdAt: string;
}

/** An unacknowledged message, encrypted once so that retries send the same bytes. */
export interface OutboxEntry {
  clientMsgId: string;
  text: string;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  peerPublicKey: string;
}

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS identities (
    server TEXT NOT NULL, room TEXT NOT NULL, name TEXT NOT NULL,
    secret BLOB NOT NULL, party INTEGER,
    PRIMARY KEY (server, room, name));
  CREATE TABLE IF NOT EXISTS peer_keys (
    server TEXT NOT NULL, room TEXT NOT NULL, name TEXT NOT NULL,
    peer_public_key TEXT NOT NULL, shared_key BLOB NOT NULL, accepted INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (server, room, name, peer_public_key));
  CREATE TABLE IF NOT EXISTS outbox (
    server TEXT NOT NULL, room TEXT NOT NULL, name TEXT NOT NULL,
    client_msg_id TEXT NOT NULL, text TEXT NOT NULL, nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL, peer_public_key TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (server, room, name, client_msg_id));
`;

const OUTBOX_COLUMNS = "client_msg_id, text, nonce, ciphertext, peer_public_key";

type OutboxRow = {
  client_msg_id: string;
  text: string;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  peer_public_key: string;
};

function toOutboxEntry(row: OutboxRow): OutboxEntry {
  return {
    clientMsgId: row.client_msg_id,
    text: row.text,
    nonce: new Uint8Array(row.nonce),
    ciphertext: new Uint8Array(row.ciphertext),
    peerPublicKey: row.peer_public_key,
  };
}

/** The default place: the XDG data directory. */
export function defaultKeyStorePath(): string {
  const base = Deno.env.get("XDG_DATA_HOME") ?? `${Deno.env.get("HOME") ?? "."}/.local/share`;
  return `${base}/duet/chat-keys.sqlite`;
}

export class KeyStore {
  readonly #db: DatabaseSync;
  readonly path: string;

  private constructor(db: DatabaseSync, path: string) {
    this.#db = db;
    this.path = path;
  }

  /** Opens (or creates) the store; the file is made readable by its owner only. */
  static async open(path: string): Promise<KeyStore> {
    const dir = path.slice(0, path.lastIndexOf("/"));
    if (dir) await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    // Created empty with 0600 first, so the keys are never readable by others, not even
    // for the moment between SQLite creating the file (0644) and a chmod.
    const file = await Deno.open(path, { create: true, write: true, mode: 0o600 });
    file.close();
    await Deno.chmod(path, 0o600);
    const db = new DatabaseSync(path);
    db.exec("PRAGMA journal_mode = DELETE"); // one file: no -wal/-shm beside it
    db.exec(SCHEMA);
    return new KeyStore(db, path);
  }

  /** Our secret key for the conversation, made by `create` the first time. */
  identity(
    at: Conversation,
    create: () => Uint8Array,
  ): { secret: Uint8Array; party: 0 | 1 | null } {
    const row = this.#db.prepare(
      "SELECT secret, party FROM identities WHERE server = ? AND room = ? AND name = ?",
    ).get(at.server, at.room, at.name) as { secret: Uint8Array; party: number | null } | undefined;
    if (row) {
      return {
        secret: new Uint8Array(row.secret),
        party: row.party === null ? null : row.party as 0 | 1,
      };
    }
    const secret = create();
    this.#db.prepare("INSERT INTO identities (server, room, name, secret) VALUES (?, ?, ?, ?)")
      .run(at.server, at.room, at.name, secret);
    return { secret, party: null };
  }

  setParty(at: Conversation, party: 0 | 1): void {
    this.#db.prepare("UPDATE identities SET party = ? WHERE server = ? AND room = ? AND name = ?")
      .run(party, at.server, at.room, at.name);
  }

  /** Every peer key seen in the conversation, oldest first. */
  peerKeys(at: Conversation): PeerKey[] {
    const rows = this.#db.prepare(
      `SELECT peer_public_key, shared_key, accepted, created_at FROM peer_keys
       WHERE server = ? AND room = ? AND name = ? ORDER BY created_at, rowid`,
    ).all(at.server, at.room, at.name) as {
      peer_public_key: string;
      shared_key: Uint8Array;
      accepted: number;
      created_at: string;
    }[];
    return rows.map((row) => ({
      peerPublicKey: row.peer_public_key,
      sharedKey: new Uint8Array(row.shared_key),
      accepted: row.accepted === 1,
      createdAt: row.created_at,
    }));
  }

  addPeerKey(
    at: Conversation,
    peerPublicKey: string,
    sharedKey: Uint8Array,
    accepted: boolean,
  ): void {
    this.#db.prepare(
      `INSERT OR IGNORE INTO peer_keys (server, room, name, peer_public_key, shared_key, accepted, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      at.server,
      at.room,
      at.name,
      peerPublicKey,
      sharedKey,
      accepted ? 1 : 0,
      new Date().toISOString(),
    );
  }

  acceptPeerKey(at: Conversation, peerPublicKey: string): void {
    this.#db.prepare(
      "UPDATE peer_keys SET accepted = 1 WHERE server = ? AND room = ? AND name = ? AND peer_public_key = ?",
    ).run(at.server, at.room, at.name, peerPublicKey);
  }

  /** The outbox in the order messages were written. */
  outbox(at: Conversation): OutboxEntry[] {
    const rows = this.#db.prepare(
      `SELECT ${OUTBOX_COLUMNS} FROM outbox
       WHERE server = ? AND room = ? AND name = ? ORDER BY created_at, rowid`,
    ).all(at.server, at.room, at.name) as OutboxRow[];
    return rows.map(toOutboxEntry);
  }

  /** One outbox entry, by its client message id. */
  outboxEntry(at: Conversation, clientMsgId: string): OutboxEntry | undefined {
    const row = this.#db.prepare(
      `SELECT ${OUTBOX_COLUMNS} FROM outbox
       WHERE server = ? AND room = ? AND name = ? AND client_msg_id = ?`,
    ).get(at.server, at.room, at.name, clientMsgId) as OutboxRow | undefined;
    return row && toOutboxEntry(row);
  }

  /** How many messages wait in the outbox. */
  outboxSize(at: Conversation): number {
    const row = this.#db.prepare(
      "SELECT count(*) AS n FROM outbox WHERE server = ? AND room = ? AND name = ?",
    ).get(at.server, at.room, at.name) as { n: number };
    return Number(row.n);
  }

  addToOutbox(at: Conversation, entry: OutboxEntry): void {
    this.#db.prepare(
      `INSERT INTO outbox (server, room, name, client_msg_id, text, nonce, ciphertext, peer_public_key, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      at.server,
      at.room,
      at.name,
      entry.clientMsgId,
      entry.text,
      entry.nonce,
      entry.ciphertext,
      entry.peerPublicKey,
      new Date().toISOString(),
    );
  }

  removeFromOutbox(at: Conversation, clientMsgId: string): void {
    this.#db.prepare(
      "DELETE FROM outbox WHERE server = ? AND room = ? AND name = ? AND client_msg_id = ?",
    ).run(at.server, at.room, at.name, clientMsgId);
  }

  close(): void {
    this.#db.close();
  }
}
