// deno-lint-ignore-file no-console -- a measuring script: its report is for the terminal
/**
 * Redis memory per waiting party of `duet syncpoint --redis-url`: writes N wait keys exactly
 * as apps/syncpoint/redis_rendezvous.ts does (its own `register-or-claim` script, read from
 * that file, with the same arguments: token and instance UUIDs, the payload, has, the TTL),
 * each run into a fresh private redis-server, and reports the deltas of `INFO memory`
 * (used_memory, used_memory_rss) per key, and `MEMORY USAGE` of sample keys. Then shows
 * what Redis does at `maxmemory` under `noeviction` and under an eviction policy. Figures go
 * to docs/benchmarks.md ("Redis memory per waiting party").
 *
 *   deno run -A bench/syncpoint/redis_memory.ts [--rounds 3]
 *     [--sizes 0,100,1024,16384,65536] [--counts 2000,10000] [--instance 1000]
 *
 * Starts its own redis-server on free loopback ports (DUET_REDIS_SERVER overrides the
 * binary); never touches another Redis. Linux or macOS; bounded in count and time.
 *
 * @module
 */
import { scriptOptions } from "../../tools/_options.ts";
import { Redis } from "ioredis";
import { freePort, PrivateRedis, waitFor } from "@duet/testkit";
import { delay } from "@duet/core/delay";
import { holdParty, rssKiB, startInstance } from "./_instance.ts";
import { DEFAULTS } from "@duet/syncpoint";

const flags = scriptOptions(import.meta.url, {
  rounds: { type: "count", default: 3 },
  sizes: { type: "counts", default: [0, 100, 1024, 16384, 65536], min: 0 }, // payload bytes
  counts: { type: "counts", default: [2000, 10000] },
  // Also the whole service: `duet syncpoint --redis-url` holding this many first parties
  // with 64 KiB payloads (0: skip); its RSS, peak RSS and Redis's used_memory per party.
  instance: { type: "count", default: 1000, min: 0 },
});
const { rounds, sizes, counts } = flags;
const prefix = "duet:syncpoint"; // the service's default --redis-prefix

// The service's script, taken from its source so that the keys are written the same way.
const source = await Deno.readTextFile(
  new URL("../../apps/syncpoint/redis_rendezvous.ts", import.meta.url),
);
const REGISTER_OR_CLAIM = source.match(/const REGISTER_OR_CLAIM = `([^`]*)`/)?.[1];
const DELETE_IF = source.match(/const DELETE_IF = `([^`]*)`/)?.[1];
if (!REGISTER_OR_CLAIM || !DELETE_IF) throw new Error("scripts not found in redis_rendezvous.ts");

type Scripted = Redis & {
  registerOrClaim(key: string, ...args: (string | number)[]): Promise<string[]>;
  deleteIf(key: string, field: string, value: string): Promise<number>;
};

/** A fresh redis-server (no persistence), as in the manifest, plus `extra` arguments. */
async function startRedis(extra: string[] = []) {
  const port = freePort();
  const child = new Deno.Command(PrivateRedis.binary, {
    args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
      .concat(extra),
    stdout: "null",
    stderr: "null",
  }).spawn();
  const redis = new Redis(`redis://127.0.0.1:${port}`, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
  }) as Scripted;
  redis.defineCommand("registerOrClaim", { numberOfKeys: 1, lua: REGISTER_OR_CLAIM! });
  redis.defineCommand("deleteIf", { numberOfKeys: 1, lua: DELETE_IF! });
  await waitFor(
    () => Deno.connect({ hostname: "127.0.0.1", port }).then((c) => (c.close(), true), () => false),
    "redis-server",
    10_000,
  );
  await redis.connect();
  return {
    redis,
    port,
    async stop() {
      redis.disconnect();
      child.kill("SIGKILL");
      await child.status;
    },
  };
}

async function memory(redis: Redis): Promise<{ used: number; rss: number }> {
  const info = await redis.info("memory");
  const field = (name: string) => Number(info.match(new RegExp(`^${name}:(\\d+)`, "m"))?.[1]);
  return { used: field("used_memory"), rss: field("used_memory_rss") };
}

/** One first party's register-or-claim, with the arguments the service passes. */
function register(redis: Scripted, id: string, payload: string | null) {
  return redis.registerOrClaim(
    `${prefix}:wait:${id}`,
    crypto.randomUUID(), // token
    "0b9f6c2e-6d1a-4c55-9a43-3f0e8f1d7a21", // instance: one UUID per process
    payload ?? "",
    payload === null ? "0" : "1",
    DEFAULTS.maxTimeoutMs + 5_000, // the longest TTL the service sets
    3_000,
  );
}

