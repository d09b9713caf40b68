import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { type Conversation, KeyStore } from "./keystore.ts";
import { bytesToHex } from "@noble/hashes/utils.js";

const at: Conversation = { service: "127.0.0.1:7070", room: "r", name: "alice" };
const SERVICE_ID = "6f9c2a4e-0d1b-4c55-9e1a-2b3c4d5e6f70";

async function withDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function waiting(clientMsgId: string, text = clientMsgId) {
  return {
    clientMsgId,
    text,
    nonce: new Uint8Array(0),
    ciphertext: new Uint8Array(0),
    peerPublicKey: "",
  };
}

function sealedEntry(clientMsgId: string, fill: number, peerPublicKey = "02aa") {
  return {
    clientMsgId,
    text: clientMsgId,
    nonce: new Uint8Array(12).fill(fill),
    ciphertext: new Uint8Array(20).fill(fill),
    peerPublicKey,
  };
}

/** The outbox as [clientMsgId, seq] pairs. */
function seqs(store: KeyStore, where: Conversation): [string, number][] {
  return store.outbox(where).map((e) => [e.clientMsgId, e.seq]);
}

/** Every file in `dir` with its permission bits. */
async function modes(dir: string): Promise<Record<string, number>> {
  const found: Record<string, number> = {};
  for await (const entry of Deno.readDir(dir)) {
    found[entry.name] = (await Deno.stat(`${dir}/${entry.name}`)).mode! & 0o777;
  }
  return found;
}

Deno.test("key store: a file of mode 0600 that keeps identity, peer keys and outbox across opens", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/nested/keys.sqlite`;
    const store = await KeyStore.open(path);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    let made = 0;
    const first = store.identity(at, () => (made++, new Uint8Array(32).fill(7)));
    assert.deepEqual(first, { secret: new Uint8Array(32).fill(7), party: null });
    store.setParty(at, 1);
    store.addPeerKey(at, "02aa", new Uint8Array(32).fill(1), true);
    store.addPeerKey(at, "02aa", new Uint8Array(32).fill(9), true); // the same key again: ignored
    store.addPeerKey(at, "03bb", new Uint8Array(32).fill(2), false);
    store.acceptPeerKey(at, "03bb");
    const added = store.addToOutbox(at, sealedEntry("m1", 3, "03bb"));
    assert.deepEqual(added, { ...sealedEntry("m1", 3, "03bb"), seq: 1 });
    store.close();

    const again = await KeyStore.open(path);
    assert.deepEqual(again.identity(at, () => new Uint8Array(32)), {
      secret: new Uint8Array(32).fill(7),
      party: 1,
    });
    assert.equal(made, 1, "the secret is made once");
    assert.deepEqual(again.peerKeys(at).map((k) => [k.peerPublicKey, k.sharedKey[0], k.accepted]), [
      ["02aa", 1, true],
      ["03bb", 2, true],
    ]);
    assert.deepEqual(again.outbox(at), [{ ...sealedEntry("m1", 3, "03bb"), seq: 1 }]);
    assert.deepEqual(again.outbox({ ...at, name: "bob" }), [], "per name");
    assert.equal(again.outboxSize(at), 1);
    assert.equal(again.outboxEntry(at, "m1")?.text, "m1");
    assert.equal(again.outboxEntry(at, "m2"), undefined);
    again.removeFromOutbox(at, "m1");
    assert.deepEqual(again.outbox(at), []);
    assert.equal(again.outboxSize(at), 0);
    again.close();
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600, "still 0600");
  });
});

Deno.test("key store: every file it makes is its owner's only, the journal too", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/made/keys.sqlite`;
    const store = await KeyStore.open(path);
    assert.equal((await Deno.stat(`${dir}/made`)).mode! & 0o777, 0o700, "the directory");
    store.identity(at, () => new Uint8Array(32).fill(1));
    store.addToOutbox(at, waiting("m1"));
    assert.deepEqual(await modes(`${dir}/made`), { "keys.sqlite": 0o600 }, "one file at rest");

    // The rollback journal exists only while a write is open; hold one open to see it.
    const other = new DatabaseSync(path, { timeout: 10_000 });
    other.exec("BEGIN IMMEDIATE");
    other.exec("UPDATE identities SET party = 0");
    assert.deepEqual(await modes(`${dir}/made`), {
      "keys.sqlite": 0o600,
      "keys.sqlite-journal": 0o600,
    });
    other.exec("ROLLBACK");
    other.close();
    store.close();

    // A file left readable by others is made private again.
    await Deno.chmod(path, 0o644);
    (await KeyStore.open(path)).close();
    assert.deepEqual(await modes(`${dir}/made`), { "keys.sqlite": 0o600 });
  });
});

