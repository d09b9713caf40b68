// deno-lint-ignore-file no-console -- a benchmark script: its report is for the terminal
/**
 * The syncpoint benchmark: builds the anchors and the load generator offline, then in one
 * run measures duet's syncpoint beside the Rust tokio + hyper and Go net/http anchors.
 *
 *   deno run -A bench/syncpoint/run.ts [--rounds 3] [--duration 10] [--warmup 2]
 *     [--hold 18000] [--pin] [--only throughput,capacity,redis]
 *
 * --duration and --warmup are seconds of load per round; --pin runs the server on core 1 and
 * the load generator on core 0 (taskset); --only runs some of the scenarios below.
 *
 * Needs: cargo with Debian's crates (apt-get install librust-tokio-dev librust-hyper-dev),
 * Go (golang-go), redis-server on 127.0.0.1:6379 (or REDIS_URL) for the Redis rows.
 * Everything runs on loopback; every loop is bounded in count and time.
 *
 * Scenarios
 * - throughput: 100 pairs in flight; pairs/s, pair latency p50/p99, and the server's CPU
 *   time per 1,000 pairs (from /proc/PID/stat: independent of how fast the generator is).
 * - capacity: --hold first parties waiting at once; RSS growth per waiting party.
 * - redis: two duet instances on one Redis, every pair split across them; 1 pair in
 *   flight (latency) and 100 (throughput).
 */
import { scriptOptions } from "../../tools/_options.ts";
import { freePort } from "@duet/testkit";

const SCENARIOS = ["throughput", "capacity", "redis"];
const flags = scriptOptions(import.meta.url, {
  rounds: { type: "count", default: 3 },
  duration: { type: "count", default: 10 }, // seconds
  warmup: { type: "count", default: 2, min: 0 }, // seconds
  hold: { type: "count", default: 18000 },
  pin: { type: "boolean" },
  only: { type: "names", default: SCENARIOS, choices: SCENARIOS },
});
const rounds = flags.rounds;
const root = new URL("../../", import.meta.url).pathname;
const redisUrl = Deno.env.get("REDIS_URL") || "redis://127.0.0.1:6379";
const loadgen = `${root}bench/loadgen/loadgen`;

async function sh(cmd: string[], cwd: string, env: Record<string, string> = {}): Promise<void> {
  const { code, stderr } = await new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    cwd,
    env,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) throw new Error(`${cmd.join(" ")} failed:\n${new TextDecoder().decode(stderr)}`);
}

async function build(): Promise<void> {
  const go = { GOFLAGS: "-mod=mod", GOPROXY: "off", GOTOOLCHAIN: "local" };
  await sh(["go", "build", "-o", "loadgen", "."], `${root}bench/loadgen`, go);
  await sh(["go", "build", "-o", "syncpoint-go", "."], `${root}bench/anchors/syncpoint-go`, go);
  await sh(
    ["cargo", "build", "--release", "--offline", "--quiet"],
    `${root}bench/anchors/syncpoint-tokio`,
  );
}

interface Target {
  name: string;
  command: (port: number) => string[];
}

const deno = Deno.execPath();

/** `duet syncpoint` on `port`, quiet, with extra options. */
function duetSyncpoint(port: number, ...extra: string[]): string[] {
  return [
    deno,
    "run",
    "-A",
    `${root}apps/cli/main.ts`,
    "syncpoint",
    "--port",
    String(port),
    "--quiet",
    ...extra,
  ];
}

const targets: Target[] = [
  {
    name: "Rust tokio + hyper (anchor)",
    command: (
      p,
    ) => [`${root}bench/anchors/syncpoint-tokio/target/release/syncpoint-tokio`, String(p)],
  },
  {
    name: "Go net/http (anchor)",
    command: (p) => [`${root}bench/anchors/syncpoint-go/syncpoint-go`, String(p)],
  },
  {
    name: "duet syncpoint",
    command: (p) => duetSyncpoint(p, "--max-waiting", "20000"),
  },
];

