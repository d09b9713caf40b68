// The service over real sockets on 127.0.0.1, port 0.
import assert from "node:assert/strict";
import { waitFor } from "@duet/testkit";
import type { RunningService } from "@duet/core/service";
import { type RunningSyncpoint, startSyncpoint } from "./server.ts";

async function withServer(
  fn: (server: RunningSyncpoint) => Promise<void>,
  config: Parameters<typeof startSyncpoint>[0] = {},
): Promise<void> {
  const server = await startSyncpoint({ port: 0, ...config });
  try {
    await fn(server);
  } finally {
    await server.shutdown();
  }
}

function post(server: RunningSyncpoint, id: string, body?: string, query = ""): Promise<Response> {
  return fetch(new URL(`/wait-for-second-party/${id}${query}`, server.url), {
    method: "POST",
    ...(body === undefined ? {} : { body }),
  });
}

/** Sends a first party's request over a raw TCP connection, leaving it open. */
async function rawFirstParty(server: RunningSyncpoint, id: string): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: server.url.hostname, port: Number(server.url.port) });
  await conn.write(new TextEncoder().encode(
    `POST /wait-for-second-party/${id} HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n\r\ngone`,
  ));
  return conn;
}

async function metric(server: RunningSyncpoint, name: string): Promise<number> {
  const text = await (await fetch(new URL("/metrics", server.url))).text();
  const line = text.split("\n").find((l) => l.startsWith(name + " "));
  return Number(line?.split(" ")[1]);
}

Deno.test("syncpoint server: GET /healthz answers 200 ok", async () => {
  await withServer(async (server) => {
    const response = await fetch(new URL("/healthz", server.url));
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { status: "ok", waiting: 0 });
  });
});

Deno.test("syncpoint server: a first then a second party are both answered 200", async () => {
  await withServer(async (server) => {
    const first = post(server, "pair-1", "A");
    await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
    const second = await post(server, "pair-1", "B");
    assert.equal(second.status, 200);
    const secondBody = await second.json();
    assert.equal(secondBody.role, "second");
    assert.equal(secondBody.peer_payload, "A");
    const firstBody = await (await first).json();
    assert.equal(firstBody.role, "first");
    assert.equal(firstBody.peer_payload, "B");
  });
});

Deno.test("syncpoint server: a first party with no second gets 408 timeout", async () => {
  await withServer(async (server) => {
    const response = await post(server, "alone", undefined, "?timeout_ms=100");
    assert.equal(response.status, 408);
    assert.equal((await response.json()).code, "timeout");
  });
});

Deno.test("syncpoint server: the default --timeout-ms applies", async () => {
  await withServer(async (server) => {
    const response = await post(server, "alone");
    assert.equal(response.status, 408);
    assert.match((await response.json()).message, /within 150 ms/);
  }, { defaultTimeoutMs: 150 });
});

Deno.test("syncpoint server: a waiting party that hangs up frees its slot; the next one waits", async () => {
  await withServer(async (server) => {
    const conn = await rawFirstParty(server, "leaver");
    await waitFor(() => server.rendezvous.waiting === 1, "the raw party to wait");
    conn.close();
    await waitFor(() => server.rendezvous.waiting === 0, "the hang-up to free the slot");
    assert.equal(await metric(server, "syncpoint_departures_total"), 1);
    // The next party must not be paired with the one who left: it waits, then times out.
    const next = await post(server, "leaver", "hello?", "?timeout_ms=150");
    assert.equal(next.status, 408);
    assert.equal(await metric(server, "syncpoint_pairs_total"), 0);
  });
});

Deno.test("syncpoint server: a paired party's connection closing later does not disturb others", async () => {
  await withServer(async (server) => {
    const conn = await rawFirstParty(server, "keep");
    await waitFor(() => server.rendezvous.waiting === 1, "the raw party to wait");
    const second = await post(server, "keep", "hi");
    assert.equal((await second.json()).peer_payload, "gone");
    const reader = conn.readable.getReader();
    const { value } = await reader.read();
    assert.match(new TextDecoder().decode(value), /^HTTP\/1\.1 200 /);
    reader.releaseLock();
    const third = post(server, "keep", "third");
    await waitFor(() => server.rendezvous.waiting === 1, "the third party to wait");
    conn.close(); // the old connection goes away after its answer
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(server.rendezvous.waiting, 1, "the third party is still waiting");
    const fourth = await post(server, "keep", "fourth");
    assert.equal((await fourth.json()).peer_payload, "third");
    await third;
  });
});

