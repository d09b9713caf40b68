import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { startSyncpoint } from "@duet/syncpoint";
import { tcpServer, waitFor } from "@duet/testkit";
import { runDuet, spawnDuet } from "./testdata/spawn.ts";
import { inProcess } from "./testdata/in_process.ts";

Deno.test("duet syncpoint serves, pairs, and on SIGTERM answers a waiting party 503 and exits 0", async () => {
  const { child, lines, done } = spawnDuet(["syncpoint", "--port", "0", "--log-format", "json"]);
  let url = "";
  await waitFor(
    () => {
      const listening = lines.stderr.map((l) => JSON.parse(l)).find((r) => r.properties?.url);
      url = listening?.properties.url ?? "";
      return url !== "";
    },
    "the listening log line",
    20_000,
  );
  const first = fetch(new URL("/wait-for-second-party/cli", url), { method: "POST", body: "one" });
  await waitFor(
    async () => (await (await fetch(new URL("/healthz", url))).json()).waiting === 1,
    "the first party to wait",
  );
  const second = await fetch(new URL("/wait-for-second-party/cli", url), {
    method: "POST",
    body: "two",
  });
  assert.equal((await second.json()).peer_payload, "one");
  assert.equal((await (await first).json()).peer_payload, "two");

  const waiting = fetch(new URL("/wait-for-second-party/left", url), { method: "POST" });
  await waitFor(
    async () => (await (await fetch(new URL("/healthz", url))).json()).waiting === 1,
    "a party to wait",
  );
  child.kill("SIGTERM");
  const answer = await waiting;
  assert.equal(answer.status, 503);
  assert.equal((await answer.json()).code, "shutting_down");
  const status = await child.status;
  await done;
  assert.equal(status.code, 0, lines.stderr.join("\n"));
  assert.ok(lines.stderr.some((l) => l.includes("Syncpoint stopped")));
});

Deno.test("duet serve starts syncpoint, ping and chat, prints their addresses and stops on SIGINT", async () => {
  const dataDir = await Deno.makeTempDir();
  const { child, lines, done } = spawnDuet([
    "serve",
    "--syncpoint-port",
    "0",
    "--ping-port",
    "0",
    "--chat-port",
    "0",
    "--chat-data-dir",
    dataDir,
  ]);
  let url = "";
  await waitFor(
    () => {
      url = lines.stdout.find((l) => l.startsWith("syncpoint"))?.split(/\s+/)[1] ?? "";
      return url !== "";
    },
    "the syncpoint URL on stdout",
    20_000,
  );
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/wait-for-second-party\/ID$/);
  const health = await fetch(new URL("/healthz", url));
  assert.equal(health.status, 200);
  await health.body?.cancel();
  await waitFor(() => lines.stdout.some((l) => l.startsWith("ping page")), "the ping URLs");
  const page = lines.stdout.find((l) => l.startsWith("ping page"))!.split(/\s+/)[2]!;
  const pingHealth = await fetch(new URL("/healthz", page));
  assert.deepEqual(await pingHealth.json(), { status: "ok", sessions: 0 });
  const ping = lines.stdout.find((l) => l.startsWith("ping  "))!.split(/\s+/)[1]!;
  assert.match(ping, /^https:\/\/127\.0\.0\.1:\d+\/ping$/);
  assert.equal(new URL(ping).port, new URL(page).port, "one port number, UDP and TCP");
  await waitFor(() => lines.stdout.some((l) => l.startsWith("chat ")), "the chat server", 30_000);
  const chat = lines.stdout.find((l) => l.startsWith("chat "))!;
  assert.match(
    chat,
    new RegExp(`^chat {7}127\\.0\\.0\\.1:\\d+ {3}\\(PGlite in ${dataDir}; duet chat`),
  );
  const port = Number(chat.match(/:(\d+)/)![1]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.close(); // it accepts connections
  child.kill("SIGINT");
  assert.equal((await child.status).code, 0);
  await done;
  await Deno.remove(dataDir, { recursive: true });
});

