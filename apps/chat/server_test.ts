// The chat server over real TCP, on PGlite (the embedded default) and on PostgreSQL:
// handshake and rooms, key relay (also to a party that comes later), storage with
// idempotent retries, history, limits, malformed input, and - on PostgreSQL - two
// instances delivering each other's messages and a database connection that drops.
import assert from "node:assert/strict";
import { resetConnections, testWith, waitFor } from "@duet/testkit";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { base64, claimFor, deriveSharedKey, encryptMessage, messageAad } from "./crypto.ts";
import {
  type ClientMessage,
  encodeFrame,
  FrameDecoder,
  MAX_CIPHERTEXT_BYTES,
  MAX_FRAME_BYTES,
  parseServerMessage,
  PROTOCOL_VERSION,
} from "./protocol.ts";
import { type RunningChatServer, startChatServer } from "./server.ts";
import { type ChatStore, connectPostgres } from "./store.ts";
import { sendFrame, TestClient } from "./testdata/client.ts";
import { pgliteStore, postgresRequirement, postgresStore } from "./testdata/stores.ts";

const options = { sanitizeOps: false, sanitizeResources: false };

async function withServer(
  open: () => Promise<ChatStore>,
  fn: (server: RunningChatServer) => Promise<void>,
  config: {
    messagesPerSecond?: number;
    maxConnectionsPerAddress?: number;
    idleTimeoutMs?: number;
  } = {},
) {
  const server = await startChatServer({ store: await open(), port: 0, ...config });
  try {
    await fn(server);
  } finally {
    await server.shutdown();
  }
}

/** The welcome's challenge. */
function challengeOf(message: { type: string }): string {
  return (message as { challenge?: string }).challenge ?? "";
}

const engines = [
  { name: "PGlite", open: pgliteStore, requirement: { name: "PGlite", missing: undefined } },
  { name: "PostgreSQL", open: postgresStore, requirement: postgresRequirement },
];

