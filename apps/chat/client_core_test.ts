// The client's reducer against a model server that keeps the store's rules (a sender's
// next seq, duplicates by client id), under generated interleavings of typing, keys,
// refusals, lost answers, disconnects and reconnects: every message typed is stored once,
// in the order typed, unless the server refused it for good.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type ClientCommand,
  type ClientCoreEvent,
  type ClientState,
  connectFailureText,
  connectionErrorCommand,
  initialClientState,
  reduceClient,
  retryText,
  SEND_WINDOW,
} from "./client_core.ts";
import {
  ERROR_CODES,
  type ErrorCode,
  ProtocolError,
  type ServerMessage,
  type StoredMessage,
} from "./protocol.ts";

const SERVICE = "6f1c2b9e-3a4d-4c5e-8f70-112233445566";

function welcome(lastSeq: number, lastId = 0): Extract<ServerMessage, { type: "welcome" }> {
  return {
    type: "welcome",
    version: 4,
    party: 0,
    peer: "bob",
    last_id: lastId,
    service: SERVICE,
    last_seq: lastSeq,
    challenge: "ab".repeat(32),
  };
}

/** The server's side of one sender, as the store decides (store.ts). */
class ModelServer {
  /** client id -> seq, in the order stored. */
  readonly stored: { clientMsgId: string; seq: number }[] = [];
  /** Client ids the server refuses for good (too large). */
  readonly tooLarge = new Set<string>();
  /** Sends received and not yet processed, in order. */
  inbox: { clientMsgId: string; seq: number }[] = [];
  /** Answers not yet delivered to the client, in order. */
  outbox: ServerMessage[] = [];
  nextId = 1;

  get lastSeq(): number {
    return this.stored.length ? this.stored[this.stored.length - 1]!.seq : 0;
  }

  process(fault: boolean): void {
    const send = this.inbox.shift();
    if (!send) return;
    const error = (code: "unavailable" | "message_too_large" | "out_of_order", extra = {}) =>
      void this.outbox.push({
        type: "error",
        code,
        message: code,
        retryable: code !== "message_too_large",
        in_reply_to: "send",
        client_msg_id: send.clientMsgId,
        ...extra,
      });
    if (this.tooLarge.has(send.clientMsgId)) return error("message_too_large");
    if (fault) return error("unavailable");
    const first = this.stored.find((s) => s.clientMsgId === send.clientMsgId);
    if (first) {
      this.outbox.push(storedFrame(first.clientMsgId, first.seq, this.nextId++));
      return;
    }
    if (send.seq !== this.lastSeq + 1) {
      return error("out_of_order", { expected_seq: this.lastSeq + 1 });
    }
    this.stored.push(send);
    this.outbox.push(storedFrame(send.clientMsgId, send.seq, this.nextId++));
  }
}

function storedFrame(
  clientMsgId: string,
  seq: number,
  id: number,
): Extract<ServerMessage, { type: "stored" }> {
  return {
    type: "stored",
    client_msg_id: clientMsgId,
    seq,
    id,
    created_at: new Date(0).toISOString(),
  };
}

/** The reducer and the shell's part of it: transmit goes to the server, timers are kept. */
class Harness {
  state: ClientState = initialClientState();
  readonly server = new ModelServer();
  readonly timers: ClientCommand[] = [];
  readonly dropped: string[] = [];
  readonly shown: StoredMessage[] = [];
  connected = false;

  dispatch(event: ClientCoreEvent): void {
    const { state, commands } = reduceClient(this.state, event);
    this.state = state;
    for (const command of commands) {
      switch (command.type) {
        case "transmit":
          assert.ok(this.connected, "transmits only while connected");
          this.server.inbox.push({ clientMsgId: command.clientMsgId, seq: command.seq });
          break;
        case "schedule":
          this.timers.push(command);
          break;
        case "dropped":
          this.dropped.push(command.clientMsgId);
          break;
        case "show":
          this.shown.push(command.message);
          break;
      }
    }
  }

  connect(): void {
    if (this.connected) return;
    this.connected = true;
    this.dispatch({ type: "connected" });
    this.dispatch({
      type: "welcome",
      message: welcome(this.server.lastSeq),
      outbox: this.state.outbox,
    });
  }

