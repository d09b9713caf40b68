/**
 * The embedded chat database's initial state: `pglite_initial.tar.gz` beside this file, a
 * freshly initialised PGlite data directory (PostgreSQL's `initdb`, no duet tables yet) as
 * PGlite's `dumpDataDir("gzip")` writes it. openPglite (store.ts) unpacks it into a new data
 * directory instead of running `initdb`: measured in docs/benchmarks.md ("duet's first
 * start"), unpacking takes a fraction of what creating takes, and, streamed to the disk, none
 * of the memory (PGlite's own `loadDataDir` keeps ~120 MB more for the process's life).
 *
 * It is made by `deno task build:pglite-initial` (tools/build_pglite_initial.ts) and must be
 * made again when PGlite's PostgreSQL changes: pglite_initial_test.ts compares it with a
 * database the pinned PGlite creates.
 *
 * @module
 */
import { Readable } from "node:stream";
import type { ReadableStream as NodeReadableStream } from "node:stream/web";
import { pipeline } from "node:stream/promises";
import { unpackTar } from "modern-tar/fs";

/** Where the initial state is kept. */
export const INITIAL_STATE_URL: URL = new URL("./pglite_initial.tar.gz", import.meta.url);

/** The file whose presence makes a PGlite data directory hold a database. */
const MARKER = "PG_VERSION";
/** Where the state is unpacked inside the data directory before it is moved into place. */
const STAGING = ".initial-state";

/**
 * Unpacks the initial state into `dataDir` (which holds no database: no PG_VERSION), streamed
 * from the gzip file to the disk. Unpacked into a staging directory first, then moved into
 * place with PG_VERSION last, so a crash midway leaves a directory that the next start unpacks
 * again rather than a half database. Resolves false when this build has no copy of the state
 * (a `deno compile` binary without `--include apps/chat/pglite_initial.tar.gz`): the caller
 * then has PGlite create the database.
 *
 * @throws {Error} when the file cannot be read or written (a permission, a full disk).
 */
export async function unpackInitialState(dataDir: string): Promise<boolean> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(INITIAL_STATE_URL);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
  const staging = `${dataDir}/${STAGING}`;
  await removeIfThere(staging);
  await Deno.mkdir(staging);
  await pipeline(
    // The same stream; Node's typings declare their own ReadableStream type.
    Readable.fromWeb(
      file.readable.pipeThrough(new DecompressionStream("gzip")) as unknown as NodeReadableStream,
    ),
    unpackTar(staging),
  );
  const names: string[] = [];
  for await (const entry of Deno.readDir(staging)) names.push(entry.name);
  names.sort((a, b) => Number(a === MARKER) - Number(b === MARKER));
  for (const name of names) {
    // What an interrupted unpacking moved already: no database yet, so nothing to keep.
    await removeIfThere(`${dataDir}/${name}`);
    await Deno.rename(`${staging}/${name}`, `${dataDir}/${name}`);
  }
  await Deno.remove(staging);
  return true;
}

async function removeIfThere(path: string): Promise<void> {
  try {
    await Deno.remove(path, { recursive: true });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}
