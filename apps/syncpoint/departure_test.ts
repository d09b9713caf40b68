// A party that left is never paired, whatever it sent and however it left; a party that
// only half-closed is kept and gets its answer. Real sockets on 127.0.0.1, one instance and
// two instances over Redis. (Deno.serve missed every leave after a request of more than
// 512 bytes: packages/net/testdata/deno_serve_hangup.ts.)
import assert from "node:assert/strict";
import { findRedis, python, testWith, waitFor } from "@duet/testkit";
import { type RunningSyncpoint, startSyncpoint } from "./server.ts";

const SIZES = [0, 100, 300, 460, 1_000, 8_000, 65_000];
const encoder = new TextEncoder();

type Framing = "length" | "chunked";

/** Sends a first party's whole request (its payload is `size` bytes) over raw TCP. */
async function sendFirst(
  server: RunningSyncpoint,
  id: string,
  size: number,
  framing: Framing,
): Promise<{ conn: Deno.TcpConn; payload: string }> {
  const payload = `gone:${id}:`.padEnd(size, "x").slice(0, size);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(server.url.port) });
  const head = `POST /wait-for-second-party/${id}?timeout_ms=30000 HTTP/1.1\r\nHost: test\r\n`;
  const request = framing === "length"
    ? `${head}Content-Length: ${payload.length}\r\n\r\n${payload}`
    : `${head}Transfer-Encoding: chunked\r\n\r\n` +
      (payload.length ? `${payload.length.toString(16)}\r\n${payload}\r\n` : "") + "0\r\n\r\n";
  const bytes = encoder.encode(request);
  for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
  return { conn, payload };
}

/** Everything the server sends until it closes (bounded by the test's own deadlines). */
async function readAll(conn: Deno.TcpConn): Promise<string> {
  const chunks: string[] = [];
  const buffer = new Uint8Array(16_384);
  const decoder = new TextDecoder();
  for (;;) {
    const n = await conn.read(buffer).catch(() => null);
    if (n === null) break;
    chunks.push(decoder.decode(buffer.subarray(0, n), { stream: true }));
  }
  return chunks.join("");
}

function post(server: RunningSyncpoint, id: string, body: string): Promise<Response> {
  return fetch(new URL(`/wait-for-second-party/${id}?timeout_ms=30000`, server.url), {
    method: "POST",
    body,
  });
}

/** Parties waiting on these instances (each counted once). */
const waitingOn = (servers: RunningSyncpoint[]) =>
  [...new Set(servers)].reduce((sum, server) => sum + server.rendezvous.waiting, 0);

/**
 * For every size and framing: the first party (on `first`) sends its request and leaves by
 * closing its socket; the next party (on `second`) must not get its payload: it waits, and
 * pairs with a third party instead.
 */
async function departedNeverPaired(first: RunningSyncpoint, second: RunningSyncpoint) {
  const all = [first, second];
  for (const framing of ["length", "chunked"] as const) {
    for (const size of SIZES) {
      const id = `left-${framing}-${size}-${crypto.randomUUID().slice(0, 8)}`;
      const { conn } = await sendFirst(first, id, size, framing);
      await waitFor(() => first.rendezvous.waiting === 1, `the first party (${size} B) to wait`);
      conn.close();
      await waitFor(() => waitingOn(all) === 0, `the departure of ${framing} ${size} B`, 10_000);
      const next = post(second, id, "next");
      await waitFor(() => waitingOn(all) === 1, "the next party to wait, not be paired");
      const third = await (await post(first, id, "third")).json();
      assert.equal(third.peer_payload, "next", `${framing} ${size}`);
      const nextBody = await (await next).json();
      assert.equal(nextBody.peer_payload, "third");
      // Across instances the two may reach Redis in either order: one waited, one found it.
      assert.deepEqual([nextBody.role, third.role].sort(), ["first", "second"]);
    }
  }
}

/**
 * For every size and framing: the first party sends its request and half-closes; it is
 * kept, paired with the next party, and reads its 200 answer (after interim 100s).
 */