Deno.test("key store: seqs count up per conversation and are never reused", async () => {
  await withDir(async (dir) => {
    const store = await KeyStore.open(`${dir}/keys.sqlite`);
    const bob = { ...at, name: "bob" };
    store.identity(at, () => new Uint8Array(32).fill(1));
    store.identity(bob, () => new Uint8Array(32).fill(2));
    assert.equal(store.addToOutbox(at, waiting("a1")).seq, 1);
    assert.equal(store.addToOutbox(at, waiting("a2")).seq, 2);
    assert.equal(store.addToOutbox(bob, waiting("b1")).seq, 1, "per conversation");
    assert.equal(store.addToOutbox(at, waiting("a3")).seq, 3);
    store.removeFromOutbox(at, "a3");
    store.removeFromOutbox(at, "a2");
    assert.equal(store.addToOutbox(at, waiting("a4")).seq, 4, "not the freed 2 or 3");
    assert.throws(() => store.addToOutbox(at, waiting("a4")), /UNIQUE/, "one client_msg_id once");
    assert.equal(store.addToOutbox(at, waiting("a5")).seq, 5, "the refused one took no seq");
    assert.deepEqual(seqs(store, at), [["a1", 1], ["a4", 4], ["a5", 5]]);
    store.close();
    const again = await KeyStore.open(`${dir}/keys.sqlite`);
    assert.equal(again.addToOutbox(at, waiting("a6")).seq, 6, "next_seq is stored");
    again.close();
  });
});

Deno.test("key store: sealing fills in a waiting entry in its place", async () => {
  await withDir(async (dir) => {
    const store = await KeyStore.open(`${dir}/keys.sqlite`);
    store.identity(at, () => new Uint8Array(32).fill(1));
    store.addToOutbox(at, waiting("m1"));
    store.addToOutbox(at, sealedEntry("m2", 2));
    store.addToOutbox(at, waiting("m3"));
    const sealed = {
      nonce: new Uint8Array(12).fill(5),
      ciphertext: new Uint8Array(30).fill(5),
      peerPublicKey: "02aa",
    };
    assert.deepEqual(store.sealOutboxEntry(at, "m1", sealed), {
      clientMsgId: "m1",
      seq: 1,
      text: "m1",
      ...sealed,
    });
    assert.deepEqual(seqs(store, at), [["m1", 1], ["m2", 2], ["m3", 3]], "still first");
    assert.deepEqual(store.outbox(at)[0]!.ciphertext, new Uint8Array(30).fill(5));
    assert.deepEqual(store.outbox(at)[2]!.peerPublicKey, "", "the others untouched");

    // Sealed bytes may have been sent: they stay, and are what the caller gets.
    const again = store.sealOutboxEntry(at, "m2", { ...sealed, peerPublicKey: "03bb" });
    assert.deepEqual(again, { ...sealedEntry("m2", 2), seq: 2 });
    assert.equal(store.sealOutboxEntry(at, "gone", sealed), undefined);
    assert.throws(
      () => store.sealOutboxEntry(at, "m3", { ...sealed, peerPublicKey: "" }),
      TypeError,
    );
    assert.equal(store.outboxEntry(at, "m3")?.peerPublicKey, "");
    store.close();
  });
});

