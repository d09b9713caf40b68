// The chat guarantee under faults, with real processes and a PostgreSQL of the test's own
// (PrivatePostgres, on a free port: the shared one is never stopped): a database outage in
// the middle of two senders' bursts; a server started before its database; two server
// instances on one database, one killed with SIGKILL mid-burst while the sender moves to
// the other. Each sender's messages arrive once, in the order typed, at the other party.
import assert from "node:assert/strict";
import { findPrivatePostgres, freePort, PrivatePostgres, testWith, waitFor } from "@duet/testkit";
import { spawnDuet, type SpawnedDuet } from "./testdata/spawn.ts";
import { ChatClient, type ClientEvent, KeyStore } from "@duet/chat";

const options = { sanitizeOps: false, sanitizeResources: false };
const privatePostgres = await findPrivatePostgres();

/** `duet chat-server` on `url`, on a free port; resolves once it prints its address. */
async function chatServer(url: string, extra: string[] = []): Promise<{
  process: SpawnedDuet;
  address: string;
}> {
  const port = freePort();
  const process = spawnDuet([
    "chat-server",
    "--port",
    String(port),
    "--database-url",
    url,
    "--messages-per-second",
    "1000",
    ...extra,
  ], { direct: true });
  await waitFor(
    () => process.lines.stdout.some((l) => l.startsWith("chat ")),
    "the chat server",
    30_000,
  ).catch((error) => {
    throw new Error(`${error.message}: ${process.lines.stderr.join("\n")}`);
  });
  return { process, address: `127.0.0.1:${port}` };
}

async function stop(server: { process: SpawnedDuet }): Promise<void> {
  try {
    server.process.child.kill("SIGTERM");
  } catch { /* gone */ }
  await server.process.child.status;
  await server.process.done;
}

/** A chat client in this process, with what it shows. */
async function client(dir: string, server: string, name: string, room: string) {
  const keyStore = await KeyStore.open(`${dir}/${name}.sqlite`);
  const shown: { sender: string; text: string | null }[] = [];
  const events: ClientEvent[] = [];
  const chat = new ChatClient({
    server,
    name,
    room,
    keyStore,
    onEvent: (event) => {
      events.push(event);
      if (event.type === "message" && !event.message.own) {
        shown.push({ sender: event.message.sender, text: event.message.text });
      }
    },
    backoff: { initialMs: 50, maxMs: 500, jitter: "full" as const },
  });
  await chat.start();
  return {
    chat,
    shown,
    events,
    keyStore,
    texts: (sender: string) => shown.filter((m) => m.sender === sender).map((m) => m.text),
    hasKey: () => events.some((e) => e.type === "key"),
    async close() {
      await chat.stop();
      keyStore.close();
    },
  };
}

/** A TCP forwarder whose target can be switched: one service address, several instances. */
function forwarder(target: string) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  let current = target;
  (async () => {
    for await (const inbound of listener) {
      const [host, port] = current.split(":");
      Deno.connect({ hostname: host!, port: Number(port) }).then((outbound) => {
        open.add(inbound).add(outbound);
        const close = () => {
          for (const c of [inbound, outbound]) {
            open.delete(c);
            try {
              c.close();
            } catch { /* closed */ }
          }
        };
        inbound.readable.pipeTo(outbound.writable).catch(() => {}).finally(close);
        outbound.readable.pipeTo(inbound.writable).catch(() => {}).finally(close);
      }, () => inbound.close());
    }
  })().catch(() => {});
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    switchTo(next: string) {
      current = next;
    },
    close() {
      listener.close();
      for (const c of open) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}

const expected = (prefix: string, n: number) =>
  Array.from({ length: n }, (_, i) => `${prefix}${i + 1}`);

