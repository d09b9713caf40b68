// Meeting by a code, over real TCP and PGlite with the real client: one code confirms both
// keys and what was typed before goes out after; another code, or a relay in the middle
// (substituting the keys, or also answering the code runs under a guess), stops both
// clients with nothing stored; a key confirmed once stays confirmed; the server bounds a
// room's attempts.
import assert from "node:assert/strict";
import { testWith, waitFor } from "@duet/testkit";
import { generateCode } from "@duet/pake";
import { startChatServer } from "./server.ts";
import { ChatClient, type ClientEvent } from "./client.ts";
import { KeyStore } from "./keystore.ts";
import {
  pgliteStore,
  postgresRequirement,
  postgresStore,
  type TestStore,
} from "./testdata/stores.ts";
import { startRelay, substitutingRelay } from "./testdata/relay.ts";

const options = { sanitizeOps: false, sanitizeResources: false };

interface Party {
  client: ChatClient;
  events: ClientEvent[];
  keyStore: KeyStore;
  fatal(): string | undefined;
  verified(): boolean;
  shown(): string[];
  stop(): Promise<void>;
}

async function party(
  port: number,
  name: string,
  dir: string,
  code: string | undefined,
  room = "tea",
  { keyFile = name, resetKey = false } = {},
): Promise<Party> {
  const keyStore = await KeyStore.open(`${dir}/${keyFile}.sqlite`);
  const events: ClientEvent[] = [];
  const client = new ChatClient({
    server: `127.0.0.1:${port}`,
    name,
    room,
    keyStore,
    onEvent: (event) => events.push(event),
    backoff: { initialMs: 20, maxMs: 200, jitter: "full" as const },
    resetKey,
    ...(code === undefined ? {} : { code }),
  });
  await client.start();
  return {
    client,
    events,
    keyStore,
    fatal: () => client.fatal,
    verified: () => events.some((e) => e.type === "code" && e.state === "verified"),
    shown: () =>
      events.flatMap((e) =>
        e.type === "message" && !e.message.own && e.message.text ? [e.message.text] : []
      ),
    async stop() {
      await client.stop();
      keyStore.close();
    },
  };
}

async function roomMessages(store: TestStore, room: string): Promise<number> {
  return (await store.history(room, { limit: 200 })).messages.length;
}

/** Runs `fn` against a server on PGlite (`config` on top of the defaults), then cleans up. */
async function withServer(
  fn: (at: { store: TestStore; port: number; dir: string }) => Promise<void>,
  config: { codeAttemptsPerHour?: number } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const store = await pgliteStore();
  const server = await startChatServer({ store, port: 0, ...config });
  try {
    await fn({ store, port: server.addr.port, dir });
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "chat --code: one code confirms both keys; what was typed before goes out after; " +
    "the confirmation is kept for the next start",
  ...options,
  fn: () =>
    withServer(async ({ store, port, dir }) => {
      const code = generateCode().text;
      const alice = await party(port, "alice", dir, code);
      await alice.client.send("typed before bob came");
      await waitFor(() => alice.events.some((e) => e.type === "code"), "alice's run");
      assert.equal(await roomMessages(store, "tea"), 0, "nothing goes out before the code");
      // Bob types the code his own way.
      const parsed = code.split("-");
      const bob = await party(
        port,
        "bob",
        dir,
        `${parsed[0]} ${parsed.slice(1).join(" ").toUpperCase()}`,
      );
      await waitFor(() => alice.verified() && bob.verified(), "both confirmed", 10_000);
      await waitFor(() => bob.shown().includes("typed before bob came"), "alice's message");
      await bob.client.send("hi alice");
      await waitFor(() => alice.shown().includes("hi alice"), "bob's message");
      const fingerprints = [await alice.client.fingerprint(), await bob.client.fingerprint()];
      assert.equal(fingerprints[0], fingerprints[1]);
      assert.ok(alice.client.verified && bob.client.verified);
      const said = alice.events.find((e) => e.type === "code" && e.state === "verified");
      assert.equal(said?.type === "code" && said.fingerprint, fingerprints[0]);
      const kept = alice.keyStore.peerKeys({
        service: alice.keyStore.serviceKey(`127.0.0.1:${port}`),
        room: "tea",
        name: "alice",
      });
      assert.deepEqual(kept.map((k) => [k.accepted, k.verified]), [[true, true]]);
      await alice.stop();
      // A new start with the code: confirmed before, no new run, sends at once.
      const again = await party(port, "alice", dir, code);
      await waitFor(
        () => again.events.some((e) => e.type === "code" && e.state === "verified" && e.earlier),
        "the earlier confirmation",
      );
      assert.ok(!again.events.some((e) => e.type === "code" && e.state === "waiting"));
      await again.client.send("still verified");
      await waitFor(() => bob.shown().includes("still verified"), "sent at once");
      assert.equal(again.fatal(), undefined);
      await again.stop();
      await bob.stop();
    }),
});