  disconnect(): void {
    if (!this.connected) return;
    this.connected = false;
    // Sends the server had not read, and answers not yet read by the client, are lost.
    this.server.inbox = [];
    this.server.outbox = [];
    this.dispatch({ type: "disconnected" });
  }

  deliver(): void {
    const message = this.server.outbox.shift();
    if (message && this.connected) {
      this.dispatch({
        type: "frame",
        message: message as Exclude<ServerMessage, { type: "welcome" }>,
      });
    }
  }

  fireTimer(): void {
    const timer = this.timers.shift();
    if (timer?.type === "schedule") this.dispatch({ type: "timer", timer: timer.timer });
  }
}

type Action =
  | { kind: "type"; ready: boolean }
  | { kind: "seal" }
  | { kind: "process"; fault: boolean }
  | { kind: "deliver" }
  | { kind: "disconnect" }
  | { kind: "connect" }
  | { kind: "timer" };

const action: fc.Arbitrary<Action> = fc.oneof(
  {
    arbitrary: fc.record({ kind: fc.constant("type" as const), ready: fc.boolean() }),
    weight: 4,
  },
  { arbitrary: fc.constant({ kind: "seal" as const }), weight: 1 },
  {
    arbitrary: fc.record({ kind: fc.constant("process" as const), fault: fc.boolean() }),
    weight: 5,
  },
  { arbitrary: fc.constant({ kind: "deliver" as const }), weight: 5 },
  { arbitrary: fc.constant({ kind: "disconnect" as const }), weight: 1 },
  { arbitrary: fc.constant({ kind: "connect" as const }), weight: 2 },
  { arbitrary: fc.constant({ kind: "timer" as const }), weight: 2 },
);

function run(actions: Action[], tooLargeEvery: number) {
  const h = new Harness();
  const typed: string[] = [];
  const tooLarge = new Set<string>();
  let nextSeq = 1;
  for (const a of actions) {
    switch (a.kind) {
      case "type": {
        const clientMsgId = `m${typed.length + 1}`;
        typed.push(clientMsgId);
        if (tooLargeEvery && typed.length % tooLargeEvery === 0) {
          tooLarge.add(clientMsgId);
          h.server.tooLarge.add(clientMsgId);
        }
        // The key store gives seqs in typing order (keystore.ts), after what is stored.
        nextSeq = Math.max(nextSeq, h.server.lastSeq + 1);
        const lastLocal = h.state.outbox.at(-1)?.seq ?? 0;
        nextSeq = Math.max(nextSeq, lastLocal + 1);
        h.dispatch({ type: "queued", item: { clientMsgId, seq: nextSeq++, ready: a.ready } });
        break;
      }
      case "seal":
        h.dispatch({
          type: "sealed",
          clientMsgIds: h.state.outbox.filter((i) => !i.ready).map((i) => i.clientMsgId),
        });
        break;
      case "process":
        h.server.process(a.fault);
        break;
      case "deliver":
        h.deliver();
        break;
      case "disconnect":
        h.disconnect();
        break;
      case "connect":
        h.connect();
        break;
      case "timer":
        h.fireTimer();
        break;
    }
    // At every step: what is stored is a prefix of what was typed (less refusals), in order.
    const stored = h.server.stored.map((s) => s.clientMsgId);
    const expected = typed.filter((id) => !tooLarge.has(id));
    assert.deepEqual(stored, expected.slice(0, stored.length), "stored in typing order");
    assert.deepEqual(
      h.server.stored.map((s) => s.seq),
      stored.map((_, i) => i + 1),
      "seqs 1..n without a gap",
    );
  }
  // Then a calm network: everything goes through.
  h.dispatch({
    type: "sealed",
    clientMsgIds: h.state.outbox.filter((i) => !i.ready).map((i) => i.clientMsgId),
  });
  h.connect();
  for (let i = 0; i < 10_000 && (h.state.outbox.length || h.server.outbox.length); i++) {
    h.server.process(false);
    h.deliver();
    if (!h.server.inbox.length && !h.server.outbox.length) h.fireTimer();
  }
  const expected = typed.filter((id) => !tooLarge.has(id));
  assert.deepEqual(
    h.server.stored.map((s) => s.clientMsgId),
    expected,
    "every message, once, in order",
  );
  assert.deepEqual(h.state.outbox, [], "the outbox is empty");
  assert.deepEqual(h.dropped.sort(), [...tooLarge].sort(), "refused for good: dropped and shown");
}