Deno.test("key store: renumbering the outbox and noting the server's seq", async () => {
  await withDir(async (dir) => {
    const store = await KeyStore.open(`${dir}/keys.sqlite`);
    store.identity(at, () => new Uint8Array(32).fill(1));
    for (const id of ["m1", "m2", "m3", "m4"]) store.addToOutbox(at, waiting(id));
    store.removeFromOutbox(at, "m2"); // refused for good: the server expects 2 next

    // Down by one: each row's new seq is still taken by the next row at first.
    const down = store.renumberOutbox(at, 2);
    assert.deepEqual(down.map((e) => [e.clientMsgId, e.seq]), [["m1", 2], ["m3", 3], ["m4", 4]]);
    assert.equal(store.addToOutbox(at, waiting("m5")).seq, 5);
    // Up (another device used these numbers), overlapping the old ones.
    const up = store.renumberOutbox(at, 3);
    assert.deepEqual(up.map((e) => [e.clientMsgId, e.seq]), [
      ["m1", 3],
      ["m3", 4],
      ["m4", 5],
      ["m5", 6],
    ]);
    assert.deepEqual(seqs(store, at), up.map((e) => [e.clientMsgId, e.seq]), "as stored");
    assert.equal(store.addToOutbox(at, waiting("m6")).seq, 7, "next_seq right after them");
    assert.deepEqual(store.renumberOutbox(at, 1).map((e) => e.seq), [1, 2, 3, 4, 5]);
    assert.equal(store.addToOutbox(at, waiting("m7")).seq, 6, "and down again");
    assert.throws(() => store.renumberOutbox(at, 0), RangeError);
    assert.throws(() => store.renumberOutbox(at, 1.5), RangeError);

    for (const e of store.outbox(at)) store.removeFromOutbox(at, e.clientMsgId);
    assert.deepEqual(store.renumberOutbox(at, 40), []);
    assert.equal(store.addToOutbox(at, waiting("m8")).seq, 40, "an empty outbox sets next_seq");

    store.noteStoredSeq(at, 60);
    assert.equal(store.addToOutbox(at, waiting("m9")).seq, 61, "after the server's");
    store.noteStoredSeq(at, 10);
    assert.equal(store.addToOutbox(at, waiting("m10")).seq, 62, "never lowered");
    assert.deepEqual(seqs(store, at), [["m8", 40], ["m9", 61], ["m10", 62]], "kept theirs");
    store.noteStoredSeq(at, 0);
    assert.throws(() => store.noteStoredSeq(at, -1), RangeError);
    store.close();
  });
});