Deno.test({
  name: "chat --code: a peer back with a new key (a lost key store, --reset-key) is confirmed " +
    "by the code again, by a client that had confirmed the old one",
  ...options,
  fn: () =>
    withServer(async ({ port, dir }) => {
      const code = generateCode().text;
      const alice = await party(port, "alice", dir, code);
      const bob = await party(port, "bob", dir, code);
      await waitFor(() => alice.verified() && bob.verified(), "both confirmed");
      await bob.stop();
      const verifiedEvents = () =>
        alice.events.filter((e) => e.type === "code" && e.state === "verified").length;
      assert.equal(verifiedEvents(), 1);
      const bob2 = await party(port, "bob", dir, code, "tea", {
        keyFile: "bob-new",
        resetKey: true,
      });
      await waitFor(() => verifiedEvents() === 2 && bob2.verified(), "the new key confirmed");
      await alice.client.send("to the new key");
      await waitFor(() => bob2.shown().includes("to the new key"), "sent under it");
      assert.equal(alice.fatal(), undefined);
      await alice.stop();
      await bob2.stop();
    }),
});

Deno.test({
  name: "chat --code: another code stops both clients, nothing stored, and said in words",
  ...options,
  fn: () =>
    withServer(async ({ store, port, dir }) => {
      const alice = await party(port, "alice", dir, generateCode().text);
      await alice.client.send("for bob only");
      const bob = await party(port, "bob", dir, generateCode().text);
      await bob.client.send("for alice only");
      await waitFor(() => !!alice.fatal() && !!bob.fatal(), "both stopped", 10_000);
      assert.match(alice.fatal()!, /^The code did not match: bob typed another code/);
      assert.match(bob.fatal()!, /^The code did not match: alice typed another code/);
      assert.ok(!alice.verified() && !bob.verified());
      assert.ok(!alice.client.verified && !bob.client.verified);
      assert.equal(await roomMessages(store, "tea"), 0, "nothing was sent");
      assert.deepEqual([alice.shown(), bob.shown()], [[], []]);
      assert.equal(alice.client.unsent, 1, "kept in the outbox, unsent");
      await assert.rejects(() => alice.client.send("more"), RangeError);
      await alice.stop();
      await bob.stop();
      // Later, without a code: the key the run failed against is not trusted, nothing goes
      // out, and /accept-key takes it only by name.
      const later = await party(port, "alice", dir, undefined);
      const restored = later.events.find((e) => e.type === "restored_key");
      assert.equal(restored?.type === "restored_key" && restored.codeFailed, true);
      await waitFor(() => later.events.some((e) => e.type === "presence"), "alice back in");
      assert.equal(later.client.unsent, 1);
      assert.equal(await roomMessages(store, "tea"), 0, "still nothing sent");
      const refused = await later.client.acceptKey();
      assert.equal(refused.accepted, false);
      assert.match(!refused.accepted ? refused.problem : "", /a code run failed against this key/);
      const fingerprint = (await later.client.fingerprint())!;
      const named = await later.client.acceptKey(fingerprint.slice(0, 8));
      assert.equal(named.accepted, true);
      await waitFor(async () => (await roomMessages(store, "tea")) === 1, "sent once accepted");
      await later.stop();
    }),
});

