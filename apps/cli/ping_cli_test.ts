// `duet ping` and `duet ping serve` as processes: output, usage errors, a refused token,
// and a server killed and restarted under a running client.
import assert from "node:assert/strict";
import { freePort, spawnDuet, type SpawnedDuet, waitFor } from "@duet/testkit";
import { inProcess } from "./testdata/in_process.ts";
import { describeEvent } from "./commands/ping.ts";

const options = { sanitizeOps: false, sanitizeResources: false };

/** Starts `duet ping serve` on `port` and waits until it prints its URLs. */
async function startServer(port: number, extra: string[] = []): Promise<SpawnedDuet> {
  const server = spawnDuet(["ping", "serve", "--port", String(port), ...extra], { direct: true });
  await waitFor(() => server.lines.stdout.some((l) => l.startsWith("page ")), "the server", 20_000);
  return server;
}

async function stop(server: SpawnedDuet, signal: Deno.Signal = "SIGTERM") {
  try {
    server.child.kill(signal);
  } catch { /* gone */ }
  await server.child.status;
  await server.done;
}

Deno.test("duet ping: usage errors exit 2 with one line", async () => {
  for (
    const [args, message] of [
      [["ping", "--datagram", "--new-stream", "--url", "https://127.0.0.1:1/ping"], /choose one/],
      [["ping", "--url", "http://127.0.0.1:1/ping"], /expected a https: URL/],
      [["ping", "--cert-hash", "abc", "--url", "https://127.0.0.1:1/ping"], /64 hex digits/],
      [["ping", "--count", "-1"], /expected a whole number/],
      [["ping", "serve", "--cert", "only.pem"], /--cert and --key go together/],
      [["ping", "serve", "--port", "70000"], /from 0 to 65535/],
    ] as const
  ) {
    const { code, err } = await inProcess([...args]);
    assert.equal(code, 2, `${args.join(" ")}: ${err}`);
    assert.match(err, message);
    assert.equal(err.trim().split("\n").length, 1, err);
  }
});

Deno.test("duet ping: no server at the URL is said in one line with the reason, exit 1", async () => {
  const port = freePort(); // nothing listens there
  const { code, err } = await inProcess([
    "ping",
    "--url",
    `https://127.0.0.1:${port}/ping`,
    "--count",
    "1",
  ]);
  assert.equal(code, 1, err);
  assert.equal(err.trim().split("\n").length, 1, err);
  assert.match(
    err,
    new RegExp(
      `^duet ping: cannot learn the server's certificate over a trusted channel \\(` +
        `https://127\\.0\\.0\\.1:${port}/\\.well-known/duet-ping\\.json and ` +
        `http://127\\.0\\.0\\.1:${port}/\\.well-known/duet-ping\\.json: ` +
        `connection refused \\(is the server running\\?\\)\\); pass --cert-hash or --ca\n$`,
    ),
  );
});

Deno.test({
  name: "duet ping: per-reply lines and a summary; a wrong token is refused at once, exit 1",
  ...options,
  async fn() {
    const port = freePort();
    const server = await startServer(port, ["--token", "right"]);
    try {
      const url = `https://127.0.0.1:${port}/ping`;
      const ok = await inProcess([
        "ping",
        "--url",
        url,
        "--count",
        "3",
        "--interval",
        "20",
        "--token",
        "right",
      ]);
      assert.equal(ok.code, 0, ok.err);
      const lines = ok.out.trim().split("\n");
      assert.match(lines[0]!, /^PING https:\/\/127\.0\.0\.1:\d+\/ping over one stream, 16 bytes/);
      for (const seq of [1, 2, 3]) {
        assert.match(
          lines[seq]!,
          new RegExp(`^pong from 127\\.0\\.0\\.1:${port}: seq=${seq} bytes=23 time=[\\d.]+ ms$`),
        );
      }
      assert.match(ok.out, /3 transmitted, 3 received, 0\.0% loss/);
      assert.match(
        ok.out,
        /rtt min\/avg\/max\/p50\/p99 = [\d.]+\/[\d.]+\/[\d.]+\/[\d.]+\/[\d.]+ ms/,
      );

      const wrong = await inProcess(["ping", "--url", url, "--count", "3", "--token", "wrong"]);
      assert.equal(wrong.code, 1);
      assert.match(wrong.out, /refused the session with 401: missing or wrong token/);
      assert.match(wrong.out, /0 transmitted, 0 received/);
    } finally {
      await stop(server);
    }
  },
});

