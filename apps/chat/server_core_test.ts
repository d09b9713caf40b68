// The server's per-connection step function, without sockets or a database: the
// handshake, errors mapped to the code that means them, pacing instead of refusing,
// history pages that fit a frame whatever their messages, and - under generated
// interleavings of commits, notifications lost while the listener is away, catch-ups and
// failed reads - a connection is pushed each of its peer's messages once, in id order.
import assert from "node:assert/strict";
import fc from "fast-check";
import { checkTimerDurations } from "./server.ts";
import {
  type Effect,
  type Event,
  historyPage,
  initialState,
  MAX_EARLY_FRAMES,
  type State,
  type Step,
  step,
} from "./server_core.ts";
import {
  encodeFrame,
  MAX_CIPHERTEXT_BYTES,
  PROTOCOL_VERSION,
  ProtocolError,
  type ServerMessage,
} from "./protocol.ts";
import { type Join, type KeyOffer, type MessageRow, StoreUnavailable } from "./store.ts";
import { base64, claimFor, makeKeyOffer } from "./crypto.ts";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";

const SERVICE = "6f1c2b9e-3a4d-4c5e-8f70-112233445566";
const b64 = (n: number, fill = 7) => base64.encode(new Uint8Array(n).fill(fill));

function row(id: number, sender = "bob", bytes = 32): MessageRow {
  return {
    id,
    room: "r",
    sender,
    clientMsgId: `${sender}-${id}`,
    seq: id,
    nonce: new Uint8Array(12),
    ciphertext: new Uint8Array(bytes).fill(id % 251),
    createdAt: new Date(0),
  };
}

/** Runs events from a state; collects replies and effects. */
function drive(state: State, events: Event[]): Step {
  let out: Step = { state, replies: [], effects: [] };
  for (const event of events) {
    const next = step(out.state, event);
    out = {
      state: next.state,
      replies: [...out.replies, ...next.replies],
      effects: [...out.effects, ...next.effects],
    };
  }
  return out;
}

const limits = { messagesPerSecond: 20 };
const hello = { type: "hello", version: PROTOCOL_VERSION, name: "alice", room: "r" };
/** The connection's challenge, as the shell would draw it. */
const CHALLENGE = "c4".repeat(32);
const ALICE = secp256k1.utils.randomSecretKey();

function joinedEvent(join: Join, offers: KeyOffer[] = [], challenge = CHALLENGE): Event {
  return { type: "joined", join, service: SERVICE, offers, codes: [], challenge };
}

/** Alice's key offer for this connection (party 0, room r). */
function claim(
  secret = ALICE,
  change: Parameters<typeof claimFor>[2] = {},
  challenge = CHALLENGE,
): Record<string, unknown> {
  return {
    type: "key_offer",
    ...claimFor(secret, { room: "r", name: "alice", party: 0, challenge }, change),
  };
}

/** Key offer, then the store's answer that the name is bound: the connection is in. */
const authenticate: Event[] = [
  { type: "frame", payload: claim(), now: 0 },
  { type: "key_bound", outcome: { kind: "bound", changed: true } },
];

function opened(lastId = 0, lastSeq = 0): Step {
  return drive(initialState(limits), [
    { type: "frame", payload: hello, now: 0 },
    joinedEvent({ ok: true, party: 0, peer: "bob", lastId, lastSeq }),
    ...authenticate,
  ]);
}

Deno.test("server core: hello joins; the welcome names the service, last_id, last_seq and a challenge", () => {
  const first = step(initialState(limits), { type: "frame", payload: hello, now: 0 });
  assert.deepEqual(first.effects, [{ type: "join", room: "r", name: "alice" }]);
  const { offer } = makeKeyOffer("r", 1);
  const out = step(
    first.state,
    joinedEvent({ ok: true, party: 0, peer: "bob", lastId: 7, lastSeq: 3 }, [
      { party: 1, name: "bob", publicKey: hexToBytes(offer.public_key), proof: offer.proof },
    ]),
  );
  assert.deepEqual(out.replies, [{
    type: "welcome",
    version: PROTOCOL_VERSION,
    party: 0,
    peer: "bob",
    last_id: 7,
    service: SERVICE,
    last_seq: 3,
    challenge: CHALLENGE,
  }], "nothing but the welcome before the key is proved");
  assert.equal(out.state.phase, "authenticating");
  assert.deepEqual(out.effects, [], "no older connection is replaced yet");
  const offered = step(out.state, { type: "frame", payload: claim(), now: 0 });
  assert.equal(offered.effects[0]?.type, "bind_key");
  const bound = step(offered.state, {
    type: "key_bound",
    outcome: { kind: "bound", changed: true },
  });
  assert.equal(bound.state.phase, "open");
  assert.equal(bound.replies[0]?.type, "peer_key", "the peer's offer once in");
  assert.deepEqual(bound.effects, [{ type: "enter", room: "r", name: "alice", party: 0 }]);
});

/** Steps each case and checks the one reply (its fields) and whether the connection closes. */
function assertAnswers(cases: [State, Event, Partial<ServerMessage>, boolean][]): void {
  for (const [state, event, expected, closes] of cases) {
    const out = step(state, event);
    const reply = out.replies[0];
    assert.ok(reply, JSON.stringify(event, (_, v) => (v instanceof Uint8Array ? "bytes" : v)));
    assert.deepEqual({ ...reply, ...expected }, reply, `${JSON.stringify(expected)}`);
    assert.equal(out.state.phase === "closed", closes, `closes: ${JSON.stringify(expected)}`);
    assert.doesNotThrow(() => encodeFrame(reply));
  }
}

