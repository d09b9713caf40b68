// The shipped initial state (pglite_initial.tar.gz) is what the pinned PGlite creates.
import assert from "node:assert/strict";
import { PGlite } from "@electric-sql/pglite";
import { unpackInitialState } from "./pglite_initial.ts";

/** What identifies a database cluster's format and defaults, as PostgreSQL reports them. */
async function describe(db: PGlite): Promise<Record<string, unknown>> {
  const { rows: [control] } = await db.query<Record<string, unknown>>(
    "SELECT pg_control_version, catalog_version_no FROM pg_control_system()",
  );
  const { rows: [settings] } = await db.query<Record<string, unknown>>(
    `SELECT current_setting('server_version_num') AS server_version_num,
            current_setting('server_encoding') AS server_encoding,
            current_setting('data_checksums') AS data_checksums`,
  );
  const { rows: databases } = await db.query<Record<string, unknown>>(
    "SELECT datname, datcollate, datctype, pg_encoding_to_char(encoding) AS encoding " +
      "FROM pg_database ORDER BY datname",
  );
  const { rows: [tables] } = await db.query<{ count: number }>(
    "SELECT count(*)::int AS count FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
  );
  return { ...control, ...settings, databases, ...tables };
}

Deno.test("pglite_initial.tar.gz: a database unpacked from it is the one PGlite's initdb makes (else run deno task build:pglite-initial)", async () => {
  const fresh = await PGlite.create();
  const dir = await Deno.makeTempDir({ prefix: "duet-pglite-initial-" });
  try {
    assert.equal(await unpackInitialState(dir), true);
    const loaded = await PGlite.create(dir);
    try {
      const want = await describe(fresh);
      assert.deepEqual(await describe(loaded), want);
      assert.equal(want["count"], 0, "initdb only: no tables of ours in the initial state");
    } finally {
      await loaded.close();
    }
  } finally {
    await fresh.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("unpackInitialState: an unpacking interrupted midway (no PG_VERSION yet) is done again, whole", async () => {
  const dir = await Deno.makeTempDir({ prefix: "duet-pglite-initial-" });
  try {
    // What a crash can leave: some entries moved into place, the staging directory, no marker.
    await Deno.mkdir(`${dir}/base/1`, { recursive: true });
    await Deno.writeTextFile(`${dir}/base/1/junk`, "half written");
    await Deno.mkdir(`${dir}/.initial-state/global`, { recursive: true });
    await Deno.writeTextFile(`${dir}/.duet-chat.lock`, ""); // openPglite's lock file stays
    assert.equal(await unpackInitialState(dir), true);
    const names = [];
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
    assert.ok(names.includes("PG_VERSION") && names.includes(".duet-chat.lock"), `${names}`);
    assert.ok(!names.includes(".initial-state"), "the staging directory is gone");
    await assert.rejects(Deno.stat(`${dir}/base/1/junk`), Deno.errors.NotFound);
    const db = await PGlite.create(dir);
    try {
      assert.equal((await db.query<{ one: number }>("SELECT 1 AS one")).rows[0]!.one, 1);
    } finally {
      await db.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
