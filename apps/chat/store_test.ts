// The store on both engines, the same tests: real PostgreSQL (a schema per test) and
// PGlite (in memory, from a migrated snapshot).
import assert from "node:assert/strict";
import fc from "fast-check";
import { testSchema, testWith } from "@duet/testkit";
import {
  ChatStore,
  connectPostgres,
  isUnavailable,
  type MessageRow,
  MIGRATIONS,
  openPglite,
  type StoreEvent,
  type StoreOutcome,
  StoreUnavailable,
} from "./store.ts";
import {
  pgliteStore,
  postgresRequirement,
  postgresStore,
  type TestStore,
} from "./testdata/stores.ts";

const bytes = (n: number, fill = 1) => new Uint8Array(n).fill(fill);
const proof = { t: "02" + "a".repeat(64), s: "b".repeat(64) };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Engine = {
  name: string;
  open: () => Promise<TestStore>;
  requirement: { name: string; missing: string | undefined };
};
const engines: Engine[] = [
  { name: "PGlite", open: pgliteStore, requirement: { name: "PGlite", missing: undefined } },
  { name: "PostgreSQL", open: postgresStore, requirement: postgresRequirement },
];

function storeTest(name: string, fn: (store: TestStore, engine: Engine) => Promise<void>) {
  for (const engine of engines) {
    testWith(engine.requirement, {
      name: `store (${engine.name}): ${name}`,
      sanitizeOps: false,
      sanitizeResources: false,
      async fn() {
        const store = await engine.open();
        try {
          await fn(store, engine);
        } finally {
          await store.close();
        }
      },
    });
  }
}

/** The message of a `stored` outcome (asserting that it is one), and whether a duplicate. */
function stored(outcome: StoreOutcome): { message: MessageRow; duplicate: boolean } {
  assert.equal(outcome.kind, "stored", `stored, not ${JSON.stringify(outcome)}`);
  return outcome as Extract<StoreOutcome, { kind: "stored" }>;
}

/** Every message of a room, oldest first. */
async function wholeRoom(store: ChatStore, room: string): Promise<MessageRow[]> {
  const all: MessageRow[] = [];
  for (;;) {
    const page = await store.history(room, { after: all.at(-1)?.id ?? 0, limit: 500 });
    all.push(...page.messages);
    if (!page.hasMore) return all;
  }
}

/** Asserts that `rows` (a room's, oldest first) hold seqs 1..n per sender, in id order. */
function assertSenderOrder(rows: MessageRow[]): Map<string, MessageRow[]> {
  const bySender = Map.groupBy(rows, (row) => row.sender);
  for (const [sender, mine] of bySender) {
    assert.deepEqual(
      mine.map((row) => row.seq),
      mine.map((_, i) => i + 1),
      `${sender}'s seqs are 1..n in id order`,
    );
  }
  return bySender;
}

