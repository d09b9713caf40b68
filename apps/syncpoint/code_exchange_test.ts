// A rendezvous under a code, against a real syncpoint on loopback: matching codes exchange
// their payloads; another code fails on both sides with nothing revealed; a relay that
// substitutes a message is caught on both sides; a partner without a code is told so.
import assert from "node:assert/strict";
import { CodeExchangeError, maxCodePayloadBytes, waitWithCode } from "./code_exchange.ts";
import { waitForSecondParty } from "./client.ts";
import { startSyncpoint } from "./server.ts";
import { start as cpaceStart } from "@duet/pake";

async function withSyncpoint(fn: (url: URL) => Promise<void>) {
  const syncpoint = await startSyncpoint({ port: 0 });
  try {
    await fn(syncpoint.url);
  } finally {
    await syncpoint.shutdown();
  }
}

const settled = (promise: Promise<unknown>) =>
  promise.then((value) => ({ value }), (error: unknown) => ({ error }));

Deno.test("code exchange: the same code, typed differently, hands each payload to the other", async () => {
  await withSyncpoint(async (url) => {
    const [a, b] = await Promise.all([
      waitWithCode(url, "meet-1", "7-guitar-orbit-lazy", {
        payload: "from alice",
        timeoutMs: 5000,
      }),
      waitWithCode(url, "meet-1", "7 GUIT orbi lazy", {
        payload: "\ufefffrom bob ✓", // a leading U+FEFF is part of the payload
        timeoutMs: 5000,
      }),
    ]);
    assert.deepEqual(new Set([a.role, b.role]), new Set(["first", "second"]));
    assert.equal(a.peerPayload, "\ufefffrom bob ✓");
    assert.equal(b.peerPayload, "from alice");
    // No payload on one side: null there, the other's still delivered.
    const [c, d] = await Promise.all([
      waitWithCode(url, "meet-2", "7-guitar-orbit-lazy", { timeoutMs: 5000 }),
      waitWithCode(url, "meet-2", "7-guitar-orbit-lazy", { payload: "x", timeoutMs: 5000 }),
    ]);
    assert.equal(c.peerPayload, "x");
    assert.equal(d.peerPayload, null);
  });
});

Deno.test("code exchange: another code fails on both sides, and neither payload crosses in the clear", async () => {
  await withSyncpoint(async (url) => {
    // What the service relays, as a relay would see it.
    const relayed: string[] = [];
    const watching: typeof fetch = async (input, init) => {
      if (typeof init?.body === "string") relayed.push(init.body);
      return await fetch(input, init);
    };
    const [a, b] = await Promise.all([
      settled(waitWithCode(url, "meet-3", "7-guitar-orbit-lazy", {
        payload: "secret of alice",
        timeoutMs: 5000,
        fetch: watching,
      })),
      settled(waitWithCode(url, "meet-3", "7-guitar-orbit-leaf", {
        payload: "secret of bob",
        timeoutMs: 5000,
        fetch: watching,
      })),
    ]);
    for (const outcome of [a, b]) {
      assert.ok("error" in outcome && outcome.error instanceof CodeExchangeError, String(outcome));
      assert.equal((outcome.error as CodeExchangeError).code, "code_mismatch");
      assert.match((outcome.error as Error).message, /did not prove the same code/);
    }
    assert.equal(relayed.length, 4, "two rounds, two parties");
    for (const body of relayed) assert.doesNotMatch(atob(body), /secret of/);
  });
});

Deno.test("code exchange: a relay that substitutes its own message (a guessed code) is caught on both sides", async () => {
  await withSyncpoint(async (url) => {
    // Between alice and the service: her round-1 message is replaced by one made with a
    // guessed code, as a party in the middle must do to learn anything.
    const guessed = cpaceStart({
      prs: new TextEncoder().encode("7-guitar-orbit-lamp"),
      sid: new TextEncoder().encode("duet-syncpoint-code/v1 meet-4"),
    });
    const substituting: typeof fetch = async (input, init) => {
      if (String(input).includes("meet-4~1")) {
        return await fetch(input, { ...init, body: guessed.message.toBase64() });
      }
      return await fetch(input, init);
    };
    const [a, b] = await Promise.all([
      settled(waitWithCode(url, "meet-4", "7-guitar-orbit-lazy", {
        payload: "alice",
        timeoutMs: 5000,
        fetch: substituting,
      })),
      settled(
        waitWithCode(url, "meet-4", "7-guitar-orbit-lazy", { payload: "bob", timeoutMs: 5000 }),
      ),
    ]);
    for (const outcome of [a, b]) {
      assert.ok("error" in outcome, "the substitution is caught");
      assert.equal((outcome.error as CodeExchangeError).code, "code_mismatch");
    }
  });
});

Deno.test("code exchange: a partner without a code is told apart; an id too long and a bad code are refused first", async () => {
  await withSyncpoint(async (url) => {
    const [a] = await Promise.all([
      settled(waitWithCode(url, "meet-5", "7-guitar-orbit-lazy", { timeoutMs: 3000 })),
      waitForSecondParty(url, "meet-5~1", { payload: "hello", timeoutMs: 3000 }),
    ]);
    assert.ok("error" in a);
    assert.equal((a.error as CodeExchangeError).code, "not_code_exchange");
    await assert.rejects(
      waitWithCode(url, "x".repeat(127), "7-guitar-orbit"),
      (error: unknown) => error instanceof CodeExchangeError && error.code === "id_too_long",
    );
    await assert.rejects(waitWithCode(url, "meet-6", "guitar-orbit"), TypeError);
  });
  assert.equal(maxCodePayloadBytes(65536), 49060);
});

Deno.test("code exchange: a partner that leaves after the first round is said so, not a plain timeout", async () => {
  await withSyncpoint(async (url) => {
    // The partner answers round 1 as a real party would, then never comes to round 2.
    const partner = cpaceStart({
      prs: new TextEncoder().encode("7-guitar-orbit-lazy"),
      sid: new TextEncoder().encode("duet-syncpoint-code/v1 meet-7"),
    });
    const [a] = await Promise.all([
      settled(
        waitWithCode(url, "meet-7", "7-guitar-orbit-lazy", { payload: "x", timeoutMs: 1500 }),
      ),
      waitForSecondParty(url, "meet-7~1", { payload: partner.message.toBase64(), timeoutMs: 1500 }),
    ]);
    assert.ok("error" in a && a.error instanceof CodeExchangeError, String(a));
    assert.equal((a.error as CodeExchangeError).code, "partner_left");
  });
});

Deno.test("code exchange: a service that sends a party's own message back is caught, nothing revealed", async () => {
  // A fake service: round 1 answers each party with what it sent; round 2 is never reached.
  let rounds = 0;
  const reflecting: typeof fetch = (_input, init) => {
    rounds++;
    return Promise.resolve(Response.json({
      status: "paired",
      id: "meet-9~1",
      role: "second",
      waited_ms: 1,
      peer_payload: String(init?.body ?? ""),
    }));
  };
  const outcome = await settled(
    waitWithCode("http://127.0.0.1:9/", "meet-9", "7-guitar-orbit-lazy", {
      payload: "secret",
      fetch: reflecting,
    }),
  );
  assert.ok("error" in outcome);
  assert.equal((outcome.error as CodeExchangeError).code, "code_mismatch");
  assert.match((outcome.error as Error).message, /this party's own/);
  assert.equal(rounds, 1, "no second round: nothing sealed went out");
});
