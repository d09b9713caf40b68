// `duet ping` and `duet ping serve` as processes: output, usage errors, a refused token,
// how each failure is classed and said (a server down is retried and said once; a trust
// document reached but unusable, a --size no datagram carries stop at once), --json's
// result for every outcome, and a server killed and restarted under a running client.
import assert from "node:assert/strict";
import { freePort, tcpServer, waitFor } from "@duet/testkit";
import { runDuet, spawnDuet, type SpawnedDuet } from "./testdata/spawn.ts";
import { CLIENT_DEFAULTS, parseCertHash, type PingSummary, runPing } from "@duet/ping";
import { inProcess } from "./testdata/in_process.ts";
import { describeEvent, describeSummary, serverOperand } from "./commands/ping.ts";

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

Deno.test("duet ping --help and ping serve --help show no empty default for repeatable options", async () => {
  for (const args of [["ping", "--help"], ["ping", "serve", "--help"]]) {
    const { code, out } = await inProcess(args);
    assert.equal(code, 0);
    assert.match(out, /\(repeatable\)/);
    assert.doesNotMatch(out, /default: \[\]/);
  }
});

Deno.test("duet ping: usage errors exit 2 with one line", async () => {
  for (
    const [args, message] of [
      [["ping", "--datagram", "--new-stream", "--url", "https://127.0.0.1:1/ping"], /choose one/],
      [["ping", "--url", "http://127.0.0.1:1/ping"], /expected a https: URL/],
      [["ping", "--cert-hash", "abc", "--url", "https://127.0.0.1:1/ping"], /64 hex digits/],
      [["ping", "--count", "-1"], /expected a whole number/],
      [["ping", "serve", "--cert", "only.pem"], /--cert and --key go together/],
      [["ping", "serve", "--port", "70000"], /from 0 to 65535/],
      [["ping", "serve", "--ws-message-rate", "-1"], /expected a number from 0 to 1000000/],
      [["ping", "serve", "--max-ws-per-client", "x"], /expected a whole number/],
      [["ping", "--url", "https://127.0.0.1:99999/ping"], /a port from 1 to 65535, not 99999/],
    ] as const
  ) {
    const { code, err } = await inProcess([...args]);
    assert.equal(code, 2, `${args.join(" ")}: ${err}`);
    assert.match(err, message);
    assert.equal(err.trim().split("\n").length, 1, err);
  }
});

Deno.test("duet ping: no server at the URL is retried until --give-up-after-ms, said once, with no advice about certificates; exit 1", async () => {
  const port = freePort(); // nothing listens there
  const url = `https://127.0.0.1:${port}/ping`;
  const { code, out, err } = await inProcess([
    "ping",
    "--url",
    url,
    "--count",
    "1",
    "--give-up-after-ms",
    "1500",
  ]);
  assert.equal(code, 1, err);
  assert.equal(err, "", "a run that gave up, not an error");
  const lines = out.trim().split("\n");
  assert.equal(lines[0], `PING ${url} over one stream, 16 bytes of padding`);
  // The backoff is short and the budget 1.5 s: several passes fail, one line says why.
  const said = lines.filter((l) => l.startsWith("reconnect attempt"));
  assert.equal(said.length, 1, out);
  assert.match(
    said[0]!,
    new RegExp(
      `^reconnect attempt 1 in \\d+ ms \\(cannot reach the server \\(` +
        `https://127\\.0\\.0\\.1:${port}/\\.well-known/duet-ping\\.json and ` +
        `http://127\\.0\\.0\\.1:${port}/\\.well-known/duet-ping\\.json: ` +
        `connection refused \\(is the server running\\?\\)\\)\\)$`,
    ),
  );
  assert.doesNotMatch(out, /--cert-hash|--ca|certificate/);
  assert.match(out, /^giving up: no connection for \d+\.\d s$/m);
  assert.match(out, /^0 transmitted: no ping could be sent \(said above why\)/m);
  assert.match(out, /^1 outage, [\d.]+ s in all; gave up$/m);
});

/** What `duet ping --json` ends with. */
type JsonResult = {
  type: string;
  gaveUp?: boolean;
  untrusted?: boolean;
  message?: string;
  exitCode?: number;
};

