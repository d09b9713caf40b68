// Several instances sharing one rendezvous space through a real Redis server.
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import { findRedis, PrivateRedis, testWith, waitFor } from "@duet/testkit";
import { type RunningSyncpoint, startSyncpoint } from "./server.ts";
import { RedisRendezvous } from "./redis_rendezvous.ts";

const redis = await findRedis();
const privateRedis = await PrivateRedis.find();

/** Two instances on one Redis, with a prefix of their own so test runs never meet. */
async function withPair(
  fn: (a: RunningSyncpoint, b: RunningSyncpoint, prefix: string) => Promise<void>,
  redisUrl = redis.url,
): Promise<void> {
  const redisPrefix = `duet-test:${crypto.randomUUID()}`;
  const a = await startSyncpoint({ port: 0, redisUrl, redisPrefix });
  const b = await startSyncpoint({ port: 0, redisUrl, redisPrefix });
  try {
    await fn(a, b, redisPrefix);
  } finally {
    await Promise.all([a.shutdown(), b.shutdown()]);
  }
}

function post(server: RunningSyncpoint, id: string, body?: string, query = ""): Promise<Response> {
  return fetch(new URL(`/wait-for-second-party/${id}${query}`, server.url), {
    method: "POST",
    ...(body === undefined ? {} : { body }),
  });
}

async function keyExists(prefix: string, id: string): Promise<boolean> {
  const client = new Redis(redis.url);
  try {
    return (await client.exists(`${prefix}:wait:${id}`)) === 1;
  } finally {
    client.disconnect();
  }
}

testWith(redis, {
  name: "syncpoint over Redis: parties on different instances pair, payloads both ways",
  fn: () =>
    withPair(async (a, b) => {
      for (const [first, second, id] of [[a, b, "x1"], [b, a, "x2"]] as const) {
        const waiting = post(first, id, `first at ${first.url.port}`);
        await waitFor(() => first.rendezvous.waiting === 1, "the first party to wait");
        const secondResponse = await post(second, id, `second at ${second.url.port}`);
        assert.equal(secondResponse.status, 200);
        const secondBody = await secondResponse.json();
        assert.deepEqual([secondBody.role, secondBody.peer_payload], [
          "second",
          `first at ${first.url.port}`,
        ]);
        const firstBody = await (await waiting).json();
        assert.deepEqual([firstBody.role, firstBody.peer_payload], [
          "first",
          `second at ${second.url.port}`,
        ]);
        assert.equal(first.rendezvous.waiting, 0);
      }
    }),
});

testWith(redis, {
  name: "syncpoint over Redis: after a pair the id is free again",
  fn: () =>
    withPair(async (a, b, prefix) => {
      const first = post(a, "again", "1");
      await waitFor(() => a.rendezvous.waiting === 1, "the first party to wait");
      await (await post(b, "again", "2")).body?.cancel();
      await (await first).body?.cancel();
      assert.equal(await keyExists(prefix, "again"), false, "the key is gone after the pair");
      const third = post(b, "again", "3");
      await waitFor(() => b.rendezvous.waiting === 1, "the third party waits as a first");
      const fourth = await (await post(a, "again", "4")).json();
      assert.equal(fourth.peer_payload, "3");
      await third;
    }),
});

testWith(redis, {
  name: "syncpoint over Redis: a lone party times out with 408 and its key is removed",
  fn: () =>
    withPair(async (a, _b, prefix) => {
      const response = await post(a, "lonely", undefined, "?timeout_ms=150");
      assert.equal(response.status, 408);
      assert.equal((await response.json()).code, "timeout");
      await waitFor(async () => !(await keyExists(prefix, "lonely")), "the key to be removed");
    }),
});

testWith(redis, {
  name: "syncpoint over Redis: a party that hangs up on A is never paired with a party on B",
  fn: () =>
    withPair(async (a, b, prefix) => {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(a.url.port) });
      await conn.write(new TextEncoder().encode(
        "POST /wait-for-second-party/leaver HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
      ));
      await waitFor(() => a.rendezvous.waiting === 1, "the raw party to wait on A");
      conn.close();
      await waitFor(() => a.rendezvous.waiting === 0, "A to notice the hang-up");
      await waitFor(async () => !(await keyExists(prefix, "leaver")), "the key to be removed");
      const next = await post(b, "leaver", "anyone?", "?timeout_ms=200");
      assert.equal(next.status, 408, "B's party waited as a first party and timed out");
    }),
});

testWith(redis, {
  name: "syncpoint over Redis: 100 concurrent pairs split across two instances",
  fn: () =>
    withPair(async (a, b) => {
      const ids = Array.from({ length: 100 }, (_, i) => `many-${i}`);
      const firsts = ids.map((id, i) => post(i % 2 ? a : b, id, `first ${id}`));
      await waitFor(
        () => a.rendezvous.waiting + b.rendezvous.waiting === ids.length,
        "all first parties to wait",
      );
      const seconds = await Promise.all(
        ids.map((id, i) => post(i % 2 ? b : a, id, `second ${id}`)),
      );
      for (const [i, response] of seconds.entries()) {
        assert.equal((await response.json()).peer_payload, `first ${ids[i]}`);
      }
      for (const [i, response] of (await Promise.all(firsts)).entries()) {
        assert.equal((await response.json()).peer_payload, `second ${ids[i]}`);
      }
    }),
});

