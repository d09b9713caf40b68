/**
 * Stores for tests: a PostgreSQL schema of its own at TEST_DATABASE_URL, or an in-memory
 * PGlite loaded from a migrated snapshot (creating a PGlite database takes seconds; the
 * snapshot is made once per test process).
 */
import { PGlite } from "@electric-sql/pglite";
import { findPostgres, testSchema } from "@duet/testkit";
import { ChatStore, connectPostgres, pgliteDriver } from "../store.ts";

export const postgresRequirement = await findPostgres();

let snapshot: Promise<Blob> | undefined;

/** A fresh, migrated PGlite store in memory. */
export async function pgliteStore(): Promise<ChatStore> {
  snapshot ??= (async () => {
    const db = await PGlite.create();
    await new ChatStore(pgliteDriver(db)).migrate();
    const dump = await db.dumpDataDir("none");
    await db.close();
    return dump;
  })();
  const db = await PGlite.create({ loadDataDir: await snapshot });
  return new ChatStore(pgliteDriver(db));
}

/** A fresh, migrated PostgreSQL store in its own schema, with its own NOTIFY channel. */
export async function postgresStore(
  schema = testSchema("duet_chat"),
  applicationName = "duet-chat-test",
): Promise<ChatStore & { schema: string }> {
  const driver = await connectPostgres(postgresRequirement.url, { schema, applicationName });
  const store = new ChatStore(driver, `${schema}_messages`);
  await store.migrate();
  const close = store.close.bind(store);
  // Leave nothing behind in the shared test database.
  store.close = async () => {
    await close();
    const admin = await connectPostgres(postgresRequirement.url);
    try {
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    } finally {
      await admin.close();
    }
  };
  return Object.assign(store, { schema });
}
