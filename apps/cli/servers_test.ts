// Every server command, through the real `duet`: on port 0 it prints the ports it got on
// stdout, quiet or not, and they are the ports it serves; it logs that each service listens,
// and on SIGTERM that it stopped, and exits 0.
import assert from "node:assert/strict";
import { waitFor } from "@duet/testkit";
import { spawnDuet } from "./testdata/spawn.ts";

/**
 * A server command, what it logs when its services listen and when they stop, and the line on
 * stdout that ends its start.
 */
interface ServerCase {
  args: (dir: string) => string[];
  started: RegExp[];
  stopped: RegExp[];
  lastLine: RegExp;
}

const CASES: Record<string, ServerCase> = {
  syncpoint: {
    args: () => ["syncpoint", "--port", "0"],
    started: [/Syncpoint listening on/],
    stopped: [/Syncpoint stopped/],
    lastLine: /^syncpoint /,
  },
  "ping serve": {
    args: () => ["ping", "serve", "--port", "0"],
    started: [/Ping server listening on "https:\/\/127\.0\.0\.1:\d+\/ping" \(page /],
    stopped: [/Ping server stopped/],
    lastLine: /^certificate sha-256 \(next\)/,
  },
  "chat-server": {
    args: (dir) => ["chat-server", "--port", "0", "--data-dir", dir],
    started: [/Chat server listening on/],
    stopped: [/Chat server stopped/],
    lastLine: /^chat /,
  },
  serve: {
    args: (dir) => [
      "serve",
      "--syncpoint-port",
      "0",
      "--ping-port",
      "0",
      "--chat-port",
      "0",
      "--chat-data-dir",
      dir,
    ],
    started: [/Syncpoint listening on/, /Ping server listening on/, /Chat server listening on/],
    stopped: [/Syncpoint stopped/, /Ping server stopped/, /Chat server stopped/],
    lastLine: /^duet is running; Ctrl-C stops it\.$/,
  },
};

/** Starts `duet ARGS`, waits for its start, checks its ports, stops it with SIGTERM. */
async function startAndStop(
  name: string,
  server: ServerCase,
  quiet: boolean,
): Promise<{ stdout: string[]; stderr: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "duet-servers-" });
  const run = spawnDuet([...server.args(dir), ...(quiet ? ["-q"] : [])], { direct: true });
  try {
    const output = () => [...run.lines.stdout, ...run.lines.stderr].join("\n");
    await waitFor(
      () => run.lines.stdout.some((line) => server.lastLine.test(line)),
      `${name} to print its addresses:\n${output()}`,
      60_000,
    );
    const ports = [...run.lines.stdout.join("\n").matchAll(/127\.0\.0\.1:(\d+)/g)]
      .map((match) => Number(match[1]));
    assert.ok(ports.length > 0, output());
    for (const port of new Set(ports)) {
      assert.ok(port > 0 && port <= 65535, `${name}: port ${port}`);
      // The port printed is the one served: a TCP connection is accepted there.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
    }
    run.child.kill("SIGTERM");
    const { code } = await run.child.status;
    await run.done;
    assert.equal(code, 0, `${name}: exit status\n${output()}`);
    return run.lines;
  } finally {
    try {
      run.child.kill("SIGKILL");
    } catch { /* exited */ }
    await run.done;
    await Deno.remove(dir, { recursive: true });
  }
}

for (const [name, server] of Object.entries(CASES)) {
  Deno.test(`duet ${name} on port 0: the ports it got on stdout (also with -q), they serve, and SIGTERM stops it with a line saying so`, async () => {
    const quiet = await startAndStop(name, server, true);
    assert.deepEqual(quiet.stderr, [], `${name} -q: nothing on stderr`);
    const loud = await startAndStop(name, server, false);
    for (const said of [...server.started, ...server.stopped]) {
      assert.ok(loud.stderr.some((line) => said.test(line)), `${name}: ${said}`);
    }
    // An address is one value in a log line, never a quoted host and a port apart.
    assert.doesNotMatch(loud.stderr.join("\n"), /"[^"\s]+":\d+/, `${name}: addresses`);
  });
}

Deno.test("duet serve: the ping certificate hash it prints is the one a client pins; a busy port prints no other service's URL", async () => {
  const dir = await Deno.makeTempDir({ prefix: "duet-serve-" });
  try {
    const ports = ["--syncpoint-port", "0", "--ping-port", "0", "--chat-port", "0"];
    const run = spawnDuet(["serve", "-q", ...ports, "--chat-data-dir", dir], { direct: true });
    try {
      await waitFor(
        () => run.lines.stdout.some((line) => CASES["serve"]!.lastLine.test(line)),
        `duet serve to start:\n${run.lines.stdout.join("\n")}`,
        60_000,
      );
      const said = run.lines.stdout.join("\n");
      const [, hash] =
        said.match(/^ping cert {2}sha-256 ([0-9a-f]{64}) {3}\(duet ping --cert-hash HASH\)$/m) ??
          assert.fail(said);
      const [, url] = said.match(/^ping {7}(https:\/\/\S+)/m) ?? assert.fail(said);
      const ping = spawnDuet(["ping", url!, "--cert-hash", hash!, "--count", "1"], {
        direct: true,
      });
      const { code } = await ping.child.status;
      await ping.done;
      assert.equal(code, 0, ping.lines.stdout.join("\n"));
      assert.match(ping.lines.stdout.join("\n"), /1 transmitted, 1 received/);
    } finally {
      run.child.kill("SIGTERM");
      await run.child.status;
      await run.done;
    }
    // The chat port is taken: syncpoint and ping started first are stopped again, unsaid.
    using busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const refused = spawnDuet(
      [
        "serve",
        "-q",
        ...ports.slice(0, 4),
        "--chat-port",
        String(busy.addr.port),
        "--chat-data-dir",
        dir,
      ],
      { direct: true },
    );
    const { code } = await refused.child.status;
    await refused.done;
    assert.notEqual(code, 0);
    assert.deepEqual(refused.lines.stdout, [], "no URL of a service that is not running");
    assert.match(refused.lines.stderr.join("\n"), /--chat-port/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
