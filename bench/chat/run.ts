// deno-lint-ignore-file no-console -- a benchmark script: its report is for the terminal
/**
 * The chat server (its own process, as deployed) on PostgreSQL and on PGlite, with 1,000
 * idle clients connected throughout:
 *   one room      messages stored and pushed per second, one sender, 100 in flight
 *   100 rooms     the same across 100 rooms at once
 *   latency       send to the peer's push, one at a time: p50/p99
 *   history       a page of 100 from a room holding 100,000 messages: p50/p99
 * and, as the anchor measured in the same run, the store alone: one sender's messages
 * handed to ChatStore.insertMessage in this process (no server, no TCP, no protocol), all
 * at once; the server's one-sender rate over it is what the protocol and the network cost.
 *
 *   deno run -A bench/chat/run.ts [--messages 20000] [--idle 1000] [--history 100000]
 * PostgreSQL comes from TEST_DATABASE_URL (a schema of its own, dropped after); without it
 * only the PGlite rows are measured.
 */
import { scriptOptions } from "../../tools/_options.ts";
import { ChatStore, connectPostgres, openPglite } from "@duet/chat";
import { freePort, testSchema, waitFor } from "@duet/testkit";
import { spawnDuet } from "../../apps/cli/testdata/spawn.ts";
import { sendFrame, TestClient } from "../../apps/chat/testdata/client.ts";

const values = scriptOptions(import.meta.url, {
  messages: { type: "count", default: 20000 },
  idle: { type: "count", default: 1000, min: 0 },
  history: { type: "count", default: 100000 },
});
const MESSAGES = values.messages;
const IDLE = values.idle;
const HISTORY = values.history;

const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.ceil(p * xs.length) - 1)]!;
const ms = (x: number) => `${x.toFixed(2)} ms`;

/** Fills room "big" with HISTORY messages straight through SQL, before the server starts. */
async function fill(store: ChatStore, sql: (text: string) => Promise<unknown>) {
  await store.migrate();
  await store.join("big", "alice");
  await store.join("big", "bob");
  await sql(
    `INSERT INTO messages (room, sender, client_msg_id, sender_seq, nonce, ciphertext)
     SELECT 'big', 'alice', 'h' || i, i, decode(repeat('00', 12), 'hex'), decode(repeat('ab', 48), 'hex')
     FROM generate_series(1, ${HISTORY}) AS i`,
  );
}

/** The anchor: one sender's MESSAGES straight into the store, fired without waiting. */
async function storeAlone(engine: string, store: ChatStore): Promise<string> {
  await store.migrate();
  await store.join("anchor", "alice");
  const nonce = new Uint8Array(12);
  const ciphertext = new Uint8Array(48).fill(0xab);
  const t0 = performance.now();
  const outcomes = await Promise.all(
    Array.from(
      { length: MESSAGES },
      (_, i) => store.insertMessage("anchor", "alice", `a${i}`, i + 1, nonce, ciphertext),
    ),
  );
  const seconds = (performance.now() - t0) / 1000;
  if (outcomes.some((o) => o.kind !== "stored")) throw new Error("the anchor's sends failed");
  await store.close();
  return `| ${engine} | anchor: the store alone, one sender | ${MESSAGES} | ${
    Math.round(MESSAGES / seconds).toLocaleString("en")
  } msg/s | |`;
}

