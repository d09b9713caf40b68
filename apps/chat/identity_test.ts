// A name in a room belongs to its key, over real TCP and PGlite: a connection under a bound
// name with another key is refused and replaces nobody; a change signed by the bound key
// or an announced reset goes through and reaches the peer as such; and the client trusts
// a signed change by itself, holds back messages under a reset key until its user accepts
// that key by fingerprint, and is back on the trusted key when the peer returns with it.
import assert from "node:assert/strict";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { waitFor } from "@duet/testkit";
import { deriveSharedKey, encryptMessage, keyFingerprint, messageAad } from "./crypto.ts";
import { base64 } from "./crypto.ts";
import { type ClientMessage, type ServerMessage } from "./protocol.ts";
import { startChatServer } from "./server.ts";
import { ChatClient, type ChatClient as Client, type ClientEvent } from "./client.ts";
import { KeyStore } from "./keystore.ts";
import { sendFrame, TestClient } from "./testdata/client.ts";
import { pgliteStore } from "./testdata/stores.ts";

const options = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "chat identity: another key under a bound name is refused and replaces nobody; " +
    "a signed change and a reset reach the peer as such",
  ...options,
  async fn() {
    const server = await startChatServer({ store: await pgliteStore(), port: 0 });
    const port = server.addr.port;
    try {
      const [alice] = await TestClient.join(port, "alice", "tea");
      const [bob] = await TestClient.join(port, "bob", "tea");
      await alice.next((m) => m.type === "peer_key");
      // Mallory knows the room and the name.
      const [mallory] = await TestClient.join(port, "bob", "tea");
      const refused = await mallory.next((m) => m.type === "error");
      assert.equal(refused.type === "error" && refused.code, "key_mismatch");
      await mallory.closed;
      // Bob was not replaced: he is still connected and served, and got no bye.
      await bob.send(sendFrame("b1", 1));
      await bob.next((m) => m.type === "stored");
      assert.deepEqual(bob.all("bye"), []);
      assert.deepEqual(alice.all("peer_key"), [], "no key of mallory's reached alice");
      // A key change signed by the bound key: accepted, replaces the old connection, and
      // reaches alice with its signature.
      const [bob2] = await TestClient.join(port, "bob", "tea", {
        change: { previousSecret: bob.secret },
      });
      await bob.next((m) => m.type === "bye");
      const rotated = await alice.next((m) => m.type === "peer_key");
      assert.equal(rotated.type === "peer_key" && rotated.public_key, bob2.offer!.public_key);
      assert.deepEqual(rotated.type === "peer_key" && rotated.rotation, bob2.offer!.rotation);
      // A reset: accepted, and said.
      const [taker] = await TestClient.join(port, "bob", "tea", { change: { reset: true } });
      const reset = await alice.next((m) => m.type === "peer_key");
      assert.equal(reset.type === "peer_key" && reset.reset, true);
      assert.equal(reset.type === "peer_key" && reset.public_key, taker.offer!.public_key);
      for (const c of [alice, bob2, taker]) c.close();
    } finally {
      await server.shutdown();
    }
  },
});

/** Bob's side by hand: messages encrypted to alice under a given key of his. */
async function bobSays(
  bob: TestClient,
  secret: Uint8Array,
  alicePublic: string,
  text: string,
  id: string,
  seq: number,
): Promise<void> {
  const bobPublic = bytesToHex(secp256k1.getPublicKey(secret, true));
  const key = await deriveSharedKey(secret, "tea", [alicePublic, bobPublic], 1);
  const { nonce, ciphertext } = await encryptMessage(key, text, messageAad("tea", "bob", id));
  await bob.send({
    type: "send",
    client_msg_id: id,
    seq,
    nonce: base64.encode(nonce),
    ciphertext: base64.encode(ciphertext),
  } as ClientMessage);
  await bob.next((m) => m.type === "stored");
}