/** An open connection, and the same with a send the store has yet to answer. */
function openAndSent(): { open: State; sent: State } {
  const open = opened().state;
  // A send the store has yet to answer, its answer's turn first.
  const sent = step(open, {
    type: "frame",
    payload: { type: "send", client_msg_id: "m", seq: 1, nonce: b64(12), ciphertext: b64(16) },
    now: 0,
  }).state;
  return { open, sent };
}

Deno.test("server core: every failure is answered with the code that means it: the handshake and malformed frames", () => {
  const { open } = openAndSent();
  assertAnswers([
    [initialState(limits), { type: "frame", payload: { type: "heartbeat" }, now: 0 }, {
      code: "handshake_required",
    }, true],
    [initialState(limits), { type: "frame", payload: { ...hello, version: 1 }, now: 0 }, {
      code: "unsupported_version",
      in_reply_to: "hello",
    }, true],
    [open, { type: "frame", payload: { type: "nope" }, now: 0 }, { code: "bad_message" }, true],
    [open, { type: "frame", payload: hello, now: 0 }, { code: "bad_message" }, true],
    [
      open,
      {
        type: "frame",
        payload: {
          type: "send",
          client_msg_id: "a\u0000b",
          seq: 1,
          nonce: b64(12),
          ciphertext: b64(20),
        },
        now: 0,
      },
      { code: "bad_text", client_msg_id: "a\u0000b", retryable: false },
      false,
    ],
    [
      open,
      {
        type: "frame",
        payload: {
          type: "send",
          client_msg_id: "x\ud800",
          seq: 1,
          nonce: b64(12),
          ciphertext: b64(20),
        },
        now: 0,
      },
      { code: "bad_text", retryable: false },
      false,
    ],
    [
      open,
      {
        type: "frame",
        payload: {
          type: "send",
          client_msg_id: "big",
          seq: 1,
          nonce: b64(12),
          ciphertext: b64(MAX_CIPHERTEXT_BYTES + 1),
        },
        now: 0,
      },
      { code: "message_too_large", client_msg_id: "big" },
      false,
    ],
  ]);
});

Deno.test("server core: every failure is answered with the code that means it: the store's failures and refusals", () => {
  const { open, sent } = openAndSent();
  assertAnswers([
    [
      sent,
      {
        type: "failed",
        effect: {
          type: "store",
          room: "r",
          sender: "alice",
          clientMsgId: "m",
          seq: 1,
          nonce: new Uint8Array(12),
          ciphertext: new Uint8Array(16),
          slot: 0,
        },
        error: new StoreUnavailable("connection refused"),
      },
      { code: "unavailable", client_msg_id: "m", retryable: true, in_reply_to: "send" },
      false,
    ],
    [
      open,
      {
        type: "failed",
        effect: { type: "read_history", room: "r", query: { limit: 5 }, purpose: "request" },
        error: new StoreUnavailable("gone"),
      },
      { code: "unavailable", in_reply_to: "history" },
      false,
    ],
    [
      open,
      {
        type: "failed",
        effect: { type: "read_history", room: "r", query: { limit: 5 }, purpose: "request" },
        error: new RangeError("a bug"),
      },
      { code: "internal" },
      true,
    ],
    [
      sent,
      {
        type: "store_outcome",
        clientMsgId: "m",
        slot: 0,
        outcome: { kind: "out_of_order", expectedSeq: 4 },
      },
      { code: "out_of_order", expected_seq: 4, client_msg_id: "m", retryable: true },
      false,
    ],
    [
      sent,
      {
        type: "store_outcome",
        clientMsgId: "m",
        slot: 0,
        outcome: { kind: "unstorable", reason: "invalid byte sequence" },
      },
      { code: "unstorable", client_msg_id: "m", retryable: false },
      false,
    ],
  ]);
});

Deno.test("server core: every failure is answered with the code that means it: key offers that do not prove or match", () => {
  assertAnswers([
    [
      opened().state,
      {
        type: "frame",
        // Proved for party 1: alice is party 0.
        payload: {
          type: "key_offer",
          ...claimFor(ALICE, { room: "r", name: "alice", party: 1, challenge: CHALLENGE }),
        },
        now: 0,
      },
      { code: "bad_proof", in_reply_to: "key_offer" },
      false,
    ],
    [
      opened().state,
      { type: "key_bound", outcome: { kind: "mismatch", boundKey: new Uint8Array(33).fill(2) } },
      { code: "key_mismatch", in_reply_to: "key_offer", retryable: false },
      false,
    ],
  ]);
});

Deno.test("server core: a join the database fails, or a full room, closes: there is no session yet", () => {
  const joining = step(initialState(limits), { type: "frame", payload: hello, now: 0 }).state;
  const failed = step(joining, {
    type: "failed",
    effect: { type: "join", room: "r", name: "alice" },
    error: new StoreUnavailable("down"),
  });
  assert.equal((failed.replies[0] as { code: string }).code, "unavailable");
  assert.equal(failed.state.phase, "closed");
  const full = step(joining, joinedEvent({ ok: false, reason: "room_full", parties: ["x", "y"] }));
  assert.equal((full.replies[0] as { code: string }).code, "room_full");
});