Deno.test({
  name: "duet ping: the server is killed and restarted mid-run; the client recovers by " +
    "itself and its summary accounts for every ping",
  ...options,
  async fn() {
    const port = freePort();
    let server = await startServer(port);
    // No count: the client runs until Ctrl-C, so a slow restart cannot end the run first.
    const client = spawnDuet([
      "ping",
      "--url",
      `https://127.0.0.1:${port}/ping`,
      "--interval",
      "50",
      "--timeout-ms",
      "500",
      "--json",
    ], { direct: true });
    try {
      const events = () => client.lines.stdout.map((l) => JSON.parse(l));
      await waitFor(
        () => events().filter((e) => e.type === "reply").length >= 5,
        "replies",
        20_000,
      );
      await stop(server, "SIGKILL"); // no GOAWAY, no close: the path just goes dead
      const killedAfter = Math.max(...events().filter((e) => e.type === "reply").map((e) => e.seq));
      await waitFor(() => events().some((e) => e.type === "outage"), "the outage noticed", 10_000);
      // A new process, hence a new generated certificate: the client fetches hashes again.
      server = await startServer(port);
      await waitFor(
        () => events().some((e) => e.type === "connected" && e.afterOutageMs > 0),
        "the client to reconnect by itself",
        30_000,
      );
      const reconnectedAt = events().length;
      await waitFor(
        () => events().slice(reconnectedAt).filter((e) => e.type === "reply").length >= 5,
        "replies after the restart",
      );
      client.child.kill("SIGINT"); // Ctrl-C: the summary still comes
      const status = await client.child.status;
      await client.done;
      const all = events();
      const summary = all.at(-1);
      assert.equal(summary.type, "summary");
      assert.equal(status.code, 0, client.lines.stderr.join("\n"));
      const noisy = client.lines.stdout.filter((l) => /\d\.\d{4}/.test(l));
      assert.deepEqual(noisy, [], "times to the microsecond, no more digits");
      const sent = all.filter((e) => ["reply", "timeout", "lost", "error-reply"].includes(e.type));
      assert.equal(
        summary.received + summary.timeouts + summary.lostNoConnection + summary.errors,
        summary.transmitted,
        "every ping is a reply, a timeout, lost while disconnected, or an error",
      );
      assert.ok(summary.transmitted >= sent.length, "the summary counts every ping reported");
      assert.equal(
        summary.outages.length,
        1,
        JSON.stringify(all.filter((e) => e.type !== "reply")),
      );
      assert.ok(summary.outages[0].durationMs > 0);
      assert.match(summary.outages[0].reason, /no answer for \d+ ms|connection closed/);
      assert.ok(all.some((e) => e.type === "connected" && e.afterOutageMs > 0), "reconnected");
      const after = all.filter((e) => e.type === "reply" && e.seq > killedAfter + 1);
      assert.ok(after.length > 0, "replies after the restart");
      assert.ok(summary.received >= 5 + after.length);
    } finally {
      await stop(client).catch(() => {});
      await stop(server);
    }
  },
});

Deno.test("duet ping: what the server says (error replies, close reasons) is shown, never obeyed", () => {
  const target = new URL("https://127.0.0.1:4433/ping");
  const hostile = "\x1b]52;c;aGk=\x07\x1b[2J\nseq=9: forged";
  for (
    const event of [
      { type: "error-reply", seq: 1, text: hostile },
      { type: "outage", reason: hostile },
      { type: "reconnecting", attempt: 1, delayMs: 10, error: hostile },
      { type: "lost", seq: 2, reason: hostile },
    ] as const
  ) {
    const line = describeEvent(event, target);
    assert.match(line, /␛\]52;c;aGk=␇␛\[2J␊seq=9: forged/, event.type);
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\u0000-\u0009\u000b-\u001f]/.test(line) && line.indexOf("\n") === line.length - 1);
  }
});