for (const engine of engines) {
  testWith(engine.requirement, {
    name:
      `chat server (${engine.name}): two parties per room, a third refused, a name may come back`,
    ...options,
    fn: () =>
      withServer(engine.open, async ({ addr }) => {
        const [alice, welcomeA] = await TestClient.join(addr.port, "alice", "room1");
        const service = welcomeA.type === "welcome" ? welcomeA.service : "";
        assert.match(service, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
        assert.deepEqual(welcomeA, {
          type: "welcome",
          version: PROTOCOL_VERSION,
          party: 0,
          peer: null,
          last_id: 0,
          service,
          last_seq: 0,
          challenge: challengeOf(welcomeA),
        });
        const [bob, welcomeB] = await TestClient.join(addr.port, "bob", "room1");
        assert.deepEqual(welcomeB, {
          type: "welcome",
          version: PROTOCOL_VERSION,
          party: 1,
          peer: "alice",
          last_id: 0,
          service,
          last_seq: 0,
          challenge: challengeOf(welcomeB),
        });
        const [carol, refused] = await TestClient.join(addr.port, "carol", "room1");
        assert.equal(refused.type === "error" && refused.code, "room_full");
        await carol.closed;
        // The name comes back with its key (the one it claimed first): the older connection
        // is replaced.
        const [alice2, again] = await TestClient.join(addr.port, "alice", "room1", {
          secret: alice.secret,
        });
        assert.deepEqual(again, {
          type: "welcome",
          version: PROTOCOL_VERSION,
          party: 0,
          peer: "bob",
          last_id: 0,
          service,
          last_seq: 0,
          challenge: challengeOf(again),
        });
        assert.notEqual(challengeOf(again), challengeOf(welcomeA), "a fresh challenge each time");
        const bye = await alice.next((m) => m.type === "bye");
        assert.deepEqual(bye, {
          type: "bye",
          reason: "replaced by a newer connection with your name",
        });
        await alice.closed;
        for (const c of [alice2, bob]) c.close();
      }),
  });

  testWith(engine.requirement, {
    name:
      `chat server (${engine.name}): key offers are checked and reach the peer, now or when it comes`,
    ...options,
    fn: () =>
      withServer(engine.open, async ({ addr }) => {
        const [alice, welcome] = await TestClient.join(addr.port, "alice", "keys");
        // In: a later offer of another key, proved for the wrong party, is refused.
        await alice.send(sendFrame("in", 1));
        await alice.next((m) => m.type === "stored");
        const other = secp256k1.utils.randomSecretKey();
        await alice.send({
          type: "key_offer",
          ...claimFor(other, {
            room: "keys",
            name: "alice",
            party: 1,
            challenge: challengeOf(welcome),
          }),
        });
        const bad = await alice.next((m) => m.type === "error");
        assert.equal(bad.type === "error" && bad.code, "bad_proof");
        alice.close();
        // Bob was never online with Alice: her offer waits for him.
        await new Promise((r) => setTimeout(r, 50));
        const [bob] = await TestClient.join(addr.port, "bob", "keys");
        assert.deepEqual(await bob.next((m) => m.type === "peer_key"), {
          type: "peer_key",
          name: "alice",
          party: 0,
          public_key: alice.offer!.public_key,
          proof: alice.offer!.proof,
        });
        const [alice2] = await TestClient.join(addr.port, "alice", "keys", {
          secret: alice.secret,
        });
        // Bob's key reaches Alice when she is in.
        assert.deepEqual(await alice2.next((m) => m.type === "peer_key"), {
          type: "peer_key",
          name: "bob",
          party: 1,
          public_key: bob.offer!.public_key,
          proof: bob.offer!.proof,
        });
        for (const c of [alice2, bob]) c.close();
      }),
  });

  testWith(engine.requirement, {
    name:
      `chat server (${engine.name}): messages are acknowledged once stored, pushed to the peer, ` +
      "stored once when retried, and paged back from history",
    ...options,
    fn: () =>
      withServer(engine.open, async ({ addr }) => {
        const [alice] = await TestClient.join(addr.port, "alice", "msgs");
        const [bob] = await TestClient.join(addr.port, "bob", "msgs");
        await alice.send(sendFrame("m1", 1, 1));
        const stored = await alice.next((m) => m.type === "stored");
        assert.equal(stored.type === "stored" && stored.client_msg_id, "m1");
        const pushed = await bob.next((m) => m.type === "message");
        assert.equal(
          pushed.type === "message" && pushed.message.id,
          stored.type === "stored" && stored.id,
        );
        assert.deepEqual(
          pushed.type === "message" && pushed.message.ciphertext,
          (sendFrame("m1", 1, 1) as { ciphertext: string }).ciphertext,
        );
        await alice.send(sendFrame("m1", 1, 9)); // a retry after a lost acknowledgement
        const again = await alice.next((m) => m.type === "stored");
        assert.equal(again.type === "stored" && again.id, stored.type === "stored" && stored.id);
        for (let i = 2; i <= 5; i++) await alice.send(sendFrame(`m${i}`, i));
        for (let i = 2; i <= 5; i++) await alice.next((m) => m.type === "stored");
        await waitFor(() => bob.all("message").length === 4, "bob's pushes");
        assert.equal(alice.all("message").length, 0, "no echo to the sender");
        bob.close();
        // Bob comes back and catches up from what he had seen.
        const [bob2, welcome] = await TestClient.join(addr.port, "bob", "msgs", {
          secret: bob.secret,
        });
        assert.equal(welcome.type === "welcome" && welcome.last_id > 0, true);
        await bob2.send({ type: "history", limit: 2 });
        const last = await bob2.next((m) => m.type === "history_page");
        assert.equal(last.type === "history_page" && last.has_more, true);
        assert.deepEqual(
          last.type === "history_page" && last.messages.map((m) => m.client_msg_id),
          ["m4", "m5"],
        );
        const firstId = stored.type === "stored" ? stored.id : 0;
        await bob2.send({ type: "history", after: firstId, limit: 50 });
        const rest = await bob2.next((m) => m.type === "history_page");
        assert.deepEqual(
          rest.type === "history_page" && rest.messages.map((m) => m.client_msg_id),
          ["m2", "m3", "m4", "m5"],
        );
        assert.equal(rest.type === "history_page" && rest.has_more, false);
        await bob2.send({ type: "heartbeat" });
        await bob2.next((m) => m.type === "heartbeat");
        for (const c of [alice, bob2]) c.close();
      }),
  });
}

testWith({ name: "PGlite", missing: undefined }, {
  name:
    "chat server: malformed input gets an error frame and the connection closed; others are served",
  ...options,
  fn: () =>
    withServer(pgliteStore, async ({ addr }) => {
      const cases: [Uint8Array, string][] = [
        [new Uint8Array([0, 0, 0, 0]), "bad_frame"],
        [new Uint8Array([0, 0x10, 0, 1]), "frame_too_large"],
        [new Uint8Array([0, 0, 0, 2, 0xff, 0xfe]), "bad_frame"],
        [new Uint8Array([0, 0, 0, 3, 0x6e, 0x6f, 0x21]), "bad_frame"], // "no!" is not JSON
        [encodeFrame({ type: "heartbeat" }), "handshake_required"],
        [encodeFrame({ type: "hello", version: 1, name: "a", room: "r" }), "unsupported_version"],
        [
          encodeFrame(
            { type: "hello", version: PROTOCOL_VERSION, name: "bad name!", room: "r" } as never,
          ),
          "bad_message",
        ],
      ];
      for (const [bytes, code] of cases) {
        const client = await TestClient.connect(addr.port);
        await client.sendRaw(bytes);
        const error = await client.next((m) => m.type === "error");
        assert.equal(error.type === "error" && error.code, code, JSON.stringify(error));
        await client.closed;
      }
      assert.ok(MAX_FRAME_BYTES < 0x100001);
      // Random bytes, whole and cut anywhere: an error or nothing, never a crash.
      for (let i = 0; i < 50; i++) {
        const client = await TestClient.connect(addr.port);
        await client.sendRaw(crypto.getRandomValues(new Uint8Array(1 + (i * 7) % 64)));
        client.close();
      }
      const [ok, welcome] = await TestClient.join(addr.port, "still", "served");
      assert.equal(welcome.type, "welcome");
      ok.close();
    }),
});

testWith({ name: "PGlite", missing: undefined }, {
  name: "chat server: a ciphertext over the limit is refused for that message alone " +
    "(message_too_large, not retryable); the connection goes on",
  ...options,
  fn: () =>
    withServer(pgliteStore, async ({ addr }) => {
      const [alice] = await TestClient.join(addr.port, "alice", "long");
      for (
        const [id, bytes, seq] of [["limit", MAX_CIPHERTEXT_BYTES, 1], [
          "over",
          MAX_CIPHERTEXT_BYTES + 1,
          2,
        ]] as const
      ) {
        await alice.send({
          ...sendFrame(id, seq),
          ciphertext: base64.encode(new Uint8Array(bytes).fill(7)),
        } as ClientMessage);
      }
      await alice.send(sendFrame("after", 2)); // the refused one's seq is free again
      const stored = await alice.next((m) => m.type === "stored" && m.client_msg_id === "limit");
      const refused = await alice.next((m) => m.type === "error");
      assert.deepEqual(
        refused.type === "error" &&
          [refused.code, refused.retryable, refused.client_msg_id, refused.message],
        [
          "message_too_large",
          false,
          "over",
          `a ciphertext of ${MAX_CIPHERTEXT_BYTES + 1} bytes; at most ${MAX_CIPHERTEXT_BYTES}`,
        ],
      );
      await alice.next((m) => m.type === "stored" && m.client_msg_id === "after");
      // Nothing of the refused one was stored: history holds the two others.
      await alice.send({ type: "history", limit: 10 });
      const page = await alice.next((m) => m.type === "history_page");
      assert.deepEqual(
        page.type === "history_page" && page.messages.map((m) => m.client_msg_id),
        ["limit", "after"],
      );
      assert.equal(stored.type === "stored" && typeof stored.id, "number");
      alice.close();
    }),
});

testWith({ name: "PGlite", missing: undefined }, {
  name: "chat server: sends beyond the rate are paced, not refused, and stored in the order " +
    "sent; connections per address are capped",
  ...options,
  fn: () =>
    withServer(pgliteStore, async ({ addr }) => {
      const [alice] = await TestClient.join(addr.port, "alice", "busy");
      for (let i = 1; i <= 14; i++) await alice.send(sendFrame(`b${i}`, i));
      await waitFor(() => alice.all("stored").length + alice.all("error").length === 14, "answers");
      assert.deepEqual(alice.all("error"), [], "nothing refused");
      assert.deepEqual(
        alice.all("stored").map((s) => [s.client_msg_id, s.seq]),
        Array.from({ length: 14 }, (_, i) => [`b${i + 1}`, i + 1]),
      );
      const ids = alice.all("stored").map((s) => s.id);
      assert.deepEqual(ids, [...ids].sort((a, b) => a - b), "ids in the order sent");
      const extra = await TestClient.connect(addr.port); // alice holds one, this is the second
      const refused = await TestClient.connect(addr.port);
      const error = await refused.next((m) => m.type === "error");
      assert.equal(error.type === "error" && error.code, "too_many_connections");
      for (const c of [alice, extra, refused]) c.close();
    }, { messagesPerSecond: 5, maxConnectionsPerAddress: 2 }),
});

testWith({ name: "PGlite", missing: undefined }, {
  name: "chat server: a cap of 0 connections per address means no cap",
  ...options,
  fn: () =>
    withServer(pgliteStore, async ({ addr }) => {
      const clients = await Promise.all(
        Array.from({ length: 20 }, (_, i) => TestClient.join(addr.port, `p${i}`, `cap${i}`)),
      );
      assert.deepEqual(clients.map(([, w]) => w.type), Array(20).fill("welcome"));
      for (const [c] of clients) c.close();
    }, { maxConnectionsPerAddress: 0 }),
});

testWith(postgresRequirement, {
  name: "chat server: two instances on one PostgreSQL deliver each other's messages and keys",
  ...options,
  async fn() {
    const storeA = await postgresStore();
    const storeB = await postgresStore(storeA.schema);
    const one = await startChatServer({ store: storeA, port: 0 });
    const two = await startChatServer({ store: storeB, port: 0 });
    try {
      const [alice] = await TestClient.join(one.addr.port, "alice", "across");
      const [bob] = await TestClient.join(two.addr.port, "bob", "across");
      await alice.send(sendFrame("x1", 1));
      const pushed = await bob.next((m) => m.type === "message");
      assert.equal(pushed.type === "message" && pushed.message.sender, "alice");
      // Bob's claim (sent by join) reaches Alice through the other instance.
      const key = await alice.next((m) => m.type === "peer_key");
      assert.equal(key.type === "peer_key" && key.public_key, bob.offer!.public_key);
      for (const c of [alice, bob]) c.close();
    } finally {
      await one.shutdown();
      await two.shutdown().catch(() => {}); // its schema went with the first store's close
    }
  },
});

testWith(postgresRequirement, {
  name: "chat server: two instances on one PostgreSQL tell each other's presence; an instance " +
    "whose database session is gone (as a dead one's) has its parties told to have left",
  ...options,
  async fn() {
    const storeA = await postgresStore();
    const storeB = await postgresStore(storeA.schema);
    const one = await startChatServer({ store: storeA, port: 0, presenceCheckMs: 100 });
    // Two never checks again: its session, once gone, stays gone, as a dead instance's.
    const two = await startChatServer({ store: storeB, port: 0, presenceCheckMs: 2 ** 31 - 1 });
    const admin = await connectPostgres(postgresRequirement.url, {
      applicationName: "duet-chat-test-admin",
    });
    try {
      const told = (c: TestClient) =>
        c.next((m) => m.type === "presence").then((m) =>
          m.type === "presence" && [m.name, m.present]
        );
      const [alice] = await TestClient.join(one.addr.port, "alice", "seen");
      // Alice's row is written after her welcome: until it is, the truth in the database is
      // that she is not here, and a party joining on the other instance would be told so
      // first (then that she came).
      await waitFor(async () =>
        (await admin.query(
          `SELECT 1 FROM "${storeA.schema}".chat_presence WHERE room = 'seen' AND name = 'alice'`,
        )).length === 1, "alice's presence row");
      const [bob] = await TestClient.join(two.addr.port, "bob", "seen");
      assert.deepEqual(await told(alice), ["bob", true], "bob, on the other instance, came");
      assert.deepEqual(await told(bob), ["alice", true], "alice, on the other instance, is here");
      bob.close();
      assert.deepEqual(await told(alice), ["bob", false], "bob left");
      const [again] = await TestClient.join(two.addr.port, "bob", "seen", { secret: bob.secret });
      assert.deepEqual(await told(alice), ["bob", true], "bob is back");
      assert.deepEqual(await told(again), ["alice", true]);
      await admin.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        [storeB.instance],
      );
      assert.deepEqual(await told(alice), ["bob", false], "bob's instance is gone");
      assert.deepEqual(alice.all("presence"), [], "nothing more");
      for (const c of [alice, again]) c.close();
    } finally {
      await admin.close();
      await one.shutdown();
      await two.shutdown().catch(() => {}); // its schema went with the first store's close
    }
  },
});