Deno.test("syncpoint server: shutdown answers waiting parties 503 and stops accepting", async () => {
  const server = await startSyncpoint({ port: 0 });
  const waiting = [post(server, "s1"), post(server, "s2"), post(server, "s3")];
  await waitFor(() => server.rendezvous.waiting === 3, "three parties to wait");
  await server.shutdown();
  for (const response of await Promise.all(waiting)) {
    assert.equal(response.status, 503);
    assert.equal((await response.json()).code, "shutting_down");
  }
  await assert.rejects(fetch(new URL("/healthz", server.url)), TypeError);
});

Deno.test("syncpoint server: 300 concurrent pairs on different ids all pair correctly", async () => {
  await withServer(async (server) => {
    const ids = Array.from({ length: 300 }, (_, i) => `many-${i}`);
    const firsts = ids.map((id) => post(server, id, `first of ${id}`));
    await waitFor(() => server.rendezvous.waiting === ids.length, "all first parties to wait");
    const seconds = await Promise.all(ids.map((id) => post(server, id, `second of ${id}`)));
    for (const [i, response] of seconds.entries()) {
      assert.equal((await response.json()).peer_payload, `first of ${ids[i]}`);
    }
    for (const [i, response] of (await Promise.all(firsts)).entries()) {
      assert.equal((await response.json()).peer_payload, `second of ${ids[i]}`);
    }
    assert.equal(await metric(server, "syncpoint_pairs_total"), 300);
  });
});

Deno.test("syncpoint server: capacity is enforced over real connections", async () => {
  await withServer(async (server) => {
    const held = [post(server, "c1"), post(server, "c2")];
    await waitFor(() => server.rendezvous.waiting === 2, "two parties to wait");
    const refused = await post(server, "c3");
    assert.equal(refused.status, 503);
    assert.equal((await refused.json()).code, "capacity");
    await Promise.all(
      [post(server, "c1"), post(server, "c2")].map(async (r) => (await r).body?.cancel()),
    );
    for (const response of await Promise.all(held)) await response.body?.cancel();
  }, { maxWaiting: 2 });
});

Deno.test("syncpoint server: clients that hang up mid-body are departures, never internal errors", async () => {
  await withServer(async (server) => {
    const port = Number(server.url.port);
    const heads = [
      "Content-Length: 100\r\n\r\nonly ten b",
      "Transfer-Encoding: chunked\r\n\r\n10\r\n0123456789",
      "Content-Length: 65536\r\n\r\n" + "x".repeat(30_000),
    ];
    const n = 12;
    for (let i = 0; i < n; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(new TextEncoder().encode(
        `POST /wait-for-second-party/mid-${i} HTTP/1.1\r\nHost: t\r\n${heads[i % heads.length]}`,
      ));
      conn.close();
    }
    await waitFor(
      async () => (await metric(server, "syncpoint_departures_total")) === n,
      "every hang-up to count as a departure",
    );
    const text = await (await fetch(new URL("/metrics", server.url))).text();
    assert.doesNotMatch(text, /code="internal"/);
    assert.equal(server.rendezvous.waiting, 0);
    assert.equal(server.rendezvous.waitingBytes, 0);
    // And the service goes on pairing.
    const first = post(server, "after", "1");
    await waitFor(() => server.rendezvous.waiting === 1, "a party to wait");
    assert.equal((await (await post(server, "after", "2")).json()).peer_payload, "1");
    await (await first).body?.cancel();
  });
});

