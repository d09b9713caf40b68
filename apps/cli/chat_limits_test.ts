// `duet chat-server`'s limits with real processes: out of file descriptors (a server under
// `ulimit -n 200`, its descriptors taken by loopback connections, then given back) it
// lives, serves the connections it has, refuses new ones with `too_many_connections`, logs
// the outage once, and accepts again once descriptors are free; and the limits' options
// reach the server (`--max-connections`, `--rooms-per-minute`) or are refused as usage
// errors. The limits themselves are tested in apps/chat/limits_test.ts (pure rules) and
// apps/chat/server_limits_test.ts (in process).
import assert from "node:assert/strict";
import { freePort, waitFor } from "@duet/testkit";
import { spawnDuet, type SpawnedDuet } from "./testdata/spawn.ts";
import { encodeFrame, FrameDecoder, PROTOCOL_VERSION } from "@duet/chat";
import { sendFrame, TestClient } from "@duet/chat/testing";

const options = { sanitizeOps: false, sanitizeResources: false };

interface LogRecord {
  level: string;
  message: string;
  properties?: Record<string, unknown>;
}

/**
 * `duet chat-server` on a free port with a fresh PGlite data directory and JSON logs;
 * resolves once it listens. `ulimit`: the open-file limit it runs under.
 */
async function chatServer(args: string[], ulimit?: number) {
  const port = freePort();
  const dir = await Deno.makeTempDir();
  const server: SpawnedDuet = spawnDuet(
    ["chat-server", "--port", String(port), "--data-dir", dir, "--log-format", "json", ...args],
    {
      direct: true,
      ...(ulimit ? { prefix: ["bash", "-c", `ulimit -n ${ulimit} && exec "$0" "$@"`] } : {}),
    },
  );
  let exited = false;
  const status = server.child.status.then((s) => (exited = true, s));
  await waitFor(
    () => exited || server.lines.stdout.some((l) => l.startsWith("chat ")),
    "the chat server",
    60_000,
  );
  if (exited) throw new Error(`the server exited: ${server.lines.stderr.join("\n")}`);
  const records = () =>
    server.lines.stderr.flatMap((line) => {
      try {
        return [JSON.parse(line) as LogRecord];
      } catch {
        return [];
      }
    });
  return {
    port,
    pid: server.child.pid,
    records,
    alive: () => !exited,
    /** SIGTERM; resolves with the exit code, and removes the data directory. */
    async stop(): Promise<number> {
      if (!exited) server.child.kill("SIGTERM");
      const { code } = await status;
      await server.done;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      return code;
    },
  };
}

/** The first frame a raw connection receives, parsed, or undefined if it closes first. */
async function firstFrame(conn: Deno.TcpConn): Promise<Record<string, unknown> | undefined> {
  const frames = new FrameDecoder();
  const buffer = new Uint8Array(4096);
  for (;;) {
    const read = await conn.read(buffer).catch(() => null);
    if (read === null) return undefined;
    const [first] = frames.push(buffer.subarray(0, read));
    if (first) return first as Record<string, unknown>;
  }
}

/** Whether the peer has closed a raw connection (reads until the end, dropping the bytes). */
async function closedByPeer(conn: Deno.TcpConn): Promise<true> {
  const buffer = new Uint8Array(4096);
  while ((await conn.read(buffer).catch(() => null)) !== null) { /* drain */ }
  return true;
}