/** An id as a client might choose one (36 characters). */
const idOf = (i: number) => `party-${String(i).padStart(8, "0")}-rendezvous-abcdefgh`.slice(0, 36);

interface Sample {
  used: number;
  rss: number;
  usage: number;
  encoding: string;
}

async function measure(size: number, count: number): Promise<Sample> {
  const server = await startRedis();
  const { redis } = server;
  try {
    const payload = size === 0 ? null : "x".repeat(size);
    // Warm up the script cache and the allocator's first arenas, then drop the keys.
    for (let i = 0; i < 50; i++) await register(redis, `warm-${i}`, payload);
    await redis.flushall();
    const before = await memory(redis);
    const batch = 200;
    for (let i = 0; i < count; i += batch) {
      const n = Math.min(batch, count - i);
      const replies = await Promise.all(
        Array.from({ length: n }, (_, j) => register(redis, idOf(i + j), payload)),
      );
      if (replies.some((r) => r[0] !== "registered")) throw new Error("a key was not new");
    }
    await delay(200);
    const after = await memory(redis);
    const usages: number[] = [];
    for (let i = 0; i < count; i += Math.ceil(count / 21)) {
      usages.push(Number(await redis.call("MEMORY", "USAGE", `${prefix}:wait:${idOf(i)}`)));
    }
    const encoding = String(await redis.call("OBJECT", "ENCODING", `${prefix}:wait:${idOf(0)}`));
    return {
      used: (after.used - before.used) / count,
      rss: (after.rss - before.rss) / count,
      usage: median(usages),
      encoding,
    };
  } finally {
    await server.stop();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (x: number) => Math.round(x).toLocaleString("en-US");

const version = new TextDecoder().decode(
  (await new Deno.Command(PrivateRedis.binary, { args: ["--version"] }).output()).stdout,
).trim();
const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => ""))
  .match(/model name\s*:\s*(.*)/)?.[1];
console.log(`# Redis memory per waiting party, ${new Date().toISOString()}`);
console.log(`machine: ${cpu}, ${navigator.hardwareConcurrency} cores; Deno ${Deno.version.deno}`);
console.log(`${version}`);
console.log(`rounds: ${rounds} (median), each in a fresh redis-server\n`);
console.log(
  "| payload bytes | keys | encoding | used_memory per key | used_memory_rss per key | MEMORY USAGE |",
);
console.log("| --- | --- | --- | --- | --- | --- |");
const perKey = new Map<number, number>(); // size -> used per key at the largest count
for (const size of sizes) {
  for (const count of counts) {
    const runs: Sample[] = [];
    for (let r = 0; r < rounds; r++) runs.push(await measure(size, count));
    const used = median(runs.map((r) => r.used));
    perKey.set(size, used);
    console.log(
      `| ${fmt(size)} | ${fmt(count)} | ${runs[0]!.encoding} | ${fmt(used)} B | ${
        fmt(median(runs.map((r) => r.rss)))
      } B | ${fmt(median(runs.map((r) => r.usage)))} B |`,
    );
  }
}
const largest = Math.max(...sizes);
const small = sizes.filter((s) => s > 0 && s < largest);
if (perKey.has(0) && small.length > 0) {
  const base = small[0]!;
  const slope = (perKey.get(largest)! - perKey.get(base)!) / (largest - base);
  console.log(
    `\nused_memory per key = ${fmt(perKey.get(0)!)} B with no payload; ` +
      `${fmt(perKey.get(base)! - base * slope)} B + ${slope.toFixed(3)} x payload bytes ` +
      `(line through ${fmt(base)} and ${fmt(largest)} bytes, ${fmt(Math.max(...counts))} keys)`,
  );
}

