import assert from "node:assert/strict";
import { KeyStore } from "./keystore.ts";

const at = { server: "127.0.0.1:7070", room: "r", name: "alice" };

Deno.test("key store: a file of mode 0600 that keeps identity, peer keys and outbox across opens", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/nested/keys.sqlite`;
  try {
    const store = await KeyStore.open(path);
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    let made = 0;
    const first = store.identity(at, () => (made++, new Uint8Array(32).fill(7)));
    assert.deepEqual(first, { secret: new Uint8Array(32).fill(7), party: null });
    store.setParty(at, 1);
    store.addPeerKey(at, "02aa", new Uint8Array(32).fill(1), true);
    store.addPeerKey(at, "02aa", new Uint8Array(32).fill(9), true); // the same key again: ignored
    store.addPeerKey(at, "03bb", new Uint8Array(32).fill(2), false);
    store.acceptPeerKey(at, "03bb");
    store.addToOutbox(at, {
      clientMsgId: "m1",
      text: "hi",
      nonce: new Uint8Array(12),
      ciphertext: new Uint8Array(20).fill(3),
      peerPublicKey: "03bb",
    });
    store.close();

    const again = await KeyStore.open(path);
    assert.deepEqual(again.identity(at, () => new Uint8Array(32)), {
      secret: new Uint8Array(32).fill(7),
      party: 1,
    });
    assert.equal(made, 1, "the secret is made once");
    assert.deepEqual(again.peerKeys(at).map((k) => [k.peerPublicKey, k.sharedKey[0], k.accepted]), [
      ["02aa", 1, true],
      ["03bb", 2, true],
    ]);
    assert.deepEqual(again.outbox(at).map((e) => [e.clientMsgId, e.text, e.ciphertext.length]), [[
      "m1",
      "hi",
      20,
    ]]);
    assert.deepEqual(again.outbox({ ...at, name: "bob" }), [], "per name");
    assert.equal(again.outboxSize(at), 1);
    assert.equal(again.outboxEntry(at, "m1")?.text, "hi");
    assert.equal(again.outboxEntry(at, "m2"), undefined);
    again.removeFromOutbox(at, "m1");
    assert.deepEqual(again.outbox(at), []);
    assert.equal(again.outboxSize(at), 0);
    again.close();
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600, "still 0600");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