Deno.test("key store: bind moves what the address holds to the service", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/keys.sqlite`;
    const store = await KeyStore.open(path);
    const address = "localhost:7070";
    const service = `service:${SERVICE_ID}`;
    assert.equal(store.serviceKey(address), address, "before any welcome: the address");

    const old = { service: address, room: "r", name: "alice" };
    const otherRoom = { service: address, room: "r2", name: "alice" };
    store.identity(old, () => new Uint8Array(32).fill(1));
    store.setParty(old, 0);
    store.addPeerKey(old, "02aa", new Uint8Array(32).fill(4), true);
    store.addToOutbox(old, sealedEntry("m1", 1));
    store.addToOutbox(old, waiting("m2"));
    store.addToOutbox(old, sealedEntry("m3", 3));
    store.removeFromOutbox(old, "m1");
    store.identity(otherRoom, () => new Uint8Array(32).fill(2));
    store.addToOutbox(otherRoom, waiting("o1"));

    const bound = store.bind(address, SERVICE_ID, "r", "alice");
    assert.deepEqual(bound, { service, room: "r", name: "alice" });
    assert.equal(store.serviceKey(address), service);
    assert.equal(store.serviceKey("127.0.0.1:7070"), "127.0.0.1:7070", "per address");
    let made = 0;
    assert.deepEqual(store.identity(bound, () => (made++, new Uint8Array(32))), {
      secret: new Uint8Array(32).fill(1),
      party: 0,
    });
    assert.equal(made, 0, "the identity moved");
    assert.deepEqual(store.peerKeys(bound).map((k) => [k.peerPublicKey, k.sharedKey[0]]), [
      ["02aa", 4],
    ]);
    assert.deepEqual(store.outbox(bound), [
      { ...waiting("m2"), seq: 2 },
      { ...sealedEntry("m3", 3), seq: 3 },
    ], "the service had none: the entries keep their seqs and bytes");
    assert.equal(store.addToOutbox(bound, waiting("m4")).seq, 4, "next_seq came along");
    // Every conversation under the address: serviceKey() now says the service for all.
    const movedRoom = { service, room: "r2", name: "alice" };
    assert.deepEqual(
      store.identity(movedRoom, () => new Uint8Array(32)).secret,
      new Uint8Array(32).fill(2),
    );
    assert.deepEqual(seqs(store, movedRoom), [["o1", 1]]);
    for (const left of [old, otherRoom]) {
      assert.deepEqual(store.outbox(left), []);
      assert.deepEqual(store.peerKeys(left), []);
    }

    const snapshot = () => ({
      key: store.serviceKey(address),
      outbox: store.outbox(bound),
      peers: store.peerKeys(bound),
      identity: store.identity(bound, () => new Uint8Array(32)),
    });
    const before = snapshot();
    assert.deepEqual(store.bind(address, SERVICE_ID, "r", "alice"), bound);
    assert.deepEqual(snapshot(), before, "binding again changes nothing");
    store.close();

    const reopened = await KeyStore.open(path);
    assert.equal(reopened.serviceKey(address), service, "the binding is stored");
    reopened.close();
  });
});

Deno.test("key store: a second address for a bound service: the service's identity wins", async () => {
  await withDir(async (dir) => {
    const store = await KeyStore.open(`${dir}/keys.sqlite`);
    // Same secret (a copy of the identity): the peer keys' shared keys fit, so they merge.
    // Its entries are older than the service's: they still go after them.
    const same = { service: "127.0.0.1:7070", room: "r", name: "alice" };
    store.identity(same, () => new Uint8Array(32).fill(1));
    store.addToOutbox(same, sealedEntry("a1", 21));
    store.addToOutbox(same, waiting("a2"));
    store.addToOutbox(same, sealedEntry("a3", 23));
    store.removeFromOutbox(same, "a1");

    const bound = store.bind("localhost:7070", SERVICE_ID, "r", "alice");
    store.identity(bound, () => new Uint8Array(32).fill(1));
    store.addPeerKey(bound, "02aa", new Uint8Array(32).fill(10), true);
    store.addToOutbox(bound, sealedEntry("s1", 1));
    store.addToOutbox(bound, sealedEntry("s2", 2));
    store.noteStoredSeq(bound, 6); // the server holds 1..6: ours continue at 7

    store.addPeerKey(same, "02aa", new Uint8Array(32).fill(99), false); // the service's row stays
    store.addPeerKey(same, "03cc", new Uint8Array(32).fill(11), true);
    assert.deepEqual(store.bind("127.0.0.1:7070", SERVICE_ID, "r", "alice"), bound);
    assert.deepEqual(
      store.peerKeys(bound).map((k) => [k.peerPublicKey, k.sharedKey[0], k.accepted]),
      [["02aa", 10, true], ["03cc", 11, true]],
    );
    assert.deepEqual(store.outbox(bound), [
      { ...sealedEntry("s1", 1), seq: 1 },
      { ...sealedEntry("s2", 2), seq: 2 },
      { ...waiting("a2"), seq: 7 },
      { ...sealedEntry("a3", 23), seq: 8 },
    ], "appended in order, continuing from the service's next_seq");
    store.removeFromOutbox(bound, "a2");
    store.removeFromOutbox(bound, "a3");
    assert.equal(store.addToOutbox(bound, waiting("s3")).seq, 9, "7 and 8 stay used");

    // Another secret: dropped, and what was derived from or sealed under it with it.
    const other = { service: "[::1]:7070", room: "r", name: "alice" };
    store.identity(other, () => new Uint8Array(32).fill(2));
    store.addPeerKey(other, "04dd", new Uint8Array(32).fill(12), true);
    store.addToOutbox(other, sealedEntry("b1", 31));
    store.addToOutbox(other, waiting("b2"));
    store.bind("[::1]:7070", SERVICE_ID, "r", "alice");
    assert.deepEqual(
      store.identity(bound, () => new Uint8Array(32)).secret,
      new Uint8Array(32).fill(1),
    );
    assert.deepEqual(store.peerKeys(bound).map((k) => k.peerPublicKey), ["02aa", "03cc"]);
    assert.deepEqual(store.outbox(bound).slice(-3), [
      { ...waiting("s3"), seq: 9 },
      { ...waiting("b1"), seq: 10 },
      { ...waiting("b2"), seq: 11 },
    ], "to be sealed again under the service's identity");
    assert.deepEqual(
      store.identity(other, () => new Uint8Array(32).fill(3)).secret,
      new Uint8Array(32).fill(3),
      "gone",
    );
    store.close();
  });
});

Deno.test("key store: re-binding an address to another service leaves the old one its rows", async () => {
  await withDir(async (dir) => {
    const store = await KeyStore.open(`${dir}/keys.sqlite`);
    const address = "chat.example:7070";
    const first = store.bind(address, SERVICE_ID, "r", "alice");
    store.identity(first, () => new Uint8Array(32).fill(1));
    store.addToOutbox(first, waiting("m1"));

    const otherId = "0a0b0c0d-0000-4000-8000-000000000001";
    // A client started before that: it keyed by the address and wrote there since.
    const late = { service: address, room: "r", name: "alice" };
    store.addToOutbox(late, waiting("late"));
    store.addToOutbox(late, waiting("later")); // no identity here: after the highest seq
    const second = store.bind(address, otherId, "r", "alice");
    assert.deepEqual(second, { service: `service:${otherId}`, room: "r", name: "alice" });
    assert.equal(store.serviceKey(address), `service:${otherId}`);
    assert.deepEqual(seqs(store, first), [["m1", 1]], "the old service keeps its rows");
    assert.deepEqual(
      store.identity(first, () => new Uint8Array(32)).secret,
      new Uint8Array(32).fill(1),
    );
    assert.deepEqual(
      seqs(store, second),
      [["late", 1], ["later", 2]],
      "what the address held since moved",
    );
    assert.deepEqual(
      store.identity(second, () => new Uint8Array(32).fill(2)).secret,
      new Uint8Array(32).fill(2),
      "a new identity for the new service",
    );
    assert.equal(store.addToOutbox(second, waiting("m2")).seq, 3);
    assert.throws(() => store.bind(address, "", "r", "alice"), TypeError);
    store.close();
  });
});

/**
 * Writes `path` exactly as the first KeyStore created and filled it (schema 1): alice and
 * bob's identities, one peer key, and an outbox written out of order.
 */
function writeFirstSchemaFile(path: string, server: string): void {
  const old = new DatabaseSync(path);
  old.exec(`
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
      PRIMARY KEY (server, room, name, client_msg_id));`);
  old.prepare("INSERT INTO identities (server, room, name, secret, party) VALUES (?, ?, ?, ?, ?)")
    .run(server, "r", "alice", new Uint8Array(32).fill(7), 1);
  old.prepare("INSERT INTO identities (server, room, name, secret) VALUES (?, ?, ?, ?)")
    .run(server, "r", "bob", new Uint8Array(32).fill(8));
  old.prepare(
    `INSERT INTO peer_keys (server, room, name, peer_public_key, shared_key, accepted, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?)`,
  ).run(server, "r", "alice", "02aa", new Uint8Array(32).fill(1), 1, "2024-01-01T00:00:00.000Z");
  const addOld = old.prepare(
    `INSERT INTO outbox (server, room, name, client_msg_id, text, nonce, ciphertext, peer_public_key, created_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  // Inserted out of order, and two in the same millisecond: created_at, then rowid.
  const rows: [string, string, string, Uint8Array, Uint8Array, string, string][] = [
    [
      "alice",
      "third",
      "3",
      new Uint8Array(12),
      new Uint8Array(20).fill(3),
      "02aa",
      "2024-01-01T00:00:03.000Z",
    ],
    [
      "alice",
      "first",
      "1",
      new Uint8Array(12),
      new Uint8Array(20).fill(1),
      "02aa",
      "2024-01-01T00:00:01.000Z",
    ],
    [
      "alice",
      "second",
      "2",
      new Uint8Array(0),
      new Uint8Array(0),
      "",
      "2024-01-01T00:00:01.000Z",
    ],
    ["bob", "b", "b", new Uint8Array(0), new Uint8Array(0), "", "2024-01-01T00:00:05.000Z"],
  ];
  for (const [name, ...row] of rows) addOld.run(server, "r", name, ...row);
  old.close();
}