Deno.test("duet syncpoint wait pairs two parties and prints what the other sent", async () => {
  const server = await startSyncpoint({ port: 0 });
  try {
    const first = inProcess([
      "syncpoint",
      "wait",
      "w1",
      "--url",
      server.url.href,
      "--payload",
      "from 1",
    ]);
    await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
    const second = await inProcess([
      "syncpoint",
      "wait",
      "w1",
      "--url",
      server.url.href,
      "--payload",
      "from 2",
      "--json",
    ]);
    assert.equal(second.code, 0, second.err);
    // The server's field names; waited_ms counts from the command's start (a few ms here).
    const answer = JSON.parse(second.out);
    assert.ok(Number.isInteger(answer.waited_ms), second.out);
    assert.ok(answer.waited_ms >= 0 && answer.waited_ms < 5_000, second.out);
    assert.deepEqual({ ...answer, waited_ms: 0 }, {
      status: "paired",
      id: "w1",
      role: "second",
      waited_ms: 0,
      peer_payload: "from 1",
    });
    assert.equal(second.err, "");
    const firstResult = await first;
    assert.equal(firstResult.code, 0);
    // stdout: the payload alone; the status line on stderr.
    assert.equal(firstResult.out, "from 2\n");
    assert.match(firstResult.err, /^paired as the first party after \d+\.\d\d s\n$/);
  } finally {
    await server.shutdown();
  }
});

Deno.test("duet syncpoint wait: a payload's control characters are shown, not obeyed; --json keeps them exactly", async () => {
  const server = await startSyncpoint({ port: 0 });
  const hostile = "\x1b]0;owned\x07\x1b[2Jline\nsecond\x7f\x9b";
  try {
    const first = inProcess(["syncpoint", "wait", "w3", "--url", server.url.href]);
    await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
    const second = await inProcess([
      "syncpoint",
      "wait",
      "w3",
      "--url",
      server.url.href,
      "--payload",
      hostile,
    ]);
    assert.equal(second.code, 0, second.err);
    const firstResult = await first;
    assert.equal(firstResult.code, 0, firstResult.err);
    assert.equal(firstResult.out, "␛]0;owned␇␛[2Jline␊second␡\\u{9b}\n");
    // --json: the exact text for a parser, and no raw control character for a terminal.
    const json = inProcess(["syncpoint", "wait", "w4", "--url", server.url.href, "--json"]);
    await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
    await inProcess(["syncpoint", "wait", "w4", "--url", server.url.href, "--payload", hostile]);
    const { out } = await json;
    assert.equal(JSON.parse(out).peer_payload, hostile);
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(out.trimEnd()), out);
  } finally {
    await server.shutdown();
  }
});

Deno.test("duet syncpoint wait: timeout exits 1 with a clear message; bad input exits 2", async () => {
  const server = await startSyncpoint({ port: 0 });
  try {
    const lonely = await inProcess([
      "syncpoint",
      "wait",
      "w2",
      "--url",
      server.url.href,
      "--timeout-ms",
      "50",
    ]);
    assert.equal(lonely.code, 1);
    assert.equal(
      lonely.err,
      "duet syncpoint wait: No second party arrived within 50 ms (timeout)\n",
    );
    const badId = await inProcess(["syncpoint", "wait", "a b", "--url", server.url.href]);
    assert.equal(badId.code, 2);
    assert.match(badId.err, /Invalid id "a b"/);
    const badUrl = await inProcess(["syncpoint", "wait", "x", "--url", "ftp://h"]);
    assert.equal(badUrl.code, 2);
    assert.match(badUrl.err, /expected a http: or https: URL/);
    const badTimeout = await inProcess(["syncpoint", "wait", "x", "--timeout-ms", "soon"]);
    assert.equal(badTimeout.code, 2);
  } finally {
    await server.shutdown();
  }
  // Unreachable: retried until --timeout-ms, said once (not once per attempt), then one clear
  // line.
  const unreachable = await inProcess([
    "syncpoint",
    "wait",
    "x",
    "--url",
    server.url.href,
    "--timeout-ms",
    "300",
  ]);
  assert.equal(unreachable.code, 1);
  const lines = unreachable.err.trimEnd().split("\n");
  assert.match(
    lines.at(-1)!,
    /^duet syncpoint wait: cannot reach the syncpoint at http:\/\/127\.0\.0\.1:\d+\//,
  );
  assert.equal(lines.length, 2, unreachable.err);
  assert.match(
    lines[0]!,
    /^duet syncpoint wait: connection failed: connection refused \(is the server running, and on this port\?\); retrying in \d+\.\d s, and on until the wait's deadline$/,
  );
  assert.doesNotMatch(unreachable.err, /os error|tcp connect|client error/);
  // Under --log-format json, stderr is JSON records only: the retry, then the failure.
  const json = await inProcess([
    "syncpoint",
    "wait",
    "x",
    "--url",
    server.url.href,
    "--timeout-ms",
    "300",
    "--log-format",
    "json",
  ]);
  assert.equal(json.code, 1);
  const records = json.err.trimEnd().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(records.map((r) => [r.level, r.logger]), [
    ["WARN", "duet.syncpoint"],
    ["ERROR", "duet.syncpoint"],
  ]);
  assert.match(records[0].message, /^duet syncpoint wait: connection failed: connection refused/);
  assert.match(records[1].message, /^duet syncpoint wait: cannot reach the syncpoint at /);
  // A port fetch never connects to (the Fetch standard's bad ports) cannot get better: no
  // retry, one line that says so, and --json says it too.
  const badPort = await inProcess([
    "syncpoint",
    "wait",
    "x",
    "--url",
    "http://127.0.0.1:1",
    "--json",
  ]);
  assert.equal(badPort.code, 1);
  assert.equal(
    badPort.err,
    "duet syncpoint wait: cannot reach the syncpoint at http://127.0.0.1:1: port 1 is on the " +
      'Fetch standard\'s list of "bad ports", which fetch never connects to; run the service on ' +
      "another port (unreachable)\n",
  );
  assert.equal(JSON.parse(badPort.out).code, "unreachable");
});