testWith(privatePostgres, {
  name: "chat over a database outage: two senders' bursts arrive once each, in order, and " +
    "everything pending is stored soon after the database is back",
  ...options,
  async fn() {
    const pg = await PrivatePostgres.start();
    const dir = await Deno.makeTempDir();
    let server: Awaited<ReturnType<typeof chatServer>> | undefined;
    const clients: Awaited<ReturnType<typeof client>>[] = [];
    try {
      server = await chatServer(pg.url);
      const alice = await client(dir, server.address, "alice", "outage");
      const bob = await client(dir, server.address, "bob", "outage");
      clients.push(alice, bob);
      await waitFor(() => alice.hasKey() && bob.hasKey(), "the key", 20_000);
      const sending = (async () => {
        for (let i = 1; i <= 60; i++) {
          await alice.chat.send(`a${i}`);
          await bob.chat.send(`b${i}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
      await waitFor(() => bob.texts("alice").length >= 15, "some delivered", 20_000);
      await pg.stop();
      await new Promise((r) => setTimeout(r, 3_000));
      await pg.restart();
      const back = performance.now();
      await sending;
      await waitFor(
        () => alice.chat.unsent === 0 && bob.chat.unsent === 0,
        "every pending message stored",
        30_000,
      );
      const storedAfterMs = performance.now() - back;
      await waitFor(
        () => bob.texts("alice").length >= 60 && alice.texts("bob").length >= 60,
        "every message shown",
        30_000,
      );
      assert.deepEqual(bob.texts("alice"), expected("a", 60));
      assert.deepEqual(alice.texts("bob"), expected("b", 60));
      // deno-lint-ignore no-console
      console.log(
        `outage: every pending message stored ${Math.round(storedAfterMs)} ms after restart`,
      );
    } finally {
      for (const c of clients) await c.close();
      if (server) await stop(server);
      await pg.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

testWith(privatePostgres, {
  name: "duet chat-server started before its database waits for it, says so, then serves",
  ...options,
  async fn() {
    const pg = await PrivatePostgres.start();
    await pg.stop();
    const port = freePort();
    const process = spawnDuet([
      "chat-server",
      "--port",
      String(port),
      "--database-url",
      pg.url,
    ], { direct: true });
    try {
      await waitFor(
        () => process.lines.stderr.some((l) => /Waiting for the database/.test(l)),
        "the waiting line",
        20_000,
      );
      assert.equal(process.lines.stdout.length, 0, "not serving yet");
      await pg.restart();
      await waitFor(
        () => process.lines.stdout.some((l) => l.startsWith("chat ")),
        "the server to listen",
        20_000,
      );
      assert.match(process.lines.stdout.join("\n"), new RegExp(`127\\.0\\.0\\.1:${port}`));
      assert.equal(
        process.lines.stderr.filter((l) => /Waiting for the database/.test(l)).length,
        1,
        `told once: ${process.lines.stderr.join("\n")}`,
      );
    } finally {
      process.child.kill("SIGTERM");
      const { code } = await process.child.status;
      await process.done;
      await pg.close();
      assert.equal(code, 0);
    }
  },
});

testWith(privatePostgres, {
  name: "two chat servers on one database: one killed mid-burst, the sender moves to the " +
    "other; every message arrives once, in order",
  ...options,
  async fn() {
    const pg = await PrivatePostgres.start();
    const dir = await Deno.makeTempDir();
    const servers: Awaited<ReturnType<typeof chatServer>>[] = [];
    const clients: Awaited<ReturnType<typeof client>>[] = [];
    let service: ReturnType<typeof forwarder> | undefined;
    try {
      servers.push(await chatServer(pg.url), await chatServer(pg.url));
      const [one, two] = servers as [typeof servers[0], typeof servers[0]];
      service = forwarder(one.address);
      const alice = await client(dir, service.address, "alice", "instances");
      const bob = await client(dir, two.address, "bob", "instances");
      clients.push(alice, bob);
      await waitFor(() => alice.hasKey() && bob.hasKey(), "the key", 20_000);
      const lines = expected("m", 300);
      const typing = Promise.all(lines.map((line) => alice.chat.send(line)));
      await waitFor(() => bob.texts("alice").length >= 50, "a first part", 30_000);
      one.process.child.kill("SIGKILL");
      await one.process.child.status;
      service.switchTo(two.address);
      await typing;
      await waitFor(() => bob.texts("alice").length >= 300, "all 300", 60_000)
        .catch((error) => {
          throw new Error(`${error.message}; bob has ${bob.texts("alice").length}`);
        });
      assert.deepEqual(bob.texts("alice"), lines);
      await waitFor(() => alice.chat.unsent === 0, "alice's outbox empty", 20_000);
    } finally {
      for (const c of clients) await c.close();
      service?.close();
      for (const s of servers) await stop(s).catch(() => {});
      await pg.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
