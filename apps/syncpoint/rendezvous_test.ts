import assert from "node:assert/strict";
import fc from "fast-check";
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

Deno.test("LocalRendezvous: the waiting-bytes budget refuses first parties with capacity, never second ones", async () => {
  const rendezvous = new LocalRendezvous({ maxWaiting: 100, maxWaitingBytes: 100 });
  const a = rendezvous.arrive({ id: "a", payload: "x".repeat(60), timeoutMs: long });
  const b = await rendezvous.arrive({ id: "b", payload: "x".repeat(41), timeoutMs: long });
  assert.equal(b.kind === "refused" && b.reason, "capacity", "60 + 41 bytes > 100");
  const c = rendezvous.arrive({ id: "c", payload: "x".repeat(40), timeoutMs: long });
  assert.equal(rendezvous.waitingBytes, 100, "exactly the budget");
  const pairA = await rendezvous.arrive({ id: "a", payload: "y".repeat(100), timeoutMs: long });
  assert.equal(pairA.kind, "paired", "a second party is paired whatever it carries");
  assert.equal(rendezvous.waitingBytes, 40, "a pair frees its bytes");
  // Bytes as received: "é" is 2 bytes of UTF-8 but 1 unit of a JS string.
  const d = await rendezvous.arrive({
    id: "d",
    payload: "é".repeat(31),
    payloadBytes: 62,
    timeoutMs: long,
  });
  assert.equal(d.kind === "refused" && d.reason, "capacity");
  await rendezvous.close();
  await Promise.all([a, c]);
  assert.equal(rendezvous.waitingBytes, 0);
});

Deno.test("LocalRendezvous: too_many_waiting per address; other addresses and second parties go on", async () => {
  const rendezvous = new LocalRendezvous({ maxWaiting: 100, maxWaitingPerAddress: 2 });
  const from = (address: string | undefined, id: string) =>
    rendezvous.arrive({ id, payload: null, timeoutMs: long, ...(address ? { address } : {}) });
  const held = [from("198.51.100.1", "a"), from("198.51.100.1", "b")];
  const third = await from("198.51.100.1", "c");
  assert.equal(third.kind === "refused" && third.reason, "too_many_waiting");
  held.push(from("198.51.100.2", "d"), from(undefined, "e"));
  assert.equal(rendezvous.waiting, 4);
  const second = await from("198.51.100.1", "a");
  assert.equal(second.kind, "paired", "its own second party is still paired");
  held.push(from("198.51.100.1", "f"));
  assert.equal(rendezvous.waiting, 4, "the pair freed a place for that address");
  await rendezvous.close();
  await Promise.all(held);
});

Deno.test("LocalRendezvous: a party already gone when it arrives is counted as departed and pairs with nobody", async () => {
  const { rendezvous, counts } = local();
  const first = rendezvous.arrive({ id: "a", payload: "1", timeoutMs: long });
  const gone = await rendezvous.arrive({
    id: "a",
    payload: "2",
    timeoutMs: long,
    signal: AbortSignal.abort(),
  });
  assert.equal(gone.kind, "departed");
  assert.equal(counts.departed, 1);
  assert.equal(rendezvous.waiting, 1, "the first party still waits for a real partner");
  const real = await rendezvous.arrive({ id: "a", payload: "3", timeoutMs: long });
  assert.equal(real.kind === "paired" && real.peerPayload, "1");
  assert.equal(((await first) as { peerPayload: string }).peerPayload, "3");
});

Deno.test("LocalRendezvous property: under any arrivals, departures and timeouts every limit holds and all is released", async () => {
  const event = fc.oneof(
    fc.record({
      kind: fc.constant("arrive" as const),
      id: fc.constantFrom("a", "b", "c", "d", "e"),
      address: fc.option(fc.constantFrom("198.51.100.1", "198.51.100.2"), { nil: undefined }),
      bytes: fc.integer({ min: 0, max: 40 }),
      timeoutMs: fc.constantFrom(1, long),
    }),
    fc.record({ kind: fc.constant("leave" as const), index: fc.nat() }),
    fc.record({ kind: fc.constant("tick" as const) }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(event, { maxLength: 60 }), async (events) => {
      const limits = { maxWaiting: 4, maxWaitingBytes: 60, maxWaitingPerAddress: 2 };
      const counts = { paired: 0, timedOut: 0, departed: 0 };
      const rendezvous = new LocalRendezvous({
        ...limits,
        events: {
          paired: () => counts.paired++,
          timedOut: () => counts.timedOut++,
          departed: () => counts.departed++,
        },
      });
      const hangUps: AbortController[] = [];
      const outcomes: Promise<Outcome>[] = [];
      for (const e of events) {
        if (e.kind === "arrive") {
          const hangUp = new AbortController();
          hangUps.push(hangUp);
          outcomes.push(rendezvous.arrive({
            id: e.id,
            payload: "x".repeat(e.bytes),
            timeoutMs: e.timeoutMs,
            signal: hangUp.signal,
            ...(e.address ? { address: e.address } : {}),
          }));
        } else if (e.kind === "leave" && hangUps.length > 0) {
          hangUps[e.index % hangUps.length]!.abort();
        } else {
          await new Promise((resolve) => setTimeout(resolve, 2)); // timeouts of 1 ms fire
        }
        assert.ok(rendezvous.waiting <= limits.maxWaiting);
        assert.ok(rendezvous.waitingBytes <= limits.maxWaitingBytes);
      }
      await rendezvous.close();
      const settled = await Promise.all(outcomes);
      assert.equal(rendezvous.waiting, 0);
      assert.equal(rendezvous.waitingBytes, 0, "every held byte is released");
      // Every arrival got exactly one outcome, and the counts add up.
      const kinds = settled.map((o) => o.kind);
      assert.equal(kinds.filter((k) => k === "paired").length, 2 * counts.paired);
      assert.equal(kinds.filter((k) => k === "departed").length, counts.departed);
      assert.equal(
        settled.filter((o) => o.kind === "refused" && o.reason === "timeout").length,
        counts.timedOut,
      );
    }),
    { numRuns: 60 },
  );
});