Deno.test("server core: a protocol error names nothing it does not concern", () => {
  const error = new ProtocolError("bad_frame", "empty frame");
  const out = step(opened().state, { type: "frame_error", error });
  assert.deepEqual(out.replies, [{
    type: "error",
    code: "bad_frame",
    message: "empty frame",
    retryable: false,
  }]);
});

Deno.test("server core: a burst is paced, never refused, and stored in the order sent", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 200 }), { minLength: 1, maxLength: 300 }),
      (gaps) => {
        let out = opened();
        let now = 0;
        let paused = 0;
        const stores: number[] = [];
        gaps.forEach((gap, i) => {
          now += gap + paused; // the shell reads the next frame after the pause
          const next = step(out.state, {
            type: "frame",
            payload: {
              type: "send",
              client_msg_id: `m${i}`,
              seq: i + 1,
              nonce: b64(12),
              ciphertext: b64(16),
            },
            now,
          });
          assert.equal(next.replies.length, 0, "no refusal");
          paused = 0;
          for (const effect of next.effects) {
            if (effect.type === "store") stores.push(effect.seq);
            if (effect.type === "pause") paused = effect.ms;
          }
          out = next;
        });
        assert.deepEqual(stores, gaps.map((_, i) => i + 1));
        // Over the whole burst, no more than the rate plus the bucket got through.
        const elapsed = now / 1000;
        assert.ok(gaps.length <= 40 + Math.ceil(elapsed * 20) + 1, `${gaps.length} in ${elapsed}s`);
      },
    ),
  );
});

Deno.test("historyPage(): every page fits a frame, is contiguous from the right end, and says when it was cut", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({
          bytes: fc.oneof(
            { arbitrary: fc.integer({ min: 16, max: 64 }), weight: 30 },
            { arbitrary: fc.integer({ min: 16, max: MAX_CIPHERTEXT_BYTES }), weight: 1 },
          ),
          // Any text the protocol accepts as a client id: emoji take 4 bytes of UTF-8.
          id: fc.string({
            unit: fc.constantFrom("a", "\u00e9", "\u4e2d", "\u{1F600}"),
            minLength: 1,
            maxLength: 60,
            size: "max",
          }),
        }),
        { maxLength: 500, size: "max" },
      ),
      fc.boolean(),
      fc.boolean(),
      (specs, fromEnd, storeHasMore) => {
        const rows = specs.map(({ bytes, id }, i) => ({
          ...row(i + 1, "bob", bytes),
          clientMsgId: `${id}${i}`,
        }));
        const page = historyPage(rows, storeHasMore, fromEnd);
        assert.doesNotThrow(() => encodeFrame(page));
        const ids = page.messages.map((m) => m.id);
        if (rows.length) assert.ok(ids.length >= 1, "never empty when there is a row");
        const all = rows.map((r) => r.id);
        assert.deepEqual(
          ids,
          fromEnd ? all.slice(all.length - ids.length) : all.slice(0, ids.length),
        );
        assert.equal(page.has_more, storeHasMore || ids.length < rows.length);
      },
    ),
    { numRuns: 40, endOnFailure: true },
  );
});

Deno.test("historyPage(): 200 messages whose ids are 61 emoji each still fit a frame", () => {
  const emoji = "\u{1F600}".repeat(61);
  const rows = Array.from({ length: 200 }, (_, i) => ({
    ...row(i + 1, "mallory", 16),
    clientMsgId: `${emoji}${i}`,
  }));
  const page = historyPage(rows, false, false);
  assert.doesNotThrow(() => encodeFrame(page));
  assert.ok(page.has_more && page.messages.length < 200, "cut, and says so");
});

Deno.test("server core: 250 messages of 300 bytes: the history is read whole, page after page", () => {
  const rows = Array.from({ length: 250 }, (_, i) => row(i + 1, "bob", 300));
  let after = 0;
  const seen: number[] = [];
  for (let pages = 0; pages < 50; pages++) {
    const slice = rows.filter((r) => r.id > after).slice(0, 201);
    const page = historyPage(slice.slice(0, 200), slice.length > 200, false);
    assert.doesNotThrow(() => encodeFrame(page));
    seen.push(...page.messages.map((m) => m.id));
    after = seen.at(-1) ?? after;
    if (!page.has_more) break;
  }
  assert.deepEqual(seen, rows.map((r) => r.id));
});

/**
 * A room's database and its channel: commits take increasing ids (commit order, as the
 * store's room lock makes them); a notification is lost while the listener is away.
 */
type SimAction =
  | { kind: "commit"; sender: "alice" | "bob" }
  | { kind: "notify" }
  | { kind: "drop" }
  | { kind: "back" }
  | { kind: "read"; fail: boolean }
  | { kind: "join" };

const simAction: fc.Arbitrary<SimAction> = fc.oneof(
  {
    arbitrary: fc.constantFrom("alice", "bob").map((sender) => ({
      kind: "commit" as const,
      sender,
    })),
    weight: 4,
  },
  { arbitrary: fc.constant({ kind: "notify" as const }), weight: 4 },
  { arbitrary: fc.constant({ kind: "drop" as const }), weight: 1 },
  { arbitrary: fc.constant({ kind: "back" as const }), weight: 1 },
  { arbitrary: fc.boolean().map((fail) => ({ kind: "read" as const, fail })), weight: 3 },
  { arbitrary: fc.constant({ kind: "join" as const }), weight: 1 },
);

