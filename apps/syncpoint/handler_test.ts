// The API without sockets: Request objects in, Response objects out.
import assert from "node:assert/strict";
import { createApp, type HandlerOptions } from "./handler.ts";
import { SyncpointMetrics } from "./metrics.ts";
import { LocalRendezvous, type LocalRendezvousOptions } from "./rendezvous.ts";
import { waitFor } from "@duet/testkit";

function api(
  overrides:
    & { maxWaiting?: number; defaultTimeoutMs?: number }
    & Omit<Partial<LocalRendezvousOptions>, "events">
    & Pick<HandlerOptions, "arrivalRate" | "limitLoopback" | "listener"> = {},
) {
  const { defaultTimeoutMs, arrivalRate, limitLoopback, listener, ...limits } = overrides;
  const metrics = new SyncpointMetrics(() => rendezvous.waiting, {
    waitingBytes: () => rendezvous.waitingBytes,
  });
  const rendezvous: LocalRendezvous = new LocalRendezvous({
    maxWaiting: 100,
    ...limits,
    events: metrics.events,
  });
  const app = createApp({
    rendezvous,
    metrics,
    defaultTimeoutMs: defaultTimeoutMs ?? 10_000,
    maxTimeoutMs: 60_000,
    maxPayloadBytes: 64 * 1024,
    ...(arrivalRate ? { arrivalRate } : {}),
    ...(limitLoopback ? { limitLoopback } : {}),
    ...(listener ? { listener } : {}),
  });
  const post = (path: string, body?: BodyInit, init: RequestInit = {}) =>
    app.request(path, { method: "POST", ...(body === undefined ? {} : { body }), ...init });
  /** Posts as a first party and resolves once it is on hold, with its pending response. */
  const hold = async (path: string, body?: BodyInit) => {
    const before = rendezvous.waiting;
    const response = post(path, body);
    await waitFor(() => rendezvous.waiting === before + 1, `${path} to be held`);
    return { response };
  };
  return { app, rendezvous, metrics, post, hold };
}

async function json(response: Response): Promise<Record<string, unknown>> {
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  return await response.json();
}

Deno.test("POST /wait-for-second-party/:id pairs two parties with 200 and swaps payloads", async () => {
  const { post, hold } = api();
  const { response: first } = await hold("/wait-for-second-party/job-7", "hello from A");
  const second = await post("/wait-for-second-party/job-7", "hello from B");
  assert.equal(second.status, 200);
  assert.deepEqual(await json(second), {
    status: "paired",
    id: "job-7",
    role: "second",
    waited_ms: 0,
    peer_payload: "hello from A",
  });
  const firstResponse = await first;
  assert.equal(firstResponse.status, 200);
  const firstBody = await json(firstResponse);
  assert.equal(firstBody["role"], "first");
  assert.equal(firstBody["peer_payload"], "hello from B");
  assert.equal(typeof firstBody["waited_ms"], "number");
});

Deno.test("a party with an empty body gets peer_payload null on the other side", async () => {
  const { post, hold } = api();
  const { response: first } = await hold("/wait-for-second-party/x");
  const second = await json(await post("/wait-for-second-party/x", "only me"));
  assert.equal(second["peer_payload"], null);
  assert.equal((await json(await first))["peer_payload"], "only me");
});

Deno.test("Unicode payloads pass through unchanged", async () => {
  const { post, hold } = api();
  const text = "привет 👋 — ünïcødé";
  const { response: first } = await hold("/wait-for-second-party/u", text);
  await post("/wait-for-second-party/u", "ok");
  assert.equal((await json(await first))["peer_payload"], "ok");
  const { response: again } = await hold("/wait-for-second-party/u", "ok");
  assert.equal((await json(await post("/wait-for-second-party/u", text)))["peer_payload"], "ok");
  assert.equal((await json(await again))["peer_payload"], text);
});

Deno.test("a lone first party gets 408 with code timeout after ?timeout_ms", async () => {
  const { post } = api();
  const response = await post("/wait-for-second-party/lonely?timeout_ms=40");
  assert.equal(response.status, 408);
  const body = await json(response);
  assert.equal(body["code"], "timeout");
  assert.match(String(body["message"]), /40 ms/);
});