Deno.test("LocalRendezvous property: a party whose connection is in doubt is paired only once confirmed; pairs are mutual", async () => {
  const event = fc.oneof(
    fc.record({
      kind: fc.constant("arrive" as const),
      id: fc.constantFrom("a", "b"), // few ids: arrivals meet often
      timeoutMs: fc.constantFrom(1, long),
    }),
    fc.record({ kind: fc.constant("leave" as const), index: fc.nat() }),
    // A half-close: the client is still there (present) or closed completely (gone).
    fc.record({ kind: fc.constant("halfClose" as const), index: fc.nat(), gone: fc.boolean() }),
    fc.record({ kind: fc.constant("tick" as const) }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(event, { maxLength: 40 }), async (events) => {
      const { rendezvous, counts } = local(10);
      const parties: {
        hangUp: AbortController;
        doubt: "none" | "present" | "gone";
        goneAt?: number;
        leftAt?: number;
        settledAt?: number;
        outcome?: Outcome;
      }[] = [];
      const outcomes: Promise<Outcome>[] = [];
      let step = 0;
      for (const e of events) {
        step++;
        if (e.kind === "arrive") {
          const index = parties.length;
          const party = {
            hangUp: new AbortController(),
            doubt: "none" as "none" | "present" | "gone",
          };
          parties.push(party);
          outcomes.push(
            rendezvous.arrive({
              id: e.id,
              payload: `p${index}`,
              timeoutMs: e.timeoutMs,
              signal: party.hangUp.signal,
              presence: {
                get inDoubt() {
                  return party.doubt !== "none" && !party.hangUp.signal.aborted;
                },
                async confirm() {
                  await new Promise((resolve) => setTimeout(resolve, 1)); // the probe's gap
                  if (party.doubt === "gone") party.hangUp.abort(); // the reset closes it
                  return !party.hangUp.signal.aborted;
                },
              },
            }).then((outcome) => {
              Object.assign(parties[index]!, { outcome, settledAt: step });
              return outcome;
            }),
          );
        } else if (e.kind === "leave" && parties.length > 0) {
          const party = parties[e.index % parties.length]!;
          party.leftAt ??= step;
          party.hangUp.abort();
        } else if (e.kind === "halfClose" && parties.length > 0) {
          const party = parties[e.index % parties.length]!;
          if (party.doubt === "none") {
            party.doubt = e.gone ? "gone" : "present";
            if (e.gone) party.goneAt = step;
          }
        } else if (e.kind === "tick") {
          await new Promise((resolve) => setTimeout(resolve, 3)); // timeouts and probes end
        }
        await new Promise((resolve) => setTimeout(resolve, 0)); // settled outcomes are seen
      }
      await new Promise((resolve) => setTimeout(resolve, 5)); // probes under way end
      await rendezvous.close();
      const settled = await Promise.all(outcomes);
      assert.equal(rendezvous.waiting, 0);
      settled.forEach((outcome, index) => {
        const party = parties[index]!;
        if (outcome.kind !== "paired") return;
        // Never paired after closing for good: only an answer that came before it counts.
        if (party.goneAt !== undefined) assert.ok(party.settledAt! < party.goneAt, `p${index}`);
        // A party that hung up (first or second, during a probe of its peer too) is paired
        // only if that came before.
        if (party.leftAt !== undefined) {
          assert.ok(party.settledAt! < party.leftAt, `p${index} left`);
        }
        // Mutual: the party whose payload it got got its own.
        const peer = Number(outcome.peerPayload!.slice(1));
        const back = settled[peer]!;
        assert.ok(back.kind === "paired" && back.peerPayload === `p${index}`, `p${index}/p${peer}`);
      });
      assert.equal(settled.filter((o) => o.kind === "paired").length, 2 * counts.paired);
    }),
    { numRuns: 400 },
  );
});

