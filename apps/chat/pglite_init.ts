/**
 * Creates an embedded chat database: `deno run --allow-read --allow-write --allow-env
 * pglite_init.ts DIR`. openPglite (store.ts) runs this in a child process when DIR holds no
 * database yet, so that what creating one takes (a second PostgreSQL instance and initdb,
 * 600-800 MB at its peak, much of it kept by the allocator afterwards) is given back when
 * the child exits, and the server only ever opens an existing database. Exits 0 once the
 * database is created and closed; 1 with the reason on stderr otherwise.
 *
 * @module
 */
import { PGlite } from "@electric-sql/pglite";
import { PGLITE_START_PARAMS } from "./store.ts";

if (import.meta.main) {
  const [dir] = Deno.args;
  if (!dir) {
    // deno-lint-ignore no-console -- a child process's one line of output
    console.error("usage: pglite_init.ts DATA_DIR");
    Deno.exit(2);
  }
  const db = await PGlite.create(dir, { startParams: [...PGLITE_START_PARAMS] });
  await db.close();
}
