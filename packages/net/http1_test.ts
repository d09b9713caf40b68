// The node:http server over real sockets on 127.0.0.1 (its presence probes and direct path
// are exercised by apps/syncpoint/departure_test.ts and server_test.ts).
import assert from "node:assert/strict";
import { serveHttp1 } from "./http1.ts";

Deno.test("serveHttp1: serves Web handlers, keeps idle connections, shuts down with requests in flight answered", async () => {
  const held = Promise.withResolvers<void>();
  const server = await serveHttp1(
    { hostname: "127.0.0.1", port: 0 },
    async (request, info) => {
      if (new URL(request.url).pathname === "/held") await held.promise;
      return Response.json({ method: request.method, from: info.remoteAddr.hostname });
    },
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  assert.deepEqual(await (await fetch(`${url}/x`)).json(), { method: "GET", from: "127.0.0.1" });
  const slow = fetch(`${url}/held`);
  while (server.inFlight === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  const stopping = server.shutdown();
  held.resolve();
  assert.equal((await slow).status, 200, "the request in flight is answered");
  await (await slow).body?.cancel();
  await stopping;
  assert.equal(server.listening, false);
  await assert.rejects(fetch(`${url}/x`));
});

Deno.test("serveHttp1: a burst of 1,000 connections at once is served, not taken for an accept outage", async () => {
  const server = await serveHttp1(
    { hostname: "127.0.0.1", port: 0, watchdogMs: 50 },
    () => new Response("ok"),
  );
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  try {
    const url = `http://127.0.0.1:${server.addr.port}/`;
    const answers = await Promise.all(
      Array.from(
        { length: 1_000 },
        () => fetch(url, { client }).then(async (r) => (await r.text(), r.status), () => "refused"),
      ),
    );
    assert.deepEqual(new Set(answers), new Set([200]));
    assert.equal(server.acceptFailures, 0);
    assert.equal(server.outage, false);
  } finally {
    client.close();
    await server.shutdown();
  }
});
