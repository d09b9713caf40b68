// deno-lint-ignore-file no-console -- a build tool: its output is for the terminal
/**
 * Writes `deno.run.lock`: the part of `deno.lock` that running duet needs.
 *
 * Deno downloads every npm package of the lockfile it loads before a program starts (`deno run`
 * and `deno task` alike), whether the program imports it or not. `deno.lock` also holds what
 * only the tests, benchmarks and build tools use (a browser driver, a compiler, property
 * testing, Kubernetes models): about two thirds of the download. The `duet` and `serve` tasks
 * and the README's run command load `deno.run.lock` instead, so a first start fetches only what
 * running fetches.
 *
 * The run lockfile is cut from `deno.lock`, never resolved again: the same versions and the
 * same integrity hashes, so the two cannot drift apart.
 *
 *   deno task lock:run           rewrite deno.run.lock from deno.lock
 *   deno task lock:run --check   fail if deno.run.lock is not what deno.lock gives now
 *                                (tools/run_lock_test.ts runs this)
 *
 * @module
 */
import { scriptOptions } from "./_options.ts";

/** The parts of a version 5 `deno.lock` this tool reads and writes. */
export interface Lockfile {
  version: string;
  /** `npm:NAME@RANGE` → the resolved version, with peers: `2.1.11_hono@4.13.19`. */
  specifiers?: Record<string, string>;
  /** Package id (`NAME@VERSION[_PEER@VERSION…]`) → integrity and dependencies. */
  npm?: Record<string, LockedPackage>;
  [section: string]: unknown;
}

/** One npm package of a lockfile. */
export interface LockedPackage {
  integrity?: string;
  /** Package ids, or bare names where the lockfile holds one version of the name. */
  dependencies?: string[];
  /** As `dependencies`; installed where the platform allows, so kept. */
  optionalDependencies?: string[];
  /** Peers installed only when something else depends on them: not followed. */
  optionalPeers?: string[];
  [field: string]: unknown;
}

/** The files whose imports the run path loads: the CLI, every command it loads, its children. */
export const RUN_ENTRY_POINTS: readonly string[] = [
  "apps/cli/main.ts",
  "apps/cli/commands/chat.ts",
  "apps/cli/commands/dlog.ts",
  "apps/cli/commands/ping.ts",
  "apps/cli/commands/serve.ts",
  "apps/cli/commands/syncpoint.ts",
  "apps/cli/logging.ts",
  "apps/syncpoint/redis_rendezvous.ts",
];

/** A package id's name: `@scope/name@1.0.0_peer@2` → `@scope/name`. */
function packageName(id: string): string {
  const at = id.indexOf("@", 1);
  return at === -1 ? id : id.slice(0, at);
}

/**
 * `lock` with only the npm packages that `roots` (package ids, as `deno info --json` names a
 * module's `npmPackage`) need, their dependencies followed through the lockfile, and only the
 * specifiers that resolve to them. Every other section is kept as it is.
 *
 * @throws {Error} when a root or a dependency is not in the lockfile, or a bare dependency name
 *   matches more than one locked version.
 */
export function pruneLockfile(lock: Lockfile, roots: Iterable<string>): Lockfile {
  const npm = lock.npm ?? {};
  const ids = Object.keys(npm);
  const resolve = (ref: string, from: string): string => {
    if (ref in npm) return ref;
    const named = ids.filter((id) => packageName(id) === ref);
    if (named.length !== 1) {
      throw new Error(
        `${from}: ${ref} matches ${named.length} packages in the lockfile (${named.join(", ")})`,
      );
    }
    return named[0]!;
  };
  const kept = new Set<string>();
  const pending = [...roots].map((root) => resolve(root, "root"));
  for (let id = pending.pop(); id !== undefined; id = pending.pop()) {
    if (kept.has(id)) continue;
    kept.add(id);
    const entry = npm[id]!;
    for (const ref of [...entry.dependencies ?? [], ...entry.optionalDependencies ?? []]) {
      pending.push(resolve(ref, id));
    }
  }
  const specifiers = Object.fromEntries(
    Object.entries(lock.specifiers ?? {}).filter(([specifier, version]) =>
      !specifier.startsWith("npm:") ||
      kept.has(`${packageName(specifier.slice("npm:".length))}@${version}`)
    ),
  );
  const prunedNpm = Object.fromEntries(
    ids.filter((id) => kept.has(id)).map((id) => [id, npm[id]!]),
  );
  return { ...lock, specifiers, npm: prunedNpm };
}

/** The text Deno writes for a lockfile: two-space JSON and a final line break. */
export function lockfileText(lock: Lockfile): string {
  return JSON.stringify(lock, null, 2) + "\n";
}

/** The npm packages (`deno info --json`'s `npmPackage` ids) that `entry`'s modules import. */
async function npmRoots(root: string, entry: string): Promise<string[]> {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", entry],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (code !== 0) {
    throw new Error(`deno info ${entry} failed: ${new TextDecoder().decode(stderr).trim()}`);
  }
  const info = JSON.parse(new TextDecoder().decode(stdout)) as {
    modules: { kind?: string; npmPackage?: string }[];
  };
  // `@types/*` packages are type declarations (`// @ts-types=` directives): `deno run` does
  // not type-check, and leaving them out saves the download of @types/node and its kin.
  return info.modules.flatMap((module) =>
    module.npmPackage && !module.npmPackage.startsWith("@types/") ? [module.npmPackage] : []
  );
}

async function main(): Promise<void> {
  const { check } = scriptOptions(import.meta.url, { check: { type: "boolean" } });
  const root = new URL("../", import.meta.url).pathname;
  const lock = JSON.parse(await Deno.readTextFile(`${root}deno.lock`)) as Lockfile;
  const roots = (await Promise.all(RUN_ENTRY_POINTS.map((entry) => npmRoots(root, entry)))).flat();
  const fresh = lockfileText(pruneLockfile(lock, roots));
  const output = `${root}deno.run.lock`;
  const count = Object.keys(JSON.parse(fresh).npm).length;
  const of = Object.keys(lock.npm ?? {}).length;
  if (check) {
    const committed = await Deno.readTextFile(output).catch(() => "");
    if (committed !== fresh) {
      console.error(
        "lock:run --check: deno.run.lock is not the part of deno.lock that running duet needs; " +
          "run deno task lock:run",
      );
      Deno.exit(1);
    }
    console.error(`lock:run --check: deno.run.lock is up to date (${count} of ${of} npm packages)`);
  } else {
    await Deno.writeTextFile(output, fresh);
    console.error(`lock:run: wrote deno.run.lock (${count} of ${of} npm packages)`);
  }
}

if (import.meta.main) await main();
