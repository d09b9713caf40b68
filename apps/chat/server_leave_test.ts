// The chat server notices a client that leaves while its frames are held back, over real
// TCP on loopback (PGlite): after more than 512 bytes of frames, by a full close, a
// half-close (the client shuts down its sending side) or a reset, while it is
// authenticating, paced by its send rate, or read no further because it does not read what
// it is sent (the output watermark). Its connection is let go (the connection count, its
// slot under a per-address cap of 1). A half-closed client still gets the answers to the
// frames the server took in, then the close (server.ts, `mayHandle`).
import assert from "node:assert/strict";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { testWith, waitFor } from "@duet/testkit";
import { base64, claimFor } from "./crypto.ts";
import { type ClientMessage, encodeFrame, FrameDecoder, PROTOCOL_VERSION } from "./protocol.ts";
import { type ChatServerConfig, type RunningChatServer, startChatServer } from "./server.ts";
import { sendFrame, TestClient } from "./testdata/client.ts";
import { pgliteStore } from "./testdata/stores.ts";

const options = { sanitizeOps: false, sanitizeResources: false };
const pglite = { name: "PGlite", missing: undefined };

/** How a client leaves. */
type Leave = "close" | "half-close" | "reset";
const LEAVES: Leave[] = ["close", "half-close", "reset"];

async function withServer(
  fn: (server: RunningChatServer) => Promise<void>,
  config: Partial<Omit<ChatServerConfig, "store">> = {},
) {
  const store = await pgliteStore();
  // One connection per address: a connection still held shows as a refused join.
  const server = await startChatServer({ store, port: 0, maxConnectionsPerAddress: 1, ...config });
  try {
    await fn(server);
  } finally {
    await server.shutdown();
  }
}

/** A send frame whose ciphertext is `bytes` long: more than 512 bytes on the wire. */
const big = (id: string, seq: number, bytes = 1000): ClientMessage => ({
  ...sendFrame(id, seq),
  ciphertext: base64.encode(new Uint8Array(bytes).fill(seq % 250)),
} as ClientMessage);

const frames = (...messages: ClientMessage[]) =>
  new Uint8Array(messages.flatMap((m) => [...encodeFrame(m)]));

/**
 * A raw client that says hello. For a reset it reads only the first bytes of its welcome:
 * closing a socket with unread bytes makes the kernel send a reset, not a FIN.
 */
async function greet(port: number, name: string, room: string, leave: Leave) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const decoder = new FrameDecoder();
  const buffer = new Uint8Array(64 * 1024);
  const pending: Record<string, unknown>[] = [];
  const next = async (): Promise<Record<string, unknown> | undefined> => {
    while (!pending.length) {
      const read = await conn.read(buffer).catch(() => null);
      if (read === null) return undefined;
      pending.push(...decoder.push(buffer.subarray(0, read)) as Record<string, unknown>[]);
    }
    return pending.shift();
  };
  await conn.write(encodeFrame({ type: "hello", version: PROTOCOL_VERSION, name, room }));
  let welcome: Record<string, unknown> | undefined;
  if (leave === "reset") {
    // The frame's length, the rest left unread. The welcome is written in one piece.
    assert.ok(((await conn.read(new Uint8Array(4))) ?? 0) > 0, "a welcome");
  } else {
    welcome = await next();
    assert.equal(welcome?.["type"], "welcome", JSON.stringify(welcome));
  }
  return {
    conn,
    welcome,
    next,
    /** The frames the server sends until it closes the connection. */
    async rest(): Promise<Record<string, unknown>[]> {
      const all: Record<string, unknown>[] = [];
      for (let frame = await next(); frame; frame = await next()) all.push(frame);
      return all;
    },
    /** The key offer that claims `name` with `secret` over the welcome's challenge. */
    claim(secret = secp256k1.utils.randomSecretKey()): ClientMessage {
      return {
        type: "key_offer",
        ...claimFor(secret, {
          room,
          name,
          party: welcome!["party"] as 0 | 1,
          challenge: welcome!["challenge"] as string,
        }),
      } as ClientMessage;
    },
    async leave(how: Leave) {
      if (how === "half-close") return await conn.closeWrite();
      conn.close();
    },
    close() {
      try {
        conn.close();
      } catch { /* closed */ }
    },
  };
}

/** The server let the connection go: none held, and the address's one slot is free. */
async function letGo(server: RunningChatServer, what: string) {
  await waitFor(() => server.connections === 0, `the server to let go of ${what}`);
  const [client, welcome] = await TestClient.join(server.addr.port, "next", "after");
  assert.equal(welcome.type, "welcome", `the address's slot is free: ${JSON.stringify(welcome)}`);
  client.close();
  await waitFor(() => server.connections === 0, "the next client to go");
}

