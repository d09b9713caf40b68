// The code run's pure core: two parties (and a relay that may lie) exchange their newest
// `code` frames in generated orders, with duplicates, stale frames and late keys. Matching
// codes always end verified on both sides; a differing code, a substituted key, a relay that
// runs its own CPace with each side, or a tampered frame never ends verified anywhere.
import assert from "node:assert/strict";
import fc from "fast-check";
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { generateCode } from "@duet/pake";
import {
  type CodeFrame,
  type CodeRun,
  type CodeState,
  initialCodeState,
  MAX_PEER_MESSAGES,
  mismatchText,
  onPeerCode,
  onPeerKey,
  startCodeRun,
} from "./code_core.ts";

const SERVICE = "5f0c6b8e-8f5e-4d1b-9a3e-2b7d6c1e0f42";
const publicKey = () => bytesToHex(secp256k1.getPublicKey(secp256k1.utils.randomSecretKey(), true));

interface Party {
  run: CodeRun;
  state: CodeState;
  key: string;
  /** The peer key as this party has it from the server (null: not yet relayed). */
  peerKey: string | null;
  verified: number;
  mismatches: string[];
}

function party(code: string, index: 0 | 1, room = "tea"): Party {
  const key = publicKey();
  const run = startCodeRun({ code, service: SERVICE, room, party: index, publicKey: key });
  return { run, state: initialCodeState(run), key, peerKey: null, verified: 0, mismatches: [] };
}

function apply(p: Party, step: ReturnType<typeof onPeerCode>): void {
  p.state = step.state;
  for (const command of step.commands) {
    if (command.type === "verified") p.verified++;
    if (command.type === "mismatch") p.mismatches.push(command.reason);
  }
}

function deliver(to: Party, frame: CodeFrame): void {
  apply(to, onPeerCode(to.state, to.run, frame, to.peerKey));
}

function giveKey(to: Party, key: string): void {
  to.peerKey = key;
  apply(to, onPeerKey(to.state, to.run, key));
}

/** Each party's frames as the server would hold them: the newest, and every one sent. */
function sent(p: Party): CodeFrame[] {
  return [initialCodeState(p.run).frame, p.state.frame];
}

/** A delivery: to which party, of which of the sender's frames (newest or an older one). */
const deliveryArb = fc.record({ toA: fc.boolean(), stale: fc.boolean(), keyFirst: fc.boolean() });

function exchange(a: Party, b: Party, schedule: { toA: boolean; stale: boolean }[]): void {
  for (const { toA, stale } of schedule) {
    const [to, from] = toA ? [a, b] : [b, a];
    const frames = sent(from);
    deliver(to, stale ? frames[0]! : frames[frames.length - 1]!);
  }
  // Then the relay delivers the newest frames until nothing changes, as the server does.
  for (let round = 0; round < 4; round++) {
    deliver(b, a.state.frame);
    deliver(a, b.state.frame);
  }
}

Deno.test("matching codes: both sides verified once, whatever the order, duplicates and stale frames", () => {
  fc.assert(
    fc.property(fc.array(deliveryArb, { maxLength: 12 }), fc.boolean(), (schedule, early) => {
      const code = generateCode().text;
      const a = party(code, 0);
      const b = party(code, 1);
      if (early) {
        giveKey(a, b.key);
        giveKey(b, a.key);
      }
      exchange(a, b, schedule);
      if (!early) {
        giveKey(a, b.key);
        giveKey(b, a.key);
        exchange(a, b, []);
      }
      assert.equal(a.state.outcome, "verified");
      assert.equal(b.state.outcome, "verified");
      assert.equal(a.verified, 1);
      assert.equal(b.verified, 1);
      assert.deepEqual([...a.mismatches, ...b.mismatches], []);
    }),
    { numRuns: 60 },
  );
});

Deno.test("the code is typed tolerantly: case and separators do not matter", () => {
  const code = generateCode();
  const a = party(code.text, 0);
  const b = party(`${code.number} ${code.words.join(".").toUpperCase()}`, 1);
  giveKey(a, b.key);
  giveKey(b, a.key);
  exchange(a, b, []);
  assert.equal(a.state.outcome, "verified");
  assert.equal(b.state.outcome, "verified");
});

Deno.test("a differing code never verifies: both sides end in codes_differ", () => {
  fc.assert(
    fc.property(fc.array(deliveryArb, { maxLength: 12 }), (schedule) => {
      const a = party(generateCode().text, 0);
      const b = party(generateCode().text, 1);
      giveKey(a, b.key);
      giveKey(b, a.key);
      exchange(a, b, schedule);
      assert.equal(a.verified + b.verified, 0);
      assert.deepEqual(a.state.outcome, { mismatch: "codes_differ" });
      assert.deepEqual(b.state.outcome, { mismatch: "codes_differ" });
    }),
    { numRuns: 40 },
  );
});