Deno.test("client core: whatever the interleaving of refusals, lost answers and reconnects, a sender's messages are stored once, in the order typed", () => {
  fc.assert(
    fc.property(
      fc.array(action, { maxLength: 80 }),
      fc.constantFrom(0, 0, 3, 5),
      (actions, tooLargeEvery) => run(actions, tooLargeEvery),
    ),
    { numRuns: 2000 },
  );
});

Deno.test("client core: the issue's burst: a refusal of message 1 does not let 4 overtake it", () => {
  const h = new Harness();
  h.connect();
  for (let i = 1; i <= 8; i++) {
    h.dispatch({ type: "queued", item: { clientMsgId: `m${i}`, seq: i, ready: true } });
  }
  assert.equal(h.server.inbox.length, 8, "pipelined");
  h.server.process(true); // m1: unavailable
  for (let i = 0; i < 7; i++) h.server.process(false); // m2..m8: out of order
  assert.equal(h.server.stored.length, 0, "nothing stored past the gap");
  for (let i = 0; i < 8; i++) h.deliver();
  assert.equal(h.server.inbox.length, 0, "nothing resent before the round is answered");
  assert.equal(h.timers.length, 1, "one resend timer, for the unavailable");
  h.fireTimer();
  for (let i = 0; i < 8; i++) h.server.process(false);
  assert.deepEqual(h.server.stored.map((s) => s.clientMsgId), [
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "m8",
  ]);
});

Deno.test("client core: an entry waiting for a key holds back the ones typed after it", () => {
  const h = new Harness();
  h.connect();
  h.dispatch({ type: "queued", item: { clientMsgId: "a", seq: 1, ready: false } });
  h.dispatch({ type: "queued", item: { clientMsgId: "b", seq: 2, ready: true } });
  assert.equal(h.server.inbox.length, 0, "b waits for a");
  h.dispatch({ type: "sealed", clientMsgIds: ["a"] });
  assert.deepEqual(h.server.inbox.map((s) => s.clientMsgId), ["a", "b"]);
});

Deno.test("client core: a message refused for good is dropped and the next ones take its seq", () => {
  const h = new Harness();
  h.server.tooLarge.add("big");
  h.connect();
  h.dispatch({ type: "queued", item: { clientMsgId: "big", seq: 1, ready: true } });
  h.dispatch({ type: "queued", item: { clientMsgId: "after", seq: 2, ready: true } });
  h.server.process(false);
  h.server.process(false);
  h.deliver();
  h.deliver();
  assert.deepEqual(h.dropped, ["big"]);
  h.server.process(false);
  h.deliver();
  assert.deepEqual(h.server.stored, [{ clientMsgId: "after", seq: 1 }]);
});

Deno.test("client core: the welcome's last_seq renumbers an outbox that starts past a gap", () => {
  const state = initialClientState([{ clientMsgId: "x", seq: 9, ready: true }]);
  const connected = reduceClient(state, { type: "connected" }).state;
  const { state: after, commands } = reduceClient(connected, {
    type: "welcome",
    message: welcome(4),
    outbox: connected.outbox,
  });
  assert.deepEqual(after.outbox, [{ clientMsgId: "x", seq: 5, ready: true }]);
  assert.ok(commands.some((c) => c.type === "renumber" && c.firstSeq === 5));
  assert.ok(commands.some((c) => c.type === "transmit" && c.seq === 5));
});