Deno.test({
  name: "duet chat-server out of file descriptors: it lives, serves its clients, refuses new " +
    "ones (too_many_connections), logs the outage once and accepts again once they are free",
  ignore: Deno.build.os !== "linux",
  ...options,
  async fn() {
    const server = await chatServer([
      "--max-connections",
      "0",
      "--max-connections-per-address",
      "0",
      "--idle-timeout-ms",
      "600000",
      "--messages-per-second",
      "1000",
    ], 200);
    const hogs: Deno.TcpConn[] = [];
    const clients: TestClient[] = [];
    try {
      const [alice] = await TestClient.join(server.port, "alice", "fd");
      const [bob] = await TestClient.join(server.port, "bob", "fd");
      clients.push(alice, bob);
      await alice.send(sendFrame("warm", 1));
      await bob.next((m) => m.type === "message", 20_000);
      const outages = () =>
        server.records().filter((r) => r.message.startsWith("Stopped accepting connections"));
      // Loopback connections that say nothing (half a frame: not idle by bytes alone) until
      // the server runs out of descriptors; at most 400 (the limit is 200).
      const oneByte = new Uint8Array([0]);
      while (!outages().length && hogs.length < 400) {
        for (let i = 0; i < 10; i++) {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
          hogs.push(conn);
          await conn.write(oneByte);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(outages().length, 1, "the outage is logged");
      assert.equal(outages()[0]!.level, "ERROR");
      // A new connection now is told why it is refused, and closed.
      await waitFor(
        async () => {
          const probe = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
          const frame = await firstFrame(probe);
          probe.close();
          return frame?.["code"] === "too_many_connections";
        },
        "a refusal while out of descriptors",
        30_000,
      );
      // The clients it has are served meanwhile.
      await alice.send(sendFrame("during", 2));
      const stored = await alice.next((m) => m.type === "stored" || m.type === "error", 20_000);
      assert.equal(stored.type, "stored", JSON.stringify(stored));
      const pushed = await bob.next((m) => m.type === "message", 20_000);
      assert.equal(pushed.type === "message" && pushed.message.client_msg_id, "during");
      assert.ok(server.alive(), "the process lives");
      // Descriptors given back: new clients are served again (once the server has seen
      // the connections go; until then a try may still be refused).
      for (const conn of hogs.splice(0)) conn.close();
      let carol: TestClient | undefined;
      await waitFor(
        async () => {
          const [client, answer] = await TestClient.join(server.port, "carol", "after");
          clients.push(client);
          if (answer.type === "welcome") carol = client;
          else assert.equal(answer.type === "error" && answer.code, "too_many_connections");
          return carol !== undefined;
        },
        "a new client welcomed",
        30_000,
      );
      assert.ok(
        server.records().some((r) => r.message.startsWith("Accepting connections again")),
        "the end of the outage is logged",
      );
      await carol!.send(sendFrame("c1", 1));
      assert.equal((await carol!.next((m) => m.type === "stored", 20_000)).type, "stored");
      assert.equal(outages().length, 1, "logged once per outage, not once per attempt");
      assert.ok(server.alive(), "the process lives");
    } finally {
      for (const conn of hogs) conn.close();
      for (const client of clients) client.close();
      assert.equal(await server.stop(), 0, "a clean exit on SIGTERM");
    }
  },
});

Deno.test({
  name: "duet chat-server: --max-connections and --rooms-per-minute reach the server",
  ...options,
  async fn() {
    const server = await chatServer([
      "--max-connections",
      "3",
      "--rooms-per-minute",
      "1",
      "--room-expiry-days",
      "0",
    ]);
    const clients: TestClient[] = [];
    const raw: Deno.TcpConn[] = [];
    try {
      // One a minute, bursts of two: a third new room from this address is refused.
      for (const room of ["one", "two"]) {
        const [client, welcome] = await TestClient.join(server.port, "alice", room);
        clients.push(client);
        assert.equal(welcome.type, "welcome", room);
      }
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      raw.push(conn);
      await conn.write(
        encodeFrame({ type: "hello", version: PROTOCOL_VERSION, name: "alice", room: "three" }),
      );
      const refused = await firstFrame(conn);
      assert.equal(refused?.["code"], "too_many_rooms", JSON.stringify(refused));
      assert.equal(refused?.["retryable"], true);
      assert.ok(await closedByPeer(conn));
      // Three connections are held; a fourth is refused.
      const third = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      raw.push(third);
      const fourth = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
      raw.push(fourth);
      const full = await firstFrame(fourth);
      assert.equal(full?.["code"], "too_many_connections", JSON.stringify(full));
      assert.ok(await closedByPeer(fourth));
    } finally {
      for (const conn of raw) conn.close();
      for (const client of clients) client.close();
      assert.equal(await server.stop(), 0);
    }
  },
});

Deno.test("duet chat-server: limits' options out of range are usage errors (exit 2)", async () => {
  for (
    const args of [
      ["--max-connections", "-1"],
      ["--rooms-per-minute", "x"],
      ["--room-expiry-days", "-3"],
    ]
  ) {
    const { child, lines, done } = spawnDuet(["chat-server", "--port", "0", ...args], {
      direct: true,
    });
    const { code } = await child.status;
    await done;
    assert.equal(code, 2, args.join(" "));
    assert.match(lines.stderr.join("\n"), /^duet chat-server: /, args.join(" "));
  }
});