testWith(redis, {
  name: "syncpoint over Redis: shutdown of A answers its party 503 and frees the id for B",
  fn: async () => {
    const redisPrefix = `duet-test:${crypto.randomUUID()}`;
    const a = await startSyncpoint({ port: 0, redisUrl: redis.url, redisPrefix });
    const b = await startSyncpoint({ port: 0, redisUrl: redis.url, redisPrefix });
    try {
      const waiting = post(a, "bye", "from A");
      await waitFor(() => a.rendezvous.waiting === 1, "the party to wait on A");
      await a.shutdown();
      assert.equal((await waiting).status, 503);
      const next = await post(b, "bye", "from B", "?timeout_ms=150");
      assert.equal(next.status, 408, "nobody was left on A to pair with");
    } finally {
      await Promise.all([a.shutdown(), b.shutdown()]);
    }
  },
});

testWith(redis, {
  name: "RedisRendezvous: a third party gets conflict while a claim is in flight; a dead " +
    "instance's waiter is dropped after the ack timeout",
  fn: async () => {
    const prefix = `duet-test:${crypto.randomUUID()}`;
    const raw = new Redis(redis.url);
    const rendezvous = await RedisRendezvous.connect(redis.url, {
      maxWaiting: 10,
      prefix,
      ackTimeoutMs: 300,
    });
    try {
      // A waiting party registered by an instance that has since died: nobody will ack.
      await raw.hset(`${prefix}:wait:dead`, {
        state: "waiting",
        token: "t-dead",
        instance: "instance-that-died",
        payload: "",
        has: "0",
      });
      const second = rendezvous.arrive({ id: "dead", payload: "2nd", timeoutMs: 5_000 });
      await waitFor(
        async () => (await raw.hget(`${prefix}:wait:dead`, "state")) === "claimed",
        "the claim to be made",
      );
      const third = await rendezvous.arrive({ id: "dead", payload: "3rd", timeoutMs: 5_000 });
      assert.equal(third.kind === "refused" && third.reason, "conflict");
      // After the ack timeout the claimer starts over and waits as a first party.
      await waitFor(() => rendezvous.waiting === 1, "the claimer to wait as a first party");
      const fourth = await rendezvous.arrive({ id: "dead", payload: "4th", timeoutMs: 5_000 });
      assert.equal(fourth.kind === "paired" && fourth.peerPayload, "2nd");
      const secondOutcome = await second;
      assert.equal(secondOutcome.kind === "paired" && secondOutcome.role, "first");
      assert.equal(secondOutcome.kind === "paired" && secondOutcome.peerPayload, "4th");
    } finally {
      await rendezvous.close();
      await raw.del(`${prefix}:wait:dead`);
      raw.disconnect();
    }
  },
});

testWith(privateRedis.missing ? privateRedis : redis, {
  name: "syncpoint over Redis: Redis down gives 503 at once; the service recovers when it returns",
  fn: async () => {
    const server = new PrivateRedis();
    await server.start();
    try {
      await withPair(async (a, b) => {
        const first = post(a, "before", "1");
        await waitFor(() => a.rendezvous.waiting === 1, "a party to wait");
        await (await post(b, "before", "2")).body?.cancel();
        assert.equal((await first).status, 200, "pairs while Redis is up");

        await server.stop();
        await waitFor(() => !a.rendezvous.healthy, "A to notice Redis is gone");
        const down = await post(a, "during", "x");
        assert.equal(down.status, 503);
        assert.equal((await down.json()).code, "backend_unavailable");
        const health = await fetch(new URL("/healthz", a.url));
        assert.equal(health.status, 503);
        assert.equal((await health.json()).status, "unavailable");

        await server.start();
        await waitFor(
          () => a.rendezvous.healthy && b.rendezvous.healthy,
          "both to reconnect",
          10_000,
        );
        const afterFirst = post(b, "after", "3");
        await waitFor(() => b.rendezvous.waiting === 1, "a party to wait after recovery");
        const afterSecond = await post(a, "after", "4");
        assert.equal(afterSecond.status, 200);
        assert.equal((await afterSecond.json()).peer_payload, "3");
        assert.equal((await (await afterFirst).json()).peer_payload, "4");
      }, server.url);
    } finally {
      await server.stop();
    }
  },
});

testWith(redis, {
  name: "RedisRendezvous: the per-address and waiting-bytes limits refuse first parties, leave " +
    "no key behind, and never refuse a second party",
  fn: async () => {
    const prefix = `duet-test:${crypto.randomUUID()}`;
    const rendezvous = await RedisRendezvous.connect(redis.url, {
      maxWaiting: 10,
      maxWaitingBytes: 100,
      maxWaitingPerAddress: 1,
      prefix,
    });
    try {
      const address = "198.51.100.9";
      const first = rendezvous.arrive({
        id: "p1",
        payload: "x".repeat(60),
        address,
        timeoutMs: 5_000,
      });
      await waitFor(() => rendezvous.waiting === 1, "the first party to wait");
      assert.equal(rendezvous.waitingBytes, 60);
      const again = await rendezvous.arrive({ id: "p2", payload: null, address, timeoutMs: 5_000 });
      assert.equal(again.kind === "refused" && again.reason, "too_many_waiting");
      const heavy = await rendezvous.arrive({
        id: "p3",
        payload: "x".repeat(41),
        timeoutMs: 5_000,
      });
      assert.equal(heavy.kind === "refused" && heavy.reason, "capacity", "60 + 41 bytes > 100");
      assert.equal(await keyExists(prefix, "p2"), false, "a refused party leaves no key");
      assert.equal(await keyExists(prefix, "p3"), false);
      const second = await rendezvous.arrive({
        id: "p1",
        payload: "y".repeat(100),
        address,
        timeoutMs: 5_000,
      });
      assert.equal(second.kind === "paired" && second.peerPayload, "x".repeat(60));
      assert.equal((await first).kind, "paired");
      assert.deepEqual([rendezvous.waiting, rendezvous.waitingBytes], [0, 0]);
    } finally {
      await rendezvous.close();
    }
  },
});