async function halfClosedKept(first: RunningSyncpoint, second: RunningSyncpoint) {
  for (const framing of ["length", "chunked"] as const) {
    for (const size of SIZES) {
      const id = `half-${framing}-${size}-${crypto.randomUUID().slice(0, 8)}`;
      const { conn, payload } = await sendFirst(first, id, size, framing);
      await waitFor(() => first.rendezvous.waiting === 1, "the first party to wait");
      await conn.closeWrite();
      // Let the FIN arrive and the first probe run: the party must still be held after it.
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.equal(first.rendezvous.waiting, 1, `half-closed ${framing} ${size} B is kept`);
      const next = await post(second, id, "next");
      assert.equal(next.status, 200);
      const nextBody = await next.json();
      assert.deepEqual([nextBody.role, nextBody.peer_payload], ["second", size ? payload : null]);
      const answer = await readAll(conn);
      conn.close();
      assert.match(answer, /^(HTTP\/1\.1 100 Continue\r\n\r\n)*HTTP\/1\.1 200 OK\r\n/);
      const body = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n{") + 4));
      assert.deepEqual([body.role, body.peer_payload], ["first", "next"]);
    }
  }
}

/** A half-close sent at once with the request (as `nc -N` does) keeps the party too. */
async function halfClosedAtOnce(server: RunningSyncpoint) {
  for (const size of [0, 1_000]) {
    const id = `at-once-${size}-${crypto.randomUUID().slice(0, 8)}`;
    const { conn } = await sendFirst(server, id, size, "length");
    await conn.closeWrite();
    await waitFor(() => server.rendezvous.waiting === 1, "the half-closed party to wait");
    const next = await post(server, id, "next");
    assert.equal(next.status, 200, `half-closed at once, ${size} B`);
    await next.body?.cancel();
    const answer = await readAll(conn);
    conn.close();
    assert.match(answer, /HTTP\/1\.1 200 OK\r\n/);
  }
}

/** A reset (close with unread data on the client) is a departure too. */
async function resetIsDeparture(first: RunningSyncpoint, second: RunningSyncpoint) {
  const id = `reset-${crypto.randomUUID().slice(0, 8)}`;
  const { conn } = await sendFirst(first, id, 8_000, "length");
  await waitFor(() => first.rendezvous.waiting === 1, "the first party to wait");
  await conn.closeWrite();
  // The probes (100 Continue) are now unread on the client: closing resets the connection.
  await new Promise((resolve) => setTimeout(resolve, 100));
  conn.close();
  await waitFor(() => first.rendezvous.waiting === 0, "the reset party's departure", 10_000);
  const next = post(second, id, "next");
  await waitFor(() => waitingOn([first, second]) === 1, "the next party to wait");
  const third = await (await post(first, id, "third")).json();
  assert.equal(third.peer_payload, "next");
  await (await next).body?.cancel();
}

/** Two waits pipelined on one connection (the second is queued behind the first's answer). */
async function sendPipelined(
  server: RunningSyncpoint,
  ids: [string, string],
  size: number,
): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(server.url.port) });
  const request = (id: string) => {
    const payload = `piped:${id}:`.padEnd(size, "x").slice(0, size);
    return `POST /wait-for-second-party/${id}?timeout_ms=30000 HTTP/1.1\r\nHost: test\r\n` +
      `Content-Length: ${payload.length}\r\n\r\n${payload}`;
  };
  const bytes = encoder.encode(request(ids[0]) + request(ids[1]));
  for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
  return conn;
}

/**
 * Both pipelined parties leave when their connection closes (gently, or reset by unread
 * data): neither is paired later, the queued one included.
 */
async function pipelinedDeparture(first: RunningSyncpoint, second: RunningSyncpoint) {
  const all = [first, second];
  for (const how of ["close", "reset"] as const) {
    for (const size of [0, 1_000]) {
      const tag = `${how}-${size}-${crypto.randomUUID().slice(0, 8)}`;
      const ids: [string, string] = [`piped-a-${tag}`, `piped-b-${tag}`];
      const conn = await sendPipelined(first, ids, size);
      await waitFor(() => first.rendezvous.waiting === 2, "both pipelined parties to wait");
      if (how === "reset") {
        await conn.closeWrite(); // probes (100 Continue) arrive unread: the close resets
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      conn.close();
      await waitFor(() => waitingOn(all) === 0, `both pipelined parties' departure (${how})`);
      for (const id of ids) {
        const next = post(second, id, "next");
        await waitFor(() => waitingOn(all) === 1, `the next party on ${id} to wait, not be paired`);
        const third = await (await post(first, id, "third")).json();
        assert.equal(third.peer_payload, "next", `${how} ${size} B: ${id}`);
        await (await next).body?.cancel();
      }
    }
  }
}

/**
 * Two pipelined waits, then a half-close: both are kept; a partner of the queued one is
 * paired with it (its presence confirmed while it is queued), and the connection carries
 * both answers in order.
 */
async function pipelinedHalfClosedKept(first: RunningSyncpoint, second: RunningSyncpoint) {
  const tag = crypto.randomUUID().slice(0, 8);
  const ids: [string, string] = [`kept-a-${tag}`, `kept-b-${tag}`];
  const conn = await sendPipelined(first, ids, 1_000);
  await waitFor(() => first.rendezvous.waiting === 2, "both pipelined parties to wait");
  await conn.closeWrite();
  await new Promise((resolve) => setTimeout(resolve, 400));
  // The queued party first: its partner must get a verdict, not wait for the head's answer.
  const forB = await post(second, ids[1], "for-b");
  assert.equal(forB.status, 200);
  assert.equal((await forB.json()).role, "second");
  const forA = await post(second, ids[0], "for-a");
  assert.equal(forA.status, 200);
  await forA.body?.cancel();
  const answer = await readAll(conn);
  conn.close();
  const bodies = [...answer.matchAll(/HTTP\/1\.1 200 OK\r\n[^]*?\r\n\r\n(\{[^}]*\})/g)]
    .map((match) => JSON.parse(match[1]!).peer_payload);
  assert.deepEqual(bodies, ["for-a", "for-b"]);
}