Deno.test("the server's default timeout applies without ?timeout_ms", async () => {
  const { post } = api({ defaultTimeoutMs: 30 });
  const response = await post("/wait-for-second-party/lonely");
  assert.equal(response.status, 408);
  assert.match(String((await json(response))["message"]), /30 ms/);
});

Deno.test("?timeout_ms above the server's cap is capped, not refused", async () => {
  const { post, rendezvous } = api();
  // Past any integer a timer can hold, too (a number of 400 digits is Infinity to JS).
  const asks = ["999999999", "1000000000", "9".repeat(400)];
  const waiting = asks.map((ask, i) =>
    post(`/wait-for-second-party/capped-${i}?timeout_ms=${ask}`)
  );
  await waitFor(() => rendezvous.waiting === asks.length, "every party to be held");
  await rendezvous.close();
  for (const answer of waiting) assert.equal((await answer).status, 503);
});

Deno.test("bad ids get 400 invalid_id", async () => {
  const { post } = api();
  for (
    const path of [
      "/wait-for-second-party/" + "a".repeat(129),
      "/wait-for-second-party/a%20b",
      "/wait-for-second-party/a%2Fb",
      "/wait-for-second-party/a/b",
      "/wait-for-second-party/",
      "/wait-for-second-party",
      "/wait-for-second-party/caf%C3%A9",
      "/wait-for-second-party/a*b",
    ]
  ) {
    const response = await post(path);
    assert.equal(response.status, 400, path);
    assert.equal((await json(response))["code"], "invalid_id", path);
  }
  const longest = post("/wait-for-second-party/" + "a".repeat(128) + "?timeout_ms=1");
  assert.equal((await longest).status, 408, "128 characters is allowed");
  const unreserved = post("/wait-for-second-party/A-z_0.9~?timeout_ms=1");
  assert.equal((await unreserved).status, 408, "all of [A-Za-z0-9._~-] is allowed");
  const dots = post("/wait-for-second-party/...?timeout_ms=1");
  assert.equal((await dots).status, 408, "three dots are an id");
});

Deno.test("bad ?timeout_ms values get 400 invalid_timeout", async () => {
  const { post } = api();
  for (const value of ["0", "-5", "abc", "1.5", "", "1e3", "00", " 5"]) {
    const response = await post(`/wait-for-second-party/t?timeout_ms=${value}`);
    assert.equal(response.status, 400, value);
    assert.equal((await json(response))["code"], "invalid_timeout", value);
  }
});

Deno.test("other methods on the wait endpoint get 405 with Allow: POST", async () => {
  const { app } = api();
  for (const method of ["GET", "PUT", "DELETE", "PATCH"]) {
    const response = await app.request("/wait-for-second-party/abc", { method });
    assert.equal(response.status, 405, method);
    assert.equal(response.headers.get("allow"), "POST");
    assert.equal((await json(response))["code"], "method_not_allowed");
  }
  const postHealth = await app.request("/healthz", { method: "POST" });
  assert.equal(postHealth.status, 405);
});

Deno.test("a payload over 64 KiB gets 413, declared or streamed", async () => {
  const { post, rendezvous } = api();
  const big = "x".repeat(64 * 1024 + 1);
  const declared = await post("/wait-for-second-party/big", big);
  assert.equal(declared.status, 413);
  assert.equal((await json(declared))["code"], "payload_too_large");
  const stream = new ReadableStream({
    start(controller) {
      for (let i = 0; i < 70; i++) controller.enqueue(new Uint8Array(1024));
      controller.close();
    },
  });
  const streamed = await post(
    "/wait-for-second-party/big",
    stream,
    { duplex: "half" } as RequestInit,
  );
  assert.equal(streamed.status, 413);
  assert.equal(rendezvous.waiting, 0, "a refused party does not wait");
  const exact = post("/wait-for-second-party/big?timeout_ms=1", "x".repeat(64 * 1024));
  assert.equal((await exact).status, 408, "exactly 64 KiB is allowed");
});

