// deno-lint-ignore-file no-console -- a benchmark: its output is the report
/**
 * `duet chat --code`'s cost at the start of a conversation: two clients in one process, a new
 * room each run, against a local chat server (PGlite, or PostgreSQL with `--database-url`).
 * Measured from both clients' start to both having the peer's key confirmed by the code
 * (CPace messages and confirmations relayed and stored by the server). The anchor, measured
 * in the same run: the same two clients without a code, to both having agreed the key (trust
 * on first use).
 *
 * Usage: deno run -A bench/chat/code.ts [--runs 30] [--database-url URL]
 * Prints p50 and p99 in milliseconds, and the ratio to the anchor.
 *
 * @module
 */
import {
  ChatClient,
  ChatStore,
  type ClientEvent,
  connectPostgres,
  KeyStore,
  openPglite,
  startChatServer,
} from "@duet/chat";
import { generateCode } from "@duet/pake";
import { scriptOptions } from "../../tools/_options.ts";

const { runs, "database-url": url } = scriptOptions(import.meta.url, {
  runs: { type: "count", default: 30 },
  "database-url": { type: "string" },
});
const dir = await Deno.makeTempDir();
// PostgreSQL: a schema of this run's own, dropped at the end (the database is left as found).
const schema = `bench_chat_code_${crypto.randomUUID().slice(0, 8)}`;
const store = url
  ? new ChatStore(await connectPostgres(url, { schema }))
  : new ChatStore(await openPglite(`${dir}/db`));
// A new room each run: no limit on room creation or code attempts from one address.
const server = await startChatServer({
  store,
  port: 0,
  codeAttemptsPerHour: 1_000_000,
  roomsPerMinute: 0,
});
const keyStores = [
  await KeyStore.open(`${dir}/alice.sqlite`),
  await KeyStore.open(`${dir}/bob.sqlite`),
];

/** Both parties in `room` until `done` holds for each's events; the time it took (ms). */
async function meet(
  room: string,
  code: string | undefined,
  done: (events: ClientEvent[]) => boolean,
): Promise<number> {
  const started = performance.now();
  const parties = ["alice", "bob"].map((name, i) => {
    const events: ClientEvent[] = [];
    const reached = Promise.withResolvers<void>();
    const client = new ChatClient({
      server: `127.0.0.1:${server.addr.port}`,
      name,
      room,
      keyStore: keyStores[i]!,
      backoff: { initialMs: 10, maxMs: 100, jitter: "full" as const },
      onEvent: (event) => {
        events.push(event);
        if (done(events)) reached.resolve();
      },
      ...(code === undefined ? {} : { code }),
    });
    return { client, reached: reached.promise };
  });
  await Promise.all(parties.map((p) => p.client.start()));
  await Promise.all(parties.map((p) => p.reached));
  const took = performance.now() - started;
  await Promise.all(parties.map((p) => p.client.stop()));
  return took;
}

const keyAgreed = (events: ClientEvent[]) => events.some((e) => e.type === "key");
const confirmed = (events: ClientEvent[]) =>
  events.some((e) => e.type === "code" && e.state === "verified");

async function timed(fn: (i: number) => Promise<number>): Promise<number[]> {
  for (let i = 0; i < 5; i++) await fn(-i - 1); // warm-up
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(await fn(i));
  return times.sort((a, b) => a - b);
}
const at = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

const run = crypto.randomUUID().slice(0, 8);
const plain = await timed((i) => meet(`plain-${run}-${i}`, undefined, keyAgreed));
const coded = await timed((i) => meet(`code-${run}-${i}`, generateCode().text, confirmed));
await server.shutdown();
if (url) {
  const admin = await connectPostgres(url);
  await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await admin.close();
}
for (const keyStore of keyStores) keyStore.close();
await Deno.remove(dir, { recursive: true });

const row = (name: string, t: number[]) =>
  `| ${name} | ${runs} | ${at(t, 0.5).toFixed(1)} ms | ${at(t, 0.99).toFixed(1)} ms | ${
    (at(t, 0.5) / at(plain, 0.5)).toFixed(2)
  } |`;
console.log("| two clients meeting (one process) | runs | p50 | p99 | p50 / anchor |");
console.log("| --- | --- | --- | --- | --- |");
console.log(row("anchor: key agreed, no code (trust on first use)", plain));
console.log(row("chat --code: both keys confirmed by the code", coded));
