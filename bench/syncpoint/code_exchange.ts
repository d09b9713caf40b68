// deno-lint-ignore-file no-console -- a benchmark: its output is the report
/**
 * `duet syncpoint wait --code`'s whole exchange, both parties in one process against a local
 * syncpoint on loopback: two rendezvous (CPace messages, then tags and sealed payloads) and the
 * CPace computations. The anchor, measured in the same run: one plain rendezvous of two
 * parties with the same payloads (`waitForSecondParty`).
 *
 * Usage: deno run -A bench/syncpoint/code_exchange.ts [--runs 200]
 * Prints p50 and p99 in milliseconds, and the ratio to the anchor.
 *
 * @module
 */
import { startSyncpoint, waitForSecondParty, waitWithCode } from "@duet/syncpoint";
import { scriptOptions } from "../../tools/_options.ts";

const { runs } = scriptOptions(import.meta.url, { runs: { type: "count", default: 200 } });
const syncpoint = await startSyncpoint({ port: 0 });
const url = syncpoint.url;
const payload = "10.0.0.7:4433";

async function timed(fn: (i: number) => Promise<unknown>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < 20; i++) await fn(-i - 1); // warm-up
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn(i);
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b);
}
const at = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

const plain = await timed((i) =>
  Promise.all([
    waitForSecondParty(url, `plain-${i}`, { payload, timeoutMs: 10_000 }),
    waitForSecondParty(url, `plain-${i}`, { payload, timeoutMs: 10_000 }),
  ])
);
const coded = await timed((i) =>
  Promise.all([
    waitWithCode(url, `code-${i}`, "7-guitar-orbit-lazy", { payload, timeoutMs: 10_000 }),
    waitWithCode(url, `code-${i}`, "7-guitar-orbit-lazy", { payload, timeoutMs: 10_000 }),
  ])
);
await syncpoint.shutdown();
const row = (name: string, t: number[]) =>
  `| ${name} | ${runs} | ${at(t, 0.5).toFixed(2)} ms | ${at(t, 0.99).toFixed(2)} ms | ${
    (at(t, 0.5) / at(plain, 0.5)).toFixed(2)
  } |`;
console.log("| exchange (both parties, one process) | runs | p50 | p99 | p50 / anchor |");
console.log("| --- | --- | --- | --- | --- |");
console.log(row("anchor: one plain rendezvous", plain));
console.log(row("syncpoint wait --code: CPace, confirmation, sealed payloads", coded));
