/**
 * The client's local key store: one SQLite file (node:sqlite), mode 0600, holding per
 * conversation (service, room, name) the client's secret key, party and next sequence
 * number, every peer key it has seen with the shared key derived from it and whether the
 * user accepted it, the outbox of messages not yet acknowledged, and which service answers
 * at each address typed. A restarted client finds its keys (and can read the whole
 * history) and its unsent messages here.
 *
 * Several clients on one machine share the file: every change of more than one statement
 * is one `BEGIN IMMEDIATE` transaction, and a connection waits up to BUSY_TIMEOUT_MS for
 * another one's lock instead of failing with "database is locked".
 *
 * @module
 */
import { DatabaseSync } from "node:sqlite";

/**
 * Which conversation: the service (an opaque key, from {@link KeyStore.serviceKey} or
 * {@link KeyStore.bind}), the room and our name in it.
 */
export interface Conversation {
  /** The service key: `service:` and the server's id, or the address as typed until then. */
  service: string;
  /** The room's id. */
  room: string;
  /** Our name in the room. */
  name: string;
}

/** A peer key and the key shared under it. */
export interface PeerKey {
  /** The peer's compressed secp256k1 public key, 66 hex. */
  peerPublicKey: string;
  /** The AES-256-GCM key agreed with it, raw (32 bytes). */
  sharedKey: Uint8Array;
  /** Trusted: first seen, signed by the key trusted before, or accepted by the user. */
  accepted: boolean;
  /**
   * Confirmed by a code both people typed (`duet chat --code`): the peer holds this key, and
   * got ours, with nobody in the middle.
   */
  verified: boolean;
  /**
   * A code run against it failed (another code, or someone in the middle): not trusted, and
   * not trusted again by /accept-key without naming it, until a code confirms it.
   */
  codeFailed: boolean;
  /** When it was first seen (ISO 8601). */
  createdAt: string;
}

/**
 * An unacknowledged message, encrypted once so that retries send the same bytes. One
 * waiting for a key has an empty `peerPublicKey`, `nonce` and `ciphertext`. `seq` is the
 * sender's sequence number: 1, 2, 3... per conversation in the order typed.
 */
export interface OutboxEntry {
  /** The message's id (a UUID), the same on every retry. */
  clientMsgId: string;
  /** The sender's sequence number. */
  seq: number;
  /** The plaintext, for showing it (it never leaves the machine unencrypted). */
  text: string;
  /** The AES-GCM nonce, 12 bytes (empty while waiting for a key). */
  nonce: Uint8Array;
  /** The ciphertext with its tag (empty while waiting for a key). */
  ciphertext: Uint8Array;
  /** The peer key it was encrypted for, 66 hex ("" while waiting for a key). */
  peerPublicKey: string;
}

/** What sealing fills into an entry that waited for a key. */
export interface Sealed {
  /** The AES-GCM nonce, 12 bytes. */
  nonce: Uint8Array;
  /** The ciphertext with its 16-byte tag. */
  ciphertext: Uint8Array;
  /** The peer key it was encrypted for, 66 hex. */
  peerPublicKey: string;
}

/**
 * How long a connection waits for another process's lock. Transactions here take
 * milliseconds, so 10 s only runs out if another process hangs holding the lock.
 */
export const BUSY_TIMEOUT_MS = 10_000;

const SERVICE_PREFIX = "service:";

