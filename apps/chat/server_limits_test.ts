// The chat server's limits over real TCP, in process (PGlite; room expiry on PostgreSQL
// too): a client that asks and does not read is read no further (its output stays under
// the watermark); one that does not read what it is pushed is cut off at its budget; every
// frame kind is paced, heartbeats included (server_core_test.ts); bytes that never complete a frame do not hold a
// connection open (slowloris); the total connection cap; room creation per address; rooms
// that expire. Out of file descriptors, with a real process: apps/cli/chat_limits_test.ts.
import assert from "node:assert/strict";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { testWith, waitFor } from "@duet/testkit";
import { base64, claimFor } from "./crypto.ts";
import {
  type ClientMessage,
  encodeFrame,
  FrameDecoder,
  MAX_CIPHERTEXT_BYTES,
  PROTOCOL_VERSION,
} from "./protocol.ts";
import { type ChatServerConfig, type RunningChatServer, startChatServer } from "./server.ts";
import type { ChatStore } from "./store.ts";
import { sendFrame, TestClient } from "./testdata/client.ts";
import { pgliteStore, postgresRequirement, postgresStore } from "./testdata/stores.ts";

const options = { sanitizeOps: false, sanitizeResources: false };
const pglite = { name: "PGlite", missing: undefined };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function withServer(
  fn: (server: RunningChatServer, store: ChatStore) => Promise<void>,
  config: Partial<Omit<ChatServerConfig, "store">> = {},
  open: () => Promise<ChatStore> = pgliteStore,
) {
  const store = await open();
  const server = await startChatServer({ store, port: 0, ...config });
  try {
    await fn(server, store);
  } finally {
    await server.shutdown();
  }
}

/**
 * A raw connection that has said hello and claimed its name (reading only up to its
 * welcome), for clients that then misbehave. Frames are parsed as JSON only, so that any
 * error code can be seen.
 */
async function rawJoin(port: number, name: string, room: string) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const frames = new FrameDecoder();
  const buffer = new Uint8Array(64 * 1024);
  const pending: Record<string, unknown>[] = [];
  /** The next frame, or undefined once the server closed the connection. */
  const next = async (): Promise<Record<string, unknown> | undefined> => {
    while (!pending.length) {
      const read = await conn.read(buffer).catch(() => null);
      if (read === null) return undefined;
      pending.push(...frames.push(buffer.subarray(0, read)) as Record<string, unknown>[]);
    }
    return pending.shift();
  };
  await conn.write(encodeFrame({ type: "hello", version: PROTOCOL_VERSION, name, room }));
  const welcome = await next();
  if (welcome?.["type"] === "welcome") {
    const offer = claimFor(secp256k1.utils.randomSecretKey(), {
      room,
      name,
      party: welcome["party"] as 0 | 1,
      challenge: welcome["challenge"] as string,
    });
    await conn.write(encodeFrame({ type: "key_offer", ...offer }));
  }
  return {
    conn,
    welcome,
    next,
    /** Frames read until the server closed the connection (from now on). */
    async rest(): Promise<Record<string, unknown>[]> {
      const all: Record<string, unknown>[] = [];
      for (let frame = await next(); frame; frame = await next()) all.push(frame);
      return all;
    },
    close() {
      try {
        conn.close();
      } catch { /* closed */ }
    },
  };
}

const big = (id: string, seq: number, bytes: number): ClientMessage => ({
  ...sendFrame(id, seq),
  ciphertext: base64.encode(new Uint8Array(bytes).fill(seq % 250)),
} as ClientMessage);

testWith(pglite, {
  name: "chat limits: a client that asks and does not read is read no further once its " +
    "output is over the watermark: it is never sent all it asked for, and the idle timeout " +
    "closes it",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const [alice] = await TestClient.join(server.addr.port, "alice", "hoard");
      for (let i = 1; i <= 200; i++) await alice.send(big(`h${i}`, i, 300));
      await waitFor(() => alice.all("stored").length === 200, "200 stored", 30_000);
      alice.close();
      const bob = await rawJoin(server.addr.port, "bob", "hoard");
      // 400 pages of ~64 KiB asked for (~25 MiB), none read.
      const ask = encodeFrame({ type: "history", after: 0, limit: 200 });
      await bob.conn.write(new Uint8Array(Array.from({ length: 400 }, () => [...ask]).flat()));
      let most = 0;
      await waitFor(
        () => {
          most = Math.max(most, server.unwrittenBytes);
          return server.connections === 0;
        },
        "the server to close the connection",
        30_000,
      );
      // The watermark, the two history reads that may be running past it, and a bye.
      assert.ok(most <= 64 * 1024 + 3 * 65_540, `at most ${most} bytes were waiting`);
      assert.equal(server.cutOffConnections, 0, "read no further, not cut off");
      const pages = (await bob.rest()).filter((f) => f["type"] === "history_page");
      assert.ok(pages.length < 400, `${pages.length} pages of 400 were sent`);
      bob.close();
      const [still] = await TestClient.join(server.addr.port, "carol", "other");
      still.close();
    }, {
      messagesPerSecond: 10_000,
      idleTimeoutMs: 1_000,
      outputWatermarkBytes: 64 * 1024,
      outputBudgetBytes: 256 * 1024,
    }),
});