function simulate(actions: SimAction[], pageLimit: number) {
  const db: MessageRow[] = [];
  let pending: MessageRow[] = []; // notifications on their way, in commit order
  let listening = true;
  let out = drive(initialState(limits), [{ type: "frame", payload: hello, now: 0 }]);
  // The join reads the room's newest id, and its answer reaches the connection later:
  // commits in between are announced before the welcome.
  let joinRead: number | null = null;
  let joinedAt: number | null = null;
  const reads: Extract<Effect, { type: "read_history" }>[] = [];
  const pushed: number[] = [];
  const apply = (event: Event) => {
    const next = step(out.state, event);
    out = { state: next.state, replies: [...out.replies, ...next.replies], effects: next.effects };
    for (const effect of next.effects) {
      if (effect.type === "read_history") {
        reads.push({ ...effect, query: { ...effect.query, limit: pageLimit } });
      }
    }
    for (const reply of next.replies) if (reply.type === "message") pushed.push(reply.message.id);
  };
  const join = () => {
    if (joinedAt !== null) return;
    if (joinRead === null) {
      joinRead = db.length ? db.at(-1)!.id : 0;
      return;
    }
    joinedAt = joinRead;
    apply(joinedEvent({ ok: true, party: 0, peer: "bob", lastId: joinedAt, lastSeq: 0 }));
    for (const event of authenticate) apply(event);
  };
  const read = (fail: boolean) => {
    const effect = reads.shift();
    if (!effect) return;
    if (fail) return apply({ type: "failed", effect, error: new StoreUnavailable("down") });
    const after = effect.query.after ?? 0;
    const rows = db.filter((r) => r.id > after);
    apply({
      type: "history_rows",
      purpose: effect.purpose,
      query: effect.query,
      rows: rows.slice(0, effect.query.limit),
      hasMore: rows.length > effect.query.limit,
    });
  };
  for (const action of actions) {
    switch (action.kind) {
      case "commit": {
        const r = row(db.length + 1, action.sender);
        db.push(r);
        if (listening) pending.push(r);
        break;
      }
      case "notify": {
        const r = pending.shift();
        if (r) apply({ type: "push", row: r });
        break;
      }
      case "drop":
        listening = false;
        pending = [];
        break;
      case "back":
        if (!listening) {
          listening = true;
          apply({ type: "listener_back" });
        }
        break;
      case "read":
        read(action.fail);
        break;
      case "join":
        join();
        break;
    }
  }
  // Calm: joined, listening, every notification and read done.
  join();
  join();
  if (!listening) {
    listening = true;
    apply({ type: "listener_back" });
  }
  for (let i = 0; i < 1000 && (pending.length || reads.length); i++) {
    const r = pending.shift();
    if (r) apply({ type: "push", row: r });
    read(false);
  }
  const expected = db.filter((r) => r.sender === "bob" && r.id > joinedAt!).map((r) => r.id);
  assert.deepEqual(
    pushed,
    expected,
    "each of the peer's messages after the welcome, once, in order",
  );
}

Deno.test("server core: pushes survive a listener that drops, reads that fail and a join that races commits", () => {
  fc.assert(
    fc.property(fc.array(simAction, { maxLength: 120 }), fc.integer({ min: 1, max: 5 }), simulate),
    { numRuns: 10_000 },
  );
});

Deno.test("server core: answers to sends go out in the order of the sends, refusals made at once included", () => {
  let out = opened();
  const send = (id: string, seq: number, bytes = 16) => ({
    type: "frame" as const,
    payload: { type: "send", client_msg_id: id, seq, nonce: b64(12), ciphertext: b64(bytes) },
    now: 0,
  });
  const stores: Extract<Effect, { type: "store" }>[] = [];
  const replies: ServerMessage[] = [];
  const run = (event: Event) => {
    const next = step(out.state, event);
    out = next;
    replies.push(...next.replies);
    for (const e of next.effects) if (e.type === "store") stores.push(e);
  };
  run(send("one", 1));
  run(send("two-too-big", 2, MAX_CIPHERTEXT_BYTES + 1));
  run(send("three", 2));
  run(send("four\u0000", 3));
  run(send("five", 3));
  assert.equal(replies.length, 0, "nothing before the first send is answered");
  const stored = (e: Extract<Effect, { type: "store" }>): Event => ({
    type: "store_outcome",
    clientMsgId: e.clientMsgId,
    slot: e.slot,
    outcome: { kind: "stored", duplicate: false, message: { ...row(e.seq, "alice"), seq: e.seq } },
  });
  run(stored(stores[2]!)); // five first
  run(stored(stores[1]!)); // then three
  assert.equal(replies.length, 0, "still waiting for one");
  run({
    type: "failed",
    effect: stores[0]!,
    error: new StoreUnavailable("down"),
  });
  assert.deepEqual(
    replies.map((r) =>
      r.type === "error"
        ? `${r.code} ${r.client_msg_id}`
        : `stored ${(r as { client_msg_id: string }).client_msg_id}`
    ),
    [
      "unavailable one",
      "message_too_large two-too-big",
      "stored three",
      "bad_text four\u0000",
      "stored five",
    ],
  );
});