Deno.test("duet ping --json: every outcome ends stdout with one JSON result, the exit status as before", async () => {
  const dead = `https://127.0.0.1:${freePort()}/ping`;
  // A TCP side that answers, but with no trust document: reached, not usable.
  const notPing = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () => new Response("no", { status: 404 }),
  );
  const reachedUrl = `https://127.0.0.1:${notPing.addr.port}/ping`;
  try {
    const cases: {
      args: string[];
      code: number;
      check: (last: JsonResult) => void;
    }[] = [
      {
        args: ["--url", dead, "--count", "1", "--give-up-after-ms", "300"],
        code: 1,
        check: (last) => {
          assert.equal(last.type, "summary");
          assert.equal(last.gaveUp, true);
        },
      },
      {
        args: ["--url", reachedUrl, "--count", "1"],
        code: 1,
        check: (last) => {
          assert.equal(last.type, "summary");
          assert.equal(last.untrusted, true);
        },
      },
      {
        args: ["--url", dead, "--datagram", "--new-stream"],
        code: 2,
        check: (last) =>
          assert.deepEqual(last, {
            type: "error",
            message: "choose one of --datagram and --new-stream",
            exitCode: 2,
          }),
      },
      {
        args: ["--url", dead, "--datagram", "--size", "2000"],
        code: 2,
        check: (last) => {
          assert.equal(last.type, "error");
          assert.match(String(last.message), /^--size 2000 does not fit in a datagram/);
          assert.equal(last.exitCode, 2);
        },
      },
      {
        // Nowhere left to look: a usage error, before any discovery.
        args: ["--no-mdns", "--count", "1"],
        code: 2,
        check: (last) => {
          assert.equal(last.type, "error");
          assert.match(String(last.message), /^no server to ping: give --url/);
          assert.equal(last.exitCode, 2);
        },
      },
    ];
    for (const { args, code, check } of cases) {
      const run = await runDuet(["ping", ...args, "--json"]);
      assert.equal(run.code, code, `${args.join(" ")}: ${run.out}${run.err}`);
      const lines = run.out.trim().split("\n");
      const parsed = lines.map((line) => JSON.parse(line));
      check(parsed.at(-1));
      assert.equal(
        parsed.filter((e) => e.type === "summary" || e.type === "error").length,
        1,
        run.out,
      );
    }
  } finally {
    await notPing.shutdown();
  }
});

Deno.test("duet ping: a trust document reached but not usable stops at once with one line saying what to do", async () => {
  const notPing = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () => new Response("no", { status: 404 }),
  );
  const port = notPing.addr.port;
  try {
    const run = await runDuet(["ping", "--url", `https://127.0.0.1:${port}/ping`, "-c", "2"]);
    assert.equal(run.code, 1, run.err);
    const stopping = run.out.split("\n").filter((l) => l.startsWith("stopping"));
    assert.equal(stopping.length, 1, run.out);
    assert.match(
      stopping[0]!,
      new RegExp(
        `^stopping: cannot learn the server's certificate over a trusted channel \\(.*` +
          `http://127\\.0\\.0\\.1:${port}/\\.well-known/duet-ping\\.json: HTTP 404\\); ` +
          "check that the URL's port is a duet ping server's, or pass --cert-hash or --ca$",
      ),
    );
    assert.doesNotMatch(run.out, /reconnect attempt/);
  } finally {
    await notPing.shutdown();
  }
});