Deno.test("another room, same code: no key in common", () => {
  const code = generateCode().text;
  const a = party(code, 0, "tea");
  const b = party(code, 1, "coffee");
  giveKey(a, b.key);
  giveKey(b, a.key);
  exchange(a, b, []);
  assert.deepEqual(a.state.outcome, { mismatch: "codes_differ" });
});

Deno.test("a relay that substitutes the chat keys but relays the code frames is caught on both sides", () => {
  const code = generateCode().text;
  const a = party(code, 0);
  const b = party(code, 1);
  giveKey(a, publicKey()); // the relay's key, posing as b's
  giveKey(b, publicKey());
  exchange(a, b, []);
  assert.deepEqual(a.state.outcome, { mismatch: "key_substituted" });
  assert.deepEqual(b.state.outcome, { mismatch: "key_substituted" });
  assert.equal(a.verified + b.verified, 0);
});

Deno.test("a relay in the middle running its own CPace with each side, guessing the code, is caught", () => {
  fc.assert(
    fc.property(fc.boolean(), (keyFirst) => {
      const code = generateCode().text;
      const a = party(code, 0);
      const b = party(code, 1);
      // The relay poses as b to a and as a to b, with keys of its own in the messages and in
      // the keys it relays (so the key check passes), and a guessed code.
      const guess = generateCode().text;
      const asB = party(guess, 1);
      const asA = party(guess, 0);
      if (keyFirst) {
        giveKey(a, asB.key);
        giveKey(b, asA.key);
      }
      giveKey(asB, a.key);
      giveKey(asA, b.key);
      for (let round = 0; round < 4; round++) {
        deliver(asB, a.state.frame);
        deliver(a, asB.state.frame);
        deliver(asA, b.state.frame);
        deliver(b, asA.state.frame);
      }
      if (!keyFirst) {
        giveKey(a, asB.key);
        giveKey(b, asA.key);
      }
      assert.equal(a.verified + b.verified, 0);
      assert.deepEqual(a.state.outcome, { mismatch: "codes_differ" });
      assert.deepEqual(b.state.outcome, { mismatch: "codes_differ" });
    }),
    { numRuns: 10 },
  );
});

Deno.test("a relay that reflects a party's own frame back is caught, with or without its key", () => {
  const code = generateCode().text;
  const a = party(code, 0);
  giveKey(a, a.key); // the relay even relays a's own key as the peer's
  deliver(a, a.state.frame);
  assert.deepEqual(a.state.outcome, { mismatch: "reflected" });
  assert.equal(a.verified, 0);
  // Before any key, too, and with its confirmation sent back as well.
  const b = party(code, 1);
  const echoed = onPeerCode(b.state, b.run, {
    message: b.state.frame.message,
    confirm: { tag: new Uint8Array(64), answers: b.state.frame.message },
  }, null);
  assert.deepEqual(echoed.state.outcome, { mismatch: "reflected" });
});

Deno.test("a run answers at most MAX_PEER_MESSAGES peer messages: a guessing relay gets that many tags, then the run ends", () => {
  const code = generateCode().text;
  const a = party(code, 0);
  giveKey(a, publicKey());
  const tags: Uint8Array[] = [];
  for (let guess = 0; guess < MAX_PEER_MESSAGES + 3; guess++) {
    // Each guess: a run of the relay's own under another code, with the key it relayed.
    const relay = startCodeRun({
      code: generateCode().text,
      service: SERVICE,
      room: "tea",
      party: 1,
      publicKey: a.peerKey!,
    });
    const step = onPeerCode(a.state, a.run, initialCodeState(relay).frame, a.peerKey);
    apply(a, step);
    for (const command of step.commands) {
      if (command.type === "send") tags.push(command.frame.confirm!.tag);
    }
  }
  assert.equal(tags.length, MAX_PEER_MESSAGES, "one tag, one guess, per message answered");
  assert.deepEqual(a.state.outcome, { mismatch: "too_many_messages" });
  assert.deepEqual(a.mismatches, ["too_many_messages"]);
});

Deno.test("an earlier run's message, then the peer's current one: both taken, and the run verifies", () => {
  const code = generateCode().text;
  const a = party(code, 0);
  const bOld = party(generateCode().text, 1); // the peer's earlier run, under another code
  const b = party(code, 1);
  b.key = bOld.key;
  b.run = startCodeRun({ code, service: SERVICE, room: "tea", party: 1, publicKey: bOld.key });
  b.state = initialCodeState(b.run);
  giveKey(a, bOld.key);
  deliver(a, bOld.state.frame); // what the server still held
  assert.equal(a.state.outcome, "pending");
  giveKey(b, a.key);
  exchange(a, b, []);
  assert.equal(a.state.outcome, "verified");
  assert.equal(b.state.outcome, "verified");
});