// What Redis does at maxmemory: the service's scripts under noeviction and under an
// eviction policy.
console.log("\n## At maxmemory (16 MiB, 64 KiB payloads)\n");
for (const policy of ["noeviction", "allkeys-lru", "volatile-ttl"]) {
  const server = await startRedis(["--maxmemory", "16mb", "--maxmemory-policy", policy]);
  const { redis } = server;
  try {
    const payload = "x".repeat(64 * 1024);
    let written = 0;
    let failure = "";
    for (let i = 0; i < 1_000; i++) {
      try {
        await register(redis, idOf(i), payload);
        written++;
      } catch (error) {
        failure = (error as Error).message;
        break;
      }
    }
    const present = await redis.dbsize();
    const line = [`${policy}: ${written} registered, ${present} keys present`];
    if (failure) line.push(`next register: "${failure}"`);
    if (policy === "noeviction") {
      // Second parties for waiting first parties (the claim's HSET is a write), at the
      // boundary with a 64 KiB and a 1-byte payload (the script's arguments count while it
      // runs), then with used_memory clearly above maxmemory.
      const claim = (i: number, payload: string) =>
        register(redis, idOf(i), payload).then((r) => r[0], (e) => e.message.split(".")[0]);
      line.push(`claim, 64 KiB payload: "${await claim(0, payload)}"`);
      line.push(`claim, 1 byte: "${await claim(2, "y")}"`);
      await redis.config("SET", "maxmemory", "8mb");
      line.push(`claim, 1 byte, maxmemory lowered to 8 MiB: "${await claim(3, "y")}"`);
      const deleted = await redis.deleteIf(`${prefix}:wait:${idOf(1)}`, "state", "waiting")
        .then(String, (e) => e.message);
      line.push(`conditional DEL: ${deleted}`);
      const published = await redis.publish(`${prefix}:instance:x`, "{}").then(
        (n) => `ok (${n})`,
        (e) => e.message,
      );
      line.push(`PUBLISH: ${published}`);
    } else {
      line.push(`${written - present} waits dropped silently`);
    }
    console.log(`- ${line.join("; ")}`);
  } finally {
    await server.stop();
  }
}

// How long shutdown's sequential conditional DELs take (RedisRendezvous.close() awaits one
// per waiting party): the floor on loopback; in a cluster multiply by the round trip.
{
  const server = await startRedis();
  try {
    const n = 16_000;
    for (let i = 0; i < n; i += 500) {
      await Promise.all(
        Array.from({ length: 500 }, (_, j) => register(server.redis, idOf(i + j), null)),
      );
    }
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      await server.redis.deleteIf(`${prefix}:wait:${idOf(i)}`, "state", "waiting");
    }
    const ms = performance.now() - start;
    console.log(
      `\n${fmt(n)} sequential conditional DELs (close() of a full instance): ` +
        `${fmt(ms)} ms on loopback, ${(ms * 1000 / n).toFixed(0)} µs each`,
    );
  } finally {
    await server.stop();
  }
}

// The whole service in Redis mode: do the keys it writes cost what the direct writes above
// cost, and what does the instance hold (settled RSS, and the peak, VmHWM) per party?
const parties = flags.instance;
if (parties > 0) {
  const server = await startRedis();
  const { redis } = server;
  const instance = await startInstance(
    ["--max-waiting-bytes", "0", "--redis-url", `redis://127.0.0.1:${server.port}`],
  ).catch(async (error) => {
    await server.stop();
    throw error;
  });
  const { child, port, waiting } = instance;
  const conns: Deno.TcpConn[] = [];
  try {
    await delay(1_000);
    const idle = await rssKiB(child.pid, "VmRSS");
    const before = await memory(redis);
    const body = new TextEncoder().encode("x".repeat(64 * 1024));
    for (let i = 0; i < parties; i++) conns.push(await holdParty(port, idOf(i), body, 60_000));
    await waitFor(async () => (await waiting()) === parties, "every party", 60_000).catch(
      async (e) => {
        throw new Error(`${e.message}: ${await waiting()} waiting`);
      },
    );
    await delay(1_000);
    const held = await rssKiB(child.pid, "VmRSS");
    const peak = await rssKiB(child.pid, "VmHWM");
    const after = await memory(redis);
    const kb = (kib: number) => ((kib * 1024) / parties / 1000).toFixed(1);
    console.log(
      `\n## duet syncpoint --redis-url, ${fmt(parties)} first parties with 64 KiB payloads\n\n` +
        `instance: RSS idle ${(idle / 1024).toFixed(1)} MiB, holding ${
          (held / 1024).toFixed(1)
        } MiB (${kb(held - idle)} KB per party), peak (VmHWM) ${(peak / 1024).toFixed(1)} MiB ` +
        `(${kb(peak - idle)} KB per party over idle); Redis used_memory +${
          fmt((after.used - before.used) / parties)
        } B per party, used_memory_rss +${fmt((after.rss - before.rss) / parties)} B`,
    );
  } finally {
    for (const conn of conns) conn.close();
    await instance.stop();
    await server.stop();
  }
}
