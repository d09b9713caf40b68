// deno-lint-ignore-file no-console -- a benchmark script: its report is for the terminal
/**
 * The chat server's memory, measured as VmRSS of its process (/proc/PID/status; Linux):
 *   start-up     PGlite: a new data directory (the database is created) and an existing one
 *   idle         per idle connection: RSS with N idle clients (joined, heartbeating) less
 *                RSS before them, over N
 *   hoarders     16 connections that each ask for a history page (~64 KiB, from a room of
 *                200 messages of 300 bytes) 1,200 times and never read: RSS at its highest
 *                while they ask, and 10 s after they are gone
 * of `duet chat-server` from a checkout (`--repo`, default this one), so that an older
 * commit can be measured by the same script:
 *
 *   deno run -A bench/chat/memory.ts [--repo DIR] [--idle 1000]
 * PostgreSQL (idle connections) comes from TEST_DATABASE_URL (a schema of its own).
 */
import { scriptOptions } from "../../tools/_options.ts";
import { testSchema, waitFor } from "@duet/testkit";

const values = scriptOptions(import.meta.url, {
  // A checkout of duet (this one by default), so that an older commit is measured alike.
  repo: {
    type: "directory",
    holding: "apps/cli/main.ts",
    default: new URL("../../", import.meta.url).pathname,
  },
  idle: { type: "count", default: 1000 },
});
const REPO = values.repo.replace(/\/?$/, "/");
const IDLE = values.idle;

// The checkout's own protocol client and crypto, so that its version is spoken.
const { TestClient, sendFrame } = await import(`${REPO}apps/chat/testdata/client.ts`);
const protocol = await import(`${REPO}apps/chat/protocol.ts`);
const crypto = await import(`${REPO}apps/chat/crypto.ts`);
const { secp256k1 } = await import("@noble/curves/secp256k1.js");

// Many rooms from one address: the room creation limit (where the checkout has one) is off.
const unlimitedRooms = (await Deno.readTextFile(`${REPO}apps/cli/commands/chat.ts`))
    .includes("--rooms-per-minute")
  ? ["--rooms-per-minute", "0"]
  : [];

const rssMb = (pid: number) =>
  Number(Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s*(\d+)/)![1]) / 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `duet chat-server` of the checkout; resolves once it prints its address. */
async function server(args: string[]) {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "apps/cli/main.ts",
      "chat-server",
      "--port",
      String(port),
      "--max-connections-per-address",
      "100000",
      "--quiet",
      ...unlimitedRooms,
      ...args,
    ],
    cwd: REPO,
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let out = "";
  const reading = (async () => {
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) out += chunk;
  })();
  await waitFor(() => out.startsWith("chat "), "the server", 120_000);
  return {
    port,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await reading;
    },
  };
}

const rows: string[] = [];
const row = (...cells: (string | number)[]) => rows.push(`| ${cells.join(" | ")} |`);

// Start-up: a new data directory, then the same one again.
const dir = await Deno.makeTempDir();
for (const what of ["new data directory (created)", "existing data directory"]) {
  const s = await server(["--data-dir", dir]);
  await sleep(3_000);
  row("PGlite", `start-up, ${what}`, `${rssMb(s.pid).toFixed(0)} MB`);
  await s.stop();
}

/** Memory per idle connection: N joined clients in rooms of two, heartbeating. */
async function idle(engine: string, args: string[]) {
  const s = await server(args);
  const clients: { close(): void; send(m: unknown): Promise<void> }[] = [];
  try {
    // Warm-up: the paths a connection takes, compiled, before the baseline.
    for (let i = 0; i < 20; i++) {
      const [client] = await TestClient.join(s.port, `w${i % 2}`, `warm-${i >> 1}`);
      client.close();
    }
    await sleep(3_000);
    const before = rssMb(s.pid);
    for (let i = 0; i < IDLE; i++) {
      const [client] = await TestClient.join(s.port, `idle${i % 2}`, `idle-${i >> 1}`);
      clients.push(client);
    }
    const beats = setInterval(() => {
      for (const c of clients) c.send({ type: "heartbeat" }).catch(() => {});
    }, 20_000);
    await sleep(5_000);
    const after = rssMb(s.pid);
    clearInterval(beats);
    row(
      engine,
      `${IDLE} idle connections`,
      `${before.toFixed(0)} -> ${after.toFixed(0)} MB: ${
        ((after - before) * 1024 / IDLE).toFixed(1)
      } KiB each`,
    );
  } finally {
    for (const c of clients) c.close();
    await s.stop();
  }
}

