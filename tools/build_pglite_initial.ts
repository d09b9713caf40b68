// deno-lint-ignore-file no-console -- a build tool: its output is for the terminal
/**
 * Writes apps/chat/pglite_initial.tar.gz: a new PGlite database (initdb, nothing else), dumped
 * with `dumpDataDir("gzip")`, which openPglite (apps/chat/store.ts) loads into a new data
 * directory instead of creating one. Run it after changing the PGlite version in deno.json;
 * apps/chat/pglite_initial_test.ts fails until then.
 *
 *   deno task build:pglite-initial
 *
 * @module
 */
import { PGlite } from "@electric-sql/pglite";
import { INITIAL_STATE_URL } from "../apps/chat/pglite_initial.ts";
import { scriptOptions } from "./_options.ts";

scriptOptions(import.meta.url, {}); // --help; no options
const db = await PGlite.create();
try {
  // A checkpoint first, so the dump holds a clean shutdown's state.
  await db.exec("CHECKPOINT");
  const dump = await db.dumpDataDir("gzip");
  await Deno.writeFile(INITIAL_STATE_URL, new Uint8Array(await dump.arrayBuffer()));
  console.error(`build:pglite-initial: wrote ${INITIAL_STATE_URL.pathname} (${dump.size} bytes)`);
} finally {
  await db.close();
}