Deno.test("client core: an outbox numbered at or below the server's last seq (another key store of the name stored meanwhile) is stored in the order typed", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 8 }),
      fc.integer({ min: 1, max: 8 }),
      fc.array(fc.boolean(), { maxLength: 60 }),
      (typed, foreign, faults) => {
        const h = new Harness();
        // This key store numbered its lines 1, 2, ... before it knew what the server holds.
        const ids = Array.from({ length: typed }, (_, i) => `mine-${i}`);
        h.state = initialClientState(
          ids.map((id, i) => ({ clientMsgId: id, seq: i + 1, ready: true })),
        );
        for (let i = 1; i <= foreign; i++) {
          h.server.stored.push({ clientMsgId: `other-${i}`, seq: i });
        }
        h.connect();
        let f = 0;
        for (let i = 0; i < 10_000 && (h.state.outbox.length || h.server.outbox.length); i++) {
          h.server.process(faults[f++] ?? false);
          h.deliver();
          if (!h.server.inbox.length && !h.server.outbox.length) h.fireTimer();
        }
        assert.deepEqual(
          h.server.stored.filter((s) => s.clientMsgId.startsWith("mine")).map((s) => s.clientMsgId),
          ids,
        );
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("client core: the send window bounds what is in flight", () => {
  const h = new Harness();
  h.connect();
  for (let i = 1; i <= SEND_WINDOW + 10; i++) {
    h.dispatch({ type: "queued", item: { clientMsgId: `m${i}`, seq: i, ready: true } });
  }
  assert.equal(h.server.inbox.length, SEND_WINDOW);
  h.server.process(false);
  h.deliver();
  assert.equal(h.server.inbox.length, SEND_WINDOW, "one answered, one more sent");
});

function peerMessage(id: number): StoredMessage {
  return {
    id,
    sender: "bob",
    client_msg_id: `b${id}`,
    seq: id,
    nonce: "AAAAAAAAAAAAAAAA",
    ciphertext: "AAAAAAAAAAAAAAAAAAAAAA==",
    created_at: new Date(0).toISOString(),
  };
}

Deno.test("client core: pushes that come while history is read are shown after it, in id order, once", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 30 }),
      fc.array(fc.integer({ min: 1, max: 30 }), { maxLength: 10 }),
      fc.integer({ min: 1, max: 10 }),
      (stored, pushedExtra, pageSize) => {
        const h = new Harness();
        h.connect();
        // The room holds 1..stored; pushes of some of them and of newer ones race the pages.
        const newest = stored + pushedExtra.length;
        const pushes = [...new Set(pushedExtra.map((n) => Math.min(newest, n + stored / 2)))]
          .map(Math.floor)
          .sort((a, b) => a - b);
        let after = 0;
        let p = 0;
        while (after < newest) {
          if (p < pushes.length) {
            h.dispatch({
              type: "frame",
              message: { type: "message", message: peerMessage(pushes[p++]!) },
            });
          }
          const page = [];
          for (let id = after + 1; id <= Math.min(newest, after + pageSize); id++) {
            page.push(peerMessage(id));
          }
          after += page.length;
          h.dispatch({
            type: "frame",
            message: { type: "history_page", messages: page, has_more: after < newest },
          });
        }
        while (p < pushes.length) {
          h.dispatch({
            type: "frame",
            message: { type: "message", message: peerMessage(pushes[p++]!) },
          });
        }
        const ids = h.shown.map((m) => m.id);
        assert.deepEqual(ids, Array.from({ length: newest }, (_, i) => i + 1));
      },
    ),
  );
});

Deno.test("client core: a history or key offer refused as unavailable is asked again", () => {
  const h = new Harness();
  h.connect();
  h.dispatch({
    type: "frame",
    message: {
      type: "error",
      code: "unavailable",
      message: "db",
      retryable: true,
      in_reply_to: "history",
    },
  });
  assert.deepEqual(h.timers.map((t) => t.type === "schedule" && t.timer), ["history"]);
  const { commands } = reduceClient(h.state, { type: "timer", timer: "history" });
  assert.deepEqual(commands, [{ type: "send_history", after: 0 }]);
  const offer = reduceClient(h.state, {
    type: "frame",
    message: {
      type: "error",
      code: "unavailable",
      message: "db",
      retryable: true,
      in_reply_to: "key_offer",
    },
  });
  assert.equal(offer.commands[0]?.type, "schedule");
});

Deno.test("client core: replaced by a newer connection with its name, a client stops instead of pushing it out in turn", () => {
  const h = new Harness();
  h.connect();
  const { commands } = reduceClient(h.state, {
    type: "frame",
    message: { type: "bye", reason: "replaced by a newer connection with your name" },
  });
  assert.equal(commands[0]?.type, "fatal");
  const idle = reduceClient(h.state, { type: "frame", message: { type: "bye", reason: "idle" } });
  assert.equal(idle.commands[0]?.type, "notice", "other byes: reconnect as usual");
});