async function until(done: () => boolean, what: string, ms = 10_000): Promise<void> {
  for (const start = Date.now(); !done();) {
    if (Date.now() - start > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

storeTest("migrations apply once; a second run does nothing", async (store) => {
  assert.equal(await store.migrate(), 0, "the fixture migrated already");
});

storeTest(
  "the service id is a UUID made once per database, the same for every instance on it",
  async (store, engine) => {
    const id = store.serviceId;
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    await store.migrate();
    assert.equal(store.serviceId, id, "stable across migrate()");
    const twin = await store.twin();
    try {
      assert.throws(() => twin.serviceId, /migrate\(\)/, "unknown before migrate()");
      assert.equal(await twin.migrate(), 0);
      assert.equal(twin.serviceId, id, "another instance on the database");
    } finally {
      await twin.close();
    }
    const elsewhere = await engine.open();
    try {
      assert.notEqual(elsewhere.serviceId, id, "another database");
    } finally {
      await elsewhere.close();
    }
  },
);

storeTest(
  "rooms take two names; the same name gets its party back; a third is refused",
  async (store) => {
    assert.deepEqual(await store.join("r1", "alice"), {
      ok: true,
      party: 0,
      peer: null,
      lastId: 0,
      lastSeq: 0,
      created: true,
    });
    assert.deepEqual(await store.join("r1", "bob"), {
      ok: true,
      party: 1,
      peer: "alice",
      lastId: 0,
      lastSeq: 0,
      created: false,
    });
    assert.deepEqual(await store.join("r1", "alice"), {
      ok: true,
      party: 0,
      peer: "bob",
      lastId: 0,
      lastSeq: 0,
      created: false,
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

storeTest("a join names the room's last id and the joining name's last seq", async (store) => {
  await store.join("j", "alice");
  await store.join("j", "bob");
  await store.join("other", "alice");
  for (let seq = 1; seq <= 3; seq++) {
    stored(await store.insertMessage("j", "alice", `a${seq}`, seq, bytes(12), bytes(16)));
  }
  const last = stored(await store.insertMessage("j", "bob", "b1", 1, bytes(12), bytes(16)));
  stored(await store.insertMessage("other", "alice", "a1", 1, bytes(12), bytes(16)));
  assert.deepEqual(await store.join("j", "alice"), {
    ok: true,
    party: 0,
    peer: "bob",
    lastId: last.message.id,
    lastSeq: 3,
    created: false,
  });
  const bob = await store.join("j", "bob");
  assert.equal(bob.ok && bob.lastSeq, 1);
});

storeTest(
  "a name is bound to the first key; another replaces it only signed or reset",
  async (store) => {
    await store.join("k", "alice");
    await store.join("k", "bob");
    assert.deepEqual(await store.keyOffers("k"), []);
    assert.deepEqual(await store.bindKey("k", 1, bytes(33, 2), proof), {
      kind: "bound",
      changed: true,
    });
    assert.deepEqual(await store.bindKey("k", 1, bytes(33, 2), proof), {
      kind: "bound",
      changed: false,
    });
    assert.deepEqual(await store.bindKey("k", 1, bytes(33, 3), proof), {
      kind: "mismatch",
      boundKey: bytes(33, 2),
    });
    // A rotation must name the bound key (its signature is checked by the caller).
    const wrong = { public_key: "03".repeat(33), proof };
    assert.equal(
      (await store.bindKey("k", 1, bytes(33, 3), proof, { rotation: wrong })).kind,
      "mismatch",
    );
    const rotation = { public_key: "02".repeat(33), proof };
    assert.deepEqual(await store.bindKey("k", 1, bytes(33, 3), proof, { rotation }), {
      kind: "bound",
      changed: true,
    });
    const [rotated] = await store.keyOffers("k");
    const { updatedAt: rotatedAt, ...rotatedOffer } = rotated!;
    assert.deepEqual(rotatedOffer, {
      party: 1,
      name: "bob",
      publicKey: bytes(33, 3),
      proof,
      rotation,
    });
    assert.deepEqual(await store.bindKey("k", 1, bytes(33, 4), proof, { reset: true }), {
      kind: "bound",
      changed: true,
    });
    const [reset] = await store.keyOffers("k");
    const { updatedAt: resetAt, ...resetOffer } = reset!;
    assert.deepEqual(resetOffer, {
      party: 1,
      name: "bob",
      publicKey: bytes(33, 4),
      proof,
      reset: true,
    });
    // When each was bound: a later binding is newer (server_core.ts, newer).
    assert.ok(typeof rotatedAt === "number" && typeof resetAt === "number" && resetAt > rotatedAt);
    // Two connections racing to bind a fresh name: exactly one wins.
    await store.join("race", "alice");
    const outcomes = await Promise.all(
      [5, 6, 7, 8].map((fill) => store.bindKey("race", 0, bytes(33, fill), proof)),
    );
    assert.equal(outcomes.filter((o) => o.kind === "bound").length, 1);
  },
);

storeTest("a message is stored once per client message id, bytes intact", async (store) => {
  await store.join("m", "alice");
  const first = stored(
    await store.insertMessage("m", "alice", "c1", 1, bytes(12, 7), bytes(40, 9)),
  );
  assert.equal(first.duplicate, false);
  assert.equal(first.message.seq, 1);
  assert.deepEqual(first.message.nonce, bytes(12, 7));
  assert.deepEqual(first.message.ciphertext, bytes(40, 9));
  const again = stored(
    await store.insertMessage("m", "alice", "c1", 1, bytes(12, 8), bytes(40, 8)),
  );
  assert.equal(again.duplicate, true);
  assert.deepEqual(again.message, first.message, "the first copy stands");
  const other = stored(await store.insertMessage("m", "bob", "c1", 1, bytes(12), bytes(16)));
  assert.notEqual(other.message.id, first.message.id, "client message ids are per sender");
  assert.deepEqual(await store.message(first.message.id), first.message);
  assert.equal(await store.message(999_999), undefined);
});

storeTest("a sender's seqs are taken in order; a gap or a taken seq is refused", async (store) => {
  await store.join("o", "alice");
  await store.join("o2", "alice");
  const send = (sender: string, id: string, seq: number, room = "o") =>
    store.insertMessage(room, sender, id, seq, bytes(12), bytes(16));
  assert.equal(stored(await send("alice", "c1", 1)).message.seq, 1);
  assert.deepEqual(await send("alice", "c3", 3), { kind: "out_of_order", expectedSeq: 2 }, "gap");
  assert.equal(stored(await send("alice", "c2", 2)).message.seq, 2);
  assert.deepEqual(
    await send("alice", "c2bis", 2),
    { kind: "out_of_order", expectedSeq: 3 },
    "a taken seq under another client message id",
  );
  assert.deepEqual(await send("alice", "c1bis", 1), { kind: "out_of_order", expectedSeq: 3 });
  for (const odd of [0, -1, 2.5, Number.NaN, 2 ** 60]) {
    assert.deepEqual(await send("alice", `odd${odd}`, odd), {
      kind: "out_of_order",
      expectedSeq: 3,
    });
  }
  assert.deepEqual(
    await send("bob", "b2", 2),
    { kind: "out_of_order", expectedSeq: 1 },
    "seqs are per sender",
  );
  assert.equal(stored(await send("alice", "x1", 1, "o2")).message.seq, 1, "and per room");
  assert.equal(stored(await send("alice", "c3", 3)).message.seq, 3, "a refused id is free");
  assert.deepEqual((await wholeRoom(store, "o")).map((m) => [m.clientMsgId, m.seq]), [
    ["c1", 1],
    ["c2", 2],
    ["c3", 3],
  ]);
});

storeTest(
  "a client message id stored before gets the first copy back, whatever seq it carries now",
  async (store) => {
    await store.join("d", "alice");
    const c1 = stored(await store.insertMessage("d", "alice", "c1", 1, bytes(12, 1), bytes(16, 1)));
    const c2 = stored(await store.insertMessage("d", "alice", "c2", 2, bytes(12, 2), bytes(16, 2)));
    for (const seq of [1, 3, 7, 0]) {
      const again = stored(
        await store.insertMessage("d", "alice", "c1", seq, bytes(12), bytes(16)),
      );
      assert.deepEqual(again, { duplicate: true, message: c1.message, kind: "stored" });
    }
    const late = stored(await store.insertMessage("d", "alice", "c2", 9, bytes(12), bytes(16)));
    assert.deepEqual(late.message, c2.message);
    const c3 = stored(await store.insertMessage("d", "alice", "c3", 3, bytes(12), bytes(16)));
    assert.equal(c3.message.seq, 3, "a duplicate takes no seq");
  },
);

storeTest(
  "history pages by id both ways, oldest first, and says when it was cut",
  async (store) => {
    await store.join("h", "alice");
    const ids: number[] = [];
    for (let i = 0; i < 7; i++) {
      const { message } = stored(
        await store.insertMessage("h", "alice", `c${i}`, i + 1, bytes(12), bytes(16, i)),
      );
      ids.push(message.id);
    }
    await store.join("elsewhere", "x");
    await store.insertMessage("elsewhere", "x", "c", 1, bytes(12), bytes(16)); // not in h's pages
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
    assert.deepEqual(
      (await store.history("h", { limit: 7 })).messages.map((m) => m.seq),
      [1, 2, 3, 4, 5, 6, 7],
      "rows carry their seq",
    );
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
    const { message } = stored(
      await store.insertMessage("n", "alice", "c1", 1, bytes(12), bytes(16)),
    );
    await store.insertMessage("n", "alice", "c1", 1, bytes(12), bytes(16)); // a retry: no second notice
    await store.insertMessage("n", "alice", "c9", 9, bytes(12), bytes(16)); // refused: no notice
    await store.bindKey("n", 0, bytes(33, 2), proof);
    await until(() => heard.length >= 2, "two events");
    await sleep(50);
    assert.equal(message.seq, 1);
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
  const { message } = stored(
    await store.insertMessage("big", "alice", "c1", 1, bytes(12), bytes(20_000, 5)),
  );
  await until(() => heard.length > 0, "the event");
  assert.deepEqual(heard, [{ kind: "message", room: "big", id: message.id }]);
});

storeTest(
  "concurrent sends are stored together, each once, and every caller gets its row",
  async (store) => {
    await store.join("g", "alice");
    await store.join("g", "bob");
    // Each sender's n-th distinct message has seq n; the last 50 sends repeat earlier ones.
    const sends = Array.from({ length: 300 }, (_, i) => ({
      sender: i % 2 ? "bob" : "alice",
      id: `c${i % 250}`,
      seq: Math.floor((i % 250) / 2) + 1,
      fill: i % 250,
    }));
    const results = (await Promise.all(
      sends.map((s) =>
        store.insertMessage("g", s.sender, s.id, s.seq, bytes(12, s.fill), bytes(16, s.fill))
      ),
    )).map(stored);
    const fresh = results.filter((r) => !r.duplicate);
    assert.equal(fresh.length, 250);
    assert.equal(new Set(fresh.map((r) => r.message.id)).size, fresh.length, "ids are unique");
    for (const [i, result] of results.entries()) {
      assert.equal(result.message.sender, sends[i]!.sender);
      assert.equal(result.message.clientMsgId, sends[i]!.id);
      assert.equal(result.message.seq, sends[i]!.seq);
      const twin = results.find((_, j) =>
        j !== i && sends[j]!.sender === sends[i]!.sender && sends[j]!.id === sends[i]!.id
      );
      if (twin) assert.equal(twin.message.id, result.message.id, "a repeat gets the first copy");
    }
    const all = await wholeRoom(store, "g");
    assert.equal(all.length, 250, "each distinct message stored once");
    assertSenderOrder(all);
  },
);

storeTest(
  "200 sends of one sender fired at once are all stored, ids in seq order",
  async (store) => {
    await store.join("burst", "alice");
    const results = (await Promise.all(
      Array.from(
        { length: 200 },
        (_, i) => store.insertMessage("burst", "alice", `c${i}`, i + 1, bytes(12), bytes(16, i)),
      ),
    )).map(stored);
    assert.deepEqual(
      results.map((r) => [r.message.seq, r.duplicate]),
      results.map((_, i) => [
        i + 1,
        false,
      ]),
    );
    const ids = results.map((r) => r.message.id);
    assert.deepEqual(ids, ids.toSorted((a, b) => a - b), "ids increase with seq");
    assert.deepEqual((await wholeRoom(store, "burst")).map((m) => m.id), ids);
  },
);

storeTest(
  "two instances, many rooms, sending at once: each room's ids increase in commit order",
  async (store) => {
    const twin = await store.twin();
    await twin.migrate();
    try {
      const heard = new Map<string, number[]>();
      let count = 0;
      // Notifications come in commit order: a reader asking for ids after the last one it
      // heard misses nothing only if ids increase in that order.
      await store.listen((event) => {
        if (event.kind !== "message") return;
        heard.set(event.room, [...heard.get(event.room) ?? [], event.id]);
        count++;
      }, () => {});
      const rooms = Array.from({ length: 12 }, (_, i) => `many${i}`);
      for (const room of rooms) {
        await store.join(room, "alice");
        await store.join(room, "bob");
      }
      const perSender = 40;
      const sends: Promise<StoreOutcome>[] = [];
      for (let i = 0; i < perSender; i++) {
        for (const room of rooms) {
          sends.push(store.insertMessage(room, "alice", `a${i}`, i + 1, bytes(12), bytes(16)));
          sends.push(twin.insertMessage(room, "bob", `b${i}`, i + 1, bytes(12), bytes(16)));
        }
      }
      const results = (await Promise.all(sends)).map(stored);
      assert.ok(results.every((r) => !r.duplicate));
      await until(() => count >= sends.length, "every notification");
      for (const room of rooms) {
        const ids = heard.get(room)!;
        assert.deepEqual(ids, ids.toSorted((a, b) => a - b), `${room}: ids in commit order`);
        const rows = await wholeRoom(store, room);
        assert.deepEqual(rows.map((m) => m.id), ids, `${room}: every message heard once`);
        assertSenderOrder(rows);
      }
    } finally {
      await twin.close();
    }
  },
);

storeTest(
  "two instances storing for one sender at once never take a seq twice or out of order",
  async (store) => {
    const twin = await store.twin();
    await twin.migrate();
    try {
      await store.join("two", "alice");
      // The same messages through both instances (a client retrying after a reconnect):
      // each is stored once, and both callers get that copy.
      const n = 60;
      const retried = await Promise.all(
        Array.from({ length: n }, (_, i) => {
          const [first, second] = i % 2 ? [store, twin] : [twin, store];
          return [first, second].map((s) =>
            s.insertMessage("two", "alice", `c${i}`, i + 1, bytes(12), bytes(16, i))
          );
        }).flat(),
      );
      for (let i = 0; i < n; i++) {
        const [a, b] = [stored(retried[2 * i]!), stored(retried[2 * i + 1]!)];
        assert.equal(a.message.id, b.message.id, `c${i} is stored once`);
        assert.equal(a.message.seq, i + 1);
        assert.equal(Number(a.duplicate) + Number(b.duplicate), 1, "one stored it");
      }
      assertSenderOrder(await wholeRoom(store, "two"));

      // Two devices of one sender racing for the same seqs with different messages: each
      // seq goes to one of them, in order, and the loser is told a later seq.
      await store.join("race", "alice");
      const race = Array.from({ length: n }, (_, i) =>
        [
          { via: store, id: `x${i}`, seq: i + 1 },
          { via: twin, id: `y${i}`, seq: i + 1 },
        ].map((send) => ({
          ...send,
          outcome: send.via.insertMessage("race", "alice", send.id, send.seq, bytes(12), bytes(16)),
        }))).flat();
      const outcomes = await Promise.all(race.map((send) => send.outcome));
      let won = 0;
      for (const [i, send] of race.entries()) {
        const outcome = outcomes[i]!;
        if (outcome.kind === "stored") {
          won++;
          assert.equal(outcome.duplicate, false);
          assert.equal(outcome.message.seq, send.seq);
        } else {
          assert.equal(outcome.kind, "out_of_order");
          assert.ok(outcome.expectedSeq > send.seq, "refused only once its seq was taken");
        }
      }
      const rows = await wholeRoom(store, "race");
      assert.equal(rows.length, won);
      assert.equal(rows.length, n, "every seq was taken by one of them");
      assertSenderOrder(rows);
    } finally {
      await twin.close();
    }
  },
);

storeTest(
  "a message the database refuses is unstorable; the others of its batch are stored",
  async (store) => {
    await store.join("bad", "alice");
    await store.join("bad", "bob");
    // While the first send is in flight the others queue, then go in one batch together.
    const plug = store.insertMessage("bad", "alice", "a1", 1, bytes(12), bytes(16));
    const batch = [
      store.insertMessage("bad", "alice", "a2", 2, bytes(12), bytes(16)),
      // U+0000 is not valid text in PostgreSQL (SQLSTATE 22021): the whole statement fails.
      store.insertMessage("bad", "bob", "b\u0000", 1, bytes(12), bytes(16)),
      store.insertMessage("bad", "alice", "a3", 3, bytes(12), bytes(16)),
      store.insertMessage("bad", "bob", "b1", 1, bytes(12), bytes(16)),
      store.insertMessage("bad", "bob", "b3", 3, bytes(12), bytes(16)),
    ];
    stored(await plug);
    const [a2, refused, a3, b1, b3] = await Promise.all(batch);
    assert.equal(refused!.kind, "unstorable");
    assert.match((refused as { reason: string }).reason, /0x00/);
    assert.equal(stored(a2!).message.seq, 2);
    assert.equal(stored(a3!).message.seq, 3);
    assert.equal(stored(b1!).message.seq, 1, "the refused message took no seq");
    assert.deepEqual(b3, { kind: "out_of_order", expectedSeq: 2 });

    const [nowhere, here] = await Promise.all([
      store.insertMessage("no such room", "alice", "n1", 1, bytes(12), bytes(16)),
      store.insertMessage("bad", "alice", "a4", 4, bytes(12), bytes(16)),
    ]);
    assert.equal(nowhere!.kind, "unstorable", "a room is made by join");
    assert.equal(stored(here!).message.seq, 4);
    assert.deepEqual((await wholeRoom(store, "bad")).map((m) => m.clientMsgId), [
      "a1",
      "a2",
      "a3",
      "b1",
      "a4",
    ]);
  },
);

storeTest(
  "in a batch, a retry or an odd seq changes nothing for the others, and only stores are announced",
  async (store) => {
    const heard: StoreEvent[] = [];
    await store.listen((event) => heard.push(event), () => {});
    await store.join("mix", "alice");
    const send = (id: string, seq: number) =>
      store.insertMessage("mix", "alice", id, seq, bytes(12), bytes(16));
    const c1 = stored(await send("c1", 1));
    // Each plug keeps the room busy while the sends after it queue into one batch.
    const plug = send("c2", 2);
    // A retry of c1 carrying the next seq, so the batch looks in order: c3 must not take 4.
    const [retry, skipper] = await Promise.all([send("c1", 3), send("c3", 4)]);
    const c2 = stored(await plug);
    assert.deepEqual(stored(retry!).message, c1.message);
    assert.deepEqual(skipper, { kind: "out_of_order", expectedSeq: 3 });
    const plug2 = send("c4", 3);
    // Without the NaN, c5's seq would be the next but one.
    const [nan, early] = await Promise.all([send("nan", Number.NaN), send("c5", 5)]);
    const c4 = stored(await plug2);
    assert.deepEqual(nan, { kind: "out_of_order", expectedSeq: 4 });
    assert.deepEqual(early, { kind: "out_of_order", expectedSeq: 4 });
    const c5 = stored(await send("c5", 4));
    const stores = [c1, c2, c4, c5].map((s) => s.message);
    assert.deepEqual(stores.map((m) => m.seq), [1, 2, 3, 4]);
    await until(() => heard.length >= stores.length, "the notifications");
    await sleep(50);
    assert.deepEqual(heard.map((e) => e.kind === "message" && e.id), stores.map((m) => m.id));
  },
);

storeTest("a send to a closed store rejects with StoreUnavailable", async (_, engine) => {
  const closed = await engine.open();
  await closed.join("gone", "alice");
  await closed.close();
  await assert.rejects(
    closed.insertMessage("gone", "alice", "c1", 1, bytes(12), bytes(16)),
    (error) => error instanceof StoreUnavailable && error.cause !== undefined,
  );
});

storeTest(
  "property: outcomes and stored rows follow the model of per-sender seqs",
  async (store) => {
    const senders = ["ann", "ben", "cat"];
    const send = fc.record({
      sender: fc.nat({ max: senders.length - 1 }),
      seq: fc.constantFrom("correct", "correct", "gap", "repeat"),
      offset: fc.integer({ min: 1, max: 4 }),
      // Which earlier client message id of the sender to send again, if any.
      reuse: fc.option(fc.nat(), { freq: 3 }),
      // Wait for the sends so far first, or go along with them.
      wait: fc.boolean(),
    });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(send, { maxLength: 30 }), async (plan) => {
        const room = `prop${run++}`;
        await store.join(room, "ann");
        const model = senders.map(() => ({
          highest: 0,
          used: [] as string[],
          stored: new Map<string, number>(), // client message id -> index in plan
        }));
        const expected: (
          | { kind: "stored"; seq: number; first: number; duplicate: boolean }
          | { kind: "out_of_order"; expectedSeq: number }
        )[] = [];
        const outcomes: Promise<StoreOutcome>[] = [];
        for (const [index, step] of plan.entries()) {
          const sender = model[step.sender]!;
          const clientMsgId = step.reuse !== null && sender.used.length
            ? sender.used[step.reuse % sender.used.length]!
            : `m${index}`;
          sender.used.push(clientMsgId);
          const seq = step.seq === "correct"
            ? sender.highest + 1
            : step.seq === "gap"
            ? sender.highest + 1 + step.offset
            : sender.highest - (step.offset - 1) % Math.max(sender.highest, 1);
          const first = sender.stored.get(clientMsgId);
          if (first !== undefined) {
            const firstSeq = (expected[first] as { seq: number }).seq;
            expected.push({ kind: "stored", seq: firstSeq, first, duplicate: true });
          } else if (seq === sender.highest + 1) {
            sender.highest = seq;
            sender.stored.set(clientMsgId, index);
            expected.push({ kind: "stored", seq, first: index, duplicate: false });
          } else expected.push({ kind: "out_of_order", expectedSeq: sender.highest + 1 });
          if (step.wait) await Promise.all(outcomes);
          outcomes.push(
            store.insertMessage(
              room,
              senders[step.sender]!,
              clientMsgId,
              seq,
              bytes(12),
              bytes(8, index),
            ),
          );
        }
        const got = await Promise.all(outcomes);
        for (const [index, want] of expected.entries()) {
          const outcome = got[index]!;
          if (want.kind === "out_of_order") {
            assert.deepEqual(outcome, want, `send ${index}`);
            continue;
          }
          const { message, duplicate } = stored(outcome);
          assert.equal(duplicate, want.duplicate, `send ${index}: duplicate`);
          assert.equal(message.seq, want.seq, `send ${index}: seq`);
          assert.deepEqual(message, stored(got[want.first]!).message, `send ${index}: first copy`);
          assert.deepEqual(message.ciphertext, bytes(8, want.first));
        }
        const bySender = assertSenderOrder(await wholeRoom(store, room));
        for (const [i, name] of senders.entries()) {
          assert.deepEqual(
            (bySender.get(name) ?? []).map((m) => m.clientMsgId),
            [...model[i]!.stored.keys()],
            `${name}'s stored messages`,
          );
        }
      }),
      { numRuns: 40 },
    );
  },
);

Deno.test("store: connection errors are told from refusals by SQLSTATE and client code", () => {
  const coded = (code: string) => Object.assign(new Error(code), { code });
  for (
    const code of ["08006", "08001", "57P01", "57P03", "53300", "ECONNREFUSED", "CONNECTION_ENDED"]
  ) {
    assert.equal(isUnavailable(coded(code)), true, code);
  }
  for (const code of ["22021", "23505", "23503", "42883", "57014", "40P01"]) {
    assert.equal(isUnavailable(coded(code)), false, code);
  }
  assert.equal(isUnavailable(new Deno.errors.ConnectionRefused()), true);
  assert.equal(isUnavailable(new StoreUnavailable(coded("08006"))), true);
  assert.equal(isUnavailable(new TypeError("x")), false);
  assert.equal(isUnavailable(undefined), false);
});

testWith(postgresRequirement, {
  name: "store (PostgreSQL): instances migrating a new database at once agree on everything",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const schema = testSchema("duet_chat");
    const stores = await Promise.all(
      [0, 1, 2].map(async () =>
        new ChatStore(await connectPostgres(postgresRequirement.url, { schema }), schema)
      ),
    );
    try {
      const applied = await Promise.all(stores.map((store) => store.migrate()));
      assert.deepEqual(applied.toSorted(), [0, 0, MIGRATIONS.length], "each migration once");
      assert.equal(new Set(stores.map((store) => store.serviceId)).size, 1);
    } finally {
      await Promise.all(stores.map((store) => store.close()));
      const admin = await connectPostgres(postgresRequirement.url);
      await admin.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await admin.close();
    }
  },
});

testWith(postgresRequirement, {
  name: "store (PostgreSQL): migration 2 numbers the messages stored before it per sender",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const schema = testSchema("duet_chat");
    const driver = await connectPostgres(postgresRequirement.url, { schema });
    try {
      await driver.transaction(async (tx) => {
        await tx.query(
          "CREATE TABLE chat_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        );
        for (const statement of MIGRATIONS[0]!.split(/;\s*$/m).filter((s) => s.trim())) {
          await tx.query(statement);
        }
        await tx.query("INSERT INTO chat_migrations (version) VALUES (1)");
        await tx.query("INSERT INTO rooms (room) VALUES ('a'), ('b')");
        await tx.query(
          `INSERT INTO messages (room, sender, client_msg_id, nonce, ciphertext)
           SELECT room, sender, 'c' || n, '\\x00', '\\x00'
           FROM generate_series(1, 3) n, (VALUES ('a', 'x'), ('a', 'y'), ('b', 'x')) s (room, sender)
           ORDER BY n, room, sender`,
        );
      });
      const store = new ChatStore(driver, `${schema}_messages`);
      assert.equal(await store.migrate(), MIGRATIONS.length - 1);
      for (const room of ["a", "b"]) {
        const rows = await wholeRoom(store, room);
        assert.equal(rows.length, room === "a" ? 6 : 3);
        assertSenderOrder(rows);
        assert.ok(rows.every((m) => m.clientMsgId === `c${m.seq}`));
      }
      assert.deepEqual(
        await store.insertMessage("a", "x", "c1", 9, bytes(12), bytes(16)),
        {
          kind: "stored",
          duplicate: true,
          message: (await wholeRoom(store, "a"))[0],
        },
      );
      assert.deepEqual(await store.insertMessage("a", "x", "c5", 5, bytes(12), bytes(16)), {
        kind: "out_of_order",
        expectedSeq: 4,
      });
    } finally {
      await driver.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await driver.close();
    }
  },
});

Deno.test({
  name:
    "openPglite(): a data directory open in one place is refused to a second, and free again once closed",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const first = await openPglite(dir);
      await assert.rejects(openPglite(dir), /in use by another process/);
      await first.close();
      const again = await openPglite(dir);
      await again.close();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

storeTest(
  "a join that may not create its room answers no_room and creates nothing; it joins an " +
    "existing one",
  async (store) => {
    assert.deepEqual(await store.join("nr", "alice", { create: false }), {
      ok: false,
      reason: "no_room",
    });
    assert.deepEqual(await store.join("nr", "alice", { create: false }), {
      ok: false,
      reason: "no_room",
    });
    const rows = JSON.parse((await store.dumpForTests()).text) as Record<string, unknown>[];
    assert.deepEqual(rows.filter((row) => "room" in row), [], "no room");
    const first = await store.join("nr", "alice");
    assert.equal(first.ok && first.created, true);
    const second = await store.join("nr", "bob", { create: false });
    assert.deepEqual(second.ok && [second.party, second.created], [1, false]);
  },
);

storeTest(
  "rooms expire by their last join or message, in batches, and a sweep over rooms kept for " +
    "newer messages ends",
  async (store) => {
    const rooms = ["e1", "e2", "e3", "e4", "e5"];
    for (const room of rooms) await store.join(room, "alice");
    await store.join("fresh", "alice");
    await sleep(300);
    await store.touchRooms(["fresh", "no-such-room"]);
    // Idle by their joins, each with a message since: kept, in batches of two.
    for (const room of rooms) {
      stored(await store.insertMessage(room, "alice", `${room}-1`, 1, bytes(12), bytes(16)));
    }
    assert.equal(await store.expireRooms(200, 2), 0);
    await sleep(300);
    assert.equal(await store.expireRooms(200, 2), 6, "all six, three batches and an empty one");
    const left = JSON.parse((await store.dumpForTests()).text) as Record<string, unknown>[];
    assert.deepEqual(left.filter((row) => "room" in row), [], "no room, party or message");
    assert.equal(await store.expireRooms(200, 2), 0);
    // A room of the same name again is a new one.
    const again = await store.join("e1", "bob");
    assert.deepEqual(again.ok && [again.party, again.lastId, again.created], [0, 0, true]);
  },
);

storeTest(
  "presence: an instance's rows count for the others while its session lives, each change " +
    "is announced once, and a dead instance's rows stop counting and are reaped, announced",
  async (store, engine) => {
    const twin = await store.twin();
    await twin.migrate();
    try {
      const heard: StoreEvent[] = [];
      await store.listen((event) => event.kind === "presence" && heard.push(event), () => {});
      assert.equal(await store.holdSession(), true, "the first session is new");
      assert.equal(await twin.holdSession(), true);
      assert.equal(await twin.holdSession(), false, "the same session");
      assert.notEqual(store.instance, twin.instance);
      const bob = (present: boolean) => ({ room: "pr", name: "bob", present });
      await twin.writePresence([bob(true), { room: "pq", name: "carol", present: true }]);
      assert.deepEqual(await store.presentIn("pr"), ["bob"]);
      assert.deepEqual(await twin.presentIn("pr"), [], "its own rows are not others'");
      await twin.writePresence([bob(true)]); // no change: not announced
      await store.writePresence([{ room: "pr", name: "alice", present: true }]);
      assert.deepEqual(await twin.presentIn("pr"), ["alice"]);
      await twin.writePresence([bob(false)]);
      assert.deepEqual(await store.presentIn("pr"), []);
      await twin.writePresence([bob(true)]);
      const at = (instance: string, ...rooms: string[]) =>
        rooms.map((room) => ({ kind: "presence", room, instance }));
      const expected = [
        ...at(twin.instance, "pq", "pr"),
        ...at(store.instance, "pr"),
        ...at(twin.instance, "pr", "pr"),
      ];
      await until(() => heard.length >= expected.length, "the announcements");
      assert.deepEqual(
        heard.toSorted((a, b) => a.room.localeCompare(b.room)).slice(0, 2),
        expected.slice(0, 2),
      );
      assert.deepEqual(heard.slice(2), expected.slice(2));

      // The twin's instance dies: its session goes (a killed process's connections go).
      if (engine.name === "PostgreSQL") {
        const admin = await connectPostgres(postgresRequirement.url);
        try {
          await admin.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            [twin.instance],
          );
        } finally {
          await admin.close();
        }
        // pg_terminate_backend asks; the backend is gone a moment later.
        for (let i = 0; i < 1_000 && (await store.presentIn("pr")).length; i++) await sleep(10);
      } else await twin.close(); // PGlite: the process's live stores are its live instances
      assert.deepEqual(await store.presentIn("pr"), [], "a dead instance's rows do not count");
      assert.deepEqual(await store.presentIn("pq"), []);
      assert.equal(await store.reapPresence(), 2, "(pr, twin) and (pq, twin)");
      assert.equal(await store.reapPresence(), 0);
      await until(() => heard.length >= expected.length + 2, "the reap's announcements");
      assert.deepEqual(
        heard.slice(expected.length).toSorted((a, b) => a.room.localeCompare(b.room)),
        at(twin.instance, "pq", "pr"),
      );
      if (engine.name === "PostgreSQL") {
        assert.equal(await twin.holdSession(), true, "the session is back, a new one");
        await twin.writePresence([bob(true)]);
        assert.deepEqual(await store.presentIn("pr"), ["bob"], "written again, counted again");
      }
      // A clean stop takes this instance's rows away, announced.
      await store.clearPresence();
      assert.deepEqual(await twin.presentIn("pr"), []);
    } finally {
      await twin.close();
    }
  },
);

storeTest(
  "code frames: the newest per party, announced; a new message is an attempt, counted per room; a key change forgets it",
  async (store) => {
    const heard: StoreEvent[] = [];
    await store.listen((event) => heard.push(event), () => {});
    await store.join("k", "alice");
    await store.join("k", "bob");
    const rule = { perWindow: 3, windowMs: 3_600_000 };
    const a1 = { message: "YTE=" };
    assert.deepEqual(await store.putCode("k", 0, a1, rule), { kind: "stored" });
    await until(() => heard.some((e) => e.kind === "code"), "the code event");
    assert.deepEqual(heard.filter((e) => e.kind === "code"), [{
      kind: "code",
      room: "k",
      party: 0,
    }]);
    // The same message with its confirmation: stored, no new attempt.
    const a1c = { message: "YTE=", confirm: { tag: "dGFn", answers: "YjE=" } };
    assert.deepEqual(await store.putCode("k", 0, a1c, rule), { kind: "stored" });
    const [withConfirm] = await store.codeOffers("k");
    const { updatedAt: confirmedAt, ...codeOffer } = withConfirm!;
    assert.deepEqual(codeOffer, { party: 0, name: "alice", frame: a1c });
    assert.ok(typeof confirmedAt === "number");
    // Bob's first message is the pair's first attempt (alice's waited alone: none).
    assert.deepEqual(await store.putCode("k", 1, { message: "YjE=" }, rule), { kind: "stored" });
    assert.deepEqual(await store.putCode("k", 0, { message: "YTI=" }, rule), { kind: "stored" });
    assert.deepEqual(await store.putCode("k", 1, { message: "YjI=" }, rule), { kind: "stored" });
    // The fourth new message in the hour: refused, nothing stored.
    const limited = await store.putCode("k", 0, { message: "YTM=" }, rule);
    assert.equal(limited.kind, "limited");
    const wait = (limited as { retryAfterMs: number }).retryAfterMs;
    assert.ok(wait > 3_500_000 && wait <= 3_600_000, `${wait} ms`);
    assert.deepEqual((await store.codeOffers("k")).map((c) => c.frame.message), ["YTI=", "YjI="]);
    // Its own message again is still taken (no new attempt), with a confirmation.
    assert.deepEqual(await store.putCode("k", 1, { message: "YjI=", confirm: a1c.confirm }, rule), {
      kind: "stored",
    });
    // Another room counts its own.
    await store.join("k2", "carol");
    assert.deepEqual(await store.putCode("k2", 0, { message: "YzE=" }, rule), { kind: "stored" });
    // A key bound anew forgets the party's frame: a run was made for the key before.
    await store.bindKey("k", 0, bytes(33, 2), proof);
    assert.deepEqual((await store.codeOffers("k")).map((c) => c.party), [1]);
  },
);

storeTest("code attempts from many at once are counted once each", async (store) => {
  await store.join("race", "alice");
  await store.join("race", "bob");
  const rule = { perWindow: 4, windowMs: 3_600_000 };
  assert.deepEqual(await store.putCode("race", 1, { message: "Ym9i" }, rule), { kind: "stored" });
  const outcomes = await Promise.all(
    Array.from(
      { length: 12 },
      (_, i) => store.putCode("race", 0, { message: btoa(`m${i}`) }, rule),
    ),
  );
  assert.equal(outcomes.filter((o) => o.kind === "stored").length, 4);
  assert.equal(outcomes.filter((o) => o.kind === "limited").length, 8);
});

storeTest("a party waiting alone makes no attempt, however often it restarts", async (store) => {
  await store.join("alone", "alice");
  const rule = { perWindow: 2, windowMs: 3_600_000 };
  for (let i = 0; i < 20; i++) {
    assert.deepEqual(await store.putCode("alone", 0, { message: btoa(`a${i}`) }, rule), {
      kind: "stored",
    });
  }
  // The peer comes: one attempt; then the pair has one more before the limit.
  await store.join("alone", "bob");
  assert.deepEqual(await store.putCode("alone", 1, { message: "Yg==" }, rule), { kind: "stored" });
  assert.deepEqual(await store.putCode("alone", 0, { message: "YQ==" }, rule), { kind: "stored" });
  assert.equal((await store.putCode("alone", 1, { message: "YmI=" }, rule)).kind, "limited");
});