Deno.test("server core: every frame read costs, whatever its kind: none is free to repeat", () => {
  for (
    const payload of [{ type: "history", limit: 200 }, { type: "heartbeat" }, { type: "nope" }]
  ) {
    let out = opened();
    let paused = 0;
    for (let i = 0; i < 100; i++) {
      out = step(out.state, { type: "frame", payload, now: 0 });
      for (const e of out.effects) if (e.type === "pause") paused = Math.max(paused, e.ms);
      if (out.state.phase === "closed") break;
    }
    if (payload.type === "nope") {
      // A bad frame closes the connection; it cost its token all the same.
      assert.equal(out.state.phase, "closed");
      continue;
    }
    // A bucket of 40 refilled at 20 a second; the hello cost 1 and the key offer 10: 100
    // more at once leave 71 to wait for, 3.55 s.
    assert.equal(paused, 3550, JSON.stringify(payload));
  }
});

Deno.test("server core: frames that wait for the key offer are charged when read, not again", () => {
  let out = drive(initialState(limits), [
    { type: "frame", payload: hello, now: 0 },
    joinedEvent({ ok: true, party: 0, peer: null, lastId: 0, lastSeq: 0 }),
  ]);
  for (let i = 0; i < 29; i++) {
    out = step(out.state, { type: "frame", payload: { type: "heartbeat" }, now: 0 });
    assert.deepEqual(out.effects, [], "within the burst: no pause");
  }
  // 1 + 29 = 30 of 40 taken; the key offer's 10 empties the bucket, and the 29 waiting
  // heartbeats are answered without being charged twice.
  const inside = drive(out.state, authenticate);
  assert.equal(inside.replies.filter((r) => r.type === "heartbeat").length, 29);
  assert.ok(!inside.effects.some((e) => e.type === "pause"));
  const next = step(inside.state, { type: "frame", payload: { type: "heartbeat" }, now: 0 });
  assert.deepEqual(next.effects, [{ type: "pause", ms: 50 }]);
});

Deno.test("server core: frames sent before the welcome are handled after it, in order, up to a bound", () => {
  let out = step(initialState(limits), { type: "frame", payload: hello, now: 0 });
  const send = (i: number) => ({
    type: "send",
    client_msg_id: `e${i}`,
    seq: i,
    nonce: b64(12),
    ciphertext: b64(16),
  });
  for (let i = 1; i <= 3; i++) out = step(out.state, { type: "frame", payload: send(i), now: 0 });
  const joined = step(
    out.state,
    joinedEvent({ ok: true, party: 0, peer: null, lastId: 0, lastSeq: 0 }),
  );
  assert.equal(joined.replies[0]?.type, "welcome");
  assert.deepEqual(joined.effects, [], "nothing is handled before the key is proved");
  const inside = drive(joined.state, authenticate);
  assert.deepEqual(
    inside.effects.filter((e) => e.type === "store").map((e) => (e as { seq: number }).seq),
    [1, 2, 3],
  );
  let flood = step(initialState(limits), { type: "frame", payload: hello, now: 0 });
  for (let i = 1; i <= MAX_EARLY_FRAMES; i++) {
    flood = step(flood.state, { type: "frame", payload: send(i), now: 0 });
  }
  assert.equal(flood.state.phase, "joining");
  const over = step(flood.state, { type: "frame", payload: send(0), now: 0 });
  assert.equal(over.state.phase, "closed");
  assert.equal((over.replies[0] as { code: string }).code, "bad_message");
});

Deno.test("server core: a listener gap while joining is caught up before the pushes held meanwhile", () => {
  // Found by the property above: pushes held during the join moved `delivered` past a
  // message the gap had lost, and the catch-up after the welcome skipped it.
  simulate([
    { kind: "join" },
    { kind: "drop" },
    { kind: "commit", sender: "bob" },
    { kind: "back" },
    { kind: "commit", sender: "alice" },
    { kind: "notify" },
  ], 1);
});

Deno.test("server core: a name's key is proved over this connection's challenge before anything is handled", () => {
  const welcomed = drive(initialState(limits), [
    { type: "frame", payload: hello, now: 0 },
    joinedEvent({ ok: true, party: 0, peer: "bob", lastId: 0, lastSeq: 0 }),
  ]);
  // A proof made for another connection's challenge (a captured one, replayed) is refused
  // and the connection closed: it never got in.
  const replayed = step(welcomed.state, {
    type: "frame",
    payload: claim(ALICE, {}, "d5".repeat(32)),
    now: 0,
  });
  assert.equal((replayed.replies[0] as { code: string }).code, "bad_proof");
  assert.equal(replayed.state.phase, "closed");
  assert.deepEqual(replayed.effects, [{ type: "close" }]);
  // The store says the name belongs to another key: refused, closed, no older connection
  // of that name replaced.
  const offered = step(welcomed.state, { type: "frame", payload: claim(), now: 0 });
  const taken = step(offered.state, {
    type: "key_bound",
    outcome: { kind: "mismatch", boundKey: new Uint8Array(33).fill(3) },
  });
  assert.equal((taken.replies[0] as { code: string }).code, "key_mismatch");
  assert.equal(taken.state.phase, "closed");
  assert.ok(!taken.effects.some((e) => e.type === "enter"));
  // A second key offer while the first is being bound waits like any other frame.
  const twice = step(offered.state, { type: "frame", payload: claim(), now: 0 });
  assert.deepEqual(twice.effects, []);
});

