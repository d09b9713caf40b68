// deno-lint-ignore-file no-console -- a measuring script: its report is for the terminal
/**
 * Memory per waiting party: starts `duet syncpoint` (default limits) as a child, holds N
 * first parties over loopback connections, and reports (RSS holding - RSS idle) / N, for
 * several payloads, each in a fresh process. Figures go to docs/benchmarks.md.
 *
 *   deno run -A bench/syncpoint/memory.ts [--parties 5000] [--rounds 3]
 *
 * Linux only (reads /proc/PID/status). Loopback only; bounded in count and time.
 *
 * @module
 */
import { scriptOptions } from "../../tools/_options.ts";
import { waitFor } from "@duet/testkit";
import { delay } from "@duet/core/delay";
import { holdParty, rssKiB, startInstance } from "./_instance.ts";

const flags = scriptOptions(import.meta.url, {
  parties: { type: "count", default: 5000 },
  rounds: { type: "count", default: 3 },
});
const KiB = 1024;

interface Variant {
  name: string;
  payload: string;
  /** Parties to hold (the 64 MiB default budget allows 1,024 payloads of 64 KiB). */
  parties: number;
}

const many = flags.parties;
const variants: Variant[] = [
  { name: "empty body", payload: "", parties: many },
  { name: "64 KiB of ASCII", payload: "x".repeat(64 * KiB), parties: 1_000 },
  {
    // One character outside Latin-1 makes V8 store the whole text as UTF-16: the worst case.
    name: "64 KiB, ASCII and one €",
    payload: "x".repeat(64 * KiB - 3) + "€",
    parties: 1_000,
  },
];

async function measure(variant: Variant): Promise<{ idle: number; held: number }> {
  const instance = await startInstance();
  const conns: Deno.TcpConn[] = [];
  try {
    await delay(1_000); // the heap settles after the warm-up
    const idle = await rssKiB(instance.child.pid);
    const body = new TextEncoder().encode(variant.payload);
    for (let i = 0; i < variant.parties; i++) {
      conns.push(await holdParty(instance.port, `hold-${i}`, body, 300_000));
      if (i % 500 === 499) await delay(20);
    }
    await waitFor(
      async () => (await instance.waiting()) === variant.parties,
      "every party",
      60_000,
    );
    await delay(1_000);
    const held = await rssKiB(instance.child.pid);
    return { idle, held };
  } finally {
    for (const conn of conns) conn.close();
    await instance.stop();
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
console.log(`# syncpoint memory per waiting party, ${new Date().toISOString()}`);
console.log(`machine: ${cpu}, ${navigator.hardwareConcurrency} cores; Deno ${Deno.version.deno}`);
console.log(`rounds: ${flags.rounds} (median), each in a fresh process, default limits\n`);
console.log("| payload | parties held | RSS idle MiB | RSS holding MiB | per waiting party |");
console.log("| --- | --- | --- | --- | --- |");
for (const variant of variants) {
  const runs: { idle: number; held: number }[] = [];
  for (let r = 0; r < flags.rounds; r++) runs.push(await measure(variant));
  const perParty = median(runs.map((r) => ((r.held - r.idle) * KiB) / variant.parties));
  console.log(
    `| ${variant.name} | ${variant.parties} | ${
      (median(runs.map((r) => r.idle)) / KiB).toFixed(1)
    } | ${(median(runs.map((r) => r.held)) / KiB).toFixed(1)} | ${
      (perParty / 1000).toFixed(1)
    } KB |`,
  );
}