Deno.test("syncpoint server: per-address limits over real connections (loopback limited on request)", async () => {
  await withServer(async (server) => {
    const held = [post(server, "pa1"), post(server, "pa2")];
    await waitFor(() => server.rendezvous.waiting === 2, "two parties to wait");
    const refused = await post(server, "pa3");
    assert.equal(refused.status, 429);
    assert.equal((await refused.json()).code, "too_many_waiting");
    const paired = await post(server, "pa1");
    assert.equal(paired.status, 200, "a second party from the same address still pairs");
    await paired.body?.cancel();
    // The four arrivals above spent the burst of 4; the fifth is over the rate.
    const limited = await post(server, "pa4");
    assert.equal(limited.status, 429);
    assert.equal((await limited.json()).code, "rate_limited");
    assert.ok(Number(limited.headers.get("retry-after")) >= 1);
    await server.shutdown();
    for (const response of await Promise.all(held)) await response.body?.cancel();
  }, {
    maxWaitingPerAddress: 2,
    arrivalsPerSecond: 0.01, // no token comes back during the test
    arrivalBurst: 4,
    limitLoopback: true,
  });
});

Deno.test("syncpoint server: /metrics reports the listener and the held payload bytes", async () => {
  await withServer(async (server) => {
    const waiting = post(server, "bytes", "12345");
    await waitFor(() => server.rendezvous.waiting === 1, "a party to wait");
    assert.equal(await metric(server, "syncpoint_waiting_payload_bytes"), 5);
    assert.equal(await metric(server, "syncpoint_accepting"), 1);
    assert.equal(await metric(server, "syncpoint_accept_failures_total"), 0);
    await (await post(server, "bytes")).body?.cancel();
    await (await waiting).body?.cancel();
  });
});

Deno.test("syncpoint server: the wait endpoint's errors over real sockets are those of the API (the direct path)", async () => {
  await withServer(async (server) => {
    const call = async (path: string, init: RequestInit = {}) => {
      const response = await fetch(new URL(path, server.url), { method: "POST", ...init });
      const text = await response.text();
      return { status: response.status, code: text ? JSON.parse(text).code : undefined };
    };
    assert.deepEqual(await call("/wait-for-second-party/bad%20id"), {
      status: 400,
      code: "invalid_id",
    });
    assert.deepEqual(await call("/wait-for-second-party/x?timeout_ms=soon"), {
      status: 400,
      code: "invalid_timeout",
    });
    assert.deepEqual(await call("/wait-for-second-party/x", { body: "x".repeat(65_537) }), {
      status: 413,
      code: "payload_too_large",
    });
    // Streamed (chunked, no length): cut off past the limit, answered 413.
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < 5; i++) controller.enqueue(new Uint8Array(20_000).fill(120));
        controller.close();
      },
    });
    assert.deepEqual(await call("/wait-for-second-party/x", { body: stream }), {
      status: 413,
      code: "payload_too_large",
    });
    assert.deepEqual(await call("/wait-for-second-party/x", { body: new Uint8Array([0xff]) }), {
      status: 400,
      code: "invalid_payload",
    });
    assert.deepEqual(await call("/wait-for-second-party/x", { method: "GET" }), {
      status: 405,
      code: "method_not_allowed",
    });
    // A percent-encoded id is the id it spells.
    const first = post(server, "a.b", "one");
    await waitFor(() => server.rendezvous.waiting === 1, "the first party");
    const second = await (await fetch(new URL("/wait-for-second-party/a%2Eb", server.url), {
      method: "POST",
      body: "two",
    })).json();
    assert.equal(second.peer_payload, "one");
    assert.equal((await (await first).json()).peer_payload, "two");
    assert.equal(await metric(server, 'syncpoint_rejections_total{code="payload_too_large"}'), 2);
  });
});

/** Sends raw bytes on a new connection; the status line and body of the answer. */
async function raw(server: RunningSyncpoint, request: string): Promise<[string, string]> {
  const conn = await Deno.connect({ hostname: server.url.hostname, port: Number(server.url.port) });
  await conn.write(new TextEncoder().encode(request));
  const chunks: string[] = [];
  const buffer = new Uint8Array(4_096);
  const decoder = new TextDecoder();
  // Every request here closes the connection after its answer (bad request, HTTP/1.0).
  for (let n; (n = await conn.read(buffer).catch(() => null)) !== null;) {
    chunks.push(decoder.decode(buffer.subarray(0, n), { stream: true }));
  }
  conn.close();
  const text = chunks.join("");
  return [text.slice(0, text.indexOf("\r\n")), text.slice(text.indexOf("\r\n\r\n") + 4)];
}