Deno.test("client core: an own message's answer does not move the history cursor past a peer message not yet pushed", () => {
  const h = new Harness();
  h.connect();
  h.dispatch({
    type: "frame",
    message: { type: "history_page", messages: [peerMessage(17)], has_more: false },
  });
  h.dispatch({ type: "queued", item: { clientMsgId: "mine", seq: 1, ready: true } });
  // The answer for our message (id 20) comes before the push of bob's 18 and 19 ...
  h.dispatch({ type: "frame", message: storedFrame("mine", 1, 20) });
  // ... and the connection drops before they are pushed.
  h.disconnect();
  h.connected = true;
  const { commands } = reduceClient(reduceClient(h.state, { type: "connected" }).state, {
    type: "welcome",
    message: welcome(1, 20),
    outbox: [],
  });
  assert.deepEqual(commands.find((c) => c.type === "send_history"), {
    type: "send_history",
    after: 17,
  });
});

Deno.test("client core: an own message already answered is not shown again when history carries it", () => {
  const h = new Harness();
  h.connect();
  h.dispatch({ type: "queued", item: { clientMsgId: "mine", seq: 1, ready: true } });
  h.dispatch({ type: "frame", message: storedFrame("mine", 1, 5) });
  const own = { ...peerMessage(5), sender: "alice", client_msg_id: "mine" };
  h.dispatch({
    type: "frame",
    message: {
      type: "history_page",
      messages: [peerMessage(4), own, peerMessage(6)],
      has_more: false,
    },
  });
  assert.deepEqual(h.shown.map((m) => m.id), [4, 6]);
  assert.equal(h.state.maxId, 6);
  assert.equal(h.state.ownAbove.size, 0, "forgotten once history has passed it");
});

Deno.test("retryText(): a wait below a tenth of a second is 'now'; any other never prints 0.0 s and is within 50 ms of the wait", () => {
  assert.equal(retryText(0), "now");
  assert.equal(retryText(49), "now");
  assert.equal(retryText(100), "in 0.1 s");
  assert.equal(retryText(2_449), "in 2.4 s");
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 100_000_000 }), (ms) => {
      const text = retryText(ms);
      assert.doesNotMatch(text, /\b0\.0 s/);
      if (ms < 100) return assert.equal(text, "now");
      const shown = /^in (\d+\.\d) s$/.exec(text);
      assert.ok(shown, text);
      assert.ok(Math.abs(Number(shown[1]) * 1000 - ms) <= 50, `${ms} ms shown as ${text}`);
    }),
  );
});

const FATAL: ErrorCode[] = [
  "room_full",
  "key_mismatch",
  "unsupported_version",
  "bad_proof",
  "too_many_code_attempts",
];

Deno.test("connectionErrorCommand(): every code the server can send has a sentence of ours saying what happened and what to do; only refusals no retry mends stop the client", () => {
  for (const code of Object.keys(ERROR_CODES) as ErrorCode[]) {
    const command = connectionErrorCommand({ code, message: "SERVER WORDS", in_reply_to: "hello" });
    const [ours, theirs] = command.text.split(" (server: ");
    assert.match(ours!, /^[A-Z].*[a-z)]\.?$/, `${code}: a sentence: ${command.text}`);
    assert.doesNotMatch(ours!, /SERVER WORDS|next start|goes out/, code);
    assert.equal(theirs, `SERVER WORDS; ${code})`, `${code}: the server's words kept after ours`);
    assert.equal(command.type, FATAL.includes(code) ? "fatal" : "notice", code);
    if (command.type === "notice") {
      assert.match(ours!, /by itself|when it is back/, `${code}: says the client retries`);
      assert.equal(command.outage, code, `${code}: said once per outage`);
    }
  }
  const full = connectionErrorCommand({ code: "room_full", message: "m", in_reply_to: "hello" });
  assert.equal(full.type === "fatal" && full.discard, true, "a full room: the outbox is dropped");
  assert.match(full.text, /already has its two people.*choose another room with --room/);
  assert.match(full.text, /Nothing was sent/);
  // A key offer refused for a malformed frame cannot be mended by reconnecting.
  const offer = connectionErrorCommand({
    code: "bad_message",
    message: "m",
    in_reply_to: "key_offer",
  });
  assert.equal(offer.type, "fatal");
  assert.doesNotMatch(offer.text, /reconnects/);
});