/**
 * A load balancer during a rolling update, on a loopback port: answers the first `refusals`
 * requests 503 shutting_down (Retry-After: `retryAfter` s), then forwards to `backend`. node:http, not
 * Deno.serve: the syncpoint server in this process may have replaced the global Response.
 */
async function drainingFront(backend: URL, refusals: number, retryAfter = "0") {
  let requests = 0;
  const server = createServer(async (request, response) => {
    let body = "";
    request.setEncoding("utf8");
    for await (const chunk of request) body += chunk;
    if (requests++ < refusals) {
      response.writeHead(503, { "content-type": "application/json", "retry-after": retryAfter });
      response.end(JSON.stringify({
        status: "error",
        code: "shutting_down",
        message: "The service is shutting down",
      }));
      return;
    }
    const answer = await fetch(new URL(request.url!, backend), {
      method: request.method!,
      body,
    });
    response.writeHead(answer.status, { "content-type": "application/json" });
    response.end(await answer.text());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests: () => requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

Deno.test("duet syncpoint wait retries a draining service: the cause said once on stderr, then paired", async () => {
  const server = await startSyncpoint({ port: 0 });
  const lb = await drainingFront(server.url, 2);
  try {
    const first = inProcess([
      "syncpoint",
      "wait",
      "r1",
      "--url",
      server.url.href,
      "--payload",
      "A",
    ]);
    await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
    const second = await inProcess([
      "syncpoint",
      "wait",
      "r1",
      "--url",
      lb.url,
      "--payload",
      "B",
      "--timeout-ms",
      "20000",
    ]);
    assert.equal(second.code, 0, second.err);
    assert.equal(second.out, "A\n");
    // Two refusals, one cause: said once, and the third request pairs.
    const lines = second.err.trimEnd().split("\n");
    assert.equal(lines.length, 2, second.err);
    assert.match(lines.pop()!, /^paired as the second party after \d+\.\d\d s$/);
    assert.match(
      lines[0]!,
      /^duet syncpoint wait: service unavailable \(shutting_down\); retrying in 0\.[01] s, and on until the wait's deadline$/,
    );
    assert.equal(lb.requests(), 3);
    assert.equal((await first).code, 0);

    // --quiet: the same retries, no lines; --no-retry: the first 503 is the outcome.
    const quietLb = await drainingFront(server.url, 2);
    const noRetryLb = await drainingFront(server.url, 1);
    try {
      const waiting = inProcess(["syncpoint", "wait", "r2", "--url", server.url.href]);
      await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
      const quiet = await inProcess(["syncpoint", "wait", "r2", "--url", quietLb.url, "-q"]);
      assert.equal(quiet.code, 0, quiet.err);
      assert.equal(quiet.err, "");
      assert.equal(quietLb.requests(), 3);
      assert.equal((await waiting).code, 0);
      const once = await inProcess([
        "syncpoint",
        "wait",
        "r3",
        "--url",
        noRetryLb.url,
        "--no-retry",
      ]);
      assert.equal(once.code, 1);
      assert.equal(once.err, "duet syncpoint wait: The service is shutting down (shutting_down)\n");
      assert.equal(noRetryLb.requests(), 1);
    } finally {
      await quietLb.close();
      await noRetryLb.close();
    }
  } finally {
    await lb.close();
    await server.shutdown();
  }
});

Deno.test("duet syncpoint wait: stdout is the payload alone, nothing when the other sent nothing; the status goes to stderr", async () => {
  const server = await startSyncpoint({ port: 0 });
  try {
    const first = inProcess(["syncpoint", "wait", "e1", "--url", server.url.href]);
    await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
    const second = await inProcess([
      "syncpoint",
      "wait",
      "e1",
      "--url",
      server.url.href,
      "--payload",
      "the other party sent nothing",
    ]);
    assert.equal(second.code, 0, second.err);
    assert.equal(second.out, "", "the first party sent nothing: nothing on stdout");
    assert.match(
      second.err,
      /^paired as the second party after \d+\.\d\d s; the other party sent nothing\n$/,
    );
    const firstResult = await first;
    assert.equal(firstResult.code, 0, firstResult.err);
    assert.equal(firstResult.out, "the other party sent nothing\n");
    assert.match(firstResult.err, /^paired as the first party after \d+\.\d\d s\n$/);
    // --quiet, before or after the subcommand: no status line.
    for (const [i, args] of [["-q", "syncpoint", "wait"], ["syncpoint", "wait", "-q"]].entries()) {
      const waiting = inProcess([...args, `e2-${i}`, "--url", server.url.href]);
      await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
      const quiet = await inProcess([...args, `e2-${i}`, "--url", server.url.href]);
      assert.deepEqual([quiet.code, quiet.out, quiet.err], [0, "", ""]);
      assert.deepEqual(await waiting, { code: 0, out: "", err: "" });
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("duet syncpoint wait --json: one JSON object on stdout whatever the outcome", async () => {
  const server = await startSyncpoint({ port: 0 });
  const refusing = await drainingFront(server.url, 1);
  try {
    const lonely = await inProcess([
      "syncpoint",
      "wait",
      "j1",
      "--url",
      server.url.href,
      "--timeout-ms",
      "50",
      "--json",
    ]);
    assert.equal(lonely.code, 1);
    assert.deepEqual(JSON.parse(lonely.out), {
      status: "error",
      id: "j1",
      code: "timeout",
      message: "No second party arrived within 50 ms",
    });
    assert.equal(
      lonely.err,
      "duet syncpoint wait: No second party arrived within 50 ms (timeout)\n",
    );
    const refused = await inProcess([
      "syncpoint",
      "wait",
      "j2",
      "--url",
      refusing.url,
      "--no-retry",
      "--json",
    ]);
    assert.equal(refused.code, 1);
    assert.deepEqual(JSON.parse(refused.out), {
      status: "error",
      id: "j2",
      code: "shutting_down",
      message: "The service is shutting down",
    });
  } finally {
    await refusing.close();
    await server.shutdown();
  }
  const unreachable = await inProcess([
    "syncpoint",
    "wait",
    "j3",
    "--url",
    server.url.href,
    "--timeout-ms",
    "200",
    "--json",
  ]);
  assert.equal(unreachable.code, 1);
  assert.equal(unreachable.out.split("\n").length, 2, unreachable.out); // one line
  const answer = JSON.parse(unreachable.out);
  assert.deepEqual(Object.keys(answer), ["status", "id", "code", "message"]);
  assert.equal(answer.status, "error");
  assert.equal(answer.id, "j3");
  assert.equal(answer.code, "unreachable");
  assert.match(answer.message, /^cannot reach the syncpoint at http:\/\/127\.0\.0\.1:\d+\/: .+/);
});

Deno.test("duet syncpoint wait: --url with a path, or a --payload over 64 KiB, is a usage error before connecting", async () => {
  const server = await startSyncpoint({ port: 0 });
  const front = await drainingFront(server.url, 0);
  const hint =
    "--url is the service's base URL, e.g. http://127.0.0.1:8080 (the id is the argument)";
  try {
    for (
      const bad of [
        `${front.url}/wait-for-second-party/ok`,
        `${front.url}/prefix`,
        `${front.url}/?id=ok`,
      ]
    ) {
      for (const quiet of [[], ["-q"]]) {
        const { code, out, err } = await inProcess([
          ...quiet,
          "syncpoint",
          "wait",
          "ok",
          "--url",
          bad,
          "--json",
        ]);
        assert.equal(code, 2, bad);
        assert.equal(out, "");
        assert.equal(err, `duet syncpoint wait: ${hint} (see --help)\n`, bad);
      }
    }
    for (const payload of ["x".repeat(65_537), "é".repeat(32_769)]) {
      const { code, out, err } = await inProcess([
        "syncpoint",
        "wait",
        "ok",
        "--url",
        front.url,
        "--payload",
        payload,
      ]);
      assert.equal(code, 2);
      assert.equal(out, "");
      assert.equal(
        err,
        `duet syncpoint wait: --payload is ${
          new TextEncoder().encode(payload).byteLength
        } bytes; the service accepts at most 65536 (64 KiB) (see --help)\n`,
      );
    }
    assert.equal(front.requests(), 0, "nothing was sent");
    // 64 KiB exactly is sent (and waits, here in vain); a base URL with or without "/" is fine.
    for (const base of [front.url, `${front.url}/`]) {
      const { code, err } = await inProcess([
        "syncpoint",
        "wait",
        "ok",
        "--url",
        base,
        "--payload",
        "é".repeat(32_768),
        "--timeout-ms",
        "50",
      ]);
      assert.equal(code, 1, err);
      assert.equal(err, "duet syncpoint wait: No second party arrived within 50 ms (timeout)\n");
    }
    assert.equal(front.requests(), 2);
  } finally {
    await front.close();
    await server.shutdown();
  }
});

Deno.test("duet syncpoint wait: the time reported counts from the command's start, retries included", async () => {
  const server = await startSyncpoint({ port: 0 });
  // Retry-After: 1 s, so the retry's delay is at least 1 s.
  const jsonFront = await drainingFront(server.url, 1, "1");
  const textFront = await drainingFront(server.url, 1, "1");
  try {
    for (const [front, json] of [[jsonFront, true], [textFront, false]] as const) {
      const first = inProcess([
        "syncpoint",
        "wait",
        `t-${json}`,
        "--url",
        front.url,
        "--timeout-ms",
        "20000",
        ...(json ? ["--json"] : []),
      ]);
      await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait", 10_000);
      const second = await inProcess([
        "syncpoint",
        "wait",
        `t-${json}`,
        "--url",
        server.url.href,
        "--payload",
        "B",
      ]);
      assert.equal(second.code, 0, second.err);
      const { code, out, err } = await first;
      assert.equal(code, 0, err);
      const lines = err.trimEnd().split("\n");
      assert.match(
        lines[0]!,
        /^duet syncpoint wait: service unavailable \(shutting_down\); retrying in 1\.[01] s, and on until the wait's deadline$/,
      );
      if (json) {
        const answer = JSON.parse(out);
        assert.equal(answer.role, "first");
        assert.ok(answer.waited_ms >= 1_000, out);
      } else {
        assert.equal(out, "B\n");
        const seconds = Number(
          /^paired as the first party after (\d+\.\d\d) s$/.exec(lines[1]!)?.[1],
        );
        assert.ok(seconds >= 1, err);
      }
    }
  } finally {
    await jsonFront.close();
    await textFront.close();
    await server.shutdown();
  }
});

Deno.test("duet syncpoint wait: a timeout shorter than asked says the service caps waits", async () => {
  const server = await startSyncpoint({ port: 0, defaultTimeoutMs: 100, maxTimeoutMs: 200 });
  try {
    const capped = await inProcess([
      "syncpoint",
      "wait",
      "c1",
      "--url",
      server.url.href,
      "--timeout-ms",
      "3000",
    ]);
    assert.equal(capped.code, 1);
    assert.equal(
      capped.err,
      "duet syncpoint wait: No second party arrived within 200 ms (timeout); " +
        "the service caps waits below the 3000 ms asked\n",
    );
    // Within the cap: no such note.
    const lonely = await inProcess([
      "syncpoint",
      "wait",
      "c2",
      "--url",
      server.url.href,
      "--timeout-ms",
      "150",
    ]);
    assert.equal(
      lonely.err,
      "duet syncpoint wait: No second party arrived within 150 ms (timeout)\n",
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test('duet syncpoint wait: errors are prefixed "duet syncpoint wait:" also with -q before the subcommand', async () => {
  const server = await startSyncpoint({ port: 0 });
  await server.shutdown();
  const unreachable = await inProcess([
    "-q",
    "syncpoint",
    "wait",
    "x",
    "--url",
    server.url.href,
    "--timeout-ms",
    "200",
  ]);
  assert.equal(unreachable.code, 1);
  assert.match(
    unreachable.err,
    /^duet syncpoint wait: cannot reach the syncpoint at http:\/\/127\.0\.0\.1:\d+\/: [^\n]+\n$/,
  );
  const badId = await inProcess(["-q", "syncpoint", "wait", "a b"]);
  assert.equal(badId.code, 2);
  assert.match(badId.err, /^duet syncpoint wait: Invalid id "a b": .+ \(see --help\)\n$/);
});

Deno.test("duet syncpoint refuses bad settings with exit 2", async () => {
  for (
    const args of [
      ["syncpoint", "--port", "70000"],
      ["syncpoint", "--timeout-ms", "0"],
      ["syncpoint", "--timeout-ms", "5000", "--max-timeout-ms", "100"],
      ["syncpoint", "--redis-url", "http://not-redis"],
      ["syncpoint", "--max-waiting-bytes", "65535"],
      ["syncpoint", "--arrival-burst", "0"],
      ["syncpoint", "--max-waiting-per-address", "-1"],
    ]
  ) {
    const { code, err } = await inProcess(args);
    assert.equal(code, 2, args.join(" "));
    assert.match(err, /^duet syncpoint: /, args.join(" "));
  }
});

interface LogRecord {
  level: string;
  message: string;
  properties?: Record<string, unknown>;
}

/** `duet syncpoint --port 0` as a child, its JSON log records, and its URL once it listens. */
async function spawnSyncpoint(args: string[], ulimit?: number) {
  const { child, lines, done } = spawnDuet(
    ["syncpoint", "--port", "0", "--log-format", "json", ...args],
    {
      direct: true,
      ...(ulimit ? { prefix: ["bash", "-c", `ulimit -n ${ulimit} && exec "$0" "$@"`] } : {}),
    },
  );
  let exited = false;
  const status = child.status.then((s) => (exited = true, s));
  // Every stderr line is one of our JSON records, except the runtime's own warning when
  // it cannot read the system's CA file for want of descriptors (under the ulimit).
  const runtimeWarning = /^Warning: Ignoring extra certs from .*Too many open files/;
  const records = () =>
    lines.stderr.filter((l) => !runtimeWarning.test(l)).map((l) => JSON.parse(l) as LogRecord);
  let url = "";
  await waitFor(
    () =>
      (url = records().find((r) => r.properties?.["url"])?.properties?.["url"] as string ?? "") !==
        "",
    "the listening log line",
    20_000,
  );
  return {
    child,
    url,
    records,
    errors: () => records().filter((r) => r.level === "ERROR" || r.level === "FATAL"),
    alive: () => !exited,
    /** SIGTERM, then the exit code (0 expected). */
    async stop(): Promise<number> {
      if (!exited) child.kill("SIGTERM");
      const { code } = await status;
      await done;
      return code;
    },
  };
}

const encoder = new TextEncoder();

/** One HTTP/1.1 request on an open connection; reads the answer (Content-Length framed). */
async function exchange(
  conn: Deno.TcpConn,
  method: string,
  path: string,
  body = "",
): Promise<{ status: number; body: string }> {
  await conn.write(encoder.encode(
    `${method} ${path} HTTP/1.1\r\nHost: t\r\nContent-Length: ${encoder.encode(body).byteLength}` +
      `\r\n\r\n${body}`,
  ));
  let text = "";
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) {
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1]);
      if (encoder.encode(text.slice(end + 4)).byteLength >= length) {
        return { status: Number(text.slice(9, 12)), body: text.slice(end + 4) };
      }
    }
    const read = await conn.read(buffer);
    if (read === null) throw new Error(`connection closed after ${JSON.stringify(text)}`);
    text += new TextDecoder().decode(buffer.subarray(0, read));
  }
}

Deno.test("duet syncpoint: clients hanging up mid-body are logged at debug and counted as departures; no error line", async () => {
  const service = await spawnSyncpoint(["--log-level", "debug"]);
  try {
    const port = Number(new URL(service.url).port);
    const n = 10;
    for (let i = 0; i < n; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(encoder.encode(
        `POST /wait-for-second-party/mid-${i} HTTP/1.1\r\nHost: t\r\n` +
          (i % 2
            ? "Content-Length: 100\r\n\r\nonly ten b"
            : "Transfer-Encoding: chunked\r\n\r\n10\r\n01234"),
      ));
      conn.close();
    }
    // And one that hangs up while waiting, as before.
    const waiting = await Deno.connect({ hostname: "127.0.0.1", port });
    await exchange(waiting, "GET", "/healthz");
    await waiting.write(encoder.encode(
      "POST /wait-for-second-party/left HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    ));
    await waitFor(
      async () => (await (await fetch(new URL("/healthz", service.url))).json()).waiting === 1,
      "a party to wait",
    );
    waiting.close();
    const metrics = async () => await (await fetch(new URL("/metrics", service.url))).text();
    await waitFor(
      async () => /^syncpoint_departures_total 11$/m.test(await metrics()),
      "11 departures",
    );
    assert.doesNotMatch(await metrics(), /code="internal"/);
    assert.deepEqual(service.errors(), [], "no error-level line");
    const departures = service.records().filter((r) =>
      /left while sending its body/.test(r.message)
    );
    assert.equal(departures.length, n);
    assert.ok(departures.every((r) => r.level === "DEBUG"));
    assert.ok(
      !service.records().some((r) => JSON.stringify(r).includes("    at ")),
      "no stack trace",
    );
  } finally {
    assert.equal(await service.stop(), 0);
  }
});

Deno.test("duet syncpoint out of file descriptors: stays up, held parties answered, new connections refused, then served again", async () => {
  // 128 descriptors: the process takes ~25, so ~100 loopback connections exhaust them.
  const service = await spawnSyncpoint(["--log-level", "debug"], 128);
  const flood: Deno.TcpConn[] = [];
  const control: Deno.TcpConn[] = [];
  const noPool = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  try {
    const { url } = service;
    const port = Number(new URL(url).port);
    const wait = (id: string, query = "", body = id) =>
      fetch(new URL(`/wait-for-second-party/${id}${query}`, url), { method: "POST", body });
    /** A request on a connection of its own: its status, or "refused". */
    const fresh = (path: string) =>
      fetch(new URL(path, url), { client: noPool }).then(
        async (r) => (await r.body?.cancel(), r.status),
        () => "refused" as const,
      );
    // Parties waiting before the outage: one to pair during it, one to pair after it, one
    // whose timeout ends (whenever it ends, it must be answered 408).
    const during = wait("paired-during", "?timeout_ms=60000");
    const after = wait("paired-after", "?timeout_ms=60000");
    const timesOut = wait("times-out", "?timeout_ms=1500");
    // Connections accepted for sure (each answered once), kept for later.
    for (let i = 0; i < 2; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      assert.equal((await exchange(conn, "GET", "/healthz")).status, 200);
      control.push(conn);
    }
    const [probe, partner] = control as [Deno.TcpConn, Deno.TcpConn];
    await waitFor(
      async () => JSON.parse((await exchange(probe, "GET", "/healthz")).body).waiting >= 2,
      "the parties to wait",
    );

    const outage = () => service.errors().some((r) => /Stopped accepting/.test(r.message));
    for (let i = 0; i < 400 && !outage(); i++) {
      try {
        flood.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      } catch {
        await new Promise((resolve) => setTimeout(resolve, 20)); // refused: not listening
      }
    }
    await waitFor(outage, "the service to run out of descriptors");
    assert.ok(service.alive(), "the process is still running");

    // Readiness says so, over a connection held from before.
    const health = await exchange(probe, "GET", "/healthz");
    assert.equal(health.status, 503);
    assert.equal(JSON.parse(health.body).status, "unavailable");
    // New connections are refused; each that reaches a relistened socket fails again.
    const failures = async () =>
      Number(
        /^syncpoint_accept_failures_total (\d+)$/m.exec(
          (await exchange(probe, "GET", "/metrics")).body,
        )?.[1],
      );
    for (let i = 0; i < 20 && (await failures()) < 3; i++) {
      assert.equal(await fresh("/healthz"), "refused");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const metrics = (await exchange(probe, "GET", "/metrics")).body;
    assert.match(metrics, /^syncpoint_accepting 0$/m);
    assert.ok((await failures()) >= 3, metrics);
    assert.equal(service.errors().length, 1, "one error line for the outage, not per attempt");

    // A party held since before the outage is paired during it, over a held connection.
    const pair = await exchange(partner, "POST", "/wait-for-second-party/paired-during", "B");
    assert.equal(pair.status, 200);
    assert.equal(JSON.parse(pair.body).peer_payload, "paired-during");
    assert.equal((await (await during).json()).peer_payload, "B");
    const timedOut = await timesOut;
    assert.equal(timedOut.status, 408);
    assert.equal((await timedOut.json()).code, "timeout");

    // Free the descriptors: new connections are served again, by themselves.
    for (const conn of flood.splice(0)) conn.close();
    await waitFor(async () => (await fresh("/healthz")) !== "refused", "new connections", 10_000);
    const second = await fetch(new URL("/wait-for-second-party/paired-after", url), {
      method: "POST",
      body: "C",
      client: noPool,
    });
    assert.equal((await second.json()).peer_payload, "paired-after");
    assert.equal((await (await after).json()).peer_payload, "C");
    await waitFor(async () => (await fresh("/healthz")) === 200, "readiness to return", 15_000);
    assert.ok(service.records().some((r) => /Accepting connections again/.test(r.message)));
    assert.equal(service.errors().length, 1);
    assert.ok(service.alive());
  } finally {
    for (const conn of [...flood, ...control]) conn.close();
    noPool.close();
    assert.equal(await service.stop(), 0);
  }
});

Deno.test("duet syncpoint --port 0 -q: the URL on stdout even when quiet, and nothing on stderr", async () => {
  const { child, lines, done } = spawnDuet(["syncpoint", "--port", "0", "-q"], { direct: true });
  try {
    await waitFor(() => lines.stdout.length > 0, "the URL on stdout", 20_000);
    const url = lines.stdout[0]!.split(/\s+/)[1]!;
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/wait-for-second-party\/ID$/);
    const health = await fetch(new URL("/healthz", url));
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0);
    await done;
  }
  assert.deepEqual(lines.stderr, []);
});

Deno.test("duet syncpoint wait at a port that does not speak HTTP: bad_response at once, not retried", async () => {
  // An SSH-like banner in place of an HTTP answer.
  await using banner = tcpServer(async (conn) => {
    await conn.read(new Uint8Array(4096));
    await conn.write(new TextEncoder().encode("SSH-2.0-OpenSSH_9.2\r\n"));
  });
  const url = `http://127.0.0.1:${banner.port}`;
  const run = await inProcess(["syncpoint", "wait", "x", "--url", url, "--json"]);
  assert.equal(run.code, 1, run.err);
  assert.deepEqual(JSON.parse(run.out), {
    status: "error",
    id: "x",
    code: "bad_response",
    message: `no syncpoint answers at ${url}: what answered does not speak HTTP; check the ` +
      "URL's scheme (http:// or https://) and port",
  });
  assert.doesNotMatch(run.err, /retrying/);
});

Deno.test("duet syncpoint wait --code: two processes with one code (typed differently) exchange payloads; another code fails both, revealing nothing", async () => {
  const server = await startSyncpoint({ port: 0 });
  try {
    const url = server.url.href.replace(/\/$/, "");
    const wait = (id: string, code: string, payload: string, json = false) =>
      runDuet([
        "syncpoint",
        "wait",
        id,
        "--url",
        url,
        "--code",
        code,
        "--payload",
        payload,
        "--timeout-ms",
        "20000",
        ...(json ? ["--json"] : []),
      ]);
    const [alice, bob] = await Promise.all([
      wait("code-ok", "7-guitar-orbit-lazy", "alice's address", true),
      wait("code-ok", "7 Guitar ORBI lazy", "bob's address"),
    ]);
    assert.equal(alice.code, 0, alice.err);
    assert.equal(bob.code, 0, bob.err);
    const paired = JSON.parse(alice.out);
    assert.equal(paired.status, "paired");
    assert.equal(paired.peer_payload, "bob's address");
    assert.equal(paired.code_verified, true);
    assert.equal(bob.out, "alice's address\n");
    assert.match(bob.err, /the other party proved the code/);

    const [one, two] = await Promise.all([
      wait("code-bad", "7-guitar-orbit-lazy", "one", true),
      wait("code-bad", "7-guitar-orbit-leaf", "two"),
    ]);
    assert.equal(one.code, 1);
    assert.equal(two.code, 1);
    assert.equal(JSON.parse(one.out).code, "code_mismatch");
    assert.equal(two.out, "", "nothing of the other's payload");
    assert.match(two.err, /did not prove the same code.*\(code_mismatch\)$/m);
  } finally {
    await server.shutdown();
  }
});

Deno.test("duet syncpoint wait --code: a code that is not one, and a payload past what a code exchange carries, are usage errors", async () => {
  const bad = await inProcess(["syncpoint", "wait", "x", "--code", "guitar-orbit"]);
  assert.equal(bad.code, 2);
  assert.match(
    bad.err,
    /^duet syncpoint wait: option '--code <code>' argument 'guitar-orbit' is invalid: a code starts with its number/,
  );
  // A word dropped (or added) in the telling: said here, not as a mismatch at the other end.
  const short = await inProcess(["syncpoint", "wait", "x", "--code", "7-guitar-orbit"]);
  assert.equal(short.code, 2);
  assert.match(short.err, /a duet code has 3 words after its number.*this one has 2/);
  const big = await inProcess([
    "syncpoint",
    "wait",
    "x",
    "--code",
    "7-guitar-orbit-lazy",
    "--payload",
    "x".repeat(50_000),
  ]);
  assert.equal(big.code, 2);
  assert.match(big.err, /--payload is 50000 bytes; the service accepts at most 49060 with --code/);
});
