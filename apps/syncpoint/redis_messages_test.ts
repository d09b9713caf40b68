// The shapes of what instances exchange through Redis: valid ones pass as they are,
// malformed ones are refused with a short, clear description.
import assert from "node:assert/strict";
import {
  AbandonReply,
  ConfirmReply,
  MalformedReply,
  parseMessage,
  RegisterReply,
  replyOf,
} from "./redis_messages.ts";

Deno.test("parseMessage(): the three messages as sent, anything else a problem in a few words", () => {
  const valid = [
    { type: "wake", id: "a", waiter: "w", claim: "c", replyTo: "i" },
    { type: "ack", claim: "c", delivered: false },
    { type: "lost", id: "a", waiter: "w" },
  ];
  for (const message of valid) {
    assert.deepEqual(parseMessage(JSON.stringify(message)), { message });
  }
  const malformed: [string, RegExp][] = [
    ["{", /^not JSON$/],
    ["null", /^the value: /],
    ['{"type":"wake","id":"a","waiter":"w","claim":"c"}', /^replyTo: expected string$/],
    ['{"type":"ack","claim":"c","delivered":"yes"}', /^delivered: expected boolean$/],
    ['{"type":"lost","id":7,"waiter":"w"}', /^id: expected string$/],
    ['{"type":"bogus"}', /^type: /],
  ];
  for (const [text, problem] of malformed) {
    const parsed = parseMessage(text);
    assert.ok("problem" in parsed, text);
    assert.match(parsed.problem, problem);
  }
});

Deno.test("replyOf(): the scripts' replies pass; malformed ones are MalformedReply, clearly", () => {
  const valid: [Parameters<typeof replyOf>[0], unknown][] = [
    [RegisterReply, ["registered"]],
    [RegisterReply, ["claimed", "token", "instance", "", "0"]],
    [RegisterReply, ["pending", "claim", "instance"]],
    [RegisterReply, ["conflict"]],
    [ConfirmReply, ["ok", "payload", "1"]],
    [ConfirmReply, ["stale", "", ""]],
    [ConfirmReply, ["stale", "delivered", "1kept payload"]],
    [AbandonReply, "abandoned"],
  ];
  for (const [schema, value] of valid) assert.deepEqual(replyOf(schema, "s", value), value);
  const malformed: [Parameters<typeof replyOf>[0], unknown][] = [
    [RegisterReply, ["claimed", "token", "instance", "payload"]],
    [RegisterReply, ["claimed", "token", "instance", "payload", "2"]],
    [RegisterReply, ["what"]],
    [RegisterReply, null],
    [ConfirmReply, ["ok", null, "1"]],
    [ConfirmReply, ["stale", "maybe", ""]],
    [ConfirmReply, ["stale", "delivered", "xpayload"]],
    [AbandonReply, "later"],
  ];
  for (const [schema, value] of malformed) {
    assert.throws(
      () => replyOf(schema, "confirm", value),
      (e) =>
        e instanceof MalformedReply &&
        /^Unexpected reply of the confirm script \(/.test(e.message) &&
        !/ZodError|\n/.test(e.message),
      JSON.stringify(value),
    );
  }
});
