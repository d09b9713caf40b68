// Several instances sharing one rendezvous space through a real Redis server.
import assert from "node:assert/strict";
import { Redis } from "ioredis";
import type { LogRecord } from "@logtape/logtape";
import { findRedis, PrivateRedis, testWith, waitFor, withLogRecords } from "@duet/testkit";
import { type RunningSyncpoint, startSyncpoint } from "./server.ts";
import { RedisRendezvous, REGISTER_OR_CLAIM } from "./redis_rendezvous.ts";

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
  name:
    "RedisRendezvous: close() answers every waiting party 503 and deletes every key, past one pipeline",
  fn: async () => {
    const prefix = `duet-test:${crypto.randomUUID()}`;
    const rendezvous = await RedisRendezvous.connect(redis.url, {
      maxWaiting: 2_000,
      maxWaitingBytes: 0,
      maxWaitingPerAddress: 0,
      prefix,
    });
    const count = 1_100; // more than two pipelines of deletes
    const outcomes = Array.from(
      { length: count },
      (_, i) => rendezvous.arrive({ id: `closing-${i}`, payload: "p", timeoutMs: 60_000 }),
    );
    await waitFor(() => rendezvous.waiting === count, "every party to wait");
    const client = new Redis(redis.url);
    try {
      const keys = () => client.keys(`${prefix}:wait:*`);
      assert.equal((await keys()).length, count);
      await rendezvous.close();
      assert.deepEqual((await keys()).length, 0, "no key outlives its instance");
      const reasons = new Set(
        (await Promise.all(outcomes)).map((o) => o.kind === "refused" ? o.reason : o.kind),
      );
      assert.deepEqual(reasons, new Set(["shutting_down"]));
    } finally {
      client.disconnect();
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

testWith(redis, {
  name: "RedisRendezvous: a claimer that dies between its claim and the wake-up does not strand " +
    "its waiter: past the claim's deadline a newcomer claims the waiter",
  fn: async () => {
    const prefix = `duet-test:${crypto.randomUUID()}`;
    const raw = new Redis(redis.url);
    // ackTimeoutMs 300: a claim's deadline is 300 x 2 + 1,000 = 1,600 ms.
    const options = { maxWaiting: 10, prefix, ackTimeoutMs: 300 };
    const a = await RedisRendezvous.connect(redis.url, options);
    const c = await RedisRendezvous.connect(redis.url, options);
    try {
      const key = `${prefix}:wait:orphan`;
      const first = a.arrive({ id: "orphan", payload: "from A", timeoutMs: 10_000 });
      await waitFor(async () => (await raw.hget(key, "state")) === "waiting", "A's key");
      // The claimer: the real script, run by an instance that dies at once (no wake-up).
      const claim = await raw.eval(
        REGISTER_OR_CLAIM,
        1,
        key,
        "t-claimer",
        "instance-that-died",
        "from the dead",
        "1",
        10_000,
        1_600,
      ) as string[];
      assert.equal(claim[0], "claimed");
      const early = await c.arrive({ id: "orphan", payload: "too early", timeoutMs: 5_000 });
      assert.equal(early.kind === "refused" && early.reason, "conflict", "the claim is alive");
      await new Promise((resolve) => setTimeout(resolve, 1_800));
      assert.equal(await raw.exists(key), 1, "the key outlives the dead claim");
      const late = await c.arrive({ id: "orphan", payload: "from C", timeoutMs: 5_000 });
      assert.equal(late.kind === "paired" && late.peerPayload, "from A");
      const firstOutcome = await first;
      assert.equal(firstOutcome.kind === "paired" && firstOutcome.peerPayload, "from C");
      assert.equal(await raw.exists(key), 0);
    } finally {
      await Promise.all([a.close(), c.close()]);
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

/** Both instances reconnected and reconciled (the held parties registered again). */
function bothHealthy(a: RunningSyncpoint, b: RunningSyncpoint): Promise<void> {
  return waitFor(
    () => a.rendezvous.healthy && b.rendezvous.healthy,
    "both instances to reconnect",
    15_000,
  );
}

testWith(privateRedis.missing ? privateRedis : redis, {
  name: "syncpoint over Redis: 20 pairs whose first parties waited across a Redis restart all " +
    "pair afterwards (same instance and across instances), none gets 408",
  fn: async () => {
    const server = new PrivateRedis();
    await server.start();
    const raw = new Redis(server.url, { lazyConnect: true, maxRetriesPerRequest: 0 });
    raw.on("error", () => {});
    try {
      await withPair(async (a, b, prefix) => {
        // i % 4: 0 both on A, 1 both on B, 2 A then B, 3 B then A.
        const ids = Array.from({ length: 20 }, (_, i) => `restart-${i}`);
        const firstOn = (i: number) => (i % 4 === 0 || i % 4 === 2 ? a : b);
        const secondOn = (i: number) => (i % 4 === 0 || i % 4 === 3 ? a : b);
        const firsts = ids.map((id, i) => post(firstOn(i), id, `first ${id}`, "?timeout_ms=60000"));
        // Registered, not only admitted: `waiting` counts a party before Redis has answered,
        // and a party whose registration the outage cuts off gets 503 (and would retry).
        await raw.connect();
        const registered = async () =>
          await raw.exists(...ids.map((id) => `${prefix}:wait:${id}`)) === 20;
        await waitFor(registered, "20 to wait, registered");
        raw.disconnect();

        await server.stop();
        await waitFor(() => !a.rendezvous.healthy && !b.rendezvous.healthy, "the outage seen");
        await server.start(); // same port, empty: every key is lost
        await bothHealthy(a, b);
        await raw.connect();
        await waitFor(registered, "every waiting party to be registered again");
        const seconds = await Promise.all(
          ids.map((id, i) => post(secondOn(i), id, `second ${id}`, "?timeout_ms=60000")),
        );
        for (const [i, response] of seconds.entries()) {
          assert.equal(response.status, 200, `second of ${ids[i]}`);
          assert.equal((await response.json()).peer_payload, `first ${ids[i]}`);
        }
        for (const [i, response] of (await Promise.all(firsts)).entries()) {
          assert.equal(response.status, 200, `first of ${ids[i]}`);
          assert.equal((await response.json()).peer_payload, `second ${ids[i]}`);
        }
      }, server.url);
    } finally {
      raw.disconnect();
      await server.stop();
    }
  },
});

testWith(privateRedis.missing ? privateRedis : redis, {
  name: "syncpoint over Redis: pub/sub connections cut again and again while 20 pairs arrive: " +
    "every pair completes with swapped payloads, or a side gets 503; never 408",
  fn: async () => {
    const server = new PrivateRedis();
    await server.start();
    const raw = new Redis(server.url);
    try {
      await withPair(async (a, b) => {
        const ids = Array.from({ length: 20 }, (_, i) => `cut-${i}`);
        const firstOn = (i: number) => (i % 2 ? a : b);
        const secondOn = (i: number) => (i % 3 ? a : b);
        const firsts = ids.map((id, i) => post(firstOn(i), id, `first ${id}`, "?timeout_ms=8000"));
        await waitFor(() => a.rendezvous.waiting + b.rendezvous.waiting === 20, "20 to wait");
        const seconds: Promise<Response>[] = [];
        for (const [i, id] of ids.entries()) {
          // Cut both subscribers just before each partner arrives: its wake or ack is
          // published while they reconnect.
          await raw.call("CLIENT", "KILL", "TYPE", "pubsub");
          seconds.push(post(secondOn(i), id, `second ${id}`, "?timeout_ms=8000"));
        }
        const results = await Promise.all(
          [...firsts, ...seconds].map(async (response) => {
            const r = await response;
            return { status: r.status, body: await r.json() };
          }),
        );
        let paired = 0;
        for (const [i, id] of ids.entries()) {
          const first = results[i]!;
          const second = results[20 + i]!;
          for (
            const [side, result, peer] of [
              ["first", first, `second ${id}`],
              ["second", second, `first ${id}`],
            ] as const
          ) {
            assert.notEqual(result.status, 408, `${side} of ${id} was lost: 408`);
            if (result.status === 200) {
              assert.equal(result.body.peer_payload, peer, `${side} of ${id}`);
            } else {
              assert.equal(result.status, 503, `${side} of ${id}: ${JSON.stringify(result.body)}`);
            }
          }
          if (first.status === 200 && second.status === 200) paired++;
        }
        // deno-lint-ignore no-console -- how many completed on both sides, for the record
        console.log(`${paired} of 20 pairs completed on both sides`);
      }, server.url);
    } finally {
      raw.disconnect();
      await server.stop();
    }
  },
});

testWith(privateRedis.missing ? privateRedis : redis, {
  name: "syncpoint over Redis: a held party whose timeout fires while Redis is down gets 503 " +
    "backend_unavailable with retry-after, not 408",
  fn: async () => {
    const server = new PrivateRedis();
    await server.start();
    try {
      await withPair(async (a) => {
        const waiting = post(a, "down-at-timeout", "x", "?timeout_ms=2000");
        await waitFor(() => a.rendezvous.waiting === 1, "the party to wait");
        await server.stop();
        const response = await waiting;
        assert.equal(response.status, 503);
        assert.equal(response.headers.get("retry-after"), "1");
        assert.equal((await response.json()).code, "backend_unavailable");
        assert.equal(a.rendezvous.waiting, 0);
      }, server.url);
    } finally {
      await server.stop();
    }
  },
});

testWith(privateRedis, {
  name:
    "RedisRendezvous: a confirmation whose reply is lost (it ran, the client timed out) still " +
    "pairs the first party with the claimer's payload",
  fn: () =>
    withLogRecords(["duet"], "info", async (records) => {
      const server = new PrivateRedis();
      await server.start();
      const raw = new Redis(server.url);
      const prefix = `duet-test:${crypto.randomUUID()}`;
      const a = await RedisRendezvous.connect(server.url, {
        maxWaiting: 10,
        prefix,
        commandTimeoutMs: 100,
      });
      try {
        const key = `${prefix}:wait:lost-reply`;
        const first = a.arrive({ id: "lost-reply", payload: "from A", timeoutMs: 10_000 });
        await waitFor(async () => (await raw.hget(key, "state")) === "waiting", "A's key");
        // A claimer played with the real script; its wake-up goes out together with a pause of
        // every write for 400 ms, so A's confirm runs only after its client gave up on the
        // reply (100 ms): the confirmation happens, its reply is lost, A retries.
        const claim = await raw.eval(
          REGISTER_OR_CLAIM,
          1,
          key,
          "t-claimer",
          "instance-of-the-test",
          "from the claimer",
          "1",
          10_000,
          5_000,
        ) as string[];
        assert.equal(claim[0], "claimed");
        const [, waiter, instance] = claim;
        const wake = { type: "wake", id: "lost-reply", waiter, claim: "t-claimer", replyTo: "x" };
        await raw.pipeline()
          .publish(`${prefix}:instance:${instance}`, JSON.stringify(wake))
          .call("CLIENT", "PAUSE", "400", "WRITE")
          .exec();
        const outcome = await first;
        assert.equal(outcome.kind, "paired", JSON.stringify(outcome));
        assert.equal(outcome.kind === "paired" && outcome.peerPayload, "from the claimer");
        assert.equal(await raw.get(`${prefix}:ack:t-claimer`), "delivered");
        // The timeouts are said at warning level, once, not left to the debug log.
        const text = (r: LogRecord) => r.message.map(String).join("");
        const warnings = records.filter((r) => r.level === "warning").map(text);
        assert.equal(warnings.filter((w) => /commands are timing out/.test(w)).length, 1);
        assert.ok(records.some((r) => /Recovered the confirmation/.test(text(r))));
      } finally {
        await a.close();
        raw.disconnect();
        await server.stop();
      }
    }),
});

/** Whether a party with this payload waits (registered, unclaimed) on `id`. */
async function waitingWith(prefix: string, id: string, payload: string): Promise<boolean> {
  const client = new Redis(redis.url);
  try {
    const [state, stored] = await client.hmget(`${prefix}:wait:${id}`, "state", "payload");
    return state === "waiting" && stored === payload;
  } finally {
    client.disconnect();
  }
}

testWith(redis, {
  name: "RedisRendezvous: a first party whose presence is in doubt and confirms false is not " +
    "paired; the claimer waits as a first party",
  fn: async () => {
    const prefix = `duet-test:${crypto.randomUUID()}`;
    let departed = 0;
    const a = await RedisRendezvous.connect(redis.url, {
      maxWaiting: 10,
      prefix,
      events: { departed: () => departed++ },
    });
    const b = await RedisRendezvous.connect(redis.url, { maxWaiting: 10, prefix });
    try {
      const hangUp = new AbortController();
      let probes = 0;
      const first = a.arrive({
        id: "doubt",
        payload: "gone already",
        timeoutMs: 30_000,
        signal: hangUp.signal,
        presence: {
          inDoubt: true,
          confirm: () => {
            probes++;
            hangUp.abort(); // as the contract says: a departed party's signal aborts too
            return Promise.resolve(false);
          },
        },
      });
      // Registered in Redis, not only admitted (`waiting` counts a party before Redis answers).
      await waitFor(() => waitingWith(prefix, "doubt", "gone already"), "the doubtful one to wait");
      const second = b.arrive({ id: "doubt", payload: "second", timeoutMs: 30_000 });
      assert.equal((await first).kind, "departed");
      assert.deepEqual([probes, departed], [1, 1]);
      await waitFor(() => waitingWith(prefix, "doubt", "second"), "the claimer to wait as first");
      const third = await a.arrive({ id: "doubt", payload: "third", timeoutMs: 30_000 });
      assert.equal(third.kind === "paired" && third.peerPayload, "second");
      const secondOutcome = await second;
      assert.equal(secondOutcome.kind === "paired" && secondOutcome.role, "first");
      assert.equal(secondOutcome.kind === "paired" && secondOutcome.peerPayload, "third");
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  },
});

testWith(redis, {
  name: "RedisRendezvous: 2,000 concurrent arrivals with 64 KB payloads on two instances all " +
    "pair; none is refused backend_unavailable",
  fn: async () => {
    const prefix = `duet-test:${crypto.randomUUID()}`;
    const options = {
      maxWaiting: 16_000,
      maxWaitingBytes: 64 * 1024 * 1024,
      prefix,
      queueTimeoutMs: 60_000, // so that a slow machine cannot turn queueing into refusals
    };
    const instances = [
      await RedisRendezvous.connect(redis.url, options),
      await RedisRendezvous.connect(redis.url, options),
    ];
    try {
      await waitFor(() => instances.every((r) => r.healthy), "both to connect");
      const payload = (i: number) => `${i}:`.padEnd(64 * 1024 - 1, "x");
      const outcomes = await Promise.all(
        Array.from(
          { length: 2_000 },
          (_, i) =>
            instances[i % 2]!.arrive({
              id: `burst-${i >> 1}`,
              payload: payload(i),
              timeoutMs: 60_000,
            }),
        ),
      );
      const kinds = new Map<string, number>();
      for (const outcome of outcomes) {
        const kind = outcome.kind === "refused" ? outcome.reason : outcome.kind;
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
      assert.deepEqual(Object.fromEntries(kinds), { paired: 2_000 });
      for (const [i, outcome] of outcomes.entries()) {
        assert.equal(outcome.kind === "paired" && outcome.peerPayload, payload(i ^ 1));
      }
    } finally {
      await Promise.all(instances.map((r) => r.close()));
    }
  },
});

testWith(redis, {
  name:
    "RedisRendezvous: durations past setTimeout's range are refused by name; waits past it last",
  fn: async () => {
    const prefix = `duet-test:${crypto.randomUUID()}`;
    for (const name of ["ackTimeoutMs", "commandTimeoutMs", "queueTimeoutMs"] as const) {
      for (const ms of [2 ** 31, 30 * 24 * 3600_000, -1, NaN]) {
        await assert.rejects(
          RedisRendezvous.connect(redis.url, { maxWaiting: 10, prefix, [name]: ms }),
          (e) => e instanceof RangeError && e.message.startsWith(`${name} must be`),
          `${name} ${ms}`,
        );
      }
    }
    const bound = 2 ** 31 - 1;
    const rendezvous = await RedisRendezvous.connect(redis.url, {
      maxWaiting: 10,
      prefix,
      ackTimeoutMs: bound,
      commandTimeoutMs: bound,
      queueTimeoutMs: bound,
    });
    try {
      const waits = [bound, 2 ** 31, 30 * 24 * 3600_000, Infinity];
      const outcomes = waits.map((timeoutMs, i) =>
        rendezvous.arrive({ id: `long-${i}`, payload: null, timeoutMs })
      );
      await waitFor(() => rendezvous.waiting === waits.length, "every party to wait");
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.equal(rendezvous.waiting, waits.length, "none timed out early");
      await rendezvous.close();
      for (const outcome of await Promise.all(outcomes)) {
        assert.equal(outcome.kind === "refused" && outcome.reason, "shutting_down");
      }
    } finally {
      await rendezvous.close();
    }
  },
});

testWith(redis, {
  name: "RedisRendezvous: malformed messages on an instance's channel are ignored with a warning",
  fn: () =>
    withLogRecords(["duet"], "warning", async (records) => {
      const prefix = `duet-test:${crypto.randomUUID()}`;
      const a = await RedisRendezvous.connect(redis.url, { maxWaiting: 10, prefix });
      const b = await RedisRendezvous.connect(redis.url, { maxWaiting: 10, prefix });
      const raw = new Redis(redis.url);
      try {
        const waiting = a.arrive({ id: "m", payload: "from a", timeoutMs: 10_000 });
        await waitFor(() => a.waiting === 1, "the first party to wait");
        const channels = await raw.pubsub("CHANNELS", `${prefix}:instance:*`) as string[];
        assert.equal(channels.length, 2);
        const garbage = [
          "not json",
          "42",
          JSON.stringify({ type: "wake", id: "m" }),
          JSON.stringify({ type: "ack", claim: "c", delivered: "yes" }),
          JSON.stringify({ type: "lost", id: 1, waiter: "w" }),
          JSON.stringify({ type: "bogus" }),
        ];
        for (const channel of channels) {
          for (const message of garbage) await raw.publish(channel, message);
        }
        const warnings = () =>
          records.filter((r) => String(r.message.join("")).includes("Ignored a malformed"));
        await waitFor(() => warnings().length === garbage.length * 2, "every message ignored");
        for (const record of warnings()) {
          assert.doesNotMatch(String(record.properties["problem"]), /ZodError|\n|\[/);
        }
        assert.equal(a.waiting, 1, "the waiting party is untouched");
        // The instances still pair.
        const second = await b.arrive({ id: "m", payload: "from b", timeoutMs: 10_000 });
        assert.deepEqual(second, {
          kind: "paired",
          role: "second",
          waitedMs: (second as { waitedMs: number }).waitedMs,
          peerPayload: "from a",
        });
        const first = await waiting;
        assert.equal(first.kind === "paired" && first.peerPayload, "from b");
      } finally {
        raw.disconnect();
        await Promise.all([a.close(), b.close()]);
      }
    }),
});

testWith(redis, {
  name: "RedisRendezvous: an abort right after arrive() is honoured, as first or as second party",
  fn: async () => {
    const prefix = `duet-test:${crypto.randomUUID()}`;
    const a = await RedisRendezvous.connect(redis.url, { maxWaiting: 10, prefix });
    const b = await RedisRendezvous.connect(redis.url, { maxWaiting: 10, prefix });
    try {
      // A first party that leaves while its registration is on its way to Redis.
      const leaving = new AbortController();
      const gone = a.arrive({
        id: "x",
        payload: "gone",
        timeoutMs: 10_000,
        signal: leaving.signal,
      });
      leaving.abort();
      assert.equal((await gone).kind, "departed");
      assert.equal(await keyExists(prefix, "x"), false, "its key is deleted");
      // A second party that leaves while its claim is on its way: the first waits on.
      const waiting = a.arrive({ id: "y", payload: "first", timeoutMs: 10_000 });
      await waitFor(() => a.waiting === 1, "the first party to wait");
      const claimer = new AbortController();
      const left = b.arrive({
        id: "y",
        payload: "left",
        timeoutMs: 10_000,
        signal: claimer.signal,
      });
      claimer.abort();
      assert.equal((await left).kind, "departed");
      assert.equal(a.waiting, 1, "the first party waits on");
      const third = await b.arrive({ id: "y", payload: "third", timeoutMs: 10_000 });
      assert.equal(third.kind === "paired" && third.peerPayload, "first");
      const first = await waiting;
      assert.equal(first.kind === "paired" && first.peerPayload, "third", "never the one who left");
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  },
});