Deno.test("server core: a key change goes to the store with its signature or its reset, checked first", () => {
  const open = opened().state;
  const next = secp256k1.utils.randomSecretKey();
  const signed = step(open, {
    type: "frame",
    payload: claim(next, { previousSecret: ALICE }),
    now: 0,
  });
  const bind = signed.effects[0] as Extract<Effect, { type: "bind_key" }>;
  assert.equal(bind.type, "bind_key");
  assert.equal(
    bind.change.rotation?.public_key,
    (claim() as { public_key: string }).public_key,
    "the rotation names the old key",
  );
  const reset = step(open, { type: "frame", payload: claim(next, { reset: true }), now: 0 });
  assert.deepEqual((reset.effects[0] as Extract<Effect, { type: "bind_key" }>).change, {
    reset: true,
  });
  // A rotation whose signature is for another new key: refused before the store.
  const other = secp256k1.utils.randomSecretKey();
  const forged = claim(next, { previousSecret: ALICE }) as { rotation: unknown };
  forged.rotation = (claim(other, { previousSecret: ALICE }) as { rotation: unknown }).rotation;
  const refused = step(open, { type: "frame", payload: forged, now: 0 });
  assert.equal((refused.replies[0] as { code: string }).code, "bad_proof");
  assert.ok(!refused.effects.some((e) => e.type === "bind_key"));
});