testWith(pglite, {
  name: "chat limits: a client that does not read what it is pushed is cut off once its " +
    "output is over the budget; its peer goes on",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const bob = await rawJoin(server.addr.port, "bob", "flood");
      const [alice] = await TestClient.join(server.addr.port, "alice", "flood");
      let seq = 0;
      // Pushes of 32 KiB to a reader that never reads: the kernel's buffers take some,
      // the rest would pile up in the server. At most 1,000 (32 MiB).
      while (server.cutOffConnections === 0 && seq < 1_000) {
        for (let i = 0; i < 20; i++) {
          seq++;
          await alice.send(big(`f${seq}`, seq, MAX_CIPHERTEXT_BYTES));
        }
        await waitFor(() => alice.all("stored").length === seq, `${seq} stored`, 30_000);
      }
      assert.equal(server.cutOffConnections, 1, "bob was cut off");
      await bob.rest(); // ends: the server closed it
      bob.close();
      assert.deepEqual(alice.all("error"), [], "alice's sends were all stored");
      await alice.send(big(`f${seq + 1}`, seq + 1, 32));
      await alice.next((m) => m.type === "stored" && m.client_msg_id === `f${seq + 1}`);
      assert.equal(server.connections, 1, "alice is still connected");
      alice.close();
    }, {
      messagesPerSecond: 10_000,
      outputWatermarkBytes: 64 * 1024,
      outputBudgetBytes: 256 * 1024,
    }),
});

testWith(pglite, {
  name: "chat limits: bytes that never complete a frame do not hold a connection open " +
    "(slowloris), before the hello or after it; heartbeats do",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const [chatty] = await TestClient.join(server.addr.port, "chatty", "slow");
      const beating = setInterval(() => chatty.send({ type: "heartbeat" }).catch(() => {}), 100);
      const slow: Deno.TcpConn[] = [];
      try {
        for (let i = 0; i < 20; i++) {
          slow.push(await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port }));
          slow.push((await rawJoin(server.addr.port, `s${i}`, `slow${i}`)).conn);
        }
        // A frame of 60,000 bytes announced, then one byte every 50 ms, for ever.
        const header = new Uint8Array([0, 0, 0xea, 0x60]);
        for (const conn of slow) await conn.write(header);
        const open = new Set(slow);
        const trickle = setInterval(() => {
          for (const conn of open) {
            conn.write(new Uint8Array([0x20])).catch(() => open.delete(conn));
          }
        }, 50);
        try {
          await waitFor(() => open.size === 0, "the server to close all 40", 20_000);
        } finally {
          clearInterval(trickle);
        }
        assert.equal(chatty.all("bye").length, 0, "the heartbeating one is still there");
        assert.equal(server.connections, 1);
      } finally {
        clearInterval(beating);
        for (const conn of slow) {
          try {
            conn.close();
          } catch { /* closed */ }
        }
        chatty.close();
      }
    }, { idleTimeoutMs: 500, maxConnectionsPerAddress: 0 }),
});

testWith(pglite, {
  name: "chat limits: past the total connection cap a new connection is refused " +
    "(too_many_connections) and closed; one that goes makes room",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const held = await Promise.all(
        [0, 1, 2].map((i) => TestClient.join(server.addr.port, `p${i}`, "cap")),
      );
      assert.deepEqual(held.map(([, w]) => w.type), ["welcome", "welcome", "error"]);
      // The third named the room full: two parties a room. Three connections are open.
      await held[2]![0].closed;
      const [extra] = await TestClient.join(server.addr.port, "q", "cap2");
      const over = await rawJoin(server.addr.port, "r", "cap3");
      assert.deepEqual([over.welcome?.["code"], over.welcome?.["retryable"]], [
        "too_many_connections",
        true,
      ]);
      assert.deepEqual(await over.rest(), [], "and closed");
      assert.equal(server.refusedConnections, 1);
      extra.close();
      await waitFor(() => server.connections === 2, "a connection to go");
      const [again, welcome] = await TestClient.join(server.addr.port, "q", "cap2");
      assert.equal(welcome.type, "welcome");
      for (const c of [again, held[0]![0], held[1]![0]]) c.close();
    }, { maxConnections: 3, maxConnectionsPerAddress: 0 }),
});

