// Presence across server instances, as real processes: two `duet chat-server` on one
// PostgreSQL schema, `duet chat --line` parties on different instances. Alice on A is told
// when bob comes on B and when he quits; when B is killed (SIGKILL), she is told he left,
// not left believing he is still there.
import assert from "node:assert/strict";
import { findPostgres, freePort, testSchema, testWith, waitFor } from "@duet/testkit";
import { connectPostgres } from "@duet/chat";
import { type LineParty, spawnDuet, type SpawnedDuet, spawnLineParty } from "./testdata/spawn.ts";

const options = { sanitizeOps: false, sanitizeResources: false };
const postgres = await findPostgres();

/** `duet chat-server` on `url`, on a free port; resolves once it prints its address. */
async function chatServer(url: string): Promise<{ process: SpawnedDuet; address: string }> {
  const port = freePort();
  const process = spawnDuet(["chat-server", "--port", String(port), "--database-url", url], {
    direct: true,
  });
  await waitFor(
    () => process.lines.stdout.some((l) => l.startsWith("chat ")),
    "the chat server",
    30_000,
  ).catch((error) => {
    throw new Error(`${error.message}: ${process.lines.stderr.join("\n")}`);
  });
  return { process, address: `127.0.0.1:${port}` };
}

function party(server: string, name: string, room: string, keyStore: string): LineParty {
  return spawnLineParty([
    "chat",
    ...["--server", server, "--name", name, "--room", room, "--key-store", keyStore, "--line"],
  ]);
}

const err = (p: LineParty) => p.process.lines.stderr.join("\n");
/** The presence lines `p` printed, in order. */
const presence = (p: LineParty) =>
  p.process.lines.stderr.filter((l) =>
    /^\[bob (is here|is here now|has left|is not connected)\]$/.test(l)
  );

testWith(postgres, {
  name: "duet chat --line on two chat servers sharing a database: bob coming and leaving on " +
    "B is told to alice on A, and when B is killed she is told he left",
  ...options,
  async fn() {
    const schema = testSchema("duet_chat_presence");
    const admin = await connectPostgres(postgres.url);
    await admin.query(`CREATE SCHEMA "${schema}"`);
    const url = new URL(postgres.url);
    url.searchParams.set("options", `-c search_path=${schema}`);
    const dir = await Deno.makeTempDir();
    const servers: { process: SpawnedDuet }[] = [];
    const parties: LineParty[] = [];
    try {
      const a = await chatServer(url.href);
      servers.push(a);
      const b = await chatServer(url.href);
      servers.push(b);
      const room = `presence-${crypto.randomUUID().slice(0, 8)}`;
      const alice = party(a.address, "alice", room, `${dir}/alice.sqlite`);
      parties.push(alice);
      await waitFor(() => err(alice).includes(`[in room ${room}`), "alice in", 20_000);

      const bob = party(b.address, "bob", room, `${dir}/bob.sqlite`);
      parties.push(bob);
      await waitFor(() => presence(alice).includes("[bob is here now]"), "bob came", 20_000);
      await waitFor(() => err(bob).includes("[alice is here]"), "bob told alice is there", 20_000);
      assert.equal(await bob.end(), 0, err(bob));
      await waitFor(() => presence(alice).at(-1) === "[bob has left]", "bob left", 20_000);

      const again = party(b.address, "bob", room, `${dir}/bob.sqlite`);
      parties.push(again);
      await waitFor(() => presence(alice).at(-1) === "[bob is here now]", "bob back", 20_000);
      b.process.child.kill("SIGKILL");
      await b.process.child.status;
      await waitFor(
        () => presence(alice).at(-1) === "[bob has left]",
        "alice told bob left with his server",
        30_000,
      ).catch((error) => {
        throw new Error(`${error.message}: ${err(alice)}`);
      });
      assert.deepEqual(presence(alice), [
        "[bob is here now]",
        "[bob has left]",
        "[bob is here now]",
        "[bob has left]",
      ], err(alice));
    } finally {
      for (const p of parties) {
        try {
          p.process.child.kill("SIGTERM");
        } catch { /* ended */ }
        await p.end();
      }
      for (const s of servers) {
        try {
          s.process.child.kill("SIGTERM");
        } catch { /* gone */ }
        await s.process.child.status;
        await s.process.done;
      }
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