Deno.test("duet ping --datagram: a --size no datagram can carry is refused before connecting (exit 2, one line naming the largest)", async () => {
  for (
    const [args, largest] of [
      [["--size", "2000"], /at most 1139 bytes of padding \(QUIC/],
      [["--size", "1155", "--count", "5"], /at most 1154 bytes of padding with --count 5 /],
    ] as const
  ) {
    // Nothing listens there: a refusal before connecting is all that can come.
    const url = `https://127.0.0.1:${freePort()}/ping`;
    const { code, out, err } = await inProcess(["ping", "--url", url, "--datagram", ...args]);
    assert.equal(code, 2, err);
    assert.equal(out, "");
    assert.equal(err.trim().split("\n").length, 1, err);
    assert.match(err, new RegExp(`^duet ping: --size ${args[1]} does not fit in a datagram`));
    assert.match(err, largest);
  }
});

Deno.test({
  name: "duet ping --datagram at the largest --size: every ping is answered",
  ...options,
  async fn() {
    const server = await startServer(0);
    try {
      const url = `https://127.0.0.1:${servedPort(server)}/ping`;
      const run = await inProcess(
        ["ping", "--url", url, "--datagram", "--size", "1154", "--count", "5", "-i", "20"],
      );
      assert.equal(run.code, 0, run.err);
      assert.match(run.out, /5 transmitted, 5 received/);
    } finally {
      await stop(server);
    }
  },
});

Deno.test("duet ping --cert-hash against a port where nothing answers: the outage counts from the first attempt, the breaker opens on its budget, and no attempt is announced that is not made", async () => {
  const url = `https://127.0.0.1:${freePort()}/ping`;
  const run = await inProcess([
    "ping",
    "--url",
    url,
    "--cert-hash",
    "a".repeat(64),
    "--give-up-after-ms",
    "3000",
    "--count",
    "5",
    "--json",
  ]);
  assert.equal(run.code, 1, run.err);
  const events = run.out.trim().split("\n").map((l) => JSON.parse(l));
  const summary = events.at(-1);
  assert.equal(summary.type, "summary");
  const gaveUp = events.find((e) => e.type === "gave-up");
  // The first attempt waits 2 s for a QUIC answer (max of --timeout-ms and 2 s); the next
  // one is under way when the 3 s budget runs out: at most one is announced.
  assert.ok(events.filter((e) => e.type === "reconnecting").length <= 1, run.out);
  assert.equal(summary.outages.length, 1);
  assert.equal(summary.outages[0].durationMs, gaveUp.outageMs, "one clock: the give-up's");
  assert.ok(gaveUp.outageMs >= 3000, "not before the budget");
  assert.ok(summary.elapsedMs >= gaveUp.outageMs, "the outage lies within the run");
  assert.doesNotMatch(run.out, /certificate|cert-hash/);
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
      assert.match(wrong.out, /^0 transmitted: no ping could be sent \(said above why\)/m);
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
      // The outage began when the path went quiet, not when that was noticed: it is at
      // least the silence that revealed it, and the reconnection says the same duration.
      const silence = Number(summary.outages[0].reason.match(/no answer for (\d+) ms/)?.[1] ?? 0);
      assert.ok(summary.outages[0].durationMs >= silence, JSON.stringify(summary.outages));
      const back = all.find((e) => e.type === "connected" && e.afterOutageMs > 0);
      assert.equal(back.afterOutageMs, summary.outages[0].durationMs);
      // Pings in flight when the loss was found are reported then, before the reconnection:
      // nothing sent before the outage is reported after it.
      const outageAt = all.findIndex((e) => e.type === "outage");
      const backAt = all.indexOf(back);
      const sentBefore = Math.max(
        0,
        ...all.slice(0, backAt).filter((e) => "seq" in e && e.type !== "lost" || e.inFlight)
          .map((e) => e.seq),
      );
      assert.ok(outageAt < backAt);
      assert.deepEqual(
        all.slice(backAt).filter((e) => "seq" in e && e.seq <= sentBefore),
        [],
        "a ping from before the outage reported after the reconnection",
      );
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

/** The port `duet ping serve --port 0` found, from its "page" line. */
const servedPort = (server: SpawnedDuet) =>
  Number(server.lines.stdout.find((l) => l.startsWith("page "))!.match(/:(\d+)\//)![1]);

Deno.test({
  name: "duet ping with two --url: the first is used; SIGKILLed mid-run, the client switches " +
    "to the second once, says so, and the replies go on",
  ...options,
  async fn() {
    const first = await startServer(0);
    const second = await startServer(0);
    const [a, b] = [first, second].map((s) => `https://127.0.0.1:${servedPort(s)}/ping`);
    const client = spawnDuet(
      ["ping", "--url", a!, "--url", b!, "--interval", "50", "--timeout-ms", "500", "--json"],
      { direct: true },
    );
    try {
      const events = () => client.lines.stdout.map((l) => JSON.parse(l));
      await waitFor(
        () => events().filter((e) => e.type === "reply").length >= 5,
        "replies from the first server",
        20_000,
      );
      assert.deepEqual(events()[0], { type: "connected", url: a, attempt: 0, first: true });
      await stop(first, "SIGKILL"); // no GOAWAY, no close: the path just goes dead
      await waitFor(
        () => events().some((e) => e.type === "connected" && e.url === b),
        "the client to switch to the second server",
        20_000,
      );
      const switchedAt = events().length;
      await waitFor(
        () => events().slice(switchedAt).filter((e) => e.type === "reply").length >= 5,
        "replies from the second server",
      );
      client.child.kill("SIGINT");
      const status = await client.child.status;
      await client.done;
      assert.equal(status.code, 0, client.lines.stderr.join("\n"));
      const all = events();
      const switches = all.filter((e) => e.type === "switching");
      assert.equal(switches.length, 1, JSON.stringify(switches));
      assert.equal(switches[0].url, b);
      assert.equal(switches[0].from, a);
      assert.match(
        switches[0].reason,
        new RegExp(
          `^127\\.0\\.0\\.1:${
            servedPort(first)
          } lost \\((no answer for \\d+ ms|connection closed)\\)$`,
        ),
      );
      assert.deepEqual(all.filter((e) => e.type === "connected").map((e) => e.url), [a, b]);
      const summary = all.at(-1);
      assert.equal(summary.type, "summary");
      assert.deepEqual(summary.urls, [a, b]);
      assert.equal(
        summary.received + summary.timeouts + summary.lostNoConnection + summary.errors,
        summary.transmitted,
        "every ping is a reply, a timeout, lost while disconnected, or an error",
      );
      assert.equal(summary.outages.length, 1);
      assert.ok(summary.received >= 10);
    } finally {
      await stop(client).catch(() => {});
      await stop(first, "SIGKILL");
      await stop(second);
    }
  },
});

Deno.test({
  name: "duet ping with two --url: tried in the order given, the text says which server it " +
    "switches to and why; none reachable is retried until the budget, said with no advice about certificates",
  ...options,
  async fn() {
    const server = await startServer(0);
    const live = `https://127.0.0.1:${servedPort(server)}/ping`;
    const deadPort = freePort(); // nothing listens there
    const dead = `https://127.0.0.1:${deadPort}/ping`;
    try {
      const run = await inProcess([
        "ping",
        "--url",
        dead,
        "--url",
        live,
        "--count",
        "3",
        "--interval",
        "20",
      ]);
      assert.equal(run.code, 0, run.err);
      const lines = run.out.trim().split("\n");
      assert.equal(lines[0], `PING ${dead} (then ${live}) over one stream, 16 bytes of padding`);
      assert.match(
        lines[1]!,
        new RegExp(
          `^switching to ${live.replaceAll(".", "\\.")}: 127\\.0\\.0\\.1:${deadPort} failed ` +
            `\\(cannot reach the server \\(.*connection refused \\(is the server running\\?\\)\\)\\)$`,
        ),
      );
      // It had never been connected: not "again".
      assert.equal(lines[2]!.replace(/\d+\.\d\d s$/, "T s"), `connected to ${live} after T s`);
      for (const seq of [1, 2, 3]) {
        assert.match(
          lines[2 + seq]!,
          new RegExp(`^pong from 127\\.0\\.0\\.1:${servedPort(server)}: seq=${seq} bytes=23 `),
        );
      }
      assert.equal(lines.filter((l) => l.startsWith("switching")).length, 1, run.out);
      assert.ok(lines.includes(`--- ${dead}, ${live} ping statistics ---`), run.out);
      assert.match(run.out, /3 transmitted, 3 received/);

      const deadToo = `https://127.0.0.1:${freePort()}/ping`;
      const none = await inProcess(
        ["ping", "--url", dead, "--url", deadToo, "--count", "1", "--give-up-after-ms", "500"],
      );
      assert.equal(none.code, 1);
      assert.equal(none.err, "", "an outage, not an error");
      assert.doesNotMatch(none.out, /cert/, "nothing answered: no advice about certificates");
      assert.match(
        none.out,
        new RegExp(
          `^switching to ${deadToo.replaceAll(".", "\\.")}: 127\\.0\\.0\\.1:${deadPort} ` +
            "failed \\(cannot reach the server ",
          "m",
        ),
      );
      assert.match(none.out, /^giving up: no connection for \d+\.\d s$/m);
    } finally {
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

/** One request on a connection the caller keeps open (HTTP/1.1 keep-alive). */
async function askOnConnection(
  conn: Deno.Conn,
  path: string,
): Promise<{ status: number; body: string }> {
  await conn.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`));
  const buffer = new Uint8Array(16_384);
  let text = "";
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("the server closed the connection");
    text += new TextDecoder().decode(buffer.subarray(0, n));
    const end = text.indexOf("\r\n\r\n");
    const length = Number(text.match(/content-length: (\d+)/i)?.[1]);
    if (end >= 0 && text.length >= end + 4 + length) {
      return { status: Number(text.split(" ")[1]), body: text.slice(end + 4, end + 4 + length) };
    }
  }
}

function echo(socket: WebSocket, message: string): Promise<string> {
  const reply = new Promise<string>((resolve, reject) => {
    socket.addEventListener("message", (event) => resolve(String(event.data)), { once: true });
    socket.addEventListener("close", () => reject(new Error("the socket closed")), { once: true });
  });
  socket.send(message);
  return reply;
}

/** A WebSocket, once open. */
async function openWebSocket(url: string): Promise<WebSocket> {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  return socket;
}

/**
 * Opens idle connections, which the server holds (one descriptor each), into `held` until
 * its /healthz (asked on `probe`) is no longer 200; at most 1,000. Returns that answer.
 */
async function exhaustDescriptors(port: number, probe: Deno.Conn, held: Deno.Conn[]) {
  let health = { status: 200, body: "" };
  for (let tries = 0; health.status === 200; tries += 20) {
    assert.ok(tries < 1000, `accepting still works after ${tries} connections`);
    for (let i = 0; i < 20; i++) {
      await Deno.connect({ hostname: "127.0.0.1", port }).then(
        (conn) => held.push(conn),
        () => {}, // refused: the listener is down
      );
    }
    health = await askOnConnection(probe, "/healthz");
  }
  return health;
}

/** Waits (30 s at most) until a new connection's /healthz answers 200; that answer. */
async function healthyAgain(port: number): Promise<{ status: number; body: string }> {
  let after = { status: 0, body: "" };
  await waitFor(
    async () => {
      try {
        const response = await fetch(`http://127.0.0.1:${port}/healthz`);
        after = { status: response.status, body: await response.text() };
        return response.status === 200;
      } catch {
        return false; // not listening again yet
      }
    },
    "the server to accept and be ready again",
    30_000,
  );
  return after;
}

Deno.test({
  name: "duet ping serve: out of file descriptors (ulimit -n 200), it stays up: held sockets " +
    "and QUIC keep serving, /healthz says 503 while accepting is out, and new connections " +
    "are served once descriptors are free again",
  ...options,
  async fn() {
    const server = spawnDuet(["ping", "serve", "--port", "0"], {
      direct: true,
      prefix: ["bash", "-c", 'ulimit -n 200 && exec "$@"', "bash"],
    });
    let exited = false;
    server.child.status.then(() => (exited = true));
    const held: Deno.Conn[] = [];
    let socket: WebSocket | undefined;
    try {
      // The last lines it prints are the certificate hashes (current, then next): the
      // pipe may deliver the page line before them.
      await waitFor(
        () => server.lines.stdout.some((l) => l.startsWith("certificate sha-256 (next)")),
        "the server",
        20_000,
      );
      const page = server.lines.stdout.find((l) => l.startsWith("page "))!;
      const port = Number(page.match(/:(\d+)\//)![1]);
      const hashes = server.lines.stdout.filter((l) => l.startsWith("certificate sha-256"))
        .map((l) => parseCertHash(l.split(": ")[1]!));
      // Before: a WebSocket and a keep-alive HTTP connection, both held throughout.
      socket = await openWebSocket(`ws://127.0.0.1:${port}/ws`);
      assert.equal(await echo(socket, "ping before"), "pong before");
      const probe = await Deno.connect({ hostname: "127.0.0.1", port });
      held.push(probe);
      assert.deepEqual(await askOnConnection(probe, "/healthz"), {
        status: 200,
        body: '{"status":"ok","sessions":0}',
      });

      const health = await exhaustDescriptors(port, probe, held);
      assert.equal(health.status, 503);
      const during = JSON.parse(health.body);
      assert.equal(during.status, "not accepting");
      assert.ok(during.acceptFailures >= 1, health.body);

      // While out: alive, the held WebSocket echoes, WebTransport (no descriptor per
      // connection) takes a new session.
      assert.equal(exited, false, "the process is alive");
      assert.equal(await echo(socket, "ping during"), "pong during");
      const quic = await runPing({
        ...CLIENT_DEFAULTS,
        url: new URL(`https://127.0.0.1:${port}/ping`),
        trust: { serverCertificateHashes: hashes },
        count: 2,
        intervalMs: 20,
      });
      assert.equal(quic.received, 2, JSON.stringify(quic));

      // Released: the server listens again by itself and serves new connections.
      for (const conn of held.splice(0)) conn.close();
      const after = await healthyAgain(port);
      const ready = JSON.parse(after.body);
      assert.equal(ready.status, "ok");
      assert.ok(ready.acceptFailures >= 1, after.body);
      const fresh = await openWebSocket(`ws://127.0.0.1:${port}/ws`);
      assert.equal(await echo(fresh, "ping after"), "pong after");
      fresh.close();
      assert.equal(await echo(socket, "ping still"), "pong still");
      socket.close();
      assert.equal(exited, false);
      server.child.kill("SIGTERM");
      assert.equal((await server.child.status).code, 0, server.lines.stderr.join("\n"));
      assert.ok(
        !server.lines.stderr.some((l) => /uncaught|panicked/i.test(l)),
        server.lines.stderr.join("\n"),
      );
    } finally {
      for (const conn of held) conn.close();
      socket?.close();
      await stop(server, "SIGKILL");
    }
  },
});

Deno.test({
  name: "duet ping: a server reached by a name (localhost) is trusted and pinged through " +
    "the published document",
  ...options,
  async fn() {
    const port = freePort();
    const server = await startServer(port);
    try {
      const run = await inProcess([
        "ping",
        "--url",
        `https://localhost:${port}/ping`,
        "--count",
        "2",
        "--interval",
        "20",
      ]);
      assert.equal(run.code, 0, run.err);
      assert.match(run.out, /2 transmitted, 2 received/);
    } finally {
      await stop(server);
    }
  },
});

Deno.test({
  name: "duet ping under deno task: one Ctrl-C (the whole process group signalled, and the " +
    "task runner forwarding it) stops gracefully with the statistics, exit 0",
  ...options,
  async fn() {
    const port = freePort();
    const server = await startServer(port);
    try {
      // setsid: the task runner and duet get a process group of their own, as a terminal
      // gives a foreground job, so a Ctrl-C can be sent the way a terminal sends it.
      const client = spawnDuet(["ping", "--url", `https://127.0.0.1:${port}/ping`, "-i", "100"], {
        prefix: ["setsid"],
      });
      await waitFor(
        () => client.lines.stdout.filter((l) => l.startsWith("pong")).length >= 2,
        "replies",
        20_000,
      );
      Deno.kill(-client.child.pid, "SIGINT");
      const { code } = await client.child.status;
      await client.done;
      assert.equal(code, 0, client.lines.stderr.join("\n"));
      assert.ok(
        client.lines.stdout.some((l) => /ping statistics ---$/.test(l)),
        client.lines.stdout.join("\n"),
      );
    } finally {
      await stop(server);
    }
  },
});

Deno.test({
  name:
    "duet ping --cert-hash that is not the server's: stops at once with one line of advice, not retried",
  ...options,
  async fn() {
    const port = freePort();
    const server = await startServer(port);
    try {
      const wrong = "00".repeat(32);
      const client = spawnDuet(
        ["ping", "--url", `https://127.0.0.1:${port}/ping`, "--count", "3", "--cert-hash", wrong],
        { direct: true },
      );
      const { code } = await client.child.status;
      await client.done;
      const said = client.lines.stdout.join("\n");
      assert.equal(code, 1, said);
      assert.match(
        said,
        /stopping: the server's certificate is not one you trust: it is not issued by a CA trusted here, and no hash given matches it; check --cert-hash \(duet serve and duet ping serve print the server's hashes\) or --ca/,
      );
      // rustls' own name for it is not the user's vocabulary.
      assert.doesNotMatch(said, /UnknownIssuer|error 48|handshake failed/);
      assert.doesNotMatch(said, /reconnect attempt/);
      assert.match(said, /3 transmitted, 0 received|0 transmitted: no ping could be sent/);
    } finally {
      await stop(server);
    }
  },
});

Deno.test({
  name:
    "duet ping HOST:PORT at a port that speaks neither TLS nor HTTP stops at once; one that hangs up is retried",
  ...options,
  async fn() {
    const port = freePort();
    {
      await using _banner = tcpServer(async (conn) => {
        await conn.read(new Uint8Array(4096));
        await conn.write(new TextEncoder().encode("SSH-2.0-OpenSSH_9.2\r\n"));
      }, port);
      const { code, out } = await runDuet(["ping", `127.0.0.1:${port}`, "--count", "1"]);
      assert.equal(code, 1, out);
      assert.match(
        out,
        /^stopping: cannot learn the server's certificate over a trusted channel \(.*what answered does not speak TLS.*what answered does not speak HTTP\); check that the URL's port is a duet ping server's/m,
      );
      assert.doesNotMatch(out, /reconnect attempt|corrupt message|InvalidContentType|invalid HTTP/);
    }
    {
      await using _hangUp = tcpServer((conn) => Promise.resolve(conn.close()), port);
      const { code, out } = await runDuet([
        "ping",
        `127.0.0.1:${port}`,
        "--count",
        "1",
        "--give-up-after-ms",
        "1500",
      ]);
      assert.equal(code, 1, out);
      assert.match(
        out,
        /^reconnect attempt 1 in \d+ ms \(cannot reach the server \(.*: the connection closed before any answer\)\)$/m,
      );
      assert.match(out, /^giving up: no connection for 1\.5 s$/m);
      assert.doesNotMatch(out, /stopping:|eof/);
    }
  },
});

Deno.test("duet ping takes servers as operands: HOST:PORT or a URL; anything else is a usage error naming it", async () => {
  for (
    const [operand, message] of [
      [
        "serv",
        /^duet ping: serv is not a server: .*; to start a server, duet ping serve \(see --help\)$/,
      ],
      [
        "127.0.0.1:70000",
        /^duet ping: 127\.0\.0\.1:70000 is not a server: give HOST:PORT \(a port from 1 to 65535\)/,
      ],
      [
        "http://127.0.0.1:4433/ping",
        /^duet ping: server http:\/\/127\.0\.0\.1:4433\/ping: expected a https: URL/,
      ],
    ] as const
  ) {
    const { code, out, err } = await runDuet(["ping", operand, "--count", "1"]);
    assert.equal(code, 2, err);
    assert.equal(out, "");
    assert.match(err.trim(), message);
  }
  assert.equal(serverOperand("127.0.0.1:4433"), "https://127.0.0.1:4433/ping");
  assert.equal(serverOperand("[::1]:0443"), "https://[::1]:443/ping");
  assert.equal(serverOperand("https://a.test:1/x"), "https://a.test:1/x");
});

Deno.test("describeSummary: a run that sent nothing says so, never 0.0% loss of nothing", () => {
  const base: PingSummary = {
    url: "https://127.0.0.1:1/ping",
    urls: ["https://127.0.0.1:1/ping"],
    servers: [],
    mode: "stream",
    rtt: null,
    transmitted: 0,
    received: 0,
    receivedOverWebSocket: 0,
    timeouts: 0,
    lostNoConnection: 0,
    errors: 0,
    lossPercent: 0,
    outages: [],
    outageMs: 0,
    gaveUp: false,
    elapsedMs: 1234.4,
  };
  const none = describeSummary(base);
  assert.match(none, /^0 transmitted: no ping could be sent \(said above why\), time 1234 ms$/m);
  assert.doesNotMatch(none, /% loss/);
  const some = describeSummary({
    ...base,
    transmitted: 4,
    received: 3,
    timeouts: 1,
    lossPercent: 25,
  });
  assert.match(
    some,
    /^4 transmitted, 3 received, 25\.0% loss \(1 timed out, 0 while disconnected, 0 errors\), time 1234 ms$/m,
  );
});
