import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type ClientMessage,
  encodeFrame,
  errorMessage,
  FrameDecoder,
  MAX_FRAME_BYTES,
  parseClientMessage,
  parseServerMessage,
  ProtocolError,
  storable,
} from "./protocol.ts";
import { claimFor } from "./crypto.ts";
import { secp256k1 } from "@noble/curves/secp256k1.js";

const b64 = (n: number) => new Uint8Array(n).fill(7).toBase64();
const samples: ClientMessage[] = [
  { type: "hello", version: 3, name: "alice", room: "room-1" },
  {
    type: "key_offer",
    ...claimFor(secp256k1.utils.randomSecretKey(), {
      room: "room-1",
      name: "alice",
      party: 0,
      challenge: "00".repeat(32),
    }, { previousSecret: secp256k1.utils.randomSecretKey() }),
  },
  {
    type: "key_offer",
    ...claimFor(secp256k1.utils.randomSecretKey(), {
      room: "room-1",
      name: "alice",
      party: 1,
      challenge: "ff".repeat(32),
    }, { reset: true }),
  },
  { type: "send", client_msg_id: "m-1", seq: 1, nonce: b64(12), ciphertext: b64(40) },
  { type: "history", before: 10, limit: 5 },
  { type: "history", after: 0 },
  { type: "heartbeat" },
  { type: "bye" },
];

Deno.test("frames: every message round-trips, however the bytes are cut", () => {
  const stream = new Uint8Array(samples.flatMap((m) => [...encodeFrame(m)]));
  fc.assert(
    fc.property(fc.array(fc.nat(stream.length), { maxLength: 12 }), (cuts) => {
      const points = [...new Set(cuts)].sort((a, b) => a - b);
      const decoder = new FrameDecoder();
      const out: unknown[] = [];
      let previous = 0;
      for (const point of [...points, stream.length]) {
        out.push(...decoder.push(stream.subarray(previous, point)));
        previous = point;
      }
      assert.deepEqual(out.map(parseClientMessage), samples);
      assert.equal(decoder.pendingBytes, 0);
    }),
  );
});

Deno.test("frames: a truncated frame yields nothing yet and waits for the rest", () => {
  const frame = encodeFrame(samples[0]!);
  for (let cut = 0; cut < frame.length; cut++) {
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(frame.subarray(0, cut)), []);
    assert.equal(decoder.pendingBytes, cut);
  }
});

Deno.test("frames: random bytes give frames or a ProtocolError, never anything else", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      try {
        for (const payload of new FrameDecoder().push(bytes)) {
          try {
            parseClientMessage(payload);
          } catch (error) {
            assert.ok(error instanceof ProtocolError && error.code === "bad_message");
          }
        }
      } catch (error) {
        assert.ok(error instanceof ProtocolError, String(error));
        assert.ok(["bad_frame", "frame_too_large"].includes(error.code));
      }
    }),
    { numRuns: 2000 },
  );
});

Deno.test("frames: empty, oversized, non-UTF-8 and non-JSON payloads are named", () => {
  const code = (bytes: number[]) => {
    try {
      new FrameDecoder().push(new Uint8Array(bytes));
      return "none";
    } catch (error) {
      return (error as ProtocolError).code;
    }
  };
  assert.equal(code([0, 0, 0, 0]), "bad_frame");
  assert.equal(code([0, 1, 0, 1]), "frame_too_large");
  assert.equal(code([0, 0, 0, 1, 0xff]), "bad_frame");
  assert.equal(code([0, 0, 0, 1, 0x7b]), "bad_frame"); // "{"
  // JSON behind a byte order mark is not the protocol's JSON: one encoding per frame.
  assert.equal(code([0, 0, 0, 5, 0xef, 0xbb, 0xbf, 0x7b, 0x7d]), "bad_frame");
  assert.equal(code([0, 0, 0, 2, 0x7b, 0x7d]), "none", "the same {} without it is a frame");
  assert.throws(
    () =>
      encodeFrame({
        type: "send",
        client_msg_id: "x",
        seq: 1,
        nonce: "",
        ciphertext: "A".repeat(MAX_FRAME_BYTES),
      }),
    ProtocolError,
  );
});