Deno.test("server core: until the key is proved, no frame, push or key offer of the peer reaches the client (property)", () => {
  const { offer } = makeKeyOffer("r", 1);
  const bobOffer: KeyOffer = {
    party: 1,
    name: "bob",
    publicKey: hexToBytes(offer.public_key),
    proof: offer.proof,
  };
  const send = (i: number) => ({
    type: "send",
    client_msg_id: `m${i}`,
    seq: i,
    nonce: b64(12),
    ciphertext: b64(16),
  });
  const before = fc.array(
    fc.oneof(
      fc.constant<"send">("send"),
      fc.constant<"history">("history"),
      fc.constant<"heartbeat">("heartbeat"),
      fc.constant<"push">("push"),
      fc.constant<"peer_key">("peer_key"),
      fc.constant<"listener_back">("listener_back"),
    ),
    { maxLength: 40 },
  );
  fc.assert(
    fc.property(before, fc.boolean(), (events, proves) => {
      let out = drive(initialState(limits), [
        { type: "frame", payload: hello, now: 0 },
        joinedEvent({ ok: true, party: 0, peer: "bob", lastId: 0, lastSeq: 0 }),
      ]);
      let seq = 0;
      let pushId = 0;
      const replies: ServerMessage[] = [];
      const effects: Effect[] = [];
      for (const kind of events) {
        const event: Event = kind === "send"
          ? { type: "frame", payload: send(++seq), now: 0 }
          : kind === "history"
          ? { type: "frame", payload: { type: "history" }, now: 0 }
          : kind === "heartbeat"
          ? { type: "frame", payload: { type: "heartbeat" }, now: 0 }
          : kind === "push"
          ? { type: "push", row: row(++pushId) }
          : kind === "peer_key"
          ? { type: "peer_key", offer: bobOffer }
          : { type: "listener_back" };
        out = step(out.state, event);
        replies.push(...out.replies);
        effects.push(...out.effects);
      }
      assert.deepEqual(replies, [], "nothing is answered or pushed before the key is proved");
      assert.deepEqual(effects, [], "nothing is stored, read or replaced before it either");
      assert.equal(out.state.phase, "authenticating");
      if (!proves) return;
      const inside = drive(out.state, authenticate);
      assert.equal(inside.state.phase, "open");
      // Then every send waited in order, and the peer's key is delivered.
      assert.deepEqual(
        inside.effects.filter((e) => e.type === "store").map((e) => (e as { seq: number }).seq),
        Array.from({ length: seq }, (_, i) => i + 1),
      );
      if (events.includes("peer_key")) {
        assert.ok(inside.replies.some((r) => r.type === "peer_key"), "the peer's key, once in");
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("checkTimerDurations(): timer settings up to 2^31 − 1 ms pass, past it (or below 1) name the setting", () => {
  const ok = {
    idleTimeoutMs: 60_000,
    handshakeTimeoutMs: 10_000,
    roomSweepIntervalMs: 3_600_000,
    roomIdleMs: 30 * 86_400_000,
  };
  checkTimerDurations(ok);
  checkTimerDurations({ ...ok, roomSweepIntervalMs: 2 ** 31 - 1 });
  assert.throws(
    () => checkTimerDurations({ ...ok, roomSweepIntervalMs: 2 ** 31 }),
    (error: unknown) => error instanceof RangeError && /roomSweepIntervalMs/.test(error.message),
  );
  assert.throws(
    () => checkTimerDurations({ ...ok, idleTimeoutMs: 2_592_000_000 }),
    /idleTimeoutMs/,
  );
  assert.throws(() => checkTimerDurations({ ...ok, handshakeTimeoutMs: 0 }), /handshakeTimeoutMs/);
  assert.throws(() => checkTimerDurations({ ...ok, idleTimeoutMs: NaN }), /idleTimeoutMs/);
  // Infinity is not "no timeout" for a timer: setTimeout fires it at once.
  for (const name of ["idleTimeoutMs", "handshakeTimeoutMs", "roomSweepIntervalMs"] as const) {
    assert.throws(() => checkTimerDurations({ ...ok, [name]: Infinity }), new RegExp(name));
  }
  // roomIdleMs is compared in SQL: any finite span, 0 for never; a negative one would
  // expire every room at the next sweep.
  checkTimerDurations({ ...ok, roomIdleMs: 0 });
  checkTimerDurations({ ...ok, roomIdleMs: 400 * 86_400_000 });
  for (const bad of [-1, NaN, Infinity]) {
    assert.throws(() => checkTimerDurations({ ...ok, roomIdleMs: bad }), /roomIdleMs/);
  }
});

Deno.test("server core: a version-4 client in the room is told the peer's presence; a version-3 one is served as before, without it", () => {
  const presence = (name: string | null, present: boolean): Event => ({
    type: "presence",
    name,
    present,
  });
  // Version 4 (this protocol): the state on arrival, then each change; the welcome's peer
  // names an absent peer the rooms do not know; its own name is never its peer.
  const v4 = opened().state;
  assert.deepEqual(step(v4, presence(null, false)).replies, [
    { type: "presence", name: "bob", present: false },
  ]);
  assert.deepEqual(step(v4, presence("bob", true)).replies, [
    { type: "presence", name: "bob", present: true },
  ]);
  assert.deepEqual(step(v4, presence("alice", false)).replies, [], "itself is no peer");
  // Not yet in: nothing is pushed to a connection that has not proved its key.
  const authenticating = drive(initialState(limits), [
    { type: "frame", payload: hello, now: 0 },
    joinedEvent({ ok: true, party: 0, peer: "bob", lastId: 0, lastSeq: 0 }),
  ]).state;
  assert.deepEqual(step(authenticating, presence("bob", true)).replies, []);
  // Nobody joined yet and nobody there: nothing to say (the welcome said "no peer").
  const alone = drive(initialState(limits), [
    { type: "frame", payload: hello, now: 0 },
    joinedEvent({ ok: true, party: 0, peer: null, lastId: 0, lastSeq: 0 }),
    ...authenticate,
  ]).state;
  assert.deepEqual(step(alone, presence(null, false)).replies, []);

  // Version 3: a version-3 welcome, and no presence frame (it would refuse the type).
  const v3 = drive(initialState(limits), [
    { type: "frame", payload: { ...hello, version: 3 }, now: 0 },
    joinedEvent({ ok: true, party: 0, peer: "bob", lastId: 0, lastSeq: 0 }),
  ]);
  assert.equal(v3.replies[0]?.type === "welcome" && v3.replies[0].version, 3);
  const v3open = drive(v3.state, authenticate).state;
  assert.equal(v3open.phase, "open");
  assert.deepEqual(step(v3open, presence("bob", false)).replies, []);

  // Outside 3..5: unsupported_version.
  for (const version of [2, 6]) {
    const out = step(initialState(limits), {
      type: "frame",
      payload: { ...hello, version },
      now: 0,
    });
    assert.equal(out.replies[0]?.type === "error" && out.replies[0].code, "unsupported_version");
  }
});

const CODE_FRAME = { message: base64.encode(new Uint8Array(67).fill(7)) };
const CONFIRM = {
  tag: base64.encode(new Uint8Array(64).fill(1)),
  answers: base64.encode(new Uint8Array(67).fill(9)),
};

Deno.test("server core: a code frame is stored for the peer, confirmation and all; nothing answers it", () => {
  const { state } = opened();
  const out = step(state, {
    type: "frame",
    payload: { type: "code", ...CODE_FRAME, confirm: CONFIRM },
    now: 0,
  });
  assert.deepEqual(out.replies, []);
  assert.deepEqual(out.effects, [{
    type: "put_code",
    room: "r",
    party: 0,
    frame: { ...CODE_FRAME, confirm: CONFIRM },
  }]);
  assert.deepEqual(
    step(out.state, { type: "code_stored", outcome: { kind: "stored" } }).replies,
    [],
  );
});

Deno.test("server core: past the room's code attempts, too_many_code_attempts, and the connection stays", () => {
  const { state } = opened();
  const out = step(state, {
    type: "code_stored",
    outcome: { kind: "limited", retryAfterMs: 125_000 },
  });
  assert.equal(out.replies.length, 1);
  const reply = out.replies[0] as Extract<ServerMessage, { type: "error" }>;
  assert.equal(reply.code, "too_many_code_attempts");
  assert.equal(reply.in_reply_to, "code");
  assert.equal(reply.retryable, false);
  assert.match(reply.message, /in 3 minutes/);
  assert.equal(out.state.phase, "open");
  // The store away: unavailable, retryable, in reply to the code frame.
  const failed = step(state, {
    type: "failed",
    effect: { type: "put_code", room: "r", party: 0, frame: CODE_FRAME },
    error: new StoreUnavailable("down"),
  });
  const said = failed.replies[0] as Extract<ServerMessage, { type: "error" }>;
  assert.equal(said.code, "unavailable");
  assert.equal(said.in_reply_to, "code");
  assert.equal(said.retryable, true);
});

Deno.test("server core: the peer's code frame is relayed once in (after its key), live after; never one's own", () => {
  const first = step(initialState(limits), { type: "frame", payload: hello, now: 0 });
  const { offer } = makeKeyOffer("r", 1);
  const bobCode = { party: 1 as const, name: "bob", frame: { ...CODE_FRAME, confirm: CONFIRM } };
  const welcomed = step(first.state, {
    type: "joined",
    join: { ok: true, party: 0, peer: "bob", lastId: 0, lastSeq: 0 },
    service: SERVICE,
    offers: [{
      party: 1,
      name: "bob",
      publicKey: hexToBytes(offer.public_key),
      proof: offer.proof,
    }],
    codes: [{ party: 0, name: "alice", frame: CODE_FRAME }, bobCode],
    challenge: CHALLENGE,
  });
  const inside = drive(welcomed.state, authenticate);
  assert.deepEqual(inside.replies.map((r) => r.type), ["peer_key", "peer_code"]);
  assert.deepEqual(inside.replies[1], {
    type: "peer_code",
    name: "bob",
    party: 1,
    ...CODE_FRAME,
    confirm: CONFIRM,
  });
  const live = step(inside.state, { type: "peer_code", code: { ...bobCode, frame: CODE_FRAME } });
  assert.deepEqual(live.replies, [{ type: "peer_code", name: "bob", party: 1, ...CODE_FRAME }]);
  const own = step(inside.state, {
    type: "peer_code",
    code: { party: 0, name: "alice", frame: CODE_FRAME },
  });
  assert.deepEqual(own.replies, []);
  // While authenticating, the newest is kept for the entry.
  const waiting = step(welcomed.state, {
    type: "peer_code",
    code: { ...bobCode, frame: CODE_FRAME },
  });
  const entered = drive(waiting.state, authenticate);
  assert.deepEqual(entered.replies[1], { type: "peer_code", name: "bob", party: 1, ...CODE_FRAME });
});

Deno.test("server core: a version-4 client is sent no code frame and may send none", () => {
  const v4 = drive(initialState(limits), [
    { type: "frame", payload: { ...hello, version: 4 }, now: 0 },
    joinedEvent({ ok: true, party: 0, peer: "bob", lastId: 0, lastSeq: 0 }),
    ...authenticate,
  ]);
  const relayed = step(v4.state, {
    type: "peer_code",
    code: { party: 1, name: "bob", frame: CODE_FRAME },
  });
  assert.deepEqual(relayed.replies, []);
  const sent = step(v4.state, { type: "frame", payload: { type: "code", ...CODE_FRAME }, now: 0 });
  assert.equal((sent.replies[0] as { code?: string }).code, "bad_message");
  assert.deepEqual(sent.effects.filter((e) => e.type === "put_code"), []);
});

Deno.test("server core: a malformed code frame is bad_message in reply to code, and costs a key offer's tokens", () => {
  const { state } = opened();
  for (
    const payload of [
      { type: "code" },
      { type: "code", message: "not base64!" },
      { type: "code", message: base64.encode(new Uint8Array(129)) },
      {
        type: "code",
        ...CODE_FRAME,
        confirm: { tag: base64.encode(new Uint8Array(63)), answers: CODE_FRAME.message },
      },
      { type: "code", ...CODE_FRAME, extra: 1 },
    ]
  ) {
    const out = step(state, { type: "frame", payload, now: 0 });
    const reply = out.replies[0] as Extract<ServerMessage, { type: "error" }>;
    assert.equal(reply.code, "bad_message", JSON.stringify(payload));
    assert.equal(reply.in_reply_to, "code");
  }
});

Deno.test("server core: a key offer or code frame announced while the connection joins is not lost; the newest of it and the join's read is relayed", () => {
  const first = step(initialState(limits), { type: "frame", payload: hello, now: 0 });
  const bobOffer = (updatedAt: number): KeyOffer => {
    const { offer } = makeKeyOffer("r", 1);
    return {
      party: 1,
      name: "bob",
      publicKey: hexToBytes(offer.public_key),
      proof: offer.proof,
      updatedAt,
    };
  };
  const bobCode = (updatedAt: number) => ({
    party: 1 as const,
    name: "bob",
    frame: { message: base64.encode(new Uint8Array(67).fill(updatedAt)) },
    updatedAt,
  });
  const keyOf = (offer: KeyOffer) => bytesToHex(offer.publicKey);
  for (
    const [read, announced, expected] of [
      [undefined, 5, "announced"], // bound after the join's read: only the announcement has it
      [7, 5, "read"], // the announcement came from an earlier state than the read
      [5, 7, "announced"],
    ] as const
  ) {
    const readOffer = read === undefined ? undefined : bobOffer(read);
    const announcedOffer = bobOffer(announced);
    const joining = drive(first.state, [
      { type: "peer_key", offer: announcedOffer },
      { type: "peer_code", code: bobCode(announced) },
    ]);
    assert.deepEqual(joining.replies, [], "nothing before the welcome");
    const inside = drive(joining.state, [
      {
        type: "joined",
        join: { ok: true, party: 0, peer: "bob", lastId: 0, lastSeq: 0 },
        service: SERVICE,
        offers: readOffer ? [readOffer] : [],
        codes: read === undefined ? [] : [bobCode(read)],
        challenge: CHALLENGE,
      },
      ...authenticate,
    ]);
    const relayed = inside.replies.filter((r) => r.type === "peer_key");
    const want = expected === "read" ? readOffer! : announcedOffer;
    assert.deepEqual(
      relayed.map((r) => r.type === "peer_key" && r.public_key),
      [keyOf(want)],
      `${read} read, ${announced} announced`,
    );
    const code = inside.replies.find((r) => r.type === "peer_code");
    assert.equal(
      code?.type === "peer_code" && code.message,
      bobCode(expected === "read" ? read! : announced).frame.message,
    );
    // Once in, an announcement older than what was relayed is not relayed again.
    const older = step(inside.state, { type: "peer_key", offer: bobOffer(1) });
    assert.deepEqual(older.replies, []);
    const newerOne = step(inside.state, { type: "peer_key", offer: bobOffer(9) });
    assert.equal(newerOne.replies[0]?.type, "peer_key");
    assert.deepEqual(step(inside.state, { type: "peer_code", code: bobCode(1) }).replies, []);
  }
});