testWith(postgresRequirement, {
  name: "chat server: the database connections drop mid-conversation; sends are refused as " +
    "retryable, never falsely acknowledged, and no acknowledged message is lost",
  ...options,
  async fn() {
    const application = `duet-chat-drop-${crypto.randomUUID().slice(0, 8)}`;
    const store = await postgresStore(undefined, application);
    const server = await startChatServer({ store, port: 0 });
    const admin = await connectPostgres(postgresRequirement.url, {
      applicationName: "duet-chat-test-admin",
    });
    // Every backend of the server (its pool and its listener) is cut, as a restart would.
    const kill = async (db: Pick<typeof admin, "query">) => {
      const rows = await db.query<{ cut: boolean }>(
        "SELECT pg_terminate_backend(pid) AS cut FROM pg_stat_activity " +
          "WHERE application_name = $1",
        [application],
      );
      assert.ok(rows.some((row) => row.cut), "a backend of the server was cut");
    };
    try {
      const [alice] = await TestClient.join(server.addr.port, "alice", "drop");
      const [bob] = await TestClient.join(server.addr.port, "bob", "drop");
      /** Alice sends `id` once; resolves with the server's answer to it. */
      const attempt = async (id: string, seq: number) => {
        await alice.send(sendFrame(id, seq));
        return await alice.next((m) =>
          (m.type === "stored" || m.type === "error") && m.client_msg_id === id
        );
      };
      const acknowledged = new Set<string>();
      for (let i = 0; i < 30; i++) {
        const id = `d${i}`;
        if (i === 10) {
          // Cut while the store is in flight: the room's row is held, so the server's store
          // waits on it; the backends are cut while it waits, then the row is let go. Nothing
          // was committed, and the answer must say so: a retryable refusal, never "stored".
          const answer = await admin.transaction(async (tx) => {
            await tx.query(
              `SELECT room FROM "${store.schema}".rooms WHERE room = 'drop' FOR UPDATE`,
            );
            const answer = attempt(id, i + 1);
            await waitFor(async () => {
              const [row] = await tx.query<{ waiting: number }>(
                "SELECT count(*)::int AS waiting FROM pg_stat_activity " +
                  "WHERE application_name = $1 AND wait_event_type = 'Lock'",
                [application],
              );
              return row!.waiting > 0;
            }, "the server's store to wait on the held row");
            await kill(tx);
            return await answer;
          });
          assert.ok(
            answer.type === "error" && answer.retryable,
            `a store cut in flight is refused as retryable, not ${JSON.stringify(answer)}`,
          );
        }
        // Cut between sends (at 20): the pool's idle connections are gone when the next
        // store comes; it is stored on a new one, or refused as retryable.
        if (i === 20) await kill(admin);
        // Like a client with an outbox: retry on a retryable error until stored.
        for (let tries = 0; tries < 50; tries++) {
          const answer = await attempt(id, i + 1);
          if (answer.type === "stored") {
            acknowledged.add(id);
            break;
          }
          assert.equal(answer.type === "error" && answer.retryable, true);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      assert.equal(acknowledged.size, 30);
      await bob.send({ type: "history", limit: 200 });
      const page = await bob.next((m) => m.type === "history_page");
      const stored = page.type === "history_page" ? page.messages.map((m) => m.client_msg_id) : [];
      assert.deepEqual(stored.sort(), [...acknowledged].sort(), "each acknowledged message once");
      // Bob was pushed everything too, live or by the catch-up after the listener came back.
      await waitFor(
        () => new Set(bob.all("message").map((m) => m.message.client_msg_id)).size === 30,
        "bob to have every message",
        15_000,
      );
      for (const c of [alice, bob]) c.close();
    } finally {
      await server.shutdown();
      await admin.close().catch(() => {});
    }
  },
});

for (const engine of engines) {
  testWith(engine.requirement, {
    name: `chat server (${engine.name}): no plaintext and no key reaches the database`,
    ...options,
    async fn() {
      const store = await engine.open();
      const server = await startChatServer({ store, port: 0 });
      try {
        const room = "secret-room";
        const [alice] = await TestClient.join(server.addr.port, "alice", room);
        const [bob] = await TestClient.join(server.addr.port, "bob", room);
        const keys: [string, string] = [alice.offer!.public_key, bob.offer!.public_key];
        const key = await deriveSharedKey(alice.secret, room, keys, 0);
        const raw = new Uint8Array(await crypto.subtle.exportKey("raw", key));
        const plaintext = "MARKER the launch code is 0451";
        const { nonce, ciphertext } = await encryptMessage(
          key,
          plaintext,
          messageAad(room, "alice", "p1"),
        );
        await alice.send({
          type: "send",
          client_msg_id: "p1",
          seq: 1,
          nonce: base64.encode(nonce),
          ciphertext: base64.encode(ciphertext),
        });
        await alice.next((m) => m.type === "stored");
        // Everything the database holds, every table and column, as text and as bytes.
        const dump = await store.dumpForTests();
        const haystack = new TextEncoder().encode(dump.text);
        const contains = (needle: Uint8Array) =>
          dump.bytes.some((b) => indexOf(b, needle) >= 0) || indexOf(haystack, needle) >= 0;
        assert.ok(contains(ciphertext), "the ciphertext is there (the search works)");
        assert.ok(!contains(new TextEncoder().encode("MARKER")), "no plaintext");
        assert.ok(!contains(new TextEncoder().encode("0451")), "no plaintext");
        assert.ok(!contains(raw), "no shared key");
        assert.ok(!contains(alice.secret) && !contains(bob.secret), "no secret key");
        assert.ok(
          !dump.text.includes(bytesToHex(raw)) && !dump.text.includes(bytesToHex(alice.secret)),
        );
        for (const c of [alice, bob]) c.close();
      } finally {
        await server.shutdown();
      }
    },
  });
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

testWith({ name: "PGlite", missing: undefined }, {
  name:
    "chat server: a connection silent past the idle timeout gets bye and is closed; heartbeats keep one open",
  ...options,
  fn: () =>
    withServer(pgliteStore, async ({ addr }) => {
      const [quiet] = await TestClient.join(addr.port, "quiet", "idle");
      const [chatty] = await TestClient.join(addr.port, "chatty", "idle");
      const beating = setInterval(() => chatty.send({ type: "heartbeat" }).catch(() => {}), 100);
      try {
        assert.deepEqual(await quiet.next((m) => m.type === "bye", 3000), {
          type: "bye",
          reason: "idle",
        });
        await quiet.closed;
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(chatty.all("bye").length, 0, "the heartbeating one is still there");
      } finally {
        clearInterval(beating);
        chatty.close();
      }
    }, { idleTimeoutMs: 300 }),
});

testWith({ name: "PGlite", missing: undefined }, {
  name: "chat server: shutdown says bye to every client and closes; new connections are refused",
  ...options,
  async fn() {
    const server = await startChatServer({ store: await pgliteStore(), port: 0 });
    const [alice] = await TestClient.join(server.addr.port, "alice", "closing");
    await server.shutdown();
    assert.deepEqual(await alice.next((m) => m.type === "bye"), {
      type: "bye",
      reason: "the server is shutting down",
    });
    await alice.closed;
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: server.addr.port }));
  },
});