Deno.test("messages: strict schemas refuse unknown fields, bad names, bad sizes and types", () => {
  const refused = (value: unknown) => {
    try {
      parseClientMessage(value);
      return "accepted";
    } catch (error) {
      return (error as ProtocolError).message;
    }
  };
  assert.match(
    refused({ type: "hello", version: 1, name: "a", room: "r", extra: 1 }),
    /Unrecognized key/,
  );
  assert.match(refused({ type: "hello", version: 1, name: "a b", room: "r" }), /^name:/);
  assert.match(refused({ type: "hello", version: 1, name: "a".repeat(33), room: "r" }), /^name:/);
  assert.match(refused({ type: "hello", version: "1", name: "a", room: "r" }), /^version:/);
  assert.match(
    refused({ type: "send", client_msg_id: "m", seq: 1, nonce: b64(11), ciphertext: b64(40) }),
    /^nonce:/,
  );
  assert.match(
    refused({ type: "send", client_msg_id: "m", seq: 1, nonce: b64(12), ciphertext: b64(8) }),
    /^ciphertext:/,
  );
  assert.match(
    refused({ type: "send", client_msg_id: "", seq: 1, nonce: b64(12), ciphertext: b64(40) }),
    /^client_msg_id:/,
  );
  assert.match(refused({ type: "history", limit: 201 }), /^limit:/);
  assert.match(
    refused({ type: "key_offer", public_key: "04" + "0".repeat(64), proof: { t: "", s: "" } }),
    /^public_key:/,
  );
  assert.match(refused({ type: "nope" }), /^type:/);
  assert.match(refused([]), /^message:/);
  assert.equal(refused({ type: "history" }), "accepted");
});

Deno.test("server messages: errors carry their retryable flag; the client side validates", () => {
  assert.deepEqual(
    errorMessage("unavailable", "db away", { clientMsgId: "m1", inReplyTo: "send" }),
    {
      type: "error",
      code: "unavailable",
      message: "db away",
      retryable: true,
      in_reply_to: "send",
      client_msg_id: "m1",
    },
  );
  assert.deepEqual(errorMessage("room_full", "full"), {
    type: "error",
    code: "room_full",
    message: "full",
    retryable: false,
  });
  assert.deepEqual(parseServerMessage({ type: "heartbeat" }), { type: "heartbeat" });
  assert.throws(
    () => parseServerMessage({ type: "welcome", version: 1, party: 0, peer: null, last_id: 0 }),
    ProtocolError,
  );
});

Deno.test("messages: a send needs a seq of 1 or more; a client_msg_id no database can store is bad_text for that message", () => {
  const send = (fields: Record<string, unknown>) => ({
    type: "send",
    client_msg_id: "m",
    seq: 1,
    nonce: b64(12),
    ciphertext: b64(40),
    ...fields,
  });
  for (const seq of [0, -1, 1.5, "1", undefined, Number.MAX_SAFE_INTEGER + 2]) {
    assert.throws(
      () => parseClientMessage(send({ seq })),
      (e: ProtocolError) => e.code === "bad_message" && /^seq:/.test(e.message),
      String(seq),
    );
  }
  for (const id of ["a\u0000b", "x\ud800", "\udc00y"]) {
    assert.throws(
      () => parseClientMessage(send({ client_msg_id: id })),
      (e: ProtocolError) => e.code === "bad_text" && e.clientMsgId === id,
    );
  }
  assert.equal(
    (parseClientMessage(send({ client_msg_id: "ok \u{1f600}" })) as { seq: number }).seq,
    1,
  );
  fc.assert(
    fc.property(fc.string({ unit: "binary", minLength: 1, maxLength: 64 }), (id) => {
      try {
        parseClientMessage(send({ client_msg_id: id }));
        assert.ok(storable(id), "accepted only if storable");
      } catch (error) {
        assert.equal((error as ProtocolError).code, storable(id) ? "bad_message" : "bad_text");
      }
    }),
  );
});

Deno.test("FrameDecoder: a frame fed one byte at a time is decoded once, with the rest kept", () => {
  const message = { type: "heartbeat" };
  const big: ClientMessage = {
    type: "send",
    client_msg_id: "slow",
    seq: 1,
    nonce: b64(12),
    ciphertext: b64(30_000),
  };
  const bytes = new Uint8Array([...encodeFrame(big), ...encodeFrame(message as ClientMessage)]);
  const decoder = new FrameDecoder();
  const out: unknown[] = [];
  for (let i = 0; i < bytes.length; i++) out.push(...decoder.push(bytes.subarray(i, i + 1)));
  assert.deepEqual(out, [big, message]);
  assert.equal(decoder.pendingBytes, 0);
});