Deno.test("LocalRendezvous: a first party in doubt is confirmed before pairing; if gone, the newcomer waits instead", async () => {
  const { rendezvous, counts } = local();
  const hangUp = new AbortController();
  let probes = 0;
  const first = rendezvous.arrive({
    id: "a",
    payload: "gone",
    timeoutMs: long,
    signal: hangUp.signal,
    presence: {
      inDoubt: true, // it half-closed
      confirm() {
        probes++;
        hangUp.abort(); // the probe met a reset: it had closed completely
        return Promise.resolve(false);
      },
    },
  });
  const next = rendezvous.arrive({ id: "a", payload: "next", timeoutMs: long });
  assert.equal((await first).kind, "departed");
  assert.equal(probes, 1);
  assert.equal(counts.departed, 1);
  const third = await rendezvous.arrive({ id: "a", payload: "third", timeoutMs: long });
  assert.equal(third.kind === "paired" && third.peerPayload, "next", "next waited, not paired");
  assert.equal(((await next) as { peerPayload: string }).peerPayload, "third");
});

Deno.test("LocalRendezvous: a first party in doubt that is still there is paired; a third party meanwhile gets conflict", async () => {
  const { rendezvous } = local();
  const confirmed = Promise.withResolvers<boolean>();
  const first = rendezvous.arrive({
    id: "a",
    payload: "half-closed",
    timeoutMs: long,
    presence: { inDoubt: true, confirm: () => confirmed.promise },
  });
  const second = rendezvous.arrive({ id: "a", payload: "second", timeoutMs: long });
  const third = await rendezvous.arrive({ id: "a", payload: "third", timeoutMs: long });
  assert.deepEqual(third.kind === "refused" && third.reason, "conflict");
  confirmed.resolve(true);
  assert.equal(((await second) as { peerPayload: string }).peerPayload, "half-closed");
  assert.equal(((await first) as { peerPayload: string }).peerPayload, "second");
});

Deno.test("LocalRendezvous: a second party that leaves while its peer's presence is being confirmed is not paired; the first waits on", async () => {
  const { rendezvous, counts } = local();
  const confirmed = Promise.withResolvers<boolean>();
  const first = rendezvous.arrive({
    id: "a",
    payload: "half-closed",
    timeoutMs: long,
    presence: { inDoubt: true, confirm: () => confirmed.promise },
  });
  const leaving = new AbortController();
  const second = rendezvous.arrive({
    id: "a",
    payload: "left during the probe",
    timeoutMs: long,
    signal: leaving.signal,
  });
  leaving.abort(); // it hangs up while the first party is probed
  confirmed.resolve(true);
  assert.equal((await second).kind, "departed");
  assert.equal(counts.departed, 1);
  assert.equal(rendezvous.waiting, 1, "the first party still waits");
  const third = await rendezvous.arrive({ id: "a", payload: "third", timeoutMs: long });
  assert.equal(third.kind === "paired" && third.peerPayload, "half-closed");
  assert.equal(((await first) as { peerPayload: string }).peerPayload, "third");
});

Deno.test("LocalRendezvous: waits past setTimeout's range do not end early (2^31 − 1, 2^31, 30 days, Infinity)", async () => {
  const { rendezvous, counts } = local();
  const waits = [2 ** 31 - 1, 2 ** 31, 30 * 24 * 3600_000, Infinity];
  const outcomes = waits.map((timeoutMs, i) =>
    rendezvous.arrive({ id: `long-${i}`, payload: null, timeoutMs })
  );
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(rendezvous.waiting, waits.length, "all still waiting");
  assert.equal(counts.timedOut, 0);
  await rendezvous.close();
  for (const outcome of await Promise.all(outcomes)) {
    assert.equal(outcome.kind === "refused" && outcome.reason, "shutting_down");
  }
});

Deno.test("LocalRendezvous: an abort right after arrive() is honoured (a departure, never paired)", async () => {
  const { rendezvous, counts } = local();
  const controller = new AbortController();
  const first = rendezvous.arrive({
    id: "a",
    payload: "left",
    timeoutMs: long,
    signal: controller.signal,
  });
  controller.abort();
  assert.equal((await first).kind, "departed");
  assert.equal(counts.departed, 1);
  const next = rendezvous.arrive({ id: "a", payload: "next", timeoutMs: long });
  assert.equal(rendezvous.waiting, 1, "the next party waits: nobody was left to pair with");
  await rendezvous.close();
  await next;
});