Deno.test({
  name: "chat --code: a message sealed under a key trusted on first use does not go out under " +
    "it once a code run failed against that key, not even on a start without a code",
  ...options,
  fn: () =>
    withServer(async ({ store, port, dir }) => {
      // Alice and bob meet without a code (alice trusts bob's key on first use); a relay
      // that drops alice's sends leaves one sealed under bob's key in her outbox.
      const alice0 = await party(port, "alice", dir, undefined);
      const bob0 = await party(port, "bob", dir, undefined);
      await waitFor(async () => !!(await alice0.client.fingerprint()), "alice has bob's key");
      await alice0.stop();
      await bob0.stop();
      {
        await using dropping = startRelay(port, {
          fromClient: (_conn, message) => message.type === "send" ? [] : [message],
        });
        const offline = await party(dropping.port, "alice", dir, undefined);
        await offline.client.send("sealed under bob's key");
        await waitFor(
          () =>
            offline.events.some((e) =>
              e.type === "message" && e.message.own && e.message.status === "sending"
            ),
          "sealed and sent (and dropped)",
        );
        await offline.stop();
      }
      // Codes that differ: the run fails against bob's key.
      const alice1 = await party(port, "alice", dir, generateCode().text);
      const bob1 = await party(port, "bob", dir, generateCode().text);
      await waitFor(() => !!alice1.fatal() && !!bob1.fatal(), "the mismatch");
      await alice1.stop();
      await bob1.stop();
      // Alice without a code: nothing goes out under the key the code failed against.
      const alice2 = await party(port, "alice", dir, undefined);
      await waitFor(() => alice2.events.some((e) => e.type === "presence"), "alice back in");
      await new Promise((resolve) => setTimeout(resolve, 300)); // what would go out, would have
      assert.equal(await roomMessages(store, "tea"), 0, "nothing sent under the failed key");
      assert.equal(alice2.client.unsent, 1);
      await alice2.stop();
    }),
});

Deno.test({
  name: "chat --code: a relay that substitutes the keys is caught; one that also answers the " +
    "code runs under a guess is caught; without a code only the fingerprints would show it",
  ...options,
  fn: () =>
    withServer(async ({ store, port, dir }) => {
      // Without a code, the attack works: each client agrees a key with the relay, and only
      // comparing /key over another channel would show it.
      {
        await using relay = startRelay(port, substitutingRelay("plain"));
        const alice = await party(relay.port, "alice", dir, undefined, "plain");
        const bob = await party(relay.port, "bob", dir, undefined, "plain");
        await waitFor(
          async () => !!(await alice.client.fingerprint()) && !!(await bob.client.fingerprint()),
          "keys agreed with the relay",
        );
        assert.notEqual(await alice.client.fingerprint(), await bob.client.fingerprint());
        await alice.stop();
        await bob.stop();
      }
      for (const guessing of [false, true]) {
        const room = guessing ? "guess" : "swap";
        const code = generateCode().text;
        await using relay = startRelay(
          port,
          substitutingRelay(room, guessing ? generateCode().text : undefined),
        );
        const alice = await party(relay.port, "alice", dir, code, room);
        await alice.client.send("secret");
        const bob = await party(relay.port, "bob", dir, code, room);
        await waitFor(() => !!alice.fatal() && !!bob.fatal(), `both stopped (${room})`, 10_000);
        const expected = guessing
          ? /^The code did not match/
          : /^The key the server passed on for .* is not the key in .*'s code message/;
        assert.match(alice.fatal()!, expected);
        assert.match(bob.fatal()!, expected);
        assert.ok(!alice.verified() && !bob.verified());
        assert.equal(await roomMessages(store, room), 0, "nothing was sent");
        await alice.stop();
        await bob.stop();
      }
    }),
});