Deno.test("a payload that is not UTF-8 gets 400 invalid_payload", async () => {
  const { post } = api();
  const response = await post("/wait-for-second-party/bin", new Uint8Array([0xff, 0xfe, 0x00]));
  assert.equal(response.status, 400);
  assert.equal((await json(response))["code"], "invalid_payload");
});

Deno.test("capacity: the party beyond maxWaiting gets 503 capacity with Retry-After", async () => {
  const { post, hold, rendezvous } = api({ maxWaiting: 2 });
  const held = [
    (await hold("/wait-for-second-party/a")).response,
    (await hold("/wait-for-second-party/b")).response,
  ];
  const refused = await post("/wait-for-second-party/c");
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get("retry-after"), "1");
  assert.equal((await json(refused))["code"], "capacity");
  assert.equal((await post("/wait-for-second-party/a")).status, 200, "second parties still pair");
  await rendezvous.close();
  assert.deepEqual((await Promise.all(held)).map((r) => r.status), [200, 503]);
});

Deno.test("unknown paths get 404 not_found as JSON", async () => {
  const { app } = api();
  const response = await app.request("/nope");
  assert.equal(response.status, 404);
  assert.equal((await json(response))["code"], "not_found");
});

Deno.test("GET /healthz answers ok with the number of waiting parties", async () => {
  const { app, post, rendezvous } = api();
  assert.deepEqual(await json(await app.request("/healthz")), { status: "ok", waiting: 0 });
  const waiting = post("/wait-for-second-party/h");
  await waitFor(() => rendezvous.waiting === 1, "the party to be held");
  assert.deepEqual(await json(await app.request("/healthz")), { status: "ok", waiting: 1 });
  await rendezvous.close();
  await waiting;
});

Deno.test("GET /metrics renders Prometheus text with pairs, timeouts and rejections", async () => {
  const { app, post, hold } = api();
  const { response: first } = await hold("/wait-for-second-party/m");
  await post("/wait-for-second-party/m");
  await first;
  await post("/wait-for-second-party/t?timeout_ms=1");
  await post("/wait-for-second-party/bad*id");
  const response = await app.request("/metrics");
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  assert.match(text, /^syncpoint_pairs_total 1$/m);
  assert.match(text, /^syncpoint_timeouts_total 1$/m);
  assert.match(text, /^syncpoint_waiting_parties 0$/m);
  assert.match(text, /^syncpoint_rejections_total\{code="timeout"\} 1$/m);
  assert.match(text, /^syncpoint_rejections_total\{code="invalid_id"\} 1$/m);
  assert.match(text, /^syncpoint_pair_wait_seconds_count 1$/m);
});

/** What `Deno.serve` passes as the handler's second argument, for a client at `hostname`. */
function from(hostname: string): Deno.ServeHandlerInfo<Deno.NetAddr> {
  return {
    remoteAddr: { transport: "tcp", hostname, port: 40000 },
    completed: Promise.resolve(),
  };
}

Deno.test("arrivals over the per-address rate get 429 rate_limited with Retry-After; other addresses and loopback do not", async () => {
  // 0.01 per second: no token comes back while the test runs, however slow the machine.
  const { app } = api({ arrivalRate: { perSecond: 0.01, burst: 3 } });
  const arrive = (address: string, id = "r") =>
    app.request(`/wait-for-second-party/${id}?timeout_ms=1`, { method: "POST" }, from(address));
  for (let i = 0; i < 3; i++) assert.equal((await arrive("203.0.113.5")).status, 408);
  const limited = await arrive("203.0.113.5");
  assert.equal(limited.status, 429);
  const retryAfter = Number(limited.headers.get("retry-after"));
  assert.ok(retryAfter > 1 && retryAfter <= 100, `Retry-After ${retryAfter}: when a token is back`);
  assert.equal((await json(limited))["code"], "rate_limited");
  assert.equal((await arrive("203.0.113.6")).status, 408, "another address has its own bucket");
  for (let i = 0; i < 5; i++) {
    assert.equal((await arrive("127.0.0.1")).status, 408, "loopback is exempt by default");
  }
  const invalid = await arrive("203.0.113.5", "bad*id");
  assert.equal(invalid.status, 429, "limited before anything else is looked at");
});

