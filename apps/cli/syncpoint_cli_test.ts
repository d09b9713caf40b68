import assert from "node:assert/strict";
import { startSyncpoint } from "@duet/syncpoint";
import { spawnDuet, waitFor } from "@duet/testkit";
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
    assert.deepEqual(JSON.parse(second.out), {
      role: "second",
      waited_ms: 0,
      peer_payload: "from 1",
    });
    const firstResult = await first;
    assert.equal(firstResult.code, 0);
    assert.match(firstResult.out, /^paired as the first party after \d+\.\d\d s\nfrom 2\n$/);
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
    assert.equal(firstResult.out.split("\n")[1], "␛]0;owned␇␛[2Jline␊second␡\\u{9b}");
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
  const unreachable = await inProcess(["syncpoint", "wait", "x", "--url", server.url.href]);
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.err, /cannot reach the syncpoint at http:\/\/127\.0\.0\.1:\d+\//);
});

Deno.test("duet syncpoint refuses bad settings with exit 2", async () => {
  for (
    const args of [
      ["syncpoint", "--port", "70000"],
      ["syncpoint", "--timeout-ms", "0"],
      ["syncpoint", "--timeout-ms", "5000", "--max-timeout-ms", "100"],
      ["syncpoint", "--redis-url", "http://not-redis"],
    ]
  ) {
    const { code, err } = await inProcess(args);
    assert.equal(code, 2, args.join(" "));
    assert.match(err, /^duet syncpoint: /, args.join(" "));
  }
});