Deno.test("key store: a file of the first schema is upgraded with everything in it", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/old.sqlite`;
    const server = "127.0.0.1:7070";
    writeFirstSchemaFile(path, server);

    const store = await KeyStore.open(path);
    const alice = { service: store.serviceKey(server), room: "r", name: "alice" };
    const bob = { ...alice, name: "bob" };
    assert.equal(alice.service, server, "not bound yet: keyed by the address as before");
    assert.deepEqual(store.identity(alice, () => new Uint8Array(32)), {
      secret: new Uint8Array(32).fill(7),
      party: 1,
    });
    assert.deepEqual(
      store.peerKeys(alice).map((k) => [k.peerPublicKey, k.sharedKey[0], k.accepted, k.verified]),
      [
        ["02aa", 1, true, false],
      ],
    );
    assert.deepEqual(store.outbox(alice), [
      {
        clientMsgId: "first",
        seq: 1,
        text: "1",
        nonce: new Uint8Array(12),
        ciphertext: new Uint8Array(20).fill(1),
        peerPublicKey: "02aa",
      },
      {
        clientMsgId: "second",
        seq: 2,
        text: "2",
        nonce: new Uint8Array(0),
        ciphertext: new Uint8Array(0),
        peerPublicKey: "",
      },
      {
        clientMsgId: "third",
        seq: 3,
        text: "3",
        nonce: new Uint8Array(12),
        ciphertext: new Uint8Array(20).fill(3),
        peerPublicKey: "02aa",
      },
    ]);
    assert.deepEqual(seqs(store, bob), [["b", 1]], "seqs per conversation");
    assert.equal(store.addToOutbox(alice, waiting("fourth")).seq, 4, "next_seq after the old ones");
    assert.equal(store.addToOutbox(bob, waiting("b2")).seq, 2);
    store.close();
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600, "made private too");

    const again = await KeyStore.open(path); // already upgraded: opens as it is
    const bound = again.bind(server, SERVICE_ID, "r", "alice");
    assert.deepEqual(seqs(again, bound), [["first", 1], ["second", 2], ["third", 3], [
      "fourth",
      4,
    ]]);
    again.close();
    const raw = new DatabaseSync(path);
    assert.deepEqual(
      { ...raw.prepare("PRAGMA user_version").get() },
      { user_version: 4 },
    );
    raw.close();
  });
});

Deno.test("key store: a file from a newer version is refused, not changed", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/new.sqlite`;
    const raw = new DatabaseSync(path);
    raw.exec("PRAGMA user_version = 99");
    raw.close();
    await assert.rejects(KeyStore.open(path), /schema version 99 is newer than this client's 4/);
    const after = new DatabaseSync(path);
    assert.deepEqual({ ...after.prepare("PRAGMA user_version").get() }, { user_version: 99 });
    assert.deepEqual(after.prepare("SELECT name FROM sqlite_master").all(), [], "no tables made");
    after.close();
  });
});

