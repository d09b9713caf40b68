// The store on both engines, the same tests: real PostgreSQL (a schema per test) and
// PGlite (in memory, from a migrated snapshot).
import assert from "node:assert/strict";
import { testWith } from "@duet/testkit";
import type { ChatStore, StoreEvent } from "./store.ts";
import { pgliteStore, postgresRequirement, postgresStore } from "./testdata/stores.ts";

const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);
const proof = { t: "02" + "a".repeat(64), s: "b".repeat(64) };

type Engine = {
  name: string;
  open: () => Promise<ChatStore>;
  requirement: { name: string; missing: string | undefined };
};
const engines: Engine[] = [
  { name: "PGlite", open: pgliteStore, requirement: { name: "PGlite", missing: undefined } },
  { name: "PostgreSQL", open: postgresStore, requirement: postgresRequirement },
];

function storeTest(name: string, fn: (store: ChatStore) => Promise<void>) {
  for (const engine of engines) {
    testWith(engine.requirement, {
      name: `store (${engine.name}): ${name}`,
      sanitizeOps: false,
      sanitizeResources: false,
      async fn() {
        const store = await engine.open();
        try {
          await fn(store);
        } finally {
          await store.close();
        }
      },
    });
  }
}

storeTest("migrations apply once; a second run does nothing", async (store) => {
  assert.equal(await store.migrate(), 0, "the fixture migrated already");
});

storeTest(
  "rooms take two names; the same name gets its party back; a third is refused",
  async (store) => {
    assert.deepEqual(await store.join("r1", "alice"), {
      ok: true,
      party: 0,
      peer: null,
      lastId: 0,
    });
    assert.deepEqual(await store.join("r1", "bob"), {
      ok: true,
      party: 1,
      peer: "alice",
      lastId: 0,
    });
    assert.deepEqual(await store.join("r1", "alice"), {
      ok: true,
      party: 0,
      peer: "bob",
      lastId: 0,
    });
    assert.deepEqual(await store.join("r1", "carol"), {
      ok: false,
      reason: "room_full",
      parties: ["alice", "bob"],
    });
    const together = await Promise.all([store.join("r2", "x"), store.join("r2", "y")]);
    assert.deepEqual(
      together.map((j) => j.ok && j.party).sort(),
      [0, 1],
      "concurrent joins split 0/1",
    );
  },
);

storeTest("key offers are stored per party and replaced by a new one", async (store) => {
  await store.join("k", "alice");
  await store.join("k", "bob");
  assert.deepEqual(await store.keyOffers("k"), []);
  await store.saveKeyOffer("k", 1, bytes(33, 2), proof);
  await store.saveKeyOffer("k", 1, bytes(33, 3), proof);
  assert.deepEqual(await store.keyOffers("k"), [
    { party: 1, name: "bob", publicKey: bytes(33, 3), proof },
  ]);
});

storeTest("a message is stored once per client message id, bytes intact", async (store) => {
  await store.join("m", "alice");
  const first = await store.insertMessage("m", "alice", "c1", bytes(12, 7), bytes(40, 9));
  assert.equal(first.duplicate, false);
  assert.deepEqual(first.message.nonce, bytes(12, 7));
  assert.deepEqual(first.message.ciphertext, bytes(40, 9));
  const again = await store.insertMessage("m", "alice", "c1", bytes(12, 8), bytes(40, 8));
  assert.equal(again.duplicate, true);
  assert.equal(again.message.id, first.message.id);
  assert.deepEqual(again.message.ciphertext, bytes(40, 9), "the first copy stands");
  const other = await store.insertMessage("m", "bob", "c1", bytes(12), bytes(16));
  assert.notEqual(other.message.id, first.message.id, "ids are per sender");
  assert.deepEqual(await store.message(first.message.id), first.message);
  assert.equal(await store.message(999_999), undefined);
});