/**
 * Schema steps; PRAGMA user_version counts those applied. Step 1 is the schema files had
 * before versions (user_version 0 with these tables), so it only creates what is missing.
 * The key column stays `server` so such files keep their rows.
 */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS identities (
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
     PRIMARY KEY (server, room, name, client_msg_id));`,
  // Sequence numbers. SQLite cannot add a NOT NULL column without a constant default, so
  // the outbox is rebuilt; old rows are numbered in the order the old code sent them.
  `ALTER TABLE identities ADD COLUMN next_seq INTEGER NOT NULL DEFAULT 1;
   CREATE TABLE outbox_new (
     server TEXT NOT NULL, room TEXT NOT NULL, name TEXT NOT NULL,
     client_msg_id TEXT NOT NULL, seq INTEGER NOT NULL, text TEXT NOT NULL,
     nonce BLOB NOT NULL, ciphertext BLOB NOT NULL, peer_public_key TEXT NOT NULL,
     created_at TEXT NOT NULL,
     PRIMARY KEY (server, room, name, client_msg_id),
     UNIQUE (server, room, name, seq));
   INSERT INTO outbox_new (server, room, name, client_msg_id, seq, text, nonce, ciphertext,
                           peer_public_key, created_at)
     SELECT server, room, name, client_msg_id,
            row_number() OVER (PARTITION BY server, room, name ORDER BY created_at, rowid),
            text, nonce, ciphertext, peer_public_key, created_at
     FROM outbox;
   DROP TABLE outbox;
   ALTER TABLE outbox_new RENAME TO outbox;
   UPDATE identities SET next_seq = 1 + coalesce(
     (SELECT max(seq) FROM outbox o
      WHERE o.server = identities.server AND o.room = identities.room
        AND o.name = identities.name), 0);
   CREATE TABLE service_bindings (
     address TEXT PRIMARY KEY, service_id TEXT NOT NULL, bound_at TEXT NOT NULL);`,
  // When a code confirmed a peer key (ChatClient with `code`); NULL: never.
  `ALTER TABLE peer_keys ADD COLUMN verified_at TEXT;`,
  // When a code run failed against a peer key; NULL: never.
  `ALTER TABLE peer_keys ADD COLUMN code_failed_at TEXT;`,
];

const OUTBOX_COLUMNS = "client_msg_id, seq, text, nonce, ciphertext, peer_public_key";
const AT = "server = ? AND room = ? AND name = ?";

type OutboxRow = {
  client_msg_id: string;
  seq: number;
  text: string;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
  peer_public_key: string;
};

type IdentityRow = { secret: Uint8Array; party: number | null; next_seq: number };

function toOutboxEntry(row: OutboxRow): OutboxEntry {
  return {
    clientMsgId: row.client_msg_id,
    seq: row.seq,
    text: row.text,
    nonce: new Uint8Array(row.nonce),
    ciphertext: new Uint8Array(row.ciphertext),
    peerPublicKey: row.peer_public_key,
  };
}

function key(at: Conversation): [string, string, string] {
  return [at.service, at.room, at.name];
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * Runs `body` in one `BEGIN IMMEDIATE` transaction. IMMEDIATE takes the write lock at
 * the start, where the busy timeout applies; a deferred transaction that reads first and
 * then writes can meet another writer and fail at once (SQLite cannot wait there without
 * risking a deadlock).
 */
function transaction<T>(db: DatabaseSync, body: () => T): T {
  db.exec("BEGIN IMMEDIATE");
  try {
    const result = body();
    db.exec("COMMIT");
    return result;
  } catch (error) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw error;
  }
}

/**
 * duet's directory in the XDG data directory: `$XDG_DATA_HOME/duet`, or
 * `$HOME/.local/share/duet`. An empty variable counts as unset, as the XDG Base Directory
 * specification says.
 */
export function duetDataDir(): string {
  const xdg = Deno.env.get("XDG_DATA_HOME");
  const base = xdg || `${Deno.env.get("HOME") || "."}/.local/share`;
  return `${base}/duet`;
}

/** The default place: `chat-keys.sqlite` in {@link duetDataDir}. */
export function defaultKeyStorePath(): string {
  return `${duetDataDir()}/chat-keys.sqlite`;
}

/**
 * The key store; see the module documentation. Methods are synchronous.
 *
 * @example
 * ```ts ignore
 * import { defaultKeyStorePath, KeyStore } from "@duet/chat";
 *
 * const keyStore = await KeyStore.open(defaultKeyStorePath()); // mode 0600
 * const at = { service: keyStore.serviceKey("127.0.0.1:7070"), room: "tea", name: "alice" };
 * console.log(`${keyStore.outboxSize(at)} messages wait to be sent`);
 * keyStore.close();
 * ```
 */
export class KeyStore {
  readonly #db: DatabaseSync;
  /** The file, as given to {@link KeyStore.open}. */
  readonly path: string;

  private constructor(db: DatabaseSync, path: string) {
    this.#db = db;
    this.path = path;
  }

  /**
   * Opens (or creates) the store and brings its schema up to date; the file is made
   * readable by its owner only, and a directory it creates by its owner only. Safe while
   * other processes open or use the same file. Throws if the file is not an SQLite
   * database, or if a newer version of this code wrote its schema.
   */
  static async open(path: string): Promise<KeyStore> {
    const dir = path.slice(0, path.lastIndexOf("/"));
    if (dir) await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    // Created empty with 0600 first, so the keys are never readable by others, not even
    // for the moment between SQLite creating the file (0644) and a chmod. SQLite gives the
    // journal it makes beside the file the file's own mode.
    const file = await Deno.open(path, { create: true, write: true, mode: 0o600 });
    file.close();
    await Deno.chmod(path, 0o600);
    const db = new DatabaseSync(path, { timeout: BUSY_TIMEOUT_MS });
    try {
      // Rollback journal, not WAL: the load is a few small writes per message, so readers
      // waiting for a writer's commit costs nothing noticeable, and in exchange the store
      // stays one file at rest (no -wal/-shm files to keep private or to copy along) and
      // works where WAL's shared memory does not, such as a home directory on NFS.
      db.exec("PRAGMA journal_mode = DELETE");
      migrate(db);
    } catch (error) {
      db.close();
      throw error;
    }
    return new KeyStore(db, path);
  }

  /**
   * The service key to use for `address` (a server address as typed) before connecting:
   * `"service:<id>"` once {@link bind} has recorded which service answers there, else
   * the address itself (the key rows had before services had ids).
   */
  serviceKey(address: string): string {
    const row = this.#db.prepare("SELECT service_id FROM service_bindings WHERE address = ?")
      .get(address) as { service_id: string } | undefined;
    return row ? SERVICE_PREFIX + row.service_id : address;
  }

  /**
   * Records that service `serviceId` answers at `address` (it said so in its welcome)
   * and returns the conversation (room, name) keyed by that service.
   *
   * In the same transaction, every conversation still keyed by the address moves to the
   * service, not only this one: {@link serviceKey} answers per address, so one left behind
   * would be looked up under the service at its next start and get a new identity. Per
   * conversation:
   * - the identity moves if the service has none. If the service has one, the service's
   *   wins and the address's is dropped; if its secret differs, its peer keys are dropped
   *   too (their shared keys were derived from the dropped secret) and its outbox entries
   *   go back to waiting for a key, to be sealed again under the service's identity;
   * - otherwise peer keys are merged, keeping the service's row where both have a key;
   * - outbox entries follow the service's own, in their order, with seqs continuing the
   *   service's sequence (from its next_seq). When the identity moved with them and the
   *   service had no entries, they keep their seqs.
   *
   * Binding again is harmless (nothing is left under the address). Binding the address
   * to another service id (another server answers there now) makes {@link serviceKey}
   * return the new one; rows moved before stay with the old service.
   * Throws a TypeError if `serviceId` is empty.
   */
  bind(address: string, serviceId: string, room: string, name: string): Conversation {
    if (serviceId === "") throw new TypeError("bind: empty service id");
    const service = SERVICE_PREFIX + serviceId;
    transaction(this.#db, () => {
      this.#db.prepare(
        `INSERT INTO service_bindings (address, service_id, bound_at) VALUES (?, ?, ?)
         ON CONFLICT (address) DO UPDATE SET service_id = excluded.service_id,
           bound_at = excluded.bound_at
         WHERE service_id <> excluded.service_id`,
      ).run(address, serviceId, new Date().toISOString());
      if (address === service) return;
      const conversations = this.#db.prepare(
        `SELECT room, name FROM identities WHERE server = ?1
         UNION SELECT room, name FROM peer_keys WHERE server = ?1
         UNION SELECT room, name FROM outbox WHERE server = ?1`,
      ).all(address) as { room: string; name: string }[];
      for (const c of conversations) {
        this.#move(
          { service: address, room: c.room, name: c.name },
          { service, room: c.room, name: c.name },
        );
      }
    });
    return { service, room, name };
  }

  /** Moves one conversation onto another key; see {@link bind}. Inside a transaction. */
  #move(from: Conversation, to: Conversation): void {
    const db = this.#db;
    const ours = this.#identityRow(from);
    const theirs = this.#identityRow(to);
    const dropped = ours !== undefined && theirs !== undefined &&
      !sameBytes(ours.secret, theirs.secret);
    if (ours && !theirs) {
      db.prepare(`UPDATE identities SET server = ? WHERE ${AT}`).run(to.service, ...key(from));
    } else if (ours) {
      db.prepare(`DELETE FROM identities WHERE ${AT}`).run(...key(from));
    }

    if (!dropped) {
      db.prepare(
        `INSERT OR IGNORE INTO peer_keys
           (server, room, name, peer_public_key, shared_key, accepted, verified_at,
            code_failed_at, created_at)
         SELECT ?, room, name, peer_public_key, shared_key, accepted, verified_at,
                code_failed_at, created_at
         FROM peer_keys WHERE ${AT} ORDER BY created_at, rowid`,
      ).run(to.service, ...key(from));
    }
    db.prepare(`DELETE FROM peer_keys WHERE ${AT}`).run(...key(from));

    if (dropped) {
      db.prepare(
        `UPDATE outbox SET nonce = x'', ciphertext = x'', peer_public_key = '' WHERE ${AT}`,
      ).run(...key(from));
    }
    const moving = this.outbox(from);
    const theirLast = this.#lastSeq(to);
    if (theirs || theirLast > 0) {
      // Each row lands on a seq above all the service's: none meets a taken one.
      let seq = Math.max(theirs?.next_seq ?? 1, theirLast + 1);
      const renumber = db.prepare(
        `UPDATE outbox SET server = ?, seq = ? WHERE ${AT} AND client_msg_id = ?`,
      );
      for (const entry of moving) renumber.run(to.service, seq++, ...key(from), entry.clientMsgId);
    } else {
      db.prepare(`UPDATE outbox SET server = ? WHERE ${AT}`).run(to.service, ...key(from));
    }
    this.#keepNextSeqAhead(to);
  }

  #identityRow(at: Conversation): IdentityRow | undefined {
    return this.#db.prepare(`SELECT secret, party, next_seq FROM identities WHERE ${AT}`)
      .get(...key(at)) as IdentityRow | undefined;
  }

  /** The highest seq in the conversation's outbox; 0 when it is empty. */
  #lastSeq(at: Conversation): number {
    const row = this.#db.prepare(`SELECT coalesce(max(seq), 0) AS last FROM outbox WHERE ${AT}`)
      .get(...key(at)) as { last: number };
    return row.last;
  }

  #keepNextSeqAhead(at: Conversation): void {
    this.#db.prepare(`UPDATE identities SET next_seq = max(next_seq, ?) WHERE ${AT}`)
      .run(this.#lastSeq(at) + 1, ...key(at));
  }

  /**
   * Our secret key for the conversation, made by `create` the first time (called at most
   * once, even when several processes ask at the same moment: one secret wins for all).
   */
  identity(
    at: Conversation,
    create: () => Uint8Array,
  ): { secret: Uint8Array; party: 0 | 1 | null } {
    const found = this.#identityRow(at) ?? transaction(this.#db, () => {
      const row = this.#identityRow(at);
      if (row) return row;
      const secret = create();
      this.#db.prepare(
        `INSERT INTO identities (server, room, name, secret, next_seq) VALUES (?, ?, ?, ?, ?)`,
      ).run(...key(at), secret, this.#lastSeq(at) + 1);
      return { secret, party: null, next_seq: 1 };
    });
    return {
      secret: new Uint8Array(found.secret),
      party: found.party === null ? null : found.party as 0 | 1,
    };
  }

  /** Stores our party; nothing happens if the conversation has no identity. */
  setParty(at: Conversation, party: 0 | 1): void {
    this.#db.prepare(`UPDATE identities SET party = ? WHERE ${AT}`).run(party, ...key(at));
  }

  /** Every peer key seen in the conversation, oldest first. */
  peerKeys(at: Conversation): PeerKey[] {
    const rows = this.#db.prepare(
      `SELECT peer_public_key, shared_key, accepted, verified_at, code_failed_at, created_at
       FROM peer_keys WHERE ${AT} ORDER BY created_at, rowid`,
    ).all(...key(at)) as {
      peer_public_key: string;
      shared_key: Uint8Array;
      accepted: number;
      verified_at: string | null;
      code_failed_at: string | null;
      created_at: string;
    }[];
    return rows.map((row) => ({
      peerPublicKey: row.peer_public_key,
      sharedKey: new Uint8Array(row.shared_key),
      accepted: row.accepted === 1,
      verified: row.verified_at !== null,
      codeFailed: row.code_failed_at !== null,
      createdAt: row.created_at,
    }));
  }

  /** Adds a peer key; one the conversation already has is left as it is. */
  addPeerKey(
    at: Conversation,
    peerPublicKey: string,
    sharedKey: Uint8Array,
    accepted: boolean,
  ): void {
    this.#db.prepare(
      `INSERT OR IGNORE INTO peer_keys
         (server, room, name, peer_public_key, shared_key, accepted, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ).run(...key(at), peerPublicKey, sharedKey, accepted ? 1 : 0, new Date().toISOString());
  }

  /** Makes a known peer key the newest again (the peer came back with it). */
  touchPeerKey(at: Conversation, peerPublicKey: string): void {
    // Moved to a new row: newest by time, and by row order when the clock ties.
    const db = this.#db;
    transaction(db, () => {
      const row = db.prepare(
        `SELECT shared_key, accepted, verified_at, code_failed_at FROM peer_keys
         WHERE ${AT} AND peer_public_key = ?`,
      ).get(...key(at), peerPublicKey) as
        | {
          shared_key: Uint8Array;
          accepted: number;
          verified_at: string | null;
          code_failed_at: string | null;
        }
        | undefined;
      if (!row) return;
      db.prepare(`DELETE FROM peer_keys WHERE ${AT} AND peer_public_key = ?`)
        .run(...key(at), peerPublicKey);
      db.prepare(
        `INSERT INTO peer_keys
           (server, room, name, peer_public_key, shared_key, accepted, verified_at,
            code_failed_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        ...key(at),
        peerPublicKey,
        row.shared_key,
        row.accepted,
        row.verified_at,
        row.code_failed_at,
        new Date().toISOString(),
      );
    });
  }

  /**
   * Marks a peer key (66 hex) trusted and confirmed by a code (PeerKey.verified). No such
   * key: nothing changes.
   */
  verifyPeerKey(at: Conversation, peerPublicKey: string): void {
    this.#db.prepare(
      `UPDATE peer_keys SET accepted = 1, verified_at = ?, code_failed_at = NULL
       WHERE ${AT} AND peer_public_key = ?`,
    ).run(new Date().toISOString(), ...key(at), peerPublicKey);
  }

  /**
   * Marks a peer key (66 hex) as one a code run failed against: untrusted (PeerKey.codeFailed),
   * and the outbox entries sealed under it are unsealed (they wait for a trusted key again,
   * as typed), so that none goes out under it. No such key: nothing changes.
   */
  failPeerKey(at: Conversation, peerPublicKey: string): void {
    const db = this.#db;
    transaction(db, () => {
      db.prepare(
        `UPDATE peer_keys SET accepted = 0, code_failed_at = ?
         WHERE ${AT} AND peer_public_key = ?`,
      ).run(new Date().toISOString(), ...key(at), peerPublicKey);
      db.prepare(
        `UPDATE outbox SET nonce = x'', ciphertext = x'', peer_public_key = ''
         WHERE ${AT} AND peer_public_key = ?`,
      ).run(...key(at), peerPublicKey);
    });
  }

  /** Marks a peer key (66 hex) trusted: the user accepted it. No such key: nothing changes. */
  acceptPeerKey(at: Conversation, peerPublicKey: string): void {
    this.#db.prepare(
      `UPDATE peer_keys SET accepted = 1, code_failed_at = NULL
       WHERE ${AT} AND peer_public_key = ?`,
    ).run(...key(at), peerPublicKey);
  }

  /** The outbox in the order messages were typed (by seq). */
  outbox(at: Conversation): OutboxEntry[] {
    const rows = this.#db.prepare(
      `SELECT ${OUTBOX_COLUMNS} FROM outbox WHERE ${AT} ORDER BY seq`,
    ).all(...key(at)) as OutboxRow[];
    return rows.map(toOutboxEntry);
  }

  /** One outbox entry, by its client message id. */
  outboxEntry(at: Conversation, clientMsgId: string): OutboxEntry | undefined {
    const row = this.#db.prepare(
      `SELECT ${OUTBOX_COLUMNS} FROM outbox WHERE ${AT} AND client_msg_id = ?`,
    ).get(...key(at), clientMsgId) as OutboxRow | undefined;
    return row && toOutboxEntry(row);
  }

  /** How many messages wait in the outbox. */
  outboxSize(at: Conversation): number {
    const row = this.#db.prepare(`SELECT count(*) AS n FROM outbox WHERE ${AT}`)
      .get(...key(at)) as { n: number };
    return Number(row.n);
  }

  /**
   * Appends `entry` with the conversation's next seq, and returns it with that seq. The
   * seq comes from the identity's next_seq (two processes never get the same one); a
   * conversation without identity (one that a bind elsewhere moved away) continues after
   * its highest seq, and a later bind renumbers it. Throws if the conversation already
   * has an entry with this clientMsgId (SQLite's UNIQUE constraint error).
   */
  addToOutbox(at: Conversation, entry: Omit<OutboxEntry, "seq">): OutboxEntry {
    return transaction(this.#db, () => {
      const seq = Math.max(this.#identityRow(at)?.next_seq ?? 1, this.#lastSeq(at) + 1);
      this.#db.prepare(
        `INSERT INTO outbox (server, room, name, client_msg_id, seq, text, nonce, ciphertext,
                             peer_public_key, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        ...key(at),
        entry.clientMsgId,
        seq,
        entry.text,
        entry.nonce,
        entry.ciphertext,
        entry.peerPublicKey,
        new Date().toISOString(),
      );
      this.#db.prepare(`UPDATE identities SET next_seq = ? WHERE ${AT}`).run(seq + 1, ...key(at));
      return { ...entry, seq };
    });
  }

  /**
   * Fills in an entry that waited for a key, keeping its seq and place, and returns the
   * entry as stored. An entry already sealed is left as it is (its bytes may have been
   * sent, and a retry must send the same ones), so the caller sends what is returned.
   * Returns undefined if the entry is not in the outbox (acknowledged meanwhile).
   * Throws a TypeError for an empty `peerPublicKey` (that marks waiting entries).
   */
  sealOutboxEntry(at: Conversation, clientMsgId: string, sealed: Sealed): OutboxEntry | undefined {
    if (sealed.peerPublicKey === "") throw new TypeError("sealOutboxEntry: empty peer key");
    this.#db.prepare(
      `UPDATE outbox SET nonce = ?, ciphertext = ?, peer_public_key = ?
       WHERE ${AT} AND client_msg_id = ? AND peer_public_key = ''`,
    ).run(sealed.nonce, sealed.ciphertext, sealed.peerPublicKey, ...key(at), clientMsgId);
    return this.outboxEntry(at, clientMsgId);
  }

  /**
   * Gives the outbox entries, in their order, the seqs firstSeq, firstSeq + 1, ... and
   * sets next_seq right after them (to firstSeq if the outbox is empty); returns the
   * renumbered outbox. For when the server expects another next seq than ours. Throws a
   * RangeError unless firstSeq is a positive safe integer.
   */
  renumberOutbox(at: Conversation, firstSeq: number): OutboxEntry[] {
    if (!Number.isSafeInteger(firstSeq) || firstSeq < 1) {
      throw new RangeError(`renumberOutbox: first seq ${firstSeq} is not a positive integer`);
    }
    return transaction(this.#db, () => {
      const entries = this.outbox(at);
      // Negative first, so no row meets a seq still taken by another on the way.
      this.#db.prepare(`UPDATE outbox SET seq = -seq WHERE ${AT}`).run(...key(at));
      const renumber = this.#db.prepare(
        `UPDATE outbox SET seq = ? WHERE ${AT} AND client_msg_id = ?`,
      );
      let seq = firstSeq;
      for (const entry of entries) renumber.run(seq++, ...key(at), entry.clientMsgId);
      this.#db.prepare(`UPDATE identities SET next_seq = ? WHERE ${AT}`).run(seq, ...key(at));
      return this.outbox(at);
    });
  }

  /**
   * The server holds this sender's messages up to `seq`: entries made from now on get
   * seqs after it (next_seq = max(next_seq, seq + 1)). Entries already in the outbox keep
   * theirs. Throws a RangeError unless seq is a safe integer >= 0.
   */
  noteStoredSeq(at: Conversation, seq: number): void {
    if (!Number.isSafeInteger(seq) || seq < 0) {
      throw new RangeError(`noteStoredSeq: seq ${seq} is not an integer >= 0`);
    }
    this.#db.prepare(`UPDATE identities SET next_seq = max(next_seq, ?) WHERE ${AT}`)
      .run(seq + 1, ...key(at));
  }

  /** Removes a message from the outbox (stored, or refused for good); none: nothing changes. */
  removeFromOutbox(at: Conversation, clientMsgId: string): void {
    this.#db.prepare(`DELETE FROM outbox WHERE ${AT} AND client_msg_id = ?`)
      .run(...key(at), clientMsgId);
  }

  /** Closes the file; the store is not used after. */
  close(): void {
    this.#db.close();
  }
}

/**
 * Applies the schema steps not yet applied. The version is read again under the write
 * lock: processes opening a new file at the same moment all get here, and only the first
 * one creates the schema.
 */
function migrate(db: DatabaseSync): void {
  const version = () =>
    (db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version;
  const check = (found: number) => {
    if (found > MIGRATIONS.length) {
      throw new Error(
        `key store schema version ${found} is newer than this client's ${MIGRATIONS.length}`,
      );
    }
  };
  const before = version();
  check(before);
  if (before === MIGRATIONS.length) return;
  transaction(db, () => {
    const found = version();
    check(found);
    for (const step of MIGRATIONS.slice(found)) db.exec(step);
    db.exec(`PRAGMA user_version = ${MIGRATIONS.length}`);
  });
}
