// deno-lint-ignore-file no-console -- a benchmark: its output is the report
/**
 * How long `duet` takes to start: `duet --help` and `duet dlog prove`, beside anchors
 * measured in the same run (an empty `deno run`, commander alone, the dlog package alone),
 * with hyperfine (apt-get install hyperfine). Prints a Markdown table of medians and ratios
 * for docs/benchmarks.md.
 *
 * Usage: deno run -A bench/cli/run.ts [--runs 30] [--before DIR]
 *   --before DIR: also time the same commands in another checkout of duet, e.g. made by
 *   `git worktree add DIR REV` or `mkdir DIR && git archive REV | tar -x -C DIR`
 *
 * @module
 */
import { scriptOptions } from "../../tools/_options.ts";

const values = scriptOptions(import.meta.url, {
  runs: { type: "count", default: 30 },
  before: { type: "directory", holding: "apps/cli/main.ts" }, // a checkout of duet
});
const root = new URL("../../", import.meta.url).pathname;
const secret = (12345).toString(16).padStart(64, "0");
const flags = "--allow-net --allow-read --allow-write --allow-env --allow-sys --allow-run";
// The checkouts reach bash through the environment, never through the command's text: a
// directory named with a space or a `$(...)` is only a directory.
const dirs = { ROOT: root, BEFORE: values.before ?? "" };
const duet = (dir: keyof typeof dirs, args: string) =>
  `bash -c 'cd "$DUET_BENCH_${dir}" && exec ${Deno.execPath()} run ${flags} apps/cli/main.ts ${args}'`;
const prove = `dlog prove --sid s --pid 5 --secret ${secret}`;
const anchor = (file: string) => `${Deno.execPath()} run -A ${root}bench/cli/${file}`;

const commands: [name: string, command: string][] = [
  ["empty deno run", anchor("empty.ts")],
  ["commander alone", anchor("commander.ts")],
  ["dlog package alone (import, y = x*G, prove)", anchor("dlog_alone.ts")],
  ["duet --help", duet("ROOT", "--help")],
  ["duet dlog prove", duet("ROOT", prove)],
];
if (values.before) {
  commands.push(["duet --help (before)", duet("BEFORE", "--help")]);
  commands.push(["duet dlog prove (before)", duet("BEFORE", prove)]);
}
const out = await Deno.makeTempFile({ suffix: ".json" });
const args = ["-N", "-w", "3", "-r", String(values.runs), "--export-json", out];
for (const [name, command] of commands) args.push("-n", name, command);
let results: { command: string; median: number }[] | undefined;
try {
  const env = Object.fromEntries(
    Object.entries(dirs).map(([name, dir]) => [`DUET_BENCH_${name}`, dir]),
  );
  const hyperfine = new Deno.Command("hyperfine", { args, env, stdout: "null" }).spawn();
  if ((await hyperfine.status).success) results = JSON.parse(await Deno.readTextFile(out)).results;
} finally {
  await Deno.remove(out).catch(() => {});
}
if (results === undefined) {
  console.error("bench/cli/run.ts: hyperfine stopped: one of the commands failed (above)");
  Deno.exit(1);
}
const median = (name: string) => results.find((r) => r.command === name)!.median * 1000;
console.log("| command | median | / empty deno run | / commander alone | / dlog alone |");
console.log("| --- | --- | --- | --- | --- |");
for (const { command } of results) {
  const ms = median(command);
  const ratio = (anchorName: string) => (ms / median(anchorName)).toFixed(2);
  console.log(
    `| ${command} | ${ms.toFixed(1)} ms | ${ratio("empty deno run")} | ` +
      `${ratio("commander alone")} | ${ratio("dlog package alone (import, y = x*G, prove)")} |`,
  );
}