Deno.test("client core: a full room stops the client and drops its outbox; other connection errors reconnect", () => {
  const h = new Harness();
  h.connect();
  const error = (code: ErrorCode, retryable: boolean): ClientCoreEvent => ({
    type: "frame",
    message: { type: "error", code, message: "m", retryable, in_reply_to: "hello" },
  });
  const full = reduceClient(h.state, error("room_full", false)).commands;
  assert.deepEqual(full.map((c) => c.type === "fatal" && c.discard), [true]);
  const down = reduceClient(h.state, error("unavailable", true)).commands;
  assert.deepEqual(down.map((c) => c.type), ["notice"]);
});

Deno.test("client core: the peer's presence is said when it is new on a connection (here, away) or changes (came, left), never twice, never across connections (property)", () => {
  const event = fc.oneof(
    fc.constant<ClientCoreEvent>({ type: "connected" }),
    fc.constant<ClientCoreEvent>({ type: "disconnected" }),
    fc.boolean().map((present): ClientCoreEvent => ({
      type: "frame",
      message: { type: "presence", name: "bob", present },
    })),
  );
  fc.assert(
    fc.property(fc.array(event, { maxLength: 40 }), (events) => {
      let state = initialClientState();
      let told: boolean | null = null; // the model: last presence said on this connection
      for (const e of events) {
        const { state: next, commands } = reduceClient(state, e);
        state = next;
        const said = commands.filter((c) => c.type === "presence");
        if (e.type !== "frame" || e.message.type !== "presence") {
          told = null;
          assert.deepEqual(said, []);
          continue;
        }
        const present = e.message.present;
        const expected: ClientCommand[] = told === present ? [] : [{
          type: "presence",
          name: "bob",
          presence: told === null ? (present ? "here" : "away") : (present ? "came" : "left"),
        }];
        assert.deepEqual(said, expected);
        told = present;
      }
    }),
  );
});

Deno.test("connectFailureText(): a failure to connect is told in our words, naming the server and what to check, never the runtime's text alone", () => {
  const cases: [unknown, RegExp][] = [
    [
      new Deno.errors.ConnectionRefused("Connection refused (os error 111)"),
      /^Nothing answers at h:1: is the chat server running/,
    ],
    [
      new Error("failed to lookup address information: Name or service not known"),
      /^The host h is not known .*check --server/,
    ],
    [
      new ProtocolError("frame_too_large", "frame of 1213486160 bytes"),
      // "HTTP" read as a length: another protocol, said so, not the number.
      /^h:1 does not answer in duet chat's protocol \(what it sent is not a duet chat frame\): is it a duet chat-server\?/,
    ],
    [
      new Error("The stream's underlying resource was closed or consumed"),
      /^The connection to h:1 broke off/,
    ],
    [
      new Deno.errors.ConnectionReset("Connection reset by peer (os error 104)"),
      /^The connection to h:1 broke off/,
    ],
    [new Deno.errors.TimedOut("timed out"), /^h:1 did not answer in time/],
    [
      new Error("Network is unreachable (os error 101)"),
      /^Cannot reach h:1 \(Network is unreachable\)/,
    ],
  ];
  for (const [error, expected] of cases) {
    const text = connectFailureText(error, "h:1");
    assert.match(text, expected);
    assert.match(text, /The client keeps trying; Ctrl-C stops it\.$/);
    assert.doesNotMatch(text, /os error/);
  }
});

Deno.test("client core: alone in a new room (the welcome names no peer), a peer who joins is told as having come", () => {
  let state = reduceClient(initialClientState(), { type: "connected" }).state;
  state = reduceClient(state, {
    type: "welcome",
    message: { ...welcome(0), peer: null },
    outbox: [],
  }).state;
  const { commands } = reduceClient(state, {
    type: "frame",
    message: { type: "presence", name: "bob", present: true },
  });
  assert.deepEqual(commands, [{ type: "presence", name: "bob", presence: "came" }]);
});
