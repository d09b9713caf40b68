import assert from "node:assert/strict";
import fc from "fast-check";
import stringWidth from "string-width";
import type { ClientEvent, ConnectionState, MessageView, Presence } from "./client.ts";
import { printable } from "@duet/core/printable";
import {
  type Action,
  backspace,
  clock,
  deliveryMark,
  groupFingerprint,
  initialState,
  reduce,
  rowLines,
  titleText,
  type TuiState,
} from "./tui_state.ts";

const at = new Date("2026-11-24T12:00:00Z");
const message = (over: Partial<MessageView>): MessageView => ({
  clientMsgId: "c",
  sender: "bob",
  text: "hi",
  createdAt: at,
  own: false,
  status: "stored",
  fromHistory: false,
  ...over,
});
const incoming = (state: TuiState, m: MessageView) =>
  reduce(state, { type: "client", event: { type: "message", message: m } });
const texts = (state: TuiState) =>
  state.rows.map((
    r,
  ) => (r.kind === "message" ? `${r.message.text}${deliveryMark(r.message)}` : `* ${r.text}`));

Deno.test("tui state: stored messages in id order, own unsent ones last, then updated in place", () => {
  let s = initialState;
  s = incoming(s, message({ id: 5, clientMsgId: "b5", text: "five" }));
  s = incoming(s, message({ id: 3, clientMsgId: "b3", text: "three" }));
  s = incoming(
    s,
    message({ clientMsgId: "mine", sender: "alice", own: true, text: "mine", status: "sending" }),
  );
  s = incoming(s, message({ id: 7, clientMsgId: "b7", text: "seven" }));
  assert.deepEqual(texts(s), ["three", "five", "seven", "mine …"]);
  s = incoming(
    s,
    message({
      id: 8,
      clientMsgId: "mine",
      sender: "alice",
      own: true,
      text: "mine",
      status: "stored",
    }),
  );
  assert.deepEqual(texts(s), ["three", "five", "seven", "mine ✓"]);
  s = incoming(s, message({ id: 5, clientMsgId: "b5", text: "five" }));
  assert.equal(s.rows.length, 4, "a repeat (push and history) is shown once");
});

Deno.test("tui state: scrolled up, new rows are counted; back at the bottom, the count clears", () => {
  let s = initialState;
  for (let i = 1; i <= 30; i++) {
    s = incoming(s, message({ id: i, clientMsgId: `m${i}`, text: `m${i}` }));
  }
  s = reduce(s, { type: "scroll", by: 10, page: 10 });
  assert.equal(s.scroll, 10);
  s = incoming(s, message({ id: 31, clientMsgId: "m31", text: "m31" }));
  assert.deepEqual([s.scroll, s.unseen], [11, 1], "the view stays put");
  s = reduce(s, { type: "scroll", by: 1000, page: 10 });
  assert.equal(s.scroll, 21, "no further than the oldest page");
  s = reduce(s, { type: "scroll", by: -Infinity, page: 10 });
  assert.deepEqual([s.scroll, s.unseen], [0, 0]);
});

