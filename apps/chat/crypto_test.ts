import { Buffer } from "node:buffer";
import assert from "node:assert/strict";
import { createDecipheriv, createECDH, hkdfSync } from "node:crypto";
import {
  base64,
  decryptMessage,
  deriveSharedKey,
  encryptMessage,
  keyFingerprint,
  makeKeyOffer,
  MAX_TEXT_BYTES,
  messageAad,
  offerFor,
  textProblem,
  verifyKeyOffer,
} from "./crypto.ts";
import { MAX_CIPHERTEXT_BYTES } from "./protocol.ts";
import { bytesToHex as hex, hexToBytes as unhex } from "@noble/hashes/utils.js";

Deno.test("key offers: verified for their room and party, refused for any other", () => {
  const { offer } = makeKeyOffer("room-1", 1);
  assert.equal(verifyKeyOffer("room-1", 1, offer), true);
  assert.equal(verifyKeyOffer("room-2", 1, offer), false, "another room");
  assert.equal(verifyKeyOffer("room-1", 0, offer), false, "another party");
  const other = makeKeyOffer("room-1", 1).offer;
  assert.equal(
    verifyKeyOffer("room-1", 1, { public_key: other.public_key, proof: offer.proof }),
    false,
    "a proof for another key",
  );
  assert.equal(verifyKeyOffer("room-1", 1, { public_key: "02zz", proof: offer.proof }), false);
  assert.equal(
    verifyKeyOffer("room-1", 1, { public_key: offer.public_key, proof: { t: "x", s: "y" } }),
    false,
  );
});

Deno.test("both parties derive the same key; its fingerprint is SHA-256 of the raw key", async () => {
  const a = makeKeyOffer("r", 0), b = makeKeyOffer("r", 1);
  const keys: [string, string] = [a.offer.public_key, b.offer.public_key];
  const ka = await deriveSharedKey(a.secret, "r", keys, 0);
  const kb = await deriveSharedKey(b.secret, "r", keys, 1);
  assert.equal(await keyFingerprint(ka), await keyFingerprint(kb));
  assert.match(await keyFingerprint(ka), /^[0-9a-f]{64}$/);
  const elsewhere = await deriveSharedKey(a.secret, "other-room", keys, 0);
  assert.notEqual(await keyFingerprint(elsewhere), await keyFingerprint(ka), "bound to the room");
});

Deno.test("messages: round trip; tampering, another AAD or another key give null", async () => {
  const a = makeKeyOffer("r", 0), b = makeKeyOffer("r", 1);
  const keys: [string, string] = [a.offer.public_key, b.offer.public_key];
  const key = await deriveSharedKey(a.secret, "r", keys, 0);
  const aad = messageAad("r", "alice", "m1");
  const { nonce, ciphertext } = await encryptMessage(key, "привет 👋", aad);
  assert.equal(await decryptMessage(key, nonce, ciphertext, aad), "привет 👋");
  const flipped = ciphertext.slice();
  flipped[0]! ^= 1;
  assert.equal(await decryptMessage(key, nonce, flipped, aad), null);
  assert.equal(await decryptMessage(key, nonce, ciphertext, messageAad("r", "bob", "m1")), null);
  assert.equal(await decryptMessage(key, nonce, ciphertext, messageAad("r", "alice", "m2")), null);
  const stranger = await deriveSharedKey(makeKeyOffer("r", 0).secret, "r", keys, 0);
  assert.equal(await decryptMessage(stranger, nonce, ciphertext, aad), null);
  // A text that begins with U+FEFF is given back with it: the decoder must not drop it.
  const marked = await encryptMessage(key, "\ufeffhi", aad);
  assert.equal(await decryptMessage(key, marked.nonce, marked.ciphertext, aad), "\ufeffhi");
  const again = await encryptMessage(key, "привет 👋", aad);
  assert.notDeepEqual(again.nonce, nonce, "a fresh nonce each time");
});