Deno.test({
  name: "chat identity: the client trusts a change signed by the key it trusts, holds back " +
    "messages under a reset key until accepted by fingerprint, and returns to the trusted key",
  ...options,
  async fn() {
    const dir = await Deno.makeTempDir();
    const server = await startChatServer({ store: await pgliteStore(), port: 0 });
    const port = server.addr.port;
    const keyStore = await KeyStore.open(`${dir}/alice.sqlite`);
    const events: ClientEvent[] = [];
    let client: Client | undefined;
    try {
      client = new ChatClient({
        server: `127.0.0.1:${port}`,
        name: "alice",
        room: "tea",
        keyStore,
        onEvent: (event) => events.push(event),
      });
      await client.start();
      const [bob] = await TestClient.join(port, "bob", "tea");
      const keyEvents = () => events.filter((e) => e.type === "key");
      await waitFor(() => keyEvents().length === 1, "first key");
      const alicePublic = await alicePublicKey(bob);
      await bobSays(bob, bob.secret, alicePublic, "one", "b1", 1);
      await waitFor(() => shown(events).includes("one"), "bob's first message");

      // Signed by the key alice trusts: trusted at once, no warning.
      const [bob2] = await TestClient.join(port, "bob", "tea", {
        change: { previousSecret: bob.secret },
      });
      await waitFor(() => keyEvents().length === 2, "the rotated key");
      assert.deepEqual(
        { ...keyEvents()[1], fingerprint: "" },
        { type: "key", fingerprint: "", peer: "bob", changed: false, accepted: true },
      );
      await bobSays(bob2, bob2.secret, alicePublic, "two", "b2", 2);
      await waitFor(() => shown(events).includes("two"), "under the rotated key");

      // A take-over: a warning, and its message is held back, not shown.
      const [taker] = await TestClient.join(port, "bob", "tea", { change: { reset: true } });
      await waitFor(() => keyEvents().length === 3, "the reset key");
      assert.equal((keyEvents()[2] as { changed: boolean }).changed, true);
      assert.equal((keyEvents()[2] as { reset?: boolean }).reset, true, "said to be a reset");
      await bobSays(taker, taker.secret, alicePublic, "FORGED", "m1", 3);
      await waitFor(() => events.some((e) => e.type === "held"), "held back");
      assert.ok(!shown(events).includes("FORGED"));
      // While that key waits, alice's messages wait too.
      await client.send("for bob only");
      assert.equal(client.unsent, 1);
      // The real bob comes back (taking the name back): the trusted key is current again,
      // what alice typed goes to him; the taker's key still waits, and /accept-key without
      // a fingerprint does not trust it.
      const [bob3] = await TestClient.join(port, "bob", "tea", {
        secret: bob2.secret,
        change: { reset: true },
      });
      await waitFor(() => events.some((e) => e.type === "key_restored"), "back on the trusted key");
      await waitFor(() => client!.unsent === 0, "alice's message went out");
      const pushed = await bob3.next((m) => m.type === "message");
      assert.equal(pushed.type === "message" && pushed.message.sender, "alice");
      const refused = await client.acceptKey();
      assert.equal(refused.accepted, false);
      // Accepting the taker's key by its fingerprint shows what it held back.
      const takerKey = await deriveSharedKey(
        taker.secret,
        "tea",
        [alicePublic, taker.offer!.public_key],
        1,
      );
      const fingerprint = await keyFingerprint(takerKey);
      const accepted = await client.acceptKey(fingerprint.slice(0, 12));
      assert.deepEqual(accepted, { accepted: true, fingerprint, peer: "bob", released: 1 });
      await waitFor(() => shown(events).includes("FORGED"), "released after acceptance");
      for (const c of [bob, bob2, taker, bob3]) c.close();
    } finally {
      await client?.stop();
      keyStore.close();
      await server.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

/** Alice's public key, as bob receives it. */
async function alicePublicKey(bob: TestClient): Promise<string> {
  const offer = await bob.next((m: ServerMessage) => m.type === "peer_key");
  return offer.type === "peer_key" ? offer.public_key : "";
}

/** The texts shown as messages so far. */
function shown(events: ClientEvent[]): string[] {
  return events.flatMap((e) => e.type === "message" && e.message.text ? [e.message.text] : []);
}

Deno.test({
  name: "chat identity: a connection that proves no key is closed at the handshake deadline; " +
    "what it may leave waiting is bounded in bytes",
  ...options,
  async fn() {
    const server = await startChatServer({
      store: await pgliteStore(),
      port: 0,
      handshakeTimeoutMs: 500,
    });
    const port = server.addr.port;
    try {
      const [silent] = await TestClient.join(port, "mallory", "tea", { claim: false });
      const [alice] = await TestClient.join(port, "alice", "tea");
      const bye = await silent.next((m) => m.type === "bye");
      assert.deepEqual(bye, { type: "bye", reason: "idle" });
      await silent.closed;
      // The one that proved its key stays past the deadline.
      await new Promise((r) => setTimeout(r, 700));
      await alice.send(sendFrame("a1", 1));
      await alice.next((m) => m.type === "stored");
      // Frames of ~48 KiB sent before any key offer: refused once they pass 256 KiB.
      const [hoarder] = await TestClient.join(port, "hoarder", "other", { claim: false });
      const big = { ...sendFrame("h", 1), ciphertext: base64.encode(new Uint8Array(36 * 1024)) };
      for (let i = 0; i < 8; i++) await hoarder.send(big as ClientMessage).catch(() => {}); // closed
      const refused = await hoarder.next((m) => m.type === "error");
      assert.equal(refused.type === "error" && refused.code, "bad_message");
      await hoarder.closed;
      alice.close();
    } finally {
      await server.shutdown();
    }
  },
});

Deno.test("ChatClient: a heartbeat or backoff past a timer's range (2^31 − 1 ms) is refused, naming it", async () => {
  const dir = await Deno.makeTempDir();
  const keyStore = await KeyStore.open(`${dir}/alice.sqlite`);
  try {
    const base = {
      server: "127.0.0.1:1",
      name: "alice",
      room: "tea",
      keyStore,
      onEvent: () => {},
    };
    assert.throws(() => new ChatClient({ ...base, heartbeatMs: 2 ** 31 }), /heartbeatMs/);
    assert.throws(
      () =>
        new ChatClient({
          ...base,
          backoff: { initialMs: 100, maxMs: 2_592_000_000, jitter: "full" as const },
        }),
      /backoff\.maxMs/,
    );
    assert.throws(
      () =>
        new ChatClient({ ...base, backoff: { initialMs: 0, maxMs: 100, jitter: "full" as const } }),
      /initialMs/,
    );
    await new ChatClient({ ...base, heartbeatMs: 2 ** 31 - 1 }).stop();
  } finally {
    keyStore.close();
    await Deno.remove(dir, { recursive: true });
  }
});
