// PrivatePostgres: a real private server, stopped, killed and restarted under a client.
import assert from "node:assert/strict";
import postgres from "postgres";
import { findPrivatePostgres, PrivatePostgres, testWith, waitFor } from "./mod.ts";

const found = await findPrivatePostgres();

/** Asserts that `query` fails for want of a server, not with an SQL error. */
async function assertConnectionError(query: Promise<unknown>, when: string): Promise<void> {
  const error = await query.then(() => undefined, (error: unknown) => error);
  assert.ok(error instanceof Error, `a query ${when} should fail`);
  const code = (error as Error & { code?: string }).code;
  assert.ok(
    code === "ECONNREFUSED" || code === "CONNECT_TIMEOUT" || code === "CONNECTION_CLOSED",
    `a query ${when} should fail to connect, not with ${code}: ${error.message}`,
  );
}

/** Whether a TCP port of 127.0.0.1 can be bound. */
function portIsFree(port: number): boolean {
  try {
    Deno.listen({ hostname: "127.0.0.1", port }).close();
    return true;
  } catch {
    return false;
  }
}

testWith(found, {
  name: "PrivatePostgres: stop, restart, kill and restart keep the data; close removes it",
  fn: async () => {
    const server = await PrivatePostgres.start();
    const sql = postgres(server.url, { max: 1, connect_timeout: 2, onnotice: () => {} });
    try {
      assert.notEqual(server.port, 5432);
      assert.equal(server.url, `postgres://postgres@127.0.0.1:${server.port}/postgres`);
      assert.equal((await sql`SELECT 1 AS one`)[0]?.["one"], 1);
      await sql`CREATE TABLE notes (note text)`;
      await sql`INSERT INTO notes VALUES ('before stop')`;

      await server.stop();
      assert.equal(server.running, false);
      await assertConnectionError(sql`SELECT 1`, "after stop");

      await server.restart();
      assert.equal(server.running, true);
      const afterStop = await sql`SELECT note FROM notes ORDER BY note`;
      assert.deepEqual(afterStop.map((row) => row["note"]), ["before stop"]);
      await sql`INSERT INTO notes VALUES ('before kill')`;

      await server.kill();
      assert.equal(server.running, false);
      await assertConnectionError(sql`SELECT 1`, "after kill");

      await server.restart();
      const afterKill = await sql`SELECT note FROM notes ORDER BY note`;
      assert.deepEqual(
        afterKill.map((row) => row["note"]),
        ["before kill", "before stop"],
        "what was committed before the kill survives it",
      );
    } finally {
      await sql.end({ timeout: 1 });
      await server.close();
    }
    await assert.rejects(Deno.stat(server.dataDir), Deno.errors.NotFound);
    assert.ok(portIsFree(server.port), `port ${server.port} is free after close`);
    await server.close(); // idempotent
    await assert.rejects(server.restart(), /after close/);
  },
});

testWith(found, {
  name: "PrivatePostgres: a test process that ends without close() leaves no server behind",
  fn: async () => {
    const mod = new URL("./mod.ts", import.meta.url).href;
    for (const ending of ["exit", "SIGKILL"] as const) {
      const script = `
        import { PrivatePostgres } from ${JSON.stringify(mod)};
        const server = await PrivatePostgres.start();
        console.log(JSON.stringify({ port: server.port, dataDir: server.dataDir }));
        ${ending === "exit" ? "" : "await new Promise(() => setInterval(() => {}, 1000));"}
      `;
      const child = new Deno.Command(Deno.execPath(), {
        args: ["eval", "--ext=ts", script],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let line = "";
      while (!line.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) break;
        line += value;
      }
      const { port, dataDir } = JSON.parse(line || "null") ?? {};
      assert.ok(typeof port === "number", `the script started a server: ${line}`);
      if (ending === "SIGKILL") child.kill("SIGKILL");
      await child.status;
      await reader.cancel();
      await child.stderr.cancel();
      await waitFor(
        () => Deno.stat(dataDir).then(() => false, () => true),
        `${dataDir} to be deleted after the process ended (${ending})`,
        10_000,
      );
      assert.ok(portIsFree(port), `port ${port} is free after the process ended (${ending})`);
    }
  },
});