/**
 * A reset long after a half-close (the probes done, the party kept) is noticed by the next
 * periodic probe: the slot is freed without waiting for a partner or the timeout.
 */
async function lateResetIsDeparture(server: RunningSyncpoint) {
  const id = `late-reset-${crypto.randomUUID().slice(0, 8)}`;
  const { conn } = await sendFirst(server, id, 1_000, "length");
  await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
  await conn.closeWrite();
  await new Promise((resolve) => setTimeout(resolve, 1_000)); // the FIN's probe passed
  assert.equal(server.rendezvous.waiting, 1, "kept after its probe");
  conn.close(); // the interim answers are unread: a reset
  await waitFor(() => server.rendezvous.waiting === 0, "the late reset's departure", 10_000);
}

/**
 * The first party half-closed, so the next one's arrival waits for its probe (~250 ms);
 * the next party hangs up meanwhile (reset, or close: a FIN, which is probed too): it is
 * not paired, the first waits on and pairs with a third. Over Redis only the reset is
 * tested: a FIN there races the waiter's probe (apps/syncpoint/README.md, Departures).
 */
async function claimerLeavesDuringProbe(
  first: RunningSyncpoint,
  second: RunningSyncpoint,
  how: "reset" | "close",
) {
  const id = `claimer-${how}-${crypto.randomUUID().slice(0, 8)}`;
  const { conn, payload } = await sendFirst(first, id, 100, "length");
  await waitFor(() => first.rendezvous.waiting === 1, "the first party to wait");
  await conn.closeWrite();
  await new Promise((resolve) => setTimeout(resolve, 600)); // kept by its FIN's probe
  if (how === "reset") {
    // A reset 50 ms after the request: SO_LINGER 0, which Deno's sockets cannot set.
    const script = `import socket, struct, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.argv[2].encode())
time.sleep(0.05)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()`;
    const request = `POST /wait-for-second-party/${id}?timeout_ms=30000 HTTP/1.1\r\n` +
      "Host: test\r\nContent-Length: 4\r\n\r\nleft";
    const { success } = await new Deno.Command(python, {
      args: ["-c", script, second.url.port, request],
    }).output();
    assert.ok(success, "the resetting client ran");
  } else {
    const { conn: leaving } = await sendFirst(second, id, 100, "length");
    await new Promise((resolve) => setTimeout(resolve, 50));
    await leaving.closeWrite(); // its FIN: probed (a reset answers), so not paired
    await new Promise((resolve) => setTimeout(resolve, 20));
    leaving.close();
  }
  // After the probe (a third party meanwhile would get 409 conflict, the pair in progress).
  await new Promise((resolve) => setTimeout(resolve, 700));
  const thirdBody = await (await post(second, id, "third")).json();
  assert.equal(thirdBody.peer_payload, payload, `${how}: the third party pairs with the first`);
  const answer = await readAll(conn);
  conn.close();
  const body = JSON.parse(answer.slice(answer.indexOf("\r\n\r\n{") + 4));
  assert.equal(
    body.peer_payload,
    "third",
    `${how}: the first party never gets the leaver's payload`,
  );
}

/**
 * A request that ends (FIN) before its body is complete can never complete: the client,
 * which can still read, gets 400 bad_request, and nobody waits for it.
 */
async function finMidBody(server: RunningSyncpoint) {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(server.url.port) });
  await conn.write(encoder.encode(
    "POST /wait-for-second-party/cut HTTP/1.1\r\nHost: test\r\nContent-Length: 6\r\n\r\nabc",
  ));
  await conn.closeWrite();
  const answer = await readAll(conn);
  conn.close();
  assert.match(answer, /HTTP\/1\.1 400 Bad Request\r\n/);
  assert.equal(JSON.parse(answer.slice(answer.indexOf("\r\n\r\n{") + 4)).code, "bad_request");
  assert.equal(server.rendezvous.waiting, 0);
}

/**
 * An HTTP/1.1 wait, then an HTTP/1.0 one pipelined behind it, then a half-close: the
 * HTTP/1.1 party is kept (probed through its own answer) and paired.
 */