Deno.test("limitLoopback applies the per-address limits to loopback clients too", async () => {
  const { app } = api({ arrivalRate: { perSecond: 0.01, burst: 1 }, limitLoopback: true });
  const arrive = () =>
    app.request("/wait-for-second-party/l?timeout_ms=1", { method: "POST" }, from("::1"));
  assert.equal((await arrive()).status, 408);
  assert.equal((await arrive()).status, 429);
});

Deno.test("too many parties waiting from one address: 429 too_many_waiting; its second parties still pair", async () => {
  const { app, rendezvous } = api({ maxWaitingPerAddress: 2 });
  const post = (id: string, address: string) =>
    app.request(`/wait-for-second-party/${id}`, { method: "POST" }, from(address));
  const held = [post("a", "203.0.113.7"), post("b", "203.0.113.7")];
  await waitFor(() => rendezvous.waiting === 2, "two parties to wait");
  const refused = await post("c", "203.0.113.7");
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get("retry-after"), "1");
  assert.equal((await json(refused))["code"], "too_many_waiting");
  assert.equal((await post("a", "203.0.113.7")).status, 200, "a second party is not held");
  const other = post("d", "203.0.113.8");
  await waitFor(() => rendezvous.waiting === 2, "another address's party to wait");
  await rendezvous.close();
  assert.deepEqual((await Promise.all([...held, other])).map((r) => r.status), [200, 503, 503]);
});

Deno.test("the waiting-bytes budget: first parties past it get 503 capacity, second parties pair; /metrics shows the bytes", async () => {
  const { app, post, hold, rendezvous } = api({ maxWaitingBytes: 70_000 });
  const { response: first } = await hold("/wait-for-second-party/big1", "x".repeat(65_536));
  const refused = await post("/wait-for-second-party/big2", "x".repeat(4_465));
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get("retry-after"), "1");
  assert.equal((await json(refused))["code"], "capacity");
  // 2-byte characters count as received: 2,232 x 2 = 4,464 bytes, exactly the room left.
  const fits = post("/wait-for-second-party/small", "é".repeat(2_232));
  await waitFor(() => rendezvous.waiting === 2, "the party that fits to wait");
  const metrics = await (await app.request("/metrics")).text();
  assert.match(metrics, /^syncpoint_waiting_payload_bytes 70000$/m);
  assert.equal((await post("/wait-for-second-party/big1", "x".repeat(65_536))).status, 200);
  await rendezvous.close();
  assert.deepEqual([(await first).status, (await fits).status], [200, 503]);
});

Deno.test("a body that fails while being read is a departure: 499 to nobody, counted, never internal", async () => {
  const { app, rendezvous } = api();
  const broken = () =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("partial"));
        controller.error(new Deno.errors.ConnectionReset("connection reset by peer"));
      },
    });
  const streamed = await app.request("/wait-for-second-party/b", {
    method: "POST",
    body: broken(),
    duplex: "half",
  } as RequestInit);
  const declared = await app.request(
    new Request("http://localhost/wait-for-second-party/b", {
      method: "POST",
      body: broken(),
      headers: { "content-length": "100" },
      duplex: "half",
    } as RequestInit),
  );
  assert.deepEqual([streamed.status, declared.status], [499, 499]);
  assert.equal(rendezvous.waiting, 0);
  const metrics = await (await app.request("/metrics")).text();
  assert.match(metrics, /^syncpoint_departures_total 2$/m);
  assert.doesNotMatch(metrics, /code="internal"/);
});

Deno.test("GET /healthz answers 503 unavailable during an accept outage", async () => {
  let outage = false;
  const { app } = api({
    listener: {
      get outage() {
        return outage;
      },
    },
  });
  assert.equal((await app.request("/healthz")).status, 200);
  outage = true;
  const response = await app.request("/healthz");
  assert.equal(response.status, 503);
  assert.deepEqual(await json(response), { status: "unavailable", waiting: 0 });
});