async function start(
  port: number,
  command: string[],
): Promise<{ url: string; process: Deno.ChildProcess }> {
  const args = flags.pin ? ["taskset", "-c", "1", ...command] : command;
  const process = new Deno.Command(args[0]!, {
    args: args.slice(1),
    stdout: "null",
    stderr: "null",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const response = await fetch(`${url}/healthz`);
      await response.body?.cancel();
      if (response.ok) return { url, process };
    } catch { /* not up yet */ }
    if (Date.now() > deadline) throw new Error(`${command.join(" ")} did not start`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stop(process: Deno.ChildProcess): Promise<void> {
  try {
    process.kill("SIGTERM");
  } catch { /* gone */ }
  await process.status;
}

/** utime + stime of a process in seconds, and its RSS in KiB. */
async function usage(pid: number): Promise<{ cpu: number; rssKiB: number }> {
  const stat = (await Deno.readTextFile(`/proc/${pid}/stat`)).split(") ")[1]!.split(" ");
  const cpu = (Number(stat[11]) + Number(stat[12])) / 100; // fields 14, 15; CLK_TCK 100
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const rssKiB = Number(status.match(/VmRSS:\s+(\d+)/)?.[1]);
  return { cpu, rssKiB };
}

/** What `loadgen pairs` prints. */
interface PairsResult {
  pairs_per_s: number;
  p50_ms: number;
  p99_ms: number;
  errors: number;
}

async function loadgenPairs(args: string[]): Promise<PairsResult> {
  const pinned = flags.pin ? ["taskset", "-c", "0", loadgen] : [loadgen];
  const { stdout, code } = await new Deno.Command(pinned[0]!, {
    args: [
      ...pinned.slice(1),
      "pairs",
      ...args,
      "-duration",
      `${flags.duration}s`,
      "-warmup",
      `${flags.warmup}s`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (code !== 0) throw new Error("loadgen failed");
  return JSON.parse(new TextDecoder().decode(stdout));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Throughput {
  name: string;
  pairsPerS: number;
  p50: number;
  p99: number;
  cpuMsPer1kPairs: number;
  errors: number;
}

async function throughput(target: Target): Promise<Throughput> {
  const runs: Throughput[] = [];
  const port = freePort();
  const { url, process } = await start(port, target.command(port));
  try {
    for (let r = 0; r < rounds; r++) {
      const before = await usage(process.pid);
      const result = await loadgenPairs(["-url", url, "-concurrency", "100"]);
      const after = await usage(process.pid);
      const seconds = flags.duration + flags.warmup;
      // CPU over warm-up + measured time, divided by the pairs completed in that time.
      const pairsTotal = result.pairs_per_s * seconds;
      runs.push({
        name: target.name,
        pairsPerS: result.pairs_per_s,
        p50: result.p50_ms,
        p99: result.p99_ms,
        cpuMsPer1kPairs: ((after.cpu - before.cpu) * 1000) / (pairsTotal / 1000),
        errors: result.errors,
      });
    }
  } finally {
    await stop(process);
  }
  return {
    name: target.name,
    pairsPerS: median(runs.map((r) => r.pairsPerS)),
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
    cpuMsPer1kPairs: median(runs.map((r) => r.cpuMsPer1kPairs)),
    errors: runs.reduce((n, r) => n + r.errors, 0),
  };
}

interface Capacity {
  name: string;
  held: number;
  idleMiB: number;
  heldMiB: number;
  bytesPerParty: number;
  answered: number;
}

async function capacity(target: Target): Promise<Capacity> {
  const count = flags.hold;
  const port = freePort();
  const { url, process } = await start(port, target.command(port));
  try {
    await new Promise((r) => setTimeout(r, 500));
    const idle = await usage(process.pid);
    const child = new Deno.Command(loadgen, {
      args: ["hold", "-url", url, "-count", String(count)],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await lines.read();
      if (done) throw new Error("loadgen hold ended early");
      text += value;
    }
    await new Promise((r) => setTimeout(r, 1000)); // let allocation settle
    const held = await usage(process.pid);
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode("go\n"));
    await writer.close();
    while (true) {
      const { value, done } = await lines.read();
      if (done) break;
      text += value;
    }
    await child.status;
    const final = JSON.parse(text.trim().split("\n").at(-1)!);
    return {
      name: target.name,
      held: count,
      idleMiB: idle.rssKiB / 1024,
      heldMiB: held.rssKiB / 1024,
      bytesPerParty: ((held.rssKiB - idle.rssKiB) * 1024) / count,
      answered: final.answers_200,
    };
  } finally {
    await stop(process);
  }
}

async function redisPairs(): Promise<
  { latency: PairsResult; load: PairsResult }
> {
  const prefix = `duet-bench:${crypto.randomUUID()}`;
  const instance = (port: number) =>
    duetSyncpoint(port, "--redis-url", redisUrl, "--redis-prefix", prefix);
  const [portA, portB] = [freePort(), freePort()];
  const a = await start(portA, instance(portA));
  const b = await start(portB, instance(portB));
  try {
    const latency = await loadgenPairs(["-url", a.url, "-url2", b.url, "-concurrency", "1"]);
    const load = await loadgenPairs(["-url", a.url, "-url2", b.url, "-concurrency", "100"]);
    return { latency, load };
  } finally {
    await Promise.all([stop(a.process), stop(b.process)]);
  }
}

const cpuModel = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
console.log(`# syncpoint benchmark, ${new Date().toISOString()}`);
console.log(
  `machine: ${cpuModel}, ${navigator.hardwareConcurrency} cores; Deno ${Deno.version.deno}; ` +
    `rounds ${rounds} x ${flags.duration} s (+${flags.warmup} s warm-up); pinned: ${flags.pin}`,
);
await build();

const only = flags.only;
if (only.includes("throughput")) {
  console.log("\n## throughput: 100 pairs in flight (medians)\n");
  console.log(
    "| server | pairs/s | ratio to tokio | ratio to Go | pair p50 ms | pair p99 ms | server CPU ms per 1,000 pairs | errors |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  const results: Throughput[] = [];
  for (const target of targets) results.push(await throughput(target));
  const [tokio, go] = results;
  for (const r of results) {
    console.log(
      `| ${r.name} | ${r.pairsPerS.toFixed(0)} | ${(r.pairsPerS / tokio!.pairsPerS).toFixed(2)} | ${
        (r.pairsPerS / go!.pairsPerS).toFixed(2)
      } | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${
        r.cpuMsPer1kPairs.toFixed(0)
      } | ${r.errors} |`,
    );
  }
}
if (only.includes("capacity")) {
  console.log(`\n## capacity: ${flags.hold} first parties waiting at once\n`);
  console.log(
    "| server | RSS idle MiB | RSS holding MiB | bytes per waiting party | ratio to tokio | answered 200 |",
  );
  console.log("| --- | --- | --- | --- | --- | --- |");
  const results: Capacity[] = [];
  for (const target of targets) results.push(await capacity(target));
  for (const r of results) {
    console.log(
      `| ${r.name} | ${r.idleMiB.toFixed(1)} | ${r.heldMiB.toFixed(1)} | ${
        r.bytesPerParty.toFixed(0)
      } | ${(r.bytesPerParty / results[0]!.bytesPerParty).toFixed(2)} | ${r.answered} of ${
        2 * r.held
      } |`,
    );
  }
}
if (only.includes("redis")) {
  console.log("\n## Redis: two duet instances, every pair split across them\n");
  const { latency, load } = await redisPairs();
  console.log("| pairs in flight | pairs/s | pair p50 ms | pair p99 ms | errors |");
  console.log("| --- | --- | --- | --- | --- |");
  for (const [n, r] of [[1, latency], [100, load]] as const) {
    console.log(
      `| ${n} | ${r.pairs_per_s.toFixed(0)} | ${r.p50_ms.toFixed(2)} | ${
        r.p99_ms.toFixed(2)
      } | ${r.errors} |`,
    );
  }
}