for (const engine of engines) {
  testWith(engine.requirement, {
    name: `chat server (${engine.name}): 300 sends pipelined by one sender are stored and ` +
      "pushed in the order sent; a seq out of order is refused naming the expected one",
    ...options,
    fn: () =>
      withServer(engine.open, async ({ addr }) => {
        const [alice] = await TestClient.join(addr.port, "alice", "burst");
        const [bob] = await TestClient.join(addr.port, "bob", "burst");
        await alice.send(sendFrame("early", 3));
        const refused = await alice.next((m) => m.type === "error");
        assert.deepEqual(
          refused.type === "error" &&
            [refused.code, refused.retryable, refused.client_msg_id, refused.expected_seq],
          ["out_of_order", true, "early", 1],
        );
        const frames = Array.from({ length: 300 }, (_, i) =>
          encodeFrame(sendFrame(`b${i + 1}`, i + 1)));
        await alice.sendRaw(new Uint8Array(frames.flatMap((f) => [...f])));
        await waitFor(
          () =>
            alice.all("stored").length === 300,
          "300 stored",
          30_000,
        );
        assert.deepEqual(alice.all("error"), [], "nothing refused");
        const stored = alice.all("stored");
        assert.deepEqual(stored.map((s) => s.seq), stored.map((_, i) => i + 1));
        const ids = stored.map((s) => s.id);
        assert.deepEqual(ids, [...ids].sort((a, b) => a - b), "ids in seq order");
        await waitFor(() => bob.all("message").length === 300, "300 pushed", 30_000);
        assert.deepEqual(bob.all("message").map((m) => m.message.seq), stored.map((s) => s.seq));
        for (const c of [alice, bob]) c.close();
      }, { messagesPerSecond: 10_000 }),
  });

  testWith(engine.requirement, {
    name: `chat server (${engine.name}): 250 messages of 300 bytes: every history page fits ` +
      "a frame and paging after the last id reads them all",
    ...options,
    fn: () =>
      withServer(engine.open, async ({ addr }) => {
        const [alice] = await TestClient.join(addr.port, "alice", "long-history");
        const big = (i: number) => ({
          ...sendFrame(`h${i}`, i),
          ciphertext: base64.encode(new Uint8Array(300).fill(i % 250)),
        } as ClientMessage);
        for (let i = 1; i <= 250; i++) await alice.send(big(i));
        await waitFor(() => alice.all("stored").length === 250, "250 stored", 30_000);
        const [bob] = await TestClient.join(addr.port, "bob", "long-history");
        const read: string[] = [];
        let after = 0;
        for (let pages = 0; pages < 20; pages++) {
          await bob.send({ type: "history", after, limit: 200 });
          const page = await bob.next((m) => m.type === "history_page" || m.type === "error");
          assert.equal(page.type, "history_page", JSON.stringify(page).slice(0, 200));
          if (page.type !== "history_page") break;
          read.push(...page.messages.map((m) => m.client_msg_id));
          after = page.messages.at(-1)?.id ?? after;
          if (!page.has_more) break;
        }
        assert.deepEqual(read, Array.from({ length: 250 }, (_, i) => `h${i + 1}`));
        await bob.send({ type: "history", limit: 200 }); // the newest, read backwards
        const newest = await bob.next((m) => m.type === "history_page");
        assert.equal(newest.type === "history_page" && newest.has_more, true);
        assert.equal(
          newest.type === "history_page" && newest.messages.at(-1)?.client_msg_id,
          "h250",
        );
        for (const c of [alice, bob]) c.close();
      }, { messagesPerSecond: 10_000 }),
  });

  testWith(engine.requirement, {
    name: `chat server (${engine.name}): a client_msg_id no database can store is refused ` +
      "for good (bad_text), alone; twelve other senders meanwhile are all stored",
    ...options,
    fn: () =>
      withServer(engine.open, async ({ addr }) => {
        const [bad] = await TestClient.join(addr.port, "mallory", "bad-room");
        const honest = await Promise.all(
          Array.from({ length: 12 }, (_, i) => TestClient.join(addr.port, `s${i}`, `room${i}`)),
        );
        const sending = honest.map(async ([client], i) => {
          for (let n = 1; n <= 30; n++) await client.send(sendFrame(`s${i}-${n}`, n));
        });
        for (let n = 1; n <= 30; n++) {
          await bad.send(sendFrame(n % 2 ? `nul\u0000${n}` : `lone\ud800${n}`, 1));
        }
        await Promise.all(sending);
        await waitFor(() => bad.all("error").length === 30, "30 refusals");
        assert.deepEqual(
          [...new Set(bad.all("error").map((e) => `${e.code} ${e.retryable}`))],
          ["bad_text false"],
        );
        await bad.send(sendFrame("fine", 1));
        await bad.next((m) => m.type === "stored" && m.client_msg_id === "fine");
        for (const [client] of honest) {
          await waitFor(() => client.all("stored").length === 30, "30 stored", 20_000);
          assert.deepEqual(client.all("error"), []);
          client.close();
        }
        bad.close();
      }, { messagesPerSecond: 10_000 }),
  });
}