Deno.test("tui state: a changed key is a warning that stays until accepted; undecryptable rows stay", () => {
  let s = reduce(initialState, {
    type: "client",
    event: {
      type: "key",
      fingerprint: "ab".repeat(32),
      peer: "bob",
      changed: true,
      accepted: false,
    },
  });
  assert.equal(s.keyChanged, true);
  assert.match(texts(s)[0]!, /bob's key CHANGED.*\/accept-key/);
  s = reduce(s, { type: "key-accepted" });
  assert.equal(s.keyChanged, false);
  s = incoming(s, message({ id: 1, text: null, problem: "cannot decrypt" }));
  const last = s.rows.at(-1);
  assert.ok(last?.kind === "message" && last.message.text === null);
  assert.equal(last.message.problem, "cannot decrypt", "shown as such, not dropped");
});

Deno.test("formatting: fingerprints in fours; backspace removes whole graphemes", () => {
  assert.equal(groupFingerprint("0123456789abcdef"), "0123 4567 89ab cdef");
  assert.equal(backspace("hi 👋🏽"), "hi ");
  assert.equal(backspace("привет"), "приве");
  assert.equal(backspace("e\u0301"), "", "a letter with its combining accent");
  assert.equal(backspace(""), "");
});

const mine = (over: Partial<MessageView>) => message({ sender: "alice", own: true, ...over });

Deno.test("rowLines: wrapped between words, no space at a line's start, continuation under the text", () => {
  const lines = rowLines(
    { kind: "message", message: message({ text: "one two three four five six seven eight nine" }) },
    "alice",
    32,
  );
  const lead = `${clock(at)} bob: `;
  // 32 columns less the 11 of "12:00 bob: " leave 21 for the text.
  assert.deepEqual(lines, [
    `${lead}one two three four`,
    `${" ".repeat(lead.length)}five six seven eight`,
    `${" ".repeat(lead.length)}nine`,
  ]);
  assert.deepEqual(rowLines({ kind: "message", message: mine({ text: "hi" }) }, "alice", 80), [
    `${clock(at)} you: hi ✓`,
  ]);
});

Deno.test("rowLines: a pane too narrow for an indent wraps to its edge", () => {
  const lines = rowLines(
    { kind: "message", message: message({ sender: "a-rather-long-name", text: "hello there" }) },
    "me",
    30,
  );
  // 30 columns less the 26 of the lead leave 4: too few, so no indent.
  assert.deepEqual(lines, [`${clock(at)} a-rather-long-name:`, "hello there"]);
});

Deno.test("rowLines: a peer's escape sequences and newlines are shown, never sent to the terminal", () => {
  const lines = rowLines(
    { kind: "message", message: message({ text: "\x1b]52;c;aGk=\x07\nalice: forged" }) },
    "alice",
    80,
  );
  assert.deepEqual(lines, [`${clock(at)} bob: ␛]52;c;aGk=␇␊alice: forged`]);
  assert.deepEqual(
    rowLines({ kind: "message", message: message({ text: "a\tb" }) }, "alice", 80),
    [`${clock(at)} bob: a    b`],
  );
  assert.deepEqual(rowLines({ kind: "note", text: "server: \x1b[2J", tone: "info" }, "a", 80), [
    "* server: ␛[2J",
  ]);
  assert.deepEqual(
    rowLines(
      { kind: "message", message: message({ text: null, problem: "cannot decrypt" }) },
      "a",
      80,
    ),
    [`${clock(at)} bob: [cannot decrypt]`],
  );
});

Deno.test("rowLines: no line is wider than the pane, and no visible character is lost", () => {
  const word = fc.oneof(
    fc.constantFrom("привет", "👋🏽", "漢字かな", "a", "longwordwithoutanyspaces".repeat(3), "é"),
    fc.string({ minLength: 1, maxLength: 12 }).map((s) => s.replace(/\s/g, "x")),
  );
  fc.assert(
    fc.property(
      fc.array(word, { maxLength: 30 }),
      fc.integer({ min: 4, max: 120 }),
      (words, width) => {
        const text = words.join(" ");
        const lines = rowLines({ kind: "message", message: message({ text }) }, "me", width);
        for (const line of lines) assert.ok(stringWidth(line) <= width, `${width}: ${line}`);
        const visible = (s: string) => s.replace(/\s/g, "");
        assert.equal(visible(lines.join("")), visible(`${clock(at)} bob: ${printable(text)}`));
      },
    ),
  );
});

Deno.test("titleText: the full form where it fits, what matters first where not, always the width", () => {
  const state: TuiState = {
    ...initialState,
    connection: "connected",
    peer: "bob",
    fingerprint: "32c40211aabb",
  };
  const full = titleText(state, "tea", 80);
  assert.equal(
    full.trimEnd(),
    " duet chat · tea  ·  with bob  ·  ● connected to server  ·  key 32c40211",
  );
  assert.equal(full.length, 80);
  assert.equal(
    titleText(state, "tea", 54).trimEnd(),
    " ● connected to server · key 32c40211 · tea · bob",
  );
  assert.equal(titleText(state, "tea", 54).length, 54);
  assert.equal(titleText(state, "tea", 30), " ● connected to server · key …");
  assert.equal(
    titleText({ ...state, connection: "reconnecting", connectionDetail: "in 1.2 s" }, "tea", 44),
    " ○ reconnecting in 1.2 s · key 32c40211 · t…",
  );
});

Deno.test("tui state: a reopened client's stored key shows in the title, without a new note; a pending change stays a warning", () => {
  const fingerprint = "32c40211" + "0".repeat(56);
  const restored = reduce(initialState, {
    type: "client",
    event: {
      type: "restored_key",
      fingerprint,
      pending: false,
      verified: false,
      codeFailed: false,
    },
  });
  assert.equal(restored.fingerprint, fingerprint);
  assert.equal(restored.keyChanged, false);
  assert.deepEqual(restored.rows, [], "no note: the key was agreed before");
  assert.match(titleText(restored, "tea", 80), /key 32c40211/);
  assert.doesNotMatch(titleText(restored, "tea", 80), /no key yet/);
  const pending = reduce(initialState, {
    type: "client",
    event: { type: "restored_key", fingerprint, pending: true, verified: false, codeFailed: false },
  });
  assert.equal(pending.keyChanged, true);
});

Deno.test("a message held back under an unaccepted key is a warning note, never a message row", () => {
  const state = reduce(initialState, {
    type: "client",
    event: { type: "held", id: 9, sender: "bob", fingerprint: "5cd9b98b" + "0".repeat(56) },
  });
  assert.equal(state.rows.length, 1);
  const row = state.rows[0]!;
  assert.equal(row.kind, "note");
  assert.match(row.kind === "note" ? row.text : "", /Held back a message signed as bob/);
  assert.match(row.kind === "note" ? row.text : "", /\/accept-key 5cd9b98b/);
});

const presenceEvent = (presence: Presence): Action => ({
  type: "client",
  event: { type: "presence", peer: "bob", presence },
});
const stateEvent = (state: ConnectionState, detail?: string): Action => ({
  type: "client",
  event: { type: "state", state, ...(detail ? { detail } : {}) },
});

Deno.test("titleText: the peer's presence as the server told it: here, not connected, has left; unknown while not connected", () => {
  let s: TuiState = { ...initialState, peer: "bob", fingerprint: "32c40211aabb" };
  s = reduce(s, stateEvent("connected"));
  assert.match(titleText(s, "tea", 100), /with bob {2}· {2}● connected to server/);
  s = reduce(s, presenceEvent("here"));
  assert.match(titleText(s, "tea", 100), /bob is here {2}· {2}● connected to server/);
  assert.deepEqual(texts(s), [], "the state on arrival is no news");
  s = reduce(s, presenceEvent("left"));
  assert.match(titleText(s, "tea", 100), /bob has left {2}· {2}● connected to server/);
  assert.match(titleText(s, "tea", 54), /bob left/);
  assert.deepEqual(texts(s), ["* bob has left; the server keeps what you send for them."]);
  s = reduce(s, presenceEvent("came"));
  assert.match(titleText(s, "tea", 100), /bob is here/);
  assert.equal(texts(s).at(-1), "* bob is here.");
  s = reduce(s, stateEvent("reconnecting", "in 1.2 s"));
  assert.match(titleText(s, "tea", 100), /with bob {2}· {2}○ reconnecting in 1.2 s/);
  s = reduce(s, stateEvent("connected"));
  s = reduce(s, presenceEvent("away"));
  assert.match(titleText(s, "tea", 100), /bob is not connected/);
});

Deno.test("tui state: under any sequence of connection states and presence events, the title claims the peer's presence only as last told on the current connection", () => {
  const action = fc.oneof(
    fc.constantFrom<ConnectionState>("connecting", "connected", "reconnecting", "stopped")
      .map((state) => ({ kind: "state" as const, state })),
    fc.constantFrom<Presence>("here", "away", "came", "left")
      .map((presence) => ({ kind: "presence" as const, presence })),
  );
  fc.assert(
    fc.property(fc.array(action, { maxLength: 40 }), (actions) => {
      let s: TuiState = { ...initialState, peer: "bob" };
      // The model: what the server last said on this connection, if anything.
      let connected = false;
      let told: "here" | "away" | "left" | null = null;
      for (const a of actions) {
        if (a.kind === "state") {
          s = reduce(s, stateEvent(a.state));
          connected = a.state === "connected";
          if (!connected) told = null;
        } else {
          s = reduce(s, presenceEvent(a.presence));
          if (connected) told = a.presence === "came" ? "here" : a.presence;
        }
        const title = titleText(s, "tea", 120);
        assert.equal(/bob is here/.test(title), told === "here", title);
        assert.equal(/bob has left/.test(title), told === "left", title);
        assert.equal(/bob is not connected/.test(title), told === "away", title);
        assert.equal(/● connected to server/.test(title), connected, title);
      }
    }),
  );
});

Deno.test("tui state: with a code, the title says it waits, then verified; a note says each in words", () => {
  const fingerprint = "32c40211" + "0".repeat(56);
  const client = (event: ClientEvent) => ({ type: "client" as const, event });
  let state = reduce(initialState, client({ type: "code", state: "waiting", peer: null }));
  assert.match(titleText(state, "tea", 100), /waiting for the code/);
  const notes = () => state.rows.map((r) => r.kind === "note" ? r.text : "");
  assert.match(
    notes()[0]!,
    /Waiting for the other party to come and confirm the code; nothing is sent/,
  );
  state = reduce(
    state,
    client({
      type: "key",
      fingerprint,
      peer: "bob",
      changed: false,
      accepted: false,
      awaitingCode: true,
    }),
  );
  assert.match(titleText(state, "tea", 100), /key 32c40211 \(code not confirmed yet\)/);
  assert.match(notes()[1]!, /Key agreed with bob; waiting for the code to confirm it/);
  assert.doesNotMatch(notes().join(" "), /Compare \/key/, "no fingerprint to compare");
  state = reduce(state, client({ type: "code", state: "verified", peer: "bob", fingerprint }));
  assert.match(titleText(state, "tea", 100), /key 32c40211 ✓ verified by code/);
  assert.match(notes()[2]!, /Code confirmed: bob has the same code.*nobody is in the middle/);
  // A reopened client whose key a code confirmed before.
  const reopened = reduce(
    initialState,
    client({
      type: "restored_key",
      fingerprint,
      pending: false,
      verified: true,
      codeFailed: false,
    }),
  );
  assert.match(titleText(reopened, "tea", 100), /✓ verified by code/);
  // Held back while the code has not confirmed the key: said as such, no /accept-key advice.
  const held = reduce(
    initialState,
    client({
      type: "held",
      id: 1,
      sender: "bob",
      fingerprint,
      awaitingCode: true,
    }),
  );
  const note = held.rows[0]!;
  assert.match(note.kind === "note" ? note.text : "", /until the code confirms their key/);
});

Deno.test("tui state: a code that did not match shows in the title, not as a changed key; a restored failed key too", () => {
  const fingerprint = "32c40211" + "0".repeat(56);
  const client = (event: ClientEvent) => ({ type: "client" as const, event });
  let state = reduce(
    initialState,
    client({
      type: "key",
      fingerprint,
      peer: "bob",
      changed: false,
      accepted: false,
      awaitingCode: true,
    }),
  );
  state = reduce(state, client({ type: "code", state: "failed", peer: "bob" }));
  assert.match(titleText(state, "tea", 100), /key 32c40211 ✗ the code did not match/);
  assert.doesNotMatch(titleText(state, "tea", 100), /CHANGED|not confirmed yet/);
  const restored = reduce(
    initialState,
    client({
      type: "restored_key",
      fingerprint,
      pending: true,
      verified: false,
      codeFailed: true,
    }),
  );
  assert.match(titleText(restored, "tea", 100), /✗ the code did not match/);
  const waiting = reduce(
    initialState,
    client({
      type: "restored_key",
      fingerprint,
      pending: true,
      verified: false,
      codeFailed: false,
      awaitingCode: true,
    }),
  );
  assert.match(titleText(waiting, "tea", 100), /\(code not confirmed yet\)/);
  assert.doesNotMatch(titleText(waiting, "tea", 100), /CHANGED/);
  assert.deepEqual(waiting.rows, [], "no note: the run says what it waits for");
});
