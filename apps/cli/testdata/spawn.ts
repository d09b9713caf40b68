/**
 * The `duet` command line as a process, for the CLI's end-to-end tests and for the benchmarks
 * that drive it (bench/): `deno task duet` or `deno run apps/cli/main.ts`, from the
 * repository's root, with its output collected line by line (`spawnLines` of
 * `@duet/testkit`, which knows nothing of the CLI).
 *
 * @module
 */
import { type SpawnedLines, spawnLines } from "@duet/testkit";

const repoRoot = new URL("../../../", import.meta.url).pathname;

/** How {@link spawnDuet} starts the command. */
export interface SpawnOptions {
  /**
   * Run `deno run apps/cli/main.ts` itself instead of `deno task duet`, so that the pid is
   * the duet process (a SIGKILL then kills duet, not only the task runner above it).
   */
  direct?: boolean;
  /** A command to run it under, e.g. `["ip", "netns", "exec", "ns1"]`. */
  prefix?: string[];
  /** Pipe standard input (write with `child.stdin`); otherwise it is closed. */
  stdin?: boolean;
  /** Variables to set (or, with "", to clear) on top of this process's environment. */
  env?: Record<string, string>;
}

/** A started duet process whose output is collected line by line. */
export type SpawnedDuet = SpawnedLines;

/** Starts `duet ARGS` as a process with piped output, from the repository root. */
export function spawnDuet(args: string[], options: SpawnOptions = {}): SpawnedDuet {
  const duet = options.direct
    ? [Deno.execPath(), "run", "--lock=deno.run.lock", "--allow-all", "apps/cli/main.ts", ...args]
    : [Deno.execPath(), "task", "-q", "duet", ...args];
  const [command, ...rest] = [...(options.prefix ?? []), ...duet];
  return spawnLines(command!, rest, { cwd: repoRoot, env: options.env, stdin: options.stdin });
}

/**
 * Runs `duet ARGS` directly (its pid is duet's) to its end: the exit code, and stdout and
 * stderr as text, each line ending in a line break.
 */
export async function runDuet(
  args: string[],
  options: Omit<SpawnOptions, "direct"> = {},
): Promise<{ code: number; out: string; err: string }> {
  const spawned = spawnDuet(args, { ...options, direct: true });
  const { code } = await spawned.child.status;
  await spawned.done;
  const text = (lines: string[]) => lines.map((line) => `${line}\n`).join("");
  return { code, out: text(spawned.lines.stdout), err: text(spawned.lines.stderr) };
}

/** A `duet` process fed line by line on its standard input (`duet chat --line`, say). */
export interface LineParty {
  /** The running `duet` process. */
  process: SpawnedDuet;
  /** Writes `text` as it is (add the line break yourself). */
  say(text: string): Promise<void>;
  /** Closes its input and resolves with its exit code once it ended; once, however often called. */
  end(): Promise<number>;
}

/** Starts `duet ARGS` directly (its pid is duet's), with standard input piped. */
export function spawnLineParty(
  args: string[],
  options: Omit<SpawnOptions, "stdin"> = {},
): LineParty {
  const process = spawnDuet(args, { direct: true, ...options, stdin: true });
  const writer = process.child.stdin.getWriter();
  const encoder = new TextEncoder();
  let ended: Promise<number> | undefined;
  return {
    process,
    say: (text) => writer.write(encoder.encode(text)),
    // Once: a finally block may end a party the test has ended already.
    end: () =>
      ended ??= (async () => {
        await writer.close().catch(() => {});
        const { code } = await process.child.status;
        await process.done;
        return code;
      })(),
  };
}
