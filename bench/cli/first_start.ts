// deno-lint-ignore-file no-console -- a benchmark: its output is the report
/**
 * How long `duet serve` takes from the README's command to its printed URLs, on a clean home
 * (cold: npx fetches Deno, Deno fetches the npm packages, the embedded chat database is
 * created) and again on the same home (warm). Anchors measured in the same run:
 *
 * - the old run path, `npx --yes deno@VERSION task serve` (a task fetches every package in
 *   deno.lock, the test and build tools' included) on a clean home of its own;
 * - `npx --yes deno@VERSION run` of an empty file, cold (npx fetching Deno alone) and warm.
 *
 * Every service listens on port 0, so nothing here collides with what else runs.
 *
 * Usage: deno run -A bench/cli/first_start.ts [--runs 3] [--warm-runs 5] [--before DIR]
 *   --before DIR: also time `npx deno task serve` cold in another checkout (`git worktree add
 *   DIR REV`), the run path as it was there
 * Prints a Markdown table of medians for docs/benchmarks.md.
 *
 * @module
 */
import { scriptOptions } from "../../tools/_options.ts";

const values = scriptOptions(import.meta.url, {
  runs: { type: "count", default: 3 },
  "warm-runs": { type: "count", default: 5 },
  before: { type: "directory", holding: "apps/cli/main.ts" }, // a checkout of duet
});
const root = new URL("../../", import.meta.url).pathname;
const npx = ["npx", "--yes", `deno@${Deno.version.deno}`];
const PORTS = ["--syncpoint-port", "0", "--ping-port", "0", "--chat-port", "0"];

/** The README's run command's arguments to `deno`, ending in `serve`. */
function readmeRun(): string[] {
  const readme = Deno.readTextFileSync(`${root}README.md`);
  const line = readme.match(/^npx --yes deno@[\d.]+ (run [^#\n]*? serve) +#/m)?.[1];
  if (!line) throw new Error("README has no run command");
  return line.split(/ +/);
}

/**
 * Runs `npx deno ARGS` with HOME=home from the repository root; resolves with the
 * milliseconds until a stdout line matches `ready` (then stops it with SIGINT), or until it
 * exits when `ready` is undefined.
 */
async function timeIt(
  args: string[],
  home: string,
  ready?: RegExp,
  cwd = root,
): Promise<number> {
  // This machine's environment (its proxy and certificate settings included), without what
  // would point Deno or npm at an existing cache or data.
  const env = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([name]) =>
      !/^(DENO_DIR|XDG_.*|npm_config_cache|NPM_CONFIG_CACHE|INIT_CWD)$/.test(name)
    ),
  );
  Object.assign(env, { HOME: home, NO_COLOR: "1" });
  const started = performance.now();
  // In a session of its own (setsid), so that SIGINT reaches npx and the deno under it, as
  // Ctrl-C in a terminal reaches its whole foreground process group.
  const child = new Deno.Command("setsid", {
    args: [...npx, ...args],
    cwd,
    clearEnv: true,
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let at: number | undefined;
  let seen = "";
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
    seen += chunk;
    if (at === undefined && ready?.test(seen)) {
      at = performance.now() - started;
      Deno.kill(-child.pid, "SIGINT");
    }
  }
  const status = await child.status;
  if (ready ? at === undefined : !status.success) {
    throw new Error(`npx deno ${args.join(" ")} failed (${status.code}): ${seen}${await stderr}`);
  }
  await stderr;
  return at ?? performance.now() - started;
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

const RUNNING = /duet is running/;
const empty = await Deno.makeTempFile({ suffix: ".ts" });
const rows: [string, number[]][] = [
  ["cold: README run command to URLs", []],
  ["warm: README run command to URLs", []],
  ["cold: `task serve` (deno.lock) to URLs", []],
  ["cold: npx deno run of an empty file", []],
  ["warm: npx deno run of an empty file", []],
  ...(values.before ? [["cold: `task serve` in --before", []] as [string, number[]]] : []),
];
for (let run = 0; run < values.runs; run++) {
  for (
    const [index, args, ready] of [
      [0, [...readmeRun(), ...PORTS], RUNNING],
      [2, ["task", "-q", "serve", ...PORTS], RUNNING],
      [3, ["run", empty], undefined],
    ] as const
  ) {
    const home = await Deno.makeTempDir({ prefix: "duet-first-start-" });
    try {
      rows[index]![1].push(await timeIt([...args], home, ready));
      if (index === 0) {
        for (let warm = 0; warm < values["warm-runs"]; warm++) {
          rows[1]![1].push(await timeIt([...args], home, ready));
        }
      }
      if (index === 3) rows[4]![1].push(await timeIt([...args], home, ready));
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  }
  if (values.before) {
    const home = await Deno.makeTempDir({ prefix: "duet-first-start-" });
    try {
      rows[5]![1].push(
        await timeIt(["task", "-q", "serve", ...PORTS], home, RUNNING, values.before),
      );
    } finally {
      await Deno.remove(home, { recursive: true });
    }
  }
}
await Deno.remove(empty);
const coldEmpty = median(rows[3]![1]);
console.log("| path | runs | median | all runs (s) | / cold npx deno of an empty file |");
console.log("| --- | --- | --- | --- | --- |");
for (const [name, times] of rows) {
  console.log(
    `| ${name} | ${times.length} | ${(median(times) / 1000).toFixed(2)} s | ` +
      `${times.map((t) => (t / 1000).toFixed(2)).join(", ")} | ` +
      `${(median(times) / coldEmpty).toFixed(2)} |`,
  );
}
