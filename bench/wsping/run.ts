// deno-lint-ignore-file no-console -- a benchmark script: its report is for the terminal
/**
 * wsPing against a plain TypeScript ping doing the same work, on Deno, one run:
 * interleaved rounds (ABAB...) so drift on the shared cores hits both alike; reports the
 * median, p90 and p99 of each and the ratio of medians; and the time to instantiate the
 * embedded module, warm (in this process) and cold (first use in a fresh process).
 *
 *   deno run -A bench/wsping/run.ts [--rounds 10] [--per-round 300]
 */
import { scriptOptions } from "../../tools/_options.ts";
import { wsPing } from "../../packages/wsping/mod.ts";
import { machineBytes } from "../../packages/wsping/machine.ts";
import { plainPing } from "../../packages/wsping/testdata/plain_ping.ts";

const values = scriptOptions(import.meta.url, {
  rounds: { type: "count", default: 10 },
  "per-round": { type: "count", default: 300 },
});
const rounds = values.rounds;
const perRound = values["per-round"];

const server = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    new URL("../../packages/wsping/testdata/echo_server.ts", import.meta.url).pathname,
  ],
  stdout: "piped",
}).spawn();
const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
const variants: [string, (url: string, message: string) => Promise<string>][] = [
  ["plain TypeScript", plainPing],
  ["wsPing (WebAssembly)", wsPing],
];

/** The two pings' samples and the module's instantiation times, against the echo server. */
async function measure() {
  const reader = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { ws } = JSON.parse((await reader.read()).value!);
  reader.releaseLock();
  const endpoint = `${ws}/echo`;

  const samples = new Map<string, number[]>(variants.map(([name]) => [name, []]));

  for (const [, ping] of variants) for (let i = 0; i < 300; i++) await ping(endpoint, "warm-up");
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 ? [...variants].reverse() : variants;
    for (const [name, ping] of order) {
      for (let i = 0; i < perRound; i++) {
        const t0 = performance.now();
        const reply = await ping(endpoint, "ping");
        samples.get(name)!.push(performance.now() - t0);
        if (reply !== "ping") throw new Error(`${name}: wrong reply ${reply}`);
      }
    }
  }

  const bytes = machineBytes();
  const warm: number[] = [];
  for (let i = 0; i < 300; i++) {
    const t0 = performance.now();
    await WebAssembly.instantiate(await WebAssembly.compile(bytes as BufferSource), {});
    warm.push(performance.now() - t0);
  }
  warm.sort((a, b) => a - b);
  const cold: number[] = [];
  for (let i = 0; i < 5; i++) {
    const { stdout } = await new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { loadMachine } from "${
          new URL("../../packages/wsping/machine.ts", import.meta.url).href
        }";
        const t0 = performance.now(); await loadMachine(); console.log(performance.now() - t0);`,
      ],
      stdout: "piped",
    }).output();
    cold.push(Number(new TextDecoder().decode(stdout)));
  }
  cold.sort((a, b) => a - b);
  return { samples, warm, cold, bytes };
}

// The echo server goes with this script, whether measuring ends well or not.
let measured: Awaited<ReturnType<typeof measure>>;
try {
  measured = await measure();
} finally {
  server.kill();
  await server.status;
}
const { samples, warm, cold, bytes } = measured;

const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
console.log(`# wsPing vs plain TypeScript ping, ${new Date().toISOString()}`);
console.log(
  `${cpu}, ${navigator.hardwareConcurrency} cores; Deno ${Deno.version.deno}; ${rounds} interleaved rounds x ${perRound} pings each\n`,
);
console.log("| ping (connect, send, first reply, close) | n | p50 | p90 | p99 |");
console.log("| --- | --- | --- | --- | --- |");
const medians: number[] = [];
for (const [name] of variants) {
  const sorted = samples.get(name)!.sort((a, b) => a - b);
  medians.push(quantile(sorted, 0.5));
  console.log(
    `| ${name} | ${sorted.length} | ${(quantile(sorted, 0.5) * 1000).toFixed(0)} µs | ${
      (quantile(sorted, 0.9) * 1000).toFixed(0)
    } µs | ${(quantile(sorted, 0.99) * 1000).toFixed(0)} µs |`,
  );
}
console.log(`\nwsPing p50 / plain p50 = ${(medians[1]! / medians[0]!).toFixed(3)}`);
console.log(
  `instantiate the ${bytes.length}-byte module: warm p50 ${
    (quantile(warm, 0.5) * 1000).toFixed(0)
  } µs, p99 ${
    (quantile(warm, 0.99) * 1000).toFixed(0)
  } µs; cold (first use, fresh process, median of 5) ${(quantile(cold, 0.5) * 1000).toFixed(0)} µs`,
);
