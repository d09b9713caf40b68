import assert from "node:assert/strict";
import { LocalRendezvous, type Outcome } from "./rendezvous.ts";

function local(maxWaiting = 100) {
  const counts = { paired: 0, timedOut: 0, departed: 0 };
  const rendezvous = new LocalRendezvous({
    maxWaiting,
    events: {
      paired: () => counts.paired++,
      timedOut: () => counts.timedOut++,
      departed: () => counts.departed++,
    },
  });
  return { rendezvous, counts };
}

const long = 60_000;

Deno.test("LocalRendezvous pairs the first and second party of an id and swaps payloads", async () => {
  const { rendezvous, counts } = local();
  const first = rendezvous.arrive({ id: "a", payload: "from first", timeoutMs: long });
  assert.equal(rendezvous.waiting, 1);
  const second = await rendezvous.arrive({ id: "a", payload: "from second", timeoutMs: long });
  assert.deepEqual(second, {
    kind: "paired",
    role: "second",
    waitedMs: 0,
    peerPayload: "from first",
  });
  const firstOutcome = await first;
  assert.equal(firstOutcome.kind, "paired");
  assert.equal(firstOutcome.kind === "paired" && firstOutcome.role, "first");
  assert.equal(firstOutcome.kind === "paired" && firstOutcome.peerPayload, "from second");
  assert.equal(rendezvous.waiting, 0);
  assert.equal(counts.paired, 1);
});

Deno.test("LocalRendezvous passes null when a party sends no payload", async () => {
  const { rendezvous } = local();
  const first = rendezvous.arrive({ id: "a", payload: null, timeoutMs: long });
  const second = await rendezvous.arrive({ id: "a", payload: "x", timeoutMs: long });
  assert.equal(second.kind === "paired" && second.peerPayload, null);
  assert.equal((await first).kind === "paired", true);
});

Deno.test("LocalRendezvous frees the id after a pair: the third party starts a new rendezvous", async () => {
  const { rendezvous } = local();
  const first = rendezvous.arrive({ id: "a", payload: "1", timeoutMs: long });
  await rendezvous.arrive({ id: "a", payload: "2", timeoutMs: long });
  await first;
  const third = rendezvous.arrive({ id: "a", payload: "3", timeoutMs: long });
  assert.equal(rendezvous.waiting, 1, "the third party waits as a first party");
  const fourth = await rendezvous.arrive({ id: "a", payload: "4", timeoutMs: long });
  assert.equal(fourth.kind === "paired" && fourth.peerPayload, "3");
  assert.equal((await third).kind, "paired");
});

Deno.test("LocalRendezvous answers a lone first party with timeout", async () => {
  const { rendezvous, counts } = local();
  const outcome = await rendezvous.arrive({ id: "a", payload: null, timeoutMs: 30 });
  assert.equal(outcome.kind, "refused");
  assert.equal(outcome.kind === "refused" && outcome.reason, "timeout");
  assert.ok(outcome.waitedMs >= 25, `waited ${outcome.waitedMs} ms`);
  assert.equal(rendezvous.waiting, 0);
  assert.equal(counts.timedOut, 1);
  const next = rendezvous.arrive({ id: "a", payload: null, timeoutMs: 30 });
  assert.equal(rendezvous.waiting, 1, "after a timeout the id is free");
  await next;
});

Deno.test("LocalRendezvous frees a departed party's slot at once; nobody pairs with it", async () => {
  const { rendezvous, counts } = local();
  const hangUp = new AbortController();
  const first = rendezvous.arrive({
    id: "a",
    payload: "gone",
    timeoutMs: long,
    signal: hangUp.signal,
  });
  hangUp.abort();
  assert.deepEqual((await first).kind, "departed");
  assert.equal(rendezvous.waiting, 0);
  assert.equal(counts.departed, 1);
  const next = rendezvous.arrive({ id: "a", payload: "new", timeoutMs: 30 });
  assert.equal(rendezvous.waiting, 1, "the next arrival waits as a first party");
  const outcome = await next;
  assert.equal(outcome.kind === "refused" && outcome.reason, "timeout");
});