Deno.test("key store: four processes writing one file at once all succeed", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/shared/keys.sqlite`; // not there yet: the four race to create it
    const workers = 4;
    const rounds = 200;
    const script = new URL("./testdata/keystore_writer.ts", import.meta.url).pathname;
    const children = Array.from({ length: workers }, (_, w) =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          `--allow-read=${dir}`,
          `--allow-write=${dir}`,
          script,
          path,
          `${w}`,
          `${rounds}`,
        ],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn());
    const outputs = children.map((child) =>
      child.stdout.pipeThrough(new TextDecoderStream()).getReader()
    );
    const errors = children.map((child) => new Response(child.stderr).text());
    const readUntil = async (reader: ReadableStreamDefaultReader<string>, end?: string) => {
      let text = "";
      for (let part; !(part = await reader.read()).done;) {
        text += part.value;
        if (end && text.includes(end)) break;
      }
      return text;
    };
    // All are running before any opens the file.
    await Promise.all(outputs.map((reader) => readUntil(reader, "ready\n")));
    await Promise.all(children.map((child) => child.stdin.close()));
    const printedLines = await Promise.all(outputs.map((reader) => readUntil(reader)));
    for (const [w, child] of children.entries()) {
      assert.equal((await child.status).code, 0, `worker ${w}: ${await errors[w]}`);
    }
    const reports = printedLines.map((line) => JSON.parse(line));
    const printed = reports.map((report) => report.sharedSecret);
    for (const report of reports.slice(1)) {
      assert.deepEqual(report.together, reports[0].together, "the same identities for all");
    }
    assert.equal(new Set(reports[0].together).size, rounds);
    assert.equal(new Set(printed).size, 1, `one shared identity for all: ${printed}`);

    const store = await KeyStore.open(path);
    const service = "service:0b5e7d0c-1111-4a4a-8888-0123456789ab";
    const shared = { service, room: "shared", name: "all" };
    const sharedSecret = store.identity(shared, () => new Uint8Array(32));
    assert.equal(
      bytesToHex(sharedSecret.secret),
      printed[0],
    );
    const all = store.outbox(shared);
    assert.deepEqual(
      all.map((e) => e.seq),
      Array.from({ length: workers * rounds }, (_, i) => i + 1),
      "no seq twice, none skipped",
    );
    for (let w = 0; w < workers; w++) {
      const own = all.filter((e) => e.clientMsgId.startsWith(`w${w}-`)).map((e) => e.text);
      assert.deepEqual(
        own,
        Array.from({ length: rounds }, (_, i) => `${w}:${i}`),
        `worker ${w}'s in its order`,
      );
      for (let n = 0; n < 4; n++) {
        const conversation = { service, room: `room-${w}`, name: `n${n}` };
        const entries = store.outbox(conversation);
        assert.deepEqual(
          entries.map((e) => [e.text, e.seq]),
          Array.from({ length: rounds / 4 }, (_, k) => [`${w}:${4 * k + n}`, k + 1]),
        );
        assert.equal(store.peerKeys(conversation).length, rounds / 4);
        assert.equal(
          store.identity(conversation, () => new Uint8Array(32)).party,
          n === 0 ? 1 : null,
        );
      }
    }
    assert.equal(store.addToOutbox(shared, waiting("last")).seq, workers * rounds + 1);
    store.close();
    assert.deepEqual(await modes(`${dir}/shared`), { "keys.sqlite": 0o600 });
  });
});