testWith({ name: "PGlite", missing: undefined }, {
  name: "chat server: a client that asks and never reads is closed before its replies pile up",
  ...options,
  fn: () =>
    withServer(pgliteStore, async ({ addr }) => {
      const [alice] = await TestClient.join(addr.port, "alice", "hoard");
      for (let i = 1; i <= 200; i++) {
        await alice.send({
          ...sendFrame(`h${i}`, i),
          ciphertext: base64.encode(new Uint8Array(300).fill(1)),
        } as ClientMessage);
      }
      await waitFor(() => alice.all("stored").length === 200, "200 stored", 30_000);
      alice.close();
      // Raw: this one never reads. 400 pages of ~64 KiB are ~25 MiB of replies.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: addr.port });
      const writer = conn.writable.getWriter();
      await writer.write(
        encodeFrame({ type: "hello", version: PROTOCOL_VERSION, name: "bob", room: "hoard" }),
      );
      // Reads the welcome only, to claim the name; then never reads again.
      const reader = conn.readable.getReader();
      const frames = new FrameDecoder();
      let welcome: unknown;
      while (welcome === undefined) {
        const { value } = await reader.read();
        welcome = frames.push(value!).map(parseServerMessage).find((m) => m.type === "welcome");
      }
      const { party, challenge } = welcome as { party: 0 | 1; challenge: string };
      const secret = secp256k1.utils.randomSecretKey();
      await writer.write(encodeFrame({
        type: "key_offer",
        ...claimFor(secret, { room: "hoard", name: "bob", party, challenge }),
      }));
      reader.releaseLock();
      const ask = encodeFrame({ type: "history", after: 0, limit: 200 });
      let written = 0;
      try {
        for (; written < 400; written++) await writer.write(ask);
      } catch {
        // closed by the server: what this test wants
      }
      // The server closes it: reading what was sent ends, rather than going on for 25 MiB.
      let read = 0;
      try {
        for await (const chunk of conn.readable) read += chunk.length;
      } catch {
        // reset: closed either way
      }
      assert.ok(read < 25 * 1024 * 1024, `read ${read} bytes: the server stopped writing`);
      const [still] = await TestClient.join(addr.port, "carol", "other");
      still.close();
      // The server reads a client's requests no further while its output is over the
      // watermark, and closes it once silent for the idle timeout (server_limits_test.ts):
      // a short one here, so that the reading above ends soon after the last page.
    }, { messagesPerSecond: 10_000, idleTimeoutMs: 2_000 }),
});