testWith(pglite, {
  name: "chat limits: new rooms per address are limited (too_many_rooms, retryable, closed); " +
    "joining an existing room is not; 0 turns it off",
  ...options,
  async fn() {
    await withServer(async (server) => {
      const clients: TestClient[] = [];
      for (const room of ["one", "two"]) {
        const [client, welcome] = await TestClient.join(server.addr.port, "alice", room);
        clients.push(client);
        assert.equal(welcome.type, "welcome", room);
      }
      const refused = await rawJoin(server.addr.port, "alice", "three");
      assert.equal(refused.welcome?.["code"], "too_many_rooms", JSON.stringify(refused.welcome));
      assert.equal(refused.welcome?.["retryable"], true);
      assert.equal(refused.welcome?.["in_reply_to"], "hello");
      assert.deepEqual(await refused.rest(), [], "and closed");
      // Existing rooms: another name, and a name coming back.
      const [bob, welcome] = await TestClient.join(server.addr.port, "bob", "one");
      assert.equal(welcome.type, "welcome");
      clients.push(bob);
      // The refused room was not created: it is refused again, not joined.
      const again = await rawJoin(server.addr.port, "carol", "three");
      assert.equal(again.welcome?.["code"], "too_many_rooms");
      for (const client of clients) client.close();
    }, { roomsPerMinute: 1, maxConnectionsPerAddress: 0 });
    await withServer(async (server) => {
      const joined = await Promise.all(
        Array.from({ length: 30 }, (_, i) => TestClient.join(server.addr.port, "a", `r${i}`)),
      );
      assert.deepEqual(joined.map(([, w]) => w.type), Array(30).fill("welcome"));
      for (const [client] of joined) client.close();
    }, { roomsPerMinute: 0, maxConnectionsPerAddress: 0 });
  },
});

for (
  const engine of [
    { name: "PGlite", open: pgliteStore, requirement: pglite },
    { name: "PostgreSQL", open: postgresStore, requirement: postgresRequirement },
  ]
) {
  testWith(engine.requirement, {
    name: `chat limits (${engine.name}): rooms idle for the expiry time are deleted with ` +
      "their parties and messages; a join, a newer message or a connected party keeps one",
    ...options,
    fn: () =>
      withServer(
        async (server, store) => {
          const port = server.addr.port;
          const leave = async (name: string, room: string, send?: number) => {
            const [client] = await TestClient.join(port, name, room);
            if (send) {
              await client.send(sendFrame(`${room}-1`, 1));
              await client.next((m) => m.type === "stored");
            }
            client.close();
          };
          await leave("alice", "old", 1);
          await leave("alice", "quiet");
          await leave("dave", "late");
          const [carol] = await TestClient.join(port, "carol", "live");
          await waitFor(() => server.connections === 1, "the others to go");
          await sleep(1_200);
          // Idle by its join, but a message now (as a second instance would store it).
          const late = await store.insertMessage(
            "late",
            "dave",
            "late-1",
            1,
            new Uint8Array(12),
            new Uint8Array(16),
          );
          assert.equal(late.kind, "stored");
          assert.equal(await server.sweepRooms(), 2, "old and quiet");
          const rooms = async () =>
            [
              ...new Set(
                JSON.parse((await store.dumpForTests()).text)
                  .filter((row: Record<string, unknown>) => "room" in row)
                  .map((row: { room: string }) => row.room),
              ),
            ].sort();
          assert.deepEqual(await rooms(), ["late", "live"], "nothing left of old and quiet");
          await sleep(1_200);
          assert.equal(await server.sweepRooms(), 1, "late, idle since its message");
          assert.deepEqual(await rooms(), ["live"], "the connected party's room stays");
          // A room that expired is a new room: its parties and history are gone.
          const [alice, welcome] = await TestClient.join(port, "mallory", "old");
          assert.deepEqual(
            welcome.type === "welcome" && [welcome.party, welcome.peer, welcome.last_id],
            [0, null, 0],
          );
          for (const c of [alice, carol]) c.close();
        },
        { roomIdleMs: 1_000, roomSweepIntervalMs: 3_600_000 },
        engine.open,
      ),
  });
}