testWith(pglite, {
  name: "chat leave: a client that leaves while authenticating (no key offer yet), after " +
    "1 KB of frames that wait for it, is let go: closed, half-closed (nothing can be " +
    "answered) or reset",
  ...options,
  fn: () =>
    withServer(async (server) => {
      for (const leave of LEAVES) {
        const client = await greet(server.addr.port, "alice", `auth-${leave}`, leave);
        await client.conn.write(frames(big("a1", 1), big("a2", 2)));
        await client.leave(leave);
        if (leave === "half-close") {
          assert.deepEqual(await client.rest(), [], `${leave}: closed, nothing to answer`);
        }
        await letGo(server, `a client that left by ${leave} while authenticating`);
        client.close();
      }
    }),
});

testWith(pglite, {
  name: "chat leave: a client paced by its send rate (its next frame not due for ~100 s) " +
    "that sends 2 KB and leaves is let go at once: closed, half-closed or reset; the " +
    "frames held back by the pace are not handled",
  ...options,
  fn: () =>
    withServer(async (server) => {
      for (const leave of LEAVES) {
        // 0.01 frames a second, bursts of 0.02: after the hello the server reads nothing
        // for ~98 s (the pace), far past waitFor's deadline.
        const client = await greet(server.addr.port, "bob", `paced-${leave}`, leave);
        const sent = [big("p1", 1), big("p2", 2)];
        await client.conn.write(frames(...(leave === "reset" ? sent : [client.claim(), ...sent])));
        await client.leave(leave);
        if (leave === "half-close") {
          assert.deepEqual(await client.rest(), [], `${leave}: held back, so not answered`);
        }
        await letGo(server, `a paced client that left by ${leave}`);
        client.close();
      }
    }, { messagesPerSecond: 0.01, handshakeTimeoutMs: 600_000, idleTimeoutMs: 600_000 }),
});

testWith(pglite, {
  name: "chat leave: a client that half-closes after its key offer and 3 KB of sends gets " +
    "every answer (stored), then the close",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const client = await greet(server.addr.port, "carol", "half", "close");
      const sends = [big("h1", 1), big("h2", 2), big("h3", 3)];
      await client.conn.write(frames(client.claim(), ...sends));
      await client.leave("half-close");
      const answers = await client.rest();
      assert.deepEqual(
        answers.filter((f) => f["type"] === "stored").map((f) => f["client_msg_id"]),
        ["h1", "h2", "h3"],
        JSON.stringify(answers),
      );
      await letGo(server, "a half-closed client once answered");
      client.close();
    }),
});

testWith(pglite, {
  name: "chat leave: a client read no further for not reading what it is sent (over the " +
    "output watermark) that sends 1 KB more and leaves is let go: by a reset (its close " +
    "with unread bytes), or by a half-close after which it reads what it is owed",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const [alice] = await TestClient.join(server.addr.port, "alice", "hoard");
      for (let i = 1; i <= 200; i++) await alice.send(big(`m${i}`, i, 300));
      await waitFor(() => alice.all("stored").length === 200, "200 stored", 30_000);
      alice.close();
      await waitFor(() => server.connections === 0, "alice to go");
      // A plain close is a reset here: the pages it did not read are unread bytes.
      const bobKey = secp256k1.utils.randomSecretKey();
      for (const leave of ["reset", "half-close"] as const) {
        const bob = await greet(server.addr.port, "bob", "hoard", "close");
        await bob.conn.write(frames(bob.claim(bobKey)));
        // In once alice's key comes: frames before that would wait (256 at most).
        const inside = await bob.next();
        assert.equal(inside?.["type"], "peer_key", `${leave}: ${JSON.stringify(inside)}`);
        // 400 pages of ~64 KiB asked for (~25 MiB), none read: the server stops handling
        // its frames once 4 KiB wait unwritten (and the socket's buffers are full).
        const ask = { type: "history", after: 0, limit: 200 } as ClientMessage;
        await bob.conn.write(frames(...Array.from({ length: 400 }, () => ask)));
        await waitFor(
          () => server.unwrittenBytes > 4 * 1024,
          "bob's output over the watermark",
          30_000,
        );
        await bob.conn.write(frames(big("b1", 1)));
        if (leave === "reset") {
          bob.conn.close();
        } else {
          await bob.conn.closeWrite();
          const owed = await bob.rest();
          const pages = owed.filter((f) => f["type"] === "history_page");
          assert.ok(pages.length > 0 && pages.length < 400, `${pages.length} of 400 pages`);
          assert.ok(!owed.some((f) => f["type"] === "stored"), "the send held back, dropped");
        }
        await letGo(server, `a client over the watermark that left by ${leave}`);
        bob.close();
      }
    }, {
      messagesPerSecond: 10_000,
      outputWatermarkBytes: 4 * 1024,
      outputBudgetBytes: 64 * 1024 * 1024,
    }),
});
