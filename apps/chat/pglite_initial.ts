/**
 * The embedded chat database's initial state: `pglite_initial.tar.gz` beside this file, a
 * freshly initialised PGlite data directory (PostgreSQL's `initdb`, no duet tables yet) as
 * PGlite's `dumpDataDir("gzip")` writes it. openPglite (store.ts) loads it into a new data
 * directory instead of running `initdb`: measured in docs/benchmarks.md ("duet's first
 * start"), loading takes a fraction of what creating takes, and none of initdb's memory.
 *
 * It is made by `deno task build:pglite-initial` (tools/build_pglite_initial.ts) and must be
 * made again when PGlite's PostgreSQL changes: pglite_initial_test.ts compares it with a
 * database the pinned PGlite creates.
 *
 * @module
 */

/** Where the initial state is kept. */
export const INITIAL_STATE_URL: URL = new URL("./pglite_initial.tar.gz", import.meta.url);

/**
 * The initial state as a Blob for PGlite's `loadDataDir`, or undefined when this build has no
 * copy of it (a `deno compile` binary without `--include apps/chat/pglite_initial.tar.gz`):
 * the caller then has PGlite create the database.
 *
 * @throws {Error} when the file exists but cannot be read (a permission, say).
 */
export async function loadInitialState(): Promise<Blob | undefined> {
  try {
    return new Blob([await Deno.readFile(INITIAL_STATE_URL)]);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}
