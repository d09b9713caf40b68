// Path options resolve against the directory the user ran duet from. `deno task` runs duet
// from the repository root, so these run it as a user does, from another directory:
// `deno task --config ROOT/deno.json duet ...` with that directory as the working one.
import assert from "node:assert/strict";
import { generateCertificate } from "@duet/webtransport";
import { spawnLines, waitFor } from "@duet/testkit";

const config = new URL("../../deno.json", import.meta.url).pathname;

/**
 * `duet ARGS` through `deno task`, started in `cwd` as from a shell: without INIT_CWD, which
 * deno task (like npm) keeps when it is already set, and this test may itself run under a
 * task (`deno task test` sets it to the repository).
 */
function duetIn(cwd: string, args: string[]) {
  const task = [Deno.execPath(), "task", "--config", config, "-q", "duet", ...args];
  return spawnLines("env", ["-u", "INIT_CWD", ...task], { cwd });
}

Deno.test({
  name:
    "duet ping serve --cert ./c.pem --key ./k.pem, run from another directory, reads the files there",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    const certificate = await generateCertificate();
    await Deno.writeTextFile(`${dir}/c.pem`, certificate.certPem);
    await Deno.writeTextFile(`${dir}/k.pem`, certificate.keyPem);
    const server = duetIn(dir, [
      "ping",
      "serve",
      "--port",
      "0",
      "--cert",
      "./c.pem",
      "--key",
      "k.pem",
    ]);
    try {
      await waitFor(
        () => server.lines.stdout.some((l) => l.startsWith("page ")),
        `the server to start (stderr: ${server.lines.stderr.join("\n")})`,
        30_000,
      );
    } finally {
      server.child.kill("SIGTERM");
      await server.child.status;
      await server.done;
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("duet ping --ca missing.pem names the file where the user stands", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const run = duetIn(dir, ["ping", "--url", "https://127.0.0.1:1/ping", "--ca", "missing.pem"]);
    const { code } = await run.child.status;
    await run.done;
    assert.equal(code, 2, run.lines.stderr.join("\n"));
    const said = run.lines.stderr.join("\n");
    assert.match(said, new RegExp(`cannot read the CA file ${dir}/missing\\.pem`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("duet chat-server --data-dir ./db, from another directory, creates the database there", {
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dir = await Deno.makeTempDir();
  const server = duetIn(dir, ["chat-server", "--port", "0", "--data-dir", "./db", "-q"]);
  try {
    await waitFor(
      () => server.lines.stdout.some((l) => l.startsWith("chat ")),
      `the server to start (stderr: ${server.lines.stderr.join("\n")})`,
      60_000,
    );
    assert.ok(server.lines.stdout.some((l) => l.includes(`PGlite in ${dir}/db`)));
    assert.ok((await Deno.stat(`${dir}/db`)).isDirectory);
  } finally {
    server.child.kill("SIGTERM");
    await server.child.status;
    await server.done;
    await Deno.remove(dir, { recursive: true });
  }
});