Deno.test("LocalRendezvous ignores an abort that comes after the party was paired", async () => {
  const { rendezvous, counts } = local();
  const signal = new AbortController();
  const first = rendezvous.arrive({
    id: "a",
    payload: null,
    timeoutMs: long,
    signal: signal.signal,
  });
  await rendezvous.arrive({ id: "a", payload: null, timeoutMs: long });
  // Deno's legacy behaviour: the request signal fires after the response is sent.
  signal.abort();
  const waiting = rendezvous.arrive({ id: "a", payload: "next", timeoutMs: long });
  assert.equal((await first).kind, "paired");
  signal.abort();
  assert.equal(rendezvous.waiting, 1, "a stale abort must not evict the next waiting party");
  assert.equal(counts.departed, 0);
  const fourth = await rendezvous.arrive({ id: "a", payload: null, timeoutMs: long });
  assert.equal(fourth.kind === "paired" && fourth.peerPayload, "next");
  await waiting;
});

Deno.test("LocalRendezvous treats an already aborted arrival as departed without holding it", async () => {
  const { rendezvous } = local();
  const outcome = await rendezvous.arrive({
    id: "a",
    payload: null,
    timeoutMs: long,
    signal: AbortSignal.abort(),
  });
  assert.equal(outcome.kind, "departed");
  assert.equal(rendezvous.waiting, 0);
});

Deno.test("LocalRendezvous refuses with capacity once maxWaiting parties wait", async () => {
  const { rendezvous } = local(2);
  const a = rendezvous.arrive({ id: "a", payload: null, timeoutMs: long });
  const b = rendezvous.arrive({ id: "b", payload: null, timeoutMs: long });
  const c = await rendezvous.arrive({ id: "c", payload: null, timeoutMs: long });
  assert.equal(c.kind === "refused" && c.reason, "capacity");
  const pairA = await rendezvous.arrive({ id: "a", payload: null, timeoutMs: long });
  assert.equal(pairA.kind, "paired", "a second party is never refused for capacity");
  await rendezvous.close();
  await Promise.all([a, b]);
});

Deno.test("LocalRendezvous.close() answers every waiting party and refuses newcomers", async () => {
  const { rendezvous } = local();
  const waiting = ["a", "b", "c"].map((id) =>
    rendezvous.arrive({ id, payload: null, timeoutMs: long })
  );
  await rendezvous.close();
  const outcomes: Outcome[] = await Promise.all(waiting);
  for (const outcome of outcomes) {
    assert.equal(outcome.kind === "refused" && outcome.reason, "shutting_down");
  }
  const late = await rendezvous.arrive({ id: "a", payload: null, timeoutMs: long });
  assert.equal(late.kind === "refused" && late.reason, "shutting_down");
  assert.equal(rendezvous.waiting, 0);
});

Deno.test("LocalRendezvous keeps many ids apart", async () => {
  const { rendezvous, counts } = local(10_000);
  const ids = Array.from({ length: 1000 }, (_, i) => `id-${i}`);
  const firsts = ids.map((id) =>
    rendezvous.arrive({ id, payload: `first ${id}`, timeoutMs: long })
  );
  const seconds = await Promise.all(
    ids.map((id) => rendezvous.arrive({ id, payload: `second ${id}`, timeoutMs: long })),
  );
  seconds.forEach((outcome, i) => {
    assert.equal(outcome.kind === "paired" && outcome.peerPayload, `first id-${i}`);
  });
  (await Promise.all(firsts)).forEach((outcome, i) => {
    assert.equal(outcome.kind === "paired" && outcome.peerPayload, `second id-${i}`);
  });
  assert.equal(counts.paired, 1000);
});