Deno.test("message size: the longest text seals to exactly the protocol's ciphertext limit; longer is refused in bytes, not characters", async () => {
  const a = makeKeyOffer("r", 0), b = makeKeyOffer("r", 1);
  const key = await deriveSharedKey(a.secret, "r", [a.offer.public_key, b.offer.public_key], 0);
  const longest = "x".repeat(MAX_TEXT_BYTES);
  assert.equal(textProblem(longest), null);
  const { ciphertext } = await encryptMessage(key, longest, messageAad("r", "a", "m"));
  assert.equal(ciphertext.length, MAX_CIPHERTEXT_BYTES);
  assert.equal(
    textProblem(`${longest}x`),
    `too long: ${MAX_TEXT_BYTES + 1} bytes of UTF-8, at most ${MAX_TEXT_BYTES}`,
  );
  // Four bytes each: a quarter as many emoji fit.
  assert.equal(textProblem("👋".repeat(MAX_TEXT_BYTES / 4)), null);
  assert.match(textProblem("👋".repeat(MAX_TEXT_BYTES / 4 + 1))!, /^too long: /);
});

Deno.test("fixed secrets: the key and a message agree with OpenSSL (node:crypto) byte for byte", async () => {
  const secretA = unhex("11".repeat(32)), secretB = unhex("22".repeat(32));
  const keys: [string, string] = [
    offerFor(secretA, "vec", 0).public_key,
    offerFor(secretB, "vec", 1).public_key,
  ];
  const key = await deriveSharedKey(secretA, "vec", keys, 0);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", key));

  // The same derivation written against OpenSSL, from the definition in crypto.ts's header.
  const ecdh = createECDH("secp256k1");
  ecdh.setPrivateKey(secretA);
  const x = ecdh.computeSecret(unhex(keys[1]));
  const field = (b: Uint8Array) => [b.length >> 8, b.length & 0xff, ...b];
  const info = new Uint8Array([
    ...field(new TextEncoder().encode("duet-chat/v1 key")),
    ...field(new TextEncoder().encode("vec")),
    ...field(unhex(keys[0])),
    ...field(unhex(keys[1])),
  ]);
  const expected = new Uint8Array(hkdfSync("sha256", x, "duet-chat/v1", info, 32));
  assert.equal(hex(raw), hex(expected));

  const aad = messageAad("vec", "alice", "m1");
  const { nonce, ciphertext } = await encryptMessage(key, "hello", aad);
  const decipher = createDecipheriv("aes-256-gcm", expected, nonce);
  decipher.setAAD(aad);
  decipher.setAuthTag(ciphertext.subarray(-16));
  const plain = Buffer.concat([decipher.update(ciphertext.subarray(0, -16)), decipher.final()]);
  assert.equal(plain.toString("utf8"), "hello");
});

Deno.test("base64: the standard alphabet with padding, as btoa wrote it; malformed input is refused", () => {
  const latin1 = (bytes: Uint8Array) => String.fromCharCode(...bytes);
  for (const n of [0, 1, 2, 3, 4, 5, 31, 32, 33, 255]) {
    const bytes = crypto.getRandomValues(new Uint8Array(n));
    const text = base64.encode(bytes);
    assert.equal(text, btoa(latin1(bytes)), `${n} bytes`);
    assert.deepEqual(base64.decode(text), bytes, `${n} bytes back`);
  }
  // Every byte value, and the two characters where the alphabets differ.
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  assert.equal(base64.encode(all), btoa(latin1(all)));
  assert.equal(base64.encode(new Uint8Array([0xfb, 0xff])), "+/8=");
  // A 32 KiB ciphertext, in one piece (btoa needed it in slices).
  const big = crypto.getRandomValues(new Uint8Array(MAX_CIPHERTEXT_BYTES));
  assert.deepEqual(base64.decode(base64.encode(big)), big);
  // What atob took, decode takes: no padding, ASCII whitespace, stray bits past the end.
  assert.deepEqual(base64.decode("QQ"), Uint8Array.of(65));
  assert.deepEqual(base64.decode(" QU JD\n"), Uint8Array.of(65, 66, 67));
  assert.deepEqual(base64.decode("QR=="), Uint8Array.of(65));
  const malformed = [
    "A", // a lone trailing character
    "QUJDR", // the same after whole groups
    "AB=", // padding short of a group
    "A===",
    "====",
    "QUJD=", // padding after a whole group
    "AB==CD", // data after padding
    "AB=C",
    "-_8=", // the URL-safe alphabet
    "QUJD!", // outside any alphabet
    "QUJ\u00e9", // not ASCII
    "QU\u00a0JD", // whitespace that is not ASCII
  ];
  for (const text of malformed) {
    assert.throws(() => atob(text), `atob refuses ${JSON.stringify(text)} too`);
    assert.throws(() => base64.decode(text), SyntaxError, JSON.stringify(text));
  }
});