async function http10BehindHalfClosed(server: RunningSyncpoint) {
  const tag = crypto.randomUUID().slice(0, 8);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(server.url.port) });
  await conn.write(encoder.encode(
    `POST /wait-for-second-party/v11-${tag}?timeout_ms=10000 HTTP/1.1\r\nHost: test\r\n` +
      "Content-Length: 3\r\n\r\none" +
      `POST /wait-for-second-party/v10-${tag}?timeout_ms=10000 HTTP/1.0\r\n` +
      "Connection: keep-alive\r\nContent-Length: 3\r\n\r\ntwo",
  ));
  await waitFor(() => server.rendezvous.waiting === 2, "both to wait");
  await conn.closeWrite();
  await new Promise((resolve) => setTimeout(resolve, 800));
  const partner = await post(server, `v11-${tag}`, "for one");
  assert.equal(partner.status, 200, "the HTTP/1.1 party is still there");
  assert.equal((await partner.json()).peer_payload, "one");
  const answer = await readAll(conn);
  conn.close();
  assert.match(answer, /HTTP\/1\.1 200 OK\r\n/);
}

async function withServer(fn: (server: RunningSyncpoint) => Promise<void>) {
  const server = await startSyncpoint({ port: 0 });
  try {
    await fn(server);
  } finally {
    await server.shutdown();
  }
}

Deno.test("departure: a first party that closes after any body (length or chunked) is never paired", () =>
  withServer((server) => departedNeverPaired(server, server)));

Deno.test("departure: a half-closed first party is kept and reads its answer, any body size", () =>
  withServer((server) => halfClosedKept(server, server)));

Deno.test("departure: a party that half-closes together with its request is kept", () =>
  withServer((server) => halfClosedAtOnce(server)));

Deno.test("departure: a reset after a half-close is a departure", () =>
  withServer((server) => resetIsDeparture(server, server)));

Deno.test("departure: a reset long after a half-close frees the slot by the next probe", () =>
  withServer((server) => lateResetIsDeparture(server)));

Deno.test("departure: an HTTP/1.0 party that sends its FIN has left (no 1xx can reach it)", () =>
  withServer(async (server) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(server.url.port) });
    const body = "x".repeat(1_000);
    await conn.write(encoder.encode(
      `POST /wait-for-second-party/old HTTP/1.0\r\nHost: test\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    ));
    await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
    await conn.closeWrite();
    await waitFor(() => server.rendezvous.waiting === 0, "its departure");
    conn.close();
  }));

Deno.test("departure: pipelined parties that leave are never paired, the queued one included", () =>
  withServer((server) => pipelinedDeparture(server, server)));

Deno.test("departure: pipelined half-closed parties are kept, confirmed while queued, answered in order", () =>
  withServer((server) => pipelinedHalfClosedKept(server, server)));

Deno.test("departure: a second party that leaves while the half-closed first is probed is never paired", () =>
  withServer(async (server) => {
    await claimerLeavesDuringProbe(server, server, "reset");
    await claimerLeavesDuringProbe(server, server, "close");
  }));

Deno.test("departure: a FIN before the body is complete gets 400 bad_request, and holds nothing", () =>
  withServer(finMidBody));

Deno.test("departure: an HTTP/1.0 request pipelined behind a half-closed HTTP/1.1 party does not drop it", () =>
  withServer(http10BehindHalfClosed));

const redis = await findRedis();

async function withRedisPair(fn: (a: RunningSyncpoint, b: RunningSyncpoint) => Promise<void>) {
  const redisPrefix = `duet-test:${crypto.randomUUID()}`;
  const a = await startSyncpoint({ port: 0, redisUrl: redis.url, redisPrefix });
  const b = await startSyncpoint({ port: 0, redisUrl: redis.url, redisPrefix });
  try {
    await fn(a, b);
  } finally {
    await Promise.all([a.shutdown(), b.shutdown()]);
  }
}

testWith(redis, {
  name: "departure over Redis: a party that closed after any body is never paired across instances",
  fn: () => withRedisPair((a, b) => departedNeverPaired(a, b)),
});

testWith(redis, {
  name: "departure over Redis: a half-closed party is kept and paired across instances",
  fn: () => withRedisPair((a, b) => halfClosedKept(a, b)),
});

testWith(redis, {
  name: "departure over Redis: pipelined parties that leave are never paired across instances",
  fn: () => withRedisPair((a, b) => pipelinedDeparture(a, b)),
});

testWith(redis, {
  name:
    "departure over Redis: a claimer that hangs up while the half-closed waiter is probed is never paired",
  fn: () => withRedisPair((a, b) => claimerLeavesDuringProbe(a, b, "reset")),
});