async function measure(engine: string, args: string[]): Promise<string[]> {
  const rows: string[] = [];
  const port = freePort();
  const server = spawnDuet([
    "chat-server",
    "--port",
    String(port),
    "--messages-per-second",
    "10000",
    "--max-connections-per-address",
    "100000",
    // 600 rooms from one address: the room creation limit is for clients, not this load.
    "--rooms-per-minute",
    "0",
    "--quiet",
    ...args,
  ], { direct: true });
  await waitFor(() => server.lines.stdout.some((l) => l.startsWith("chat ")), "the server", 60_000)
    .catch((error) => {
      throw new Error(`${error.message}: ${server.lines.stderr.join("\n")}`);
    });
  const idle: TestClient[] = [];
  try {
    for (let i = 0; i < IDLE; i++) {
      const [client] = await TestClient.join(port, `idle${i % 2}`, `idle-${Math.floor(i / 2)}`);
      idle.push(client);
    }
    const heartbeats = setInterval(() => {
      for (const c of idle) c.send({ type: "heartbeat" }).catch(() => {});
    }, 20_000);

    // Throughput: senders keep up to 100 sends in flight; done when every push arrived.
    const throughput = async (rooms: number, label: string) => {
      const pairs = await Promise.all(Array.from({ length: rooms }, async (_, r) => {
        const room = `${label.replaceAll(" ", "-")}-${r}`;
        const [alice] = await TestClient.join(port, "alice", room);
        const [bob] = await TestClient.join(port, "bob", room);
        // The key exchange (a bind and its relay per party) ends before the clock starts.
        await Promise.all([alice, bob].map((c) => c.next((m) => m.type === "peer_key")));
        return { alice, bob };
      }));
      const each = Math.floor(MESSAGES / rooms);
      const t0 = performance.now();
      await Promise.all(pairs.map(async ({ alice, bob }, r) => {
        let acked = 0;
        for (let i = 0; i < each; i++) {
          await alice.send(sendFrame(`${r}-${i}`, i + 1));
          while (i + 1 - acked > 100) {
            // Generous: with 100 senders the server's queue is deep (PGlite is one thread).
            await alice.next((m) => m.type === "stored" || m.type === "error", 120_000);
            acked++;
          }
        }
        await waitFor(() => bob.all("message").length >= each, "pushes", 120_000);
        // The guarantee holds under load too: every message once, in the order sent.
        const seqs = bob.all("message").map((m) => m.message.seq);
        if (seqs.length !== each || seqs.some((seq, k) => seq !== k + 1)) {
          throw new Error(`room ${r}: pushed out of order or twice`);
        }
        if (alice.all("error").length) throw new Error(`room ${r}: sends were refused`);
      }));
      const seconds = (performance.now() - t0) / 1000;
      rows.push(
        `| ${engine} | ${label} | ${each * rooms} | ${
          Math.round((each * rooms) / seconds).toLocaleString("en")
        } msg/s | |`,
      );
      for (const { alice, bob } of pairs) {
        alice.close();
        bob.close();
      }
    };
    await throughput(1, "one room");
    await throughput(100, "100 rooms");

    const [alice] = await TestClient.join(port, "alice", "latency");
    const [bob] = await TestClient.join(port, "bob", "latency");
    await Promise.all([alice, bob].map((c) => c.next((m) => m.type === "peer_key")));
    const latency: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const t0 = performance.now();
      await alice.send(sendFrame(`l${i}`, i + 1));
      await bob.next((m) => m.type === "message");
      latency.push(performance.now() - t0);
      alice.received.length = 0;
    }
    latency.sort((a, b) => a - b);
    rows.push(
      `| ${engine} | send to push | 1000 | ${ms(q(latency, 0.5))} | ${ms(q(latency, 0.99))} |`,
    );

    const [reader] = await TestClient.join(port, "bob", "big");
    const pages: number[] = [];
    for (let i = 0; i < 200; i++) {
      const before = 1 + Math.floor(Math.random() * HISTORY);
      const t0 = performance.now();
      await reader.send({ type: "history", before, limit: 100 });
      await reader.next((m) => m.type === "history_page");
      pages.push(performance.now() - t0);
    }
    pages.sort((a, b) => a - b);
    rows.push(
      `| ${engine} | history page of 100 (room of ${HISTORY.toLocaleString("en")}) | 200 | ${
        ms(q(pages, 0.5))
      } | ${ms(q(pages, 0.99))} |`,
    );
    clearInterval(heartbeats);
    for (const c of [alice, bob, reader]) c.close();
  } finally {
    for (const c of idle) c.close();
    server.child.kill("SIGTERM");
    await server.child.status;
  }
  return rows;
}

const rows: string[] = [];
const url = Deno.env.get("TEST_DATABASE_URL");
if (url) {
  const schema = testSchema("duet_bench");
  const driver = await connectPostgres(url, { schema });
  await fill(new ChatStore(driver), (text) => driver.query(text));
  await driver.close();
  try {
    const anchorSchema = testSchema("duet_bench_anchor");
    rows.push(
      await storeAlone(
        "PostgreSQL",
        new ChatStore(await connectPostgres(url, { schema: anchorSchema })),
      ),
    );
    const admin = await connectPostgres(url);
    await admin.query(`DROP SCHEMA ${anchorSchema} CASCADE`);
    await admin.close();
    rows.push(
      ...await measure("PostgreSQL", [
        "--database-url",
        `${url}?options=-c%20search_path%3D${schema}`,
      ]),
    );
  } finally {
    const admin = await connectPostgres(url);
    await admin.query(`DROP SCHEMA ${schema} CASCADE`);
    await admin.close();
  }
} else {
  rows.push("| PostgreSQL | - | - | - | TEST_DATABASE_URL not set |");
}
const dir = await Deno.makeTempDir();
try {
  const anchorDir = await Deno.makeTempDir();
  rows.push(await storeAlone("PGlite", new ChatStore(await openPglite(anchorDir))));
  await Deno.remove(anchorDir, { recursive: true });
  const driver = await openPglite(dir);
  await fill(new ChatStore(driver), (text) => driver.query(text));
  await driver.close();
  rows.push(...await measure("PGlite", ["--data-dir", dir]));
} finally {
  await Deno.remove(dir, { recursive: true });
}

const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
console.log(`# duet chat-server, ${new Date().toISOString()}`);
console.log(
  `${cpu}, ${navigator.hardwareConcurrency} cores; Deno ${Deno.version.deno}; ${IDLE} idle clients\n`,
);
console.log("| engine | measure | n | p50 / rate | p99 |");
console.log("| --- | --- | --- | --- | --- |");
for (const row of rows) console.log(row);
Deno.exit(0);