storeTest(
  "history pages by id both ways, oldest first, and says when it was cut",
  async (store) => {
    await store.join("h", "alice");
    const ids: number[] = [];
    for (let i = 0; i < 7; i++) {
      ids.push(
        (await store.insertMessage("h", "alice", `c${i}`, bytes(12), bytes(16, i))).message.id,
      );
    }
    await store.join("elsewhere", "x");
    await store.insertMessage("elsewhere", "x", "c", bytes(12), bytes(16)); // not in h's pages
    const page = (r: { messages: { id: number }[]; hasMore: boolean }) => ({
      ids: r.messages.map((m) => m.id),
      hasMore: r.hasMore,
    });
    assert.deepEqual(page(await store.history("h", { limit: 3 })), {
      ids: ids.slice(4),
      hasMore: true,
    });
    assert.deepEqual(page(await store.history("h", { before: ids[4], limit: 3 })), {
      ids: ids.slice(1, 4),
      hasMore: true,
    });
    assert.deepEqual(page(await store.history("h", { before: ids[1], limit: 3 })), {
      ids: ids.slice(0, 1),
      hasMore: false,
    });
    assert.deepEqual(page(await store.history("h", { after: ids[1], limit: 3 })), {
      ids: ids.slice(2, 5),
      hasMore: true,
    });
    assert.deepEqual(page(await store.history("h", { after: ids[4], limit: 3 })), {
      ids: ids.slice(5),
      hasMore: false,
    });
    assert.deepEqual(page(await store.history("h", { after: 0, before: ids[3], limit: 10 })), {
      ids: ids.slice(0, 3),
      hasMore: false,
    });
    const rejoined = await store.join("h", "alice");
    assert.equal(rejoined.ok && rejoined.lastId, ids[6], "welcome names the room's last id");
  },
);

storeTest(
  "stored messages and key offers are announced on the channel",
  async (store) => {
    const heard: unknown[] = [];
    let listening = 0;
    await store.listen((event) => heard.push(event), () => listening++);
    assert.equal(listening, 1);
    await store.join("n", "alice");
    const { message } = await store.insertMessage("n", "alice", "c1", bytes(12), bytes(16));
    await store.insertMessage("n", "alice", "c1", bytes(12), bytes(16)); // a retry: no second notice
    await store.saveKeyOffer("n", 0, bytes(33, 2), proof);
    for (let i = 0; i < 100 && heard.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(heard, [
      { kind: "message", room: "n", id: message.id, message },
      { kind: "key", room: "n", party: 0 },
    ]);
  },
);

storeTest("a large message is announced by id only (NOTIFY's payload limit)", async (store) => {
  const heard: StoreEvent[] = [];
  await store.listen((event) => heard.push(event), () => {});
  await store.join("big", "alice");
  const { message } = await store.insertMessage("big", "alice", "c1", bytes(12), bytes(20_000, 5));
  for (let i = 0; i < 100 && heard.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(heard, [{ kind: "message", room: "big", id: message.id }]);
});

storeTest(
  "concurrent sends are stored together, each once, and every caller gets its row",
  async (store) => {
    await store.join("g", "alice");
    await store.join("g", "bob");
    const sends = Array.from({ length: 300 }, (_, i) => ({
      sender: i % 2 ? "bob" : "alice",
      id: `c${i % 250}`, // the last 50 repeat earlier ones
      fill: i % 250,
    }));
    const results = await Promise.all(
      sends.map((s) =>
        store.insertMessage("g", s.sender, s.id, bytes(12, s.fill), bytes(16, s.fill))
      ),
    );
    const fresh = results.filter((r) => !r.duplicate);
    assert.equal(new Set(fresh.map((r) => r.message.id)).size, fresh.length, "ids are unique");
    for (const [i, result] of results.entries()) {
      assert.equal(result.message.sender, sends[i]!.sender);
      assert.equal(result.message.clientMsgId, sends[i]!.id);
      const twin = results.find((_, j) =>
        j !== i && sends[j]!.sender === sends[i]!.sender && sends[j]!.id === sends[i]!.id
      );
      if (twin) assert.equal(twin.message.id, result.message.id, "a repeat gets the first copy");
    }
    const page = await store.history("g", { limit: 200, after: 0 });
    const all = [
      ...page.messages,
      ...(await store.history("g", { limit: 200, after: page.messages.at(-1)!.id })).messages,
    ];
    const distinct = new Set(sends.map((s) => `${s.sender}/${s.id}`));
    assert.equal(all.length, distinct.size, "each distinct message stored once");
  },
);