Deno.test("key store: a key a code confirmed is trusted and marked so, and stays marked when it moves", async () => {
  await withDir(async (dir) => {
    const store = await KeyStore.open(`${dir}/keys.sqlite`);
    const at = { service: store.serviceKey("127.0.0.1:7070"), room: "r", name: "alice" };
    store.addPeerKey(at, "02aa", new Uint8Array(32).fill(1), false);
    store.addPeerKey(at, "02bb", new Uint8Array(32).fill(2), false);
    store.verifyPeerKey(at, "02aa");
    const flags = () => store.peerKeys(at).map((k) => [k.peerPublicKey, k.accepted, k.verified]);
    assert.deepEqual(flags(), [["02aa", true, true], ["02bb", false, false]]);
    store.touchPeerKey(at, "02aa"); // the peer is back on it: newest, still confirmed
    assert.deepEqual(flags(), [["02bb", false, false], ["02aa", true, true]]);
    store.verifyPeerKey(at, "02cc"); // no such key: nothing changes
    assert.deepEqual(flags(), [["02bb", false, false], ["02aa", true, true]]);
    // Bound to the service the welcome names: moved with its mark.
    const moved = store.bind(
      "127.0.0.1:7070",
      "3b0e7c9a-1f2d-4e5f-8a9b-0c1d2e3f4a5b",
      "r",
      "alice",
    );
    assert.deepEqual(
      store.peerKeys(moved).map((k) => [k.peerPublicKey, k.verified]),
      [["02bb", false], ["02aa", true]],
    );
    store.close();
  });
});

Deno.test("key store: a key a code run failed against is untrusted, and what was sealed under it waits again", async () => {
  await withDir(async (dir) => {
    const store = await KeyStore.open(`${dir}/keys.sqlite`);
    const at = { service: store.serviceKey("127.0.0.1:7070"), room: "r", name: "alice" };
    store.addPeerKey(at, "02aa", new Uint8Array(32).fill(1), true);
    store.addPeerKey(at, "02bb", new Uint8Array(32).fill(2), true);
    store.addToOutbox(at, sealedEntry("under-aa", 3, "02aa"));
    store.addToOutbox(at, sealedEntry("under-bb", 4, "02bb"));
    store.failPeerKey(at, "02aa");
    assert.deepEqual(
      store.peerKeys(at).map((k) => [k.peerPublicKey, k.accepted, k.codeFailed]),
      [["02aa", false, true], ["02bb", true, false]],
    );
    const outbox = store.outbox(at).map((
      e,
    ) => [e.clientMsgId, e.peerPublicKey, e.ciphertext.length]);
    assert.deepEqual(
      outbox,
      [["under-aa", "", 0], ["under-bb", "02bb", 20]],
      "only its own unsealed",
    );
    // A code confirming it, or the user naming it, clears the mark.
    store.verifyPeerKey(at, "02aa");
    assert.equal(store.peerKeys(at)[0]!.codeFailed, false);
    store.failPeerKey(at, "02bb");
    store.acceptPeerKey(at, "02bb");
    assert.deepEqual(store.peerKeys(at)[1], {
      ...store.peerKeys(at)[1]!,
      accepted: true,
      codeFailed: false,
    });
    store.close();
  });
});
