// A rolling update under load loses no wait for a client that retries: instances over Redis
// behind a load balancer that routes only to ready instances (as a Kubernetes Service does),
// replaced one by one while pairs arrive. Real sockets and Redis on loopback.
import assert from "node:assert/strict";
import { findRedis, testWith, waitFor } from "@duet/testkit";
import { type RunningSyncpoint, startSyncpoint } from "./server.ts";
import { waitForSecondParty } from "./client.ts";

const redis = await findRedis();

/**
 * A load balancer on a loopback port: it sends each request to the next ready instance (its
 * /healthz answered 200 at the last check, every 25 ms) and relays the answer; 502 when the
 * instance cannot be reached (the client retries that too).
 */
function loadBalancer() {
  const backends = new Set<RunningSyncpoint>();
  const ready = new Set<RunningSyncpoint>();
  let next = 0;
  const check = setInterval(async () => {
    for (const backend of [...backends]) {
      const ok = await fetch(new URL("/healthz", backend.url)).then(
        async (r) => (await r.body?.cancel(), r.ok),
        () => false,
      );
      if (ok && backends.has(backend)) ready.add(backend);
      else ready.delete(backend);
    }
  }, 25);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const targets = [...ready];
    if (targets.length === 0) return new Response("no backend", { status: 502 });
    const target = targets[next++ % targets.length]!;
    const url = new URL(request.url);
    try {
      const response = await fetch(new URL(url.pathname + url.search, target.url), {
        method: request.method,
        body: await request.text(),
        signal: request.signal,
      });
      const headers = new Headers({ "content-type": "application/json" });
      const retryAfter = response.headers.get("retry-after");
      if (retryAfter) headers.set("retry-after", retryAfter);
      return new Response(await response.text(), { status: response.status, headers });
    } catch {
      return new Response("backend gone", { status: 502 });
    }
  });
  return {
    url: new URL(`http://127.0.0.1:${server.addr.port}/`),
    add: (backend: RunningSyncpoint) => backends.add(backend),
    remove: (backend: RunningSyncpoint) => (backends.delete(backend), ready.delete(backend)),
    ready: () => ready.size,
    async close() {
      clearInterval(check);
      await server.shutdown();
    },
  };
}

testWith(redis, {
  name: "drain: a rolling update of two instances under load loses no pair for retrying clients",
  async fn() {
    const redisPrefix = `duet-test:${crypto.randomUUID()}`;
    const start = () => startSyncpoint({ port: 0, redisUrl: redis.url, redisPrefix, drainMs: 200 });
    const lb = loadBalancer();
    const instances = [await start(), await start()];
    for (const instance of instances) lb.add(instance);
    const all = [...instances];
    try {
      await waitFor(() => lb.ready() === 2, "both instances to be ready");
      const pairs = 60;
      const wait = (id: string, payload: string) =>
        waitForSecondParty(lb.url, id, { payload, timeoutMs: 30_000 });
      // First parties of every pair wait before the update starts.
      const firsts = Array.from({ length: pairs }, (_, i) => wait(`roll-${i}`, `first-${i}`));
      await waitFor(
        () => all.reduce((n, s) => n + s.rendezvous.waiting, 0) === pairs,
        "every first party to wait",
      );
      // Partners arrive throughout the update, a few at a time.
      const seconds: Promise<unknown>[] = [];
      let arrived = 0;
      const arrive = (count: number) => {
        for (const end = Math.min(pairs, arrived + count); arrived < end; arrived++) {
          seconds.push(wait(`roll-${arrived}`, `second-${arrived}`));
        }
      };
      // The update: for each old instance, start a new one, wait for it to be ready, then
      // drain the old one (readiness false first, then its waiting parties get 503).
      for (const old of instances) {
        arrive(10);
        const fresh = await start();
        all.push(fresh);
        lb.add(fresh);
        await waitFor(() => lb.ready() >= 2, "the new instance to be ready");
        arrive(10);
        const drained = old.shutdown();
        arrive(10);
        await drained;
        lb.remove(old);
      }
      arrive(pairs);
      const firstResults = await Promise.all(firsts);
      const secondResults = await Promise.all(seconds);
      for (let i = 0; i < pairs; i++) {
        assert.equal(firstResults[i]!.peerPayload, `second-${i}`, `pair ${i}, first side`);
        assert.equal(
          (secondResults[i] as { peerPayload: string }).peerPayload,
          `first-${i}`,
          `pair ${i}, second side`,
        );
      }
    } finally {
      await lb.close();
      await Promise.all(all.map((instance) => instance.shutdown()));
    }
  },
});
