import assert from "node:assert/strict";
import type { MessageView } from "./client.ts";
import {
  backspace,
  deliveryMark,
  groupFingerprint,
  initialState,
  reduce,
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