await idle("PGlite", ["--data-dir", dir]);
const url = Deno.env.get("TEST_DATABASE_URL");
let schema: string | undefined;
if (url) {
  schema = testSchema("duet_bench_mem");
  await new Deno.Command("psql", { args: [url, "-qc", `CREATE SCHEMA ${schema}`] }).output();
  await idle("PostgreSQL", [
    "--database-url",
    `${url}?options=-c%20search_path%3D${schema}`,
  ]);
  await new Deno.Command("psql", { args: [url, "-qc", `DROP SCHEMA ${schema} CASCADE`] })
    .output();
}

// Hoarders: 16 rooms of 200 messages of 300 bytes (a history page of 200 is ~64 KiB); in
// each, a second party asks for that page 1,200 times in one write and never reads.
{
  const s = await server(["--data-dir", dir, "--messages-per-second", "10000"]);
  const hoarders: Deno.TcpConn[] = [];
  try {
    const ciphertext = new Uint8Array(300).fill(1).toBase64();
    await Promise.all(Array.from({ length: 16 }, async (_, r) => {
      const [alice] = await TestClient.join(s.port, "alice", `hoard${r}`);
      for (let i = 1; i <= 200; i++) await alice.send({ ...sendFrame(`h${i}`, i), ciphertext });
      await waitFor(() => alice.all("stored").length === 200, "200 stored", 120_000);
      alice.close();
    }));
    await sleep(3_000);
    const before = rssMb(s.pid);
    const ask = protocol.encodeFrame({ type: "history", after: 0, limit: 200 });
    const asks = new Uint8Array(1_200 * ask.length);
    for (let i = 0; i < 1_200; i++) asks.set(ask, i * ask.length);
    await Promise.all(Array.from({ length: 16 }, async (_, r) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
      hoarders.push(conn);
      const [name, room] = ["bob", `hoard${r}`];
      await conn.write(
        protocol.encodeFrame({ type: "hello", version: protocol.PROTOCOL_VERSION, name, room }),
      );
      // Reads up to its welcome and a heartbeat (to claim its name, where the protocol asks
      // for that), then never again.
      const frames = new protocol.FrameDecoder();
      const buffer = new Uint8Array(4096);
      let welcome: Record<string, unknown> | undefined;
      while (!welcome) {
        const n = await conn.read(buffer);
        if (n === null) throw new Error("closed before the welcome");
        welcome = (frames.push(buffer.subarray(0, n)) as Record<string, unknown>[])
          .find((f) => f["type"] === "welcome");
      }
      if (crypto.claimFor) {
        const offer = crypto.claimFor(secp256k1.utils.randomSecretKey(), {
          room,
          name,
          party: welcome["party"],
          challenge: welcome["challenge"],
        });
        await conn.write(protocol.encodeFrame({ type: "key_offer", ...offer }));
      }
      // In once the heartbeat is answered (a claim is handled before it).
      await conn.write(protocol.encodeFrame({ type: "heartbeat" }));
      for (let answered = false; !answered;) {
        const n = await conn.read(buffer);
        if (n === null) throw new Error("closed before the heartbeat");
        answered = (frames.push(buffer.subarray(0, n)) as Record<string, unknown>[])
          .some((f) => f["type"] === "heartbeat");
      }
      await conn.write(asks);
    }));
    // For 75 s: past the server's idle timeout (60 s) and its close grace (5 s).
    let peak = before;
    for (const end = Date.now() + 75_000; Date.now() < end;) {
      peak = Math.max(peak, rssMb(s.pid));
      await sleep(200);
    }
    for (const conn of hoarders.splice(0)) conn.close();
    await sleep(10_000);
    row(
      "PGlite",
      "16 connections asking 1,200 pages, never reading",
      `${before.toFixed(0)} before, ${peak.toFixed(0)} at most, ${
        rssMb(s.pid).toFixed(0)
      } 10 s after they went`,
    );
  } finally {
    for (const conn of hoarders) conn.close();
    await s.stop();
  }
}
await Deno.remove(dir, { recursive: true });

const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
console.log(`# duet chat-server memory, ${new Date().toISOString()}, ${REPO}`);
console.log(`${cpu}, ${navigator.hardwareConcurrency} cores; Deno ${Deno.version.deno}\n`);
console.log("| engine | measure | VmRSS |");
console.log("| --- | --- | --- |");
for (const line of rows) console.log(line);
Deno.exit(0);