Deno.test("syncpoint server: malformed requests get 400 bad_request, counted, never 500; HTTP/1.0 health checks need no Host", async () => {
  await withServer(async (server) => {
    const bad = [
      "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST * HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: [::1\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: x:99999\r\n\r\n",
      // The form of an IP literal, and no address: refused on every path alike.
      "GET /healthz HTTP/1.1\r\nHost: [:::::::]\r\n\r\n",
      "POST /wait-for-second-party/x HTTP/1.1\r\nHost: [:::::::]\r\nContent-Length: 0\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
      // The wait endpoint's direct path checks Host as the rest does.
      "POST /wait-for-second-party/x HTTP/1.1\r\nHost: a b\r\nContent-Length: 0\r\n\r\n",
      // Framing two parsers could read two ways (request smuggling), and obs-fold.
      "POST /wait-for-second-party/s HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n" +
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "POST /wait-for-second-party/s HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
      "POST /wait-for-second-party/s HTTP/1.1\r\nHost: x\r\nX: y\r\n Content-Length: 2\r\n\r\nab",
    ];
    const [coded, codedBody] = await raw(
      server,
      "POST /wait-for-second-party/gz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    );
    assert.equal(coded, "HTTP/1.1 501 Not Implemented", "a coding the server cannot undo");
    assert.equal(JSON.parse(codedBody).code, "not_implemented");
    for (const request of bad) {
      const [status, body] = await raw(server, request);
      assert.equal(status, "HTTP/1.1 400 Bad Request", JSON.stringify(request));
      assert.equal(JSON.parse(body).code, "bad_request", JSON.stringify(request));
    }
    // What node would answer with an empty body (or not at all) gets the API's JSON too.
    const others: [string, string, string][] = [
      ["GET /healthz HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request", "bad_request"],
      [
        "GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n",
        "HTTP/1.1 417 Expectation Failed",
        "expectation_failed",
      ],
      [
        `GET /healthz HTTP/1.1\r\nHost: x\r\nX: ${"a".repeat(20_000)}\r\n\r\n`,
        "HTTP/1.1 431 Request Header Fields Too Large",
        "headers_too_large",
      ],
      [
        "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "HTTP/1.1 405 Method Not Allowed",
        "method_not_allowed",
      ],
      [
        "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
        "HTTP/1.1 505 HTTP Version Not Supported",
        "http_version_not_supported",
      ],
    ];
    for (const [request, line, code] of others) {
      const [status, body] = await raw(server, request);
      assert.equal(status, line, request.slice(0, 40));
      assert.equal(JSON.parse(body).code, code, request.slice(0, 40));
    }
    // A request node cannot parse gets the same answer.
    const [unparsed, unparsedBody] = await raw(
      server,
      "POST /wait-for-second-party/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    );
    assert.equal(unparsed, "HTTP/1.1 400 Bad Request");
    assert.equal(JSON.parse(unparsedBody).code, "bad_request");
    assert.equal(
      await metric(server, 'syncpoint_rejections_total{code="bad_request"}'),
      bad.length + 2, // and the missing Host among the others
    );
    assert.equal(await metric(server, 'syncpoint_rejections_total{code="internal"}'), NaN);
    // What HAProxy's default `option httpchk` sends: HTTP/1.0, no Host.
    const [status, body] = await raw(server, "GET /healthz HTTP/1.0\r\n\r\n");
    assert.equal(status, "HTTP/1.1 200 OK");
    assert.equal(JSON.parse(body).status, "ok");
    const [ipv6] = await raw(server, "GET /healthz HTTP/1.0\r\nHost: [::1]:8080\r\n\r\n");
    assert.equal(ipv6, "HTTP/1.1 200 OK");
    // "." and "..", raw or escaped, are not ids: clients remove such segments from URLs
    // (RFC 3986 section 5.2.4), so no client could reach a party waiting on one.
    for (const id of [".", "..", "%2E", "%2e%2E"]) {
      const [status, body] = await raw(
        server,
        `POST /wait-for-second-party/${id}?timeout_ms=1 HTTP/1.0\r\nContent-Length: 0\r\n\r\n`,
      );
      assert.equal(status, "HTTP/1.1 400 Bad Request", id);
      assert.equal(JSON.parse(body).code, "invalid_id", id);
    }
  });
});

Deno.test("syncpoint server: a CONNECT whose client resets at once does not end the process", async () => {
  await withServer(async (server) => {
    for (let i = 0; i < 5; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(server.url.port) });
      await conn.write(new TextEncoder().encode("CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n"));
      conn.close(); // the 405 arrives unread: a reset
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const health = await fetch(new URL("/healthz", server.url));
    assert.equal(health.status, 200);
    await health.body?.cancel();
  });
});

Deno.test("syncpoint server: the shape of every duet server (addr, finished after shutdown)", async () => {
  const server = await startSyncpoint({ port: 0 });
  const service: RunningService = server;
  assert.equal(service.addr.transport, "tcp");
  assert.equal(service.addr.port, Number(server.url.port));
  assert.equal(service.addr.hostname, server.url.hostname);
  let finished = false;
  service.finished.then(() => (finished = true));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(finished, false, "running until shut down");
  const waiting = post(server, "shape");
  await waitFor(() => server.rendezvous.waiting === 1, "the party to wait");
  await Promise.all([service.shutdown(), service.shutdown()]);
  await service.finished;
  assert.equal(server.draining, true);
  assert.equal((await waiting).status, 503);
});

Deno.test("syncpoint server: durations are checked at setTimeout's bound (2^31 − 1 ok; 2^31, 30 days refused)", async () => {
  const bound = 2 ** 31 - 1;
  for (const name of ["defaultTimeoutMs", "maxTimeoutMs", "drainMs"] as const) {
    for (const ms of [2 ** 31, 30 * 24 * 3600_000, Infinity, -1, NaN]) {
      await assert.rejects(
        startSyncpoint({ port: 0, [name]: ms }),
        (e) => e instanceof RangeError && e.message.startsWith(`${name} must be`),
        `${name} ${ms}`,
      );
    }
  }
  // A default wait longer than the cap is refused; a setting given as undefined is the default.
  await assert.rejects(
    startSyncpoint({ port: 0, defaultTimeoutMs: 20_000, maxTimeoutMs: 10_000 }),
    /defaultTimeoutMs \(20000\) must not exceed maxTimeoutMs \(10000\)/,
  );
  const defaulted = await startSyncpoint({ port: 0, drainMs: undefined, maxTimeoutMs: undefined });
  await defaulted.shutdown();
  // At the bound: a party's wait of 2^31 − 1 ms does not end early.
  await withServer(async (server) => {
    const waiting = post(server, "bound");
    await waitFor(() => server.rendezvous.waiting === 1, "the party to wait");
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(server.rendezvous.waiting, 1, "still waiting");
    const second = await post(server, "bound", "hi");
    assert.equal(second.status, 200);
    await second.body?.cancel();
    assert.equal((await (await waiting).json()).peer_payload, "hi");
  }, { defaultTimeoutMs: bound, maxTimeoutMs: bound });
});

Deno.test("syncpoint server: payloads up to the limit cross whole, however their bytes arrive", async () => {
  await withServer(async (server) => {
    // Around the 64 KiB of a first socket read (head and body together), and at the limit.
    for (const size of [65_000, 65_400, 65_468, 65_536]) {
      const text = (n: number, seed: string) => seed.repeat(Math.ceil(n / seed.length)).slice(0, n);
      const a = text(size, "abcdefghij");
      const b = text(size, "0123456789");
      const id = `whole-${size}`;
      // The first party in three pieces over a raw socket; the second with fetch.
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(server.url.port) });
      const request = new TextEncoder().encode(
        `POST /wait-for-second-party/${id} HTTP/1.1\r\nHost: t\r\nContent-Length: ${size}\r\n` +
          `Connection: close\r\n\r\n${a}`,
      );
      const third = Math.ceil(request.length / 3);
      for (let at = 0; at < request.length; at += third) {
        await conn.write(request.subarray(at, at + third));
      }
      await waitFor(() => server.rendezvous.waiting === 1, "the first party to wait");
      const second = await (await post(server, id, b)).json();
      assert.equal(second.peer_payload.length, size, `${size}: the second party's copy`);
      assert.equal(second.peer_payload, a);
      const first = await new Response(conn.readable).text();
      const json = JSON.parse(first.slice(first.indexOf("\r\n\r\n") + 4));
      assert.equal(json.peer_payload, b, `${size}: the first party's copy`);
    }
  });
});