for (const engine of engines) {
  testWith(engine.requirement, {
    name: `chat server (${engine.name}): 2,000 history requests pipelined by one connection ` +
      "do not stall another room",
    ...options,
    fn: () =>
      withServer(engine.open, async ({ addr }) => {
        const [flooder] = await TestClient.join(addr.port, "mallory", "flood");
        for (let i = 1; i <= 30; i++) {
          await flooder.send({
            ...sendFrame(`f${i}`, i),
            ciphertext: base64.encode(new Uint8Array(4096).fill(i)),
          } as ClientMessage);
        }
        await waitFor(() => flooder.all("stored").length === 30, "30 stored", 30_000);
        const ask = encodeFrame({ type: "history", limit: 200 });
        await flooder.sendRaw(new Uint8Array(Array.from({ length: 2000 }, () => [...ask]).flat()));
        setTimeout(() => flooder.close(), 2000);
        await new Promise((r) => setTimeout(r, 500));
        const [victim, welcome] = await TestClient.join(addr.port, "alice", "elsewhere");
        assert.equal(welcome.type, "welcome");
        await victim.send(sendFrame("v1", 1));
        await victim.next((m) => m.type === "stored", 10_000);
        victim.close();
      }),
  });
}

Deno.test({
  name:
    "chat server: the RunningService shape: finished settles after shutdown, which is idempotent",
  ...options,
  fn: async () => {
    const server = await startChatServer({ store: await pgliteStore(), port: 0 });
    let settled = false;
    const finished = server.finished.then(() => settled = true);
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(settled, false);
    const first = server.shutdown();
    assert.equal(server.shutdown(), first);
    await first;
    await finished;
    assert.equal(settled, true);
    // Closed: a new connection is refused.
    await assert.rejects(Deno.connect({ hostname: "127.0.0.1", port: server.addr.port }));
  },
});

Deno.test({
  name: "chat server: clients that reset before being accepted are no accept outage",
  ...options,
  fn: () =>
    withServer(pgliteStore, async (server) => {
      // 100 clients that reset at once: accept reports each as ENOTCONN, one connection's
      // failure, not the listener's.
      await resetConnections(server.addr.port, 100);
      const [client] = await TestClient.join(server.addr.port, "alice", "resets");
      client.close();
      assert.equal(server.acceptFailures, 0);
      assert.equal(server.accepting, true);
    }),
});