Deno.test({
  name: "chat --code: a relay that sends a client's code messages back as its peer's gets " +
    "no confirmation, and the client says so",
  ...options,
  fn: () =>
    withServer(async ({ port, dir }) => {
      // The relay plays each client's own key offer and code frames back to it as bob's (the
      // key's proof is for the client's party, so the client ignores that key; the code
      // frames are what is tested).
      await using relay = startRelay(port, {
        fromClient(conn, message) {
          const { type, ...fields } = message;
          if (type === "key_offer") {
            const { public_key, proof } = fields as { public_key: string; proof: unknown };
            conn.toClient({ type: "peer_key", name: "bob", party: 1, public_key, proof });
          }
          if (type === "code") {
            conn.toClient({ type: "peer_code", name: "bob", party: 1, ...fields });
          }
          return [message];
        },
        fromServer: (_conn, message) => message.type === "peer_code" ? [] : [message],
      });
      const alice = await party(relay.port, "alice", dir, generateCode().text);
      await waitFor(() => !!alice.fatal(), "the reflection caught");
      assert.match(alice.fatal()!, /this client's own, sent back/);
      assert.ok(!alice.verified());
      await alice.stop();
    }),
});

Deno.test({
  name: "chat --code: past the room's attempts the server refuses, and the client stops saying so",
  ...options,
  fn: () =>
    withServer(async ({ store, port, dir }) => {
      // Waiting alone costs nothing: restarts with no peer message to answer are no attempts.
      let previous: string | undefined;
      const stored = async () => (await store.codeOffers("tea"))[0]?.frame.message;
      for (const restart of [1, 2, 3]) {
        const alice = await party(port, "alice", dir, generateCode().text);
        await waitFor(async () => (await stored()) !== previous, `restart ${restart} stored`);
        previous = await stored();
        assert.equal(alice.fatal(), undefined);
        await alice.stop();
      }
      // Bob comes with another code: the first attempt; both stop.
      const alice = await party(port, "alice", dir, generateCode().text);
      await waitFor(async () => (await stored()) !== previous, "alice's message stored");
      const bob = await party(port, "bob", dir, generateCode().text);
      await waitFor(() => !!alice.fatal() && !!bob.fatal(), "the mismatch");
      await alice.stop();
      await bob.stop();
      previous = await stored();
      // Alice again, while bob's message is there to answer: the second.
      const again = await party(port, "alice", dir, generateCode().text);
      await waitFor(async () => (await stored()) !== previous, "the second attempt stored");
      assert.equal(again.fatal(), undefined);
      await again.stop();
      // A third: refused, and said.
      const third = await party(port, "alice", dir, generateCode().text);
      await waitFor(() => !!third.fatal(), "the refusal");
      assert.match(third.fatal()!, /refuses more code attempts in this room/);
      assert.match(third.fatal()!, /too_many_code_attempts/);
      assert.equal(third.events.filter((e) => e.type === "fatal").length, 1, "said once");
      await third.stop();
    }, { codeAttemptsPerHour: 2 }),
});

testWith(postgresRequirement, {
  name: "chat --code: the two parties on two instances of one PostgreSQL confirm each other",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const storeA = await postgresStore();
    const storeB = await postgresStore(storeA.schema);
    const one = await startChatServer({ store: storeA, port: 0 });
    const two = await startChatServer({ store: storeB, port: 0 });
    const code = generateCode().text;
    try {
      const alice = await party(one.addr.port, "alice", dir, code);
      await alice.client.send("across");
      const bob = await party(two.addr.port, "bob", dir, code);
      await waitFor(() => alice.verified() && bob.verified(), "both confirmed", 10_000);
      await waitFor(() => bob.shown().includes("across"), "alice's message");
      await alice.stop();
      await bob.stop();
    } finally {
      await two.shutdown();
      await one.shutdown().catch(() => {}); // its schema went with the second store's close
      await Deno.remove(dir, { recursive: true });
    }
  },
});