Deno.test("tampered frames never verify: any flipped bit of a message, tag or answer", () => {
  fc.assert(
    fc.property(
      fc.constantFrom("message", "tag", "answers"),
      fc.nat(),
      fc.integer({ min: 0, max: 7 }),
      (field, at, bit) => {
        const code = generateCode().text;
        const a = party(code, 0);
        const b = party(code, 1);
        giveKey(a, b.key);
        giveKey(b, a.key);
        deliver(b, a.state.frame); // b now confirms a's message
        const frame = b.state.frame;
        const flip = (bytes: Uint8Array) => {
          const copy = bytes.slice();
          copy[at % copy.length]! ^= 1 << bit;
          return copy;
        };
        const tampered: CodeFrame = field === "message"
          ? { ...frame, message: flip(frame.message) }
          : {
            message: frame.message,
            confirm: { ...frame.confirm!, [field]: flip(frame.confirm![field]) },
          };
        deliver(a, tampered);
        assert.notEqual(a.state.outcome, "verified");
        assert.equal(a.verified, 0);
      },
    ),
    { numRuns: 60 },
  );
});

Deno.test("a stale confirmation (of an earlier run's message) waits, then the current one verifies", () => {
  const code = generateCode().text;
  const b = party(code, 1);
  const aOld = party(code, 0);
  giveKey(b, aOld.key);
  deliver(b, aOld.state.frame);
  const staleFromB = b.state.frame; // confirms aOld's message
  // a restarts: a new run, same key
  const a: Party = { ...party(code, 0), key: aOld.key };
  a.run = startCodeRun({ code, service: SERVICE, room: "tea", party: 0, publicKey: aOld.key });
  a.state = initialCodeState(a.run);
  giveKey(a, b.key);
  deliver(a, staleFromB);
  assert.equal(a.state.outcome, "pending", "a stale answer is neither a success nor a failure");
  assert.deepEqual(a.mismatches, []);
  exchange(a, b, []);
  assert.equal(a.state.outcome, "verified");
  assert.equal(b.state.outcome, "verified");
});

Deno.test("a peer message made for the peer's earlier key is dropped when its key changes", () => {
  const code = generateCode().text;
  const a = party(code, 0);
  const bOld = party(code, 1);
  deliver(a, bOld.state.frame); // a has no key for b yet
  const b = party(code, 1); // b reset its key and runs again
  giveKey(a, b.key);
  assert.equal(a.state.outcome, "pending");
  assert.equal(a.state.peer, undefined);
  giveKey(b, a.key);
  exchange(a, b, []);
  assert.equal(a.state.outcome, "verified");
  assert.equal(b.state.outcome, "verified");
});

Deno.test("hostile frames: garbage, an identity share, empty bytes are not_a_code_message, never a throw", () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 140 }), (bytes) => {
      const a = party(generateCode().text, 0);
      giveKey(a, publicKey());
      const step = onPeerCode(a.state, a.run, { message: bytes }, a.peerKey);
      assert.notEqual(step.state.outcome, "verified");
    }),
  );
  const a = party(generateCode().text, 0);
  const identity = new Uint8Array([32, ...new Uint8Array(32), 33, ...new Uint8Array(33)]);
  const step = onPeerCode(a.state, a.run, { message: identity }, null);
  assert.deepEqual(step.state.outcome, { mismatch: "not_a_code_message" });
});

Deno.test("once decided, a run does not change: a later good frame does not undo a mismatch", () => {
  const code = generateCode().text;
  const a = party(code, 0);
  const b = party(code, 1);
  giveKey(a, publicKey());
  deliver(a, b.state.frame);
  assert.deepEqual(a.state.outcome, { mismatch: "key_substituted" });
  giveKey(a, b.key);
  giveKey(b, a.key);
  exchange(a, b, []);
  assert.deepEqual(a.state.outcome, { mismatch: "key_substituted" });
  assert.equal(a.mismatches.length, 1);
});

Deno.test("each reason has its sentence, naming the peer and saying nothing was sent", () => {
  for (
    const reason of [
      "codes_differ",
      "key_substituted",
      "not_a_code_message",
      "reflected",
      "too_many_messages",
    ] as const
  ) {
    const text = mismatchText(reason, "bob");
    assert.match(text, /bob/);
    assert.match(text, /Nothing was sent/);
    assert.doesNotMatch(text, /\.$/);
  }
  assert.throws(
    () =>
      startCodeRun({
        code: "not a code",
        service: SERVICE,
        room: "r",
        party: 0,
        publicKey: publicKey(),
      }),
    TypeError,
  );
});
