/**
 * Stores for tests: a PostgreSQL schema of its own at TEST_DATABASE_URL, or an in-memory
 * PGlite loaded from a migrated snapshot (creating a PGlite database takes seconds; the
 * snapshot is made once per test process).
 */
import { PGlite } from "@electric-sql/pglite";
import { findPostgres, testSchema } from "@duet/testkit";
import { ChatStore, connectPostgres, pgliteDriver } from "../store.ts";

export const postgresRequirement = await findPostgres();

/** A migrated store, and a way to open more instances on its database. */
export interface TestStore extends ChatStore {
  /**
   * Another instance on the same database and NOTIFY channel, as a second server would
   * have; not migrated yet. Its close leaves the database to the first instance.
   */
  twin(): Promise<ChatStore>;
}

let snapshot: Promise<Blob> | undefined;

/** A fresh, migrated PGlite store in memory. */
export async function pgliteStore(): Promise<TestStore> {
  snapshot ??= (async () => {
    const db = await PGlite.create();
    await new ChatStore(pgliteDriver(db)).migrate();
    const dump = await db.dumpDataDir("none");
    await db.close();
    return dump;
  })();
  const db = await PGlite.create({ loadDataDir: await snapshot });
  // Each copy of the snapshot stands for a database of its own, so it gets its own identity.
  await db.query("UPDATE chat_service SET id = gen_random_uuid()");
  const driver = pgliteDriver(db);
  const store = new ChatStore(driver);
  await store.migrate();
  return Object.assign(store, {
    twin: () => Promise.resolve(new ChatStore({ ...driver, close: async () => {} })),
  });
}

/** A fresh, migrated PostgreSQL store in its own schema, with its own NOTIFY channel. */
export async function postgresStore(
  schema = testSchema("duet_chat"),
  applicationName = "duet-chat-test",
): Promise<TestStore & { schema: string }> {
  const channel = `${schema}_messages`;
  const driver = await connectPostgres(postgresRequirement.url, { schema, applicationName });
  const store = new ChatStore(driver, channel);
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
  const twin = async () =>
    new ChatStore(
      await connectPostgres(postgresRequirement.url, { schema, applicationName }),
      channel,
    );
  return Object.assign(store, { schema, twin });
}
