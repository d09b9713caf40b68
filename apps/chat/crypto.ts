/**
 * The chat's crypto (docs/chat-protocol.md, "Key exchange"), shared by server and client:
 *
 * - A key offer is a secp256k1 public key with a dlog proof of possession of its secret,
 *   bound to the room (sid) and the party's index (pid). The server and the peer verify it.
 * - A name in a room belongs to its key: each connection proves possession again over the
 *   server's fresh challenge ({@link possessionContext}), so a captured proof cannot be
 *   replayed. A key change is signed by the old key: a proof of possession of the old key
 *   bound to the new one ({@link rotationContext}), which the peer checks itself.
 * - The shared key: ECDH on secp256k1, then HKDF-SHA256 over the shared x-coordinate, with
 *   salt "duet-chat/v1" and info binding the room and both public keys (party 0's first),
 *   32 bytes, for AES-256-GCM.
 * - Each message: a fresh 96-bit random nonce; the AAD binds room, sender and the client
 *   message id, so a ciphertext cannot be replayed under another name, room or id.
 *
 * Every variable-length field in HKDF's info and in the AAD is length-prefixed (2 bytes,
 * big-endian), so no two different inputs encode alike.
 *
 * @module
 */
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils.js";
import { decodePoint, DLogProof, type DLogProofDict } from "@duet/dlog";
import { MAX_CIPHERTEXT_BYTES } from "./protocol.ts";

const encoder = new TextEncoder();

/** The longest message text in UTF-8 bytes: what fits the protocol's ciphertext limit with
 * AES-GCM's 16-byte tag. */
export const MAX_TEXT_BYTES = MAX_CIPHERTEXT_BYTES - 16;

/** Why `text` cannot be sent as one message, or null when it can. */
export function textProblem(text: string): string | null {
  const bytes = encoder.encode(text).length;
  return bytes > MAX_TEXT_BYTES
    ? `too long: ${bytes} bytes of UTF-8, at most ${MAX_TEXT_BYTES}`
    : null;
}
const LABEL = "duet-chat/v1";

/** A public key offer as it travels. */
export interface KeyOfferWire {
  public_key: string;
  proof: DLogProofDict;
}

/** Checks an offer's proof of possession for `room` and party index `party`. */
export function verifyKeyOffer(room: string, party: 0 | 1, offer: KeyOfferWire): boolean {
  try {
    const point = decodePoint(offer.public_key, "public_key");
    return DLogProof.fromDict(offer.proof).verify(room, party, point);
  } catch {
    return false;
  }
}

/**
 * The dlog session id of a possession proof: the room, the name and the connection's
 * challenge (64 hex). Room and name cannot hold a space or `|`, so no two inputs share an
 * id, and none equals a bare room id (the relayed proof's).
 */
export function possessionContext(room: string, name: string, challenge: string): string {
  return `duet-chat/v3 possession|${room}|${name}|${challenge}`;
}

/** The dlog session id of a key change signed by the old key: bound to the new key. */
export function rotationContext(room: string, newPublicKey: string): string {
  return `duet-chat/v3 rotation|${room}|${newPublicKey}`;
}

/** Checks a proof of possession of `publicKey` (66 hex) for session id `sid`; never throws. */
export function verifyPossession(
  sid: string,
  party: 0 | 1,
  publicKey: string,
  proof: DLogProofDict,
): boolean {
  try {
    const point = decodePoint(publicKey, "public_key");
    return DLogProof.fromDict(proof).verify(sid, party, point);
  } catch {
    return false;
  }
}

/** A proof of possession of `secret`'s public key for session id `sid`. */
export function provePossession(secret: Uint8Array, sid: string, party: 0 | 1): DLogProofDict {
  const x = BigInt(`0x${bytesToHex(secret)}`);
  const y = secp256k1.Point.BASE.multiply(x);
  return DLogProof.prove(sid, party, x, y).toDict();
}

/** What a connection sends to claim its name: the key, its proofs, a change if any. */
export interface ClaimWire extends KeyOfferWire {
  possession: DLogProofDict;
  rotation?: KeyOfferWire;
  reset?: true;
}

/**
 * The `key_offer` of a connection: `secret`'s key for `room` as `party` (`name`), proven
 * over the welcome's `challenge`; with `previousSecret`, signed by that older key; with
 * `reset`, a take-over without the old key.
 */
export function claimFor(
  secret: Uint8Array,
  at: { room: string; name: string; party: 0 | 1; challenge: string },
  change: { previousSecret?: Uint8Array; reset?: boolean } = {},
): ClaimWire {
  const offer = offerFor(secret, at.room, at.party);
  const claim: ClaimWire = {
    ...offer,
    possession: provePossession(
      secret,
      possessionContext(at.room, at.name, at.challenge),
      at.party,
    ),
  };
  if (change.previousSecret) {
    claim.rotation = {
      public_key: bytesToHex(secp256k1.getPublicKey(change.previousSecret, true)),
      proof: provePossession(
        change.previousSecret,
        rotationContext(at.room, offer.public_key),
        at.party,
      ),
    };
  }
  if (change.reset) claim.reset = true;
  return claim;
}

/** Whether `rotation` is `previousKey`'s signature of the change to `newKey`, in `room`. */
export function verifyRotation(
  room: string,
  party: 0 | 1,
  newKey: string,
  rotation: KeyOfferWire,
): boolean {
  return verifyPossession(
    rotationContext(room, newKey),
    party,
    rotation.public_key,
    rotation.proof,
  );
}

/** A fresh key pair and its offer for `room` as party `party`. */
export function makeKeyOffer(
  room: string,
  party: 0 | 1,
): { secret: Uint8Array; offer: KeyOfferWire } {
  const secret = secp256k1.utils.randomSecretKey();
  return { secret, offer: offerFor(secret, room, party) };
}

/** The offer for an existing secret (a client that restarts re-offers the same key). */
export function offerFor(secret: Uint8Array, room: string, party: 0 | 1): KeyOfferWire {
  const x = BigInt(`0x${bytesToHex(secret)}`);
  const y = secp256k1.Point.BASE.multiply(x);
  return {
    public_key: y.toHex(true),
    proof: DLogProof.prove(room, party, x, y).toDict(),
  };
}

function lengthPrefixed(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const size = parts.reduce((n, p) => n + 2 + p.length, 0);
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    if (part.length > 0xffff) throw new RangeError("field too long");
    out[offset] = part.length >> 8;
    out[offset + 1] = part.length & 0xff;
    out.set(part, offset + 2);
    offset += 2 + part.length;
  }
  return out;
}

/**
 * Derives the AES-256-GCM key both parties share: `mySecret` with the peer's public key.
 * `keys` are both public keys as hex, indexed by party.
 */
export async function deriveSharedKey(
  mySecret: Uint8Array,
  room: string,
  keys: [string, string],
  myParty: 0 | 1,
): Promise<CryptoKey> {
  const peer = keys[myParty === 0 ? 1 : 0];
  const shared = secp256k1.getSharedSecret(mySecret, hexToBytes(peer), true).slice(1);
  const material = await crypto.subtle.importKey("raw", shared, "HKDF", false, ["deriveKey"]);
  return await crypto.subtle.deriveKey(
    {
      name: "HKDF",
      hash: "SHA-256",
      salt: encoder.encode(LABEL),
      info: lengthPrefixed(
        encoder.encode(`${LABEL} key`),
        encoder.encode(room),
        hexToBytes(keys[0]),
        hexToBytes(keys[1]),
      ),
    },
    material,
    { name: "AES-GCM", length: 256 },
    true,
    ["encrypt", "decrypt"],
  );
}

/** The AAD of one message. */
export function messageAad(
  room: string,
  sender: string,
  clientMsgId: string,
): Uint8Array<ArrayBuffer> {
  return lengthPrefixed(
    encoder.encode(`${LABEL} message`),
    encoder.encode(room),
    encoder.encode(sender),
    encoder.encode(clientMsgId),
  );
}

/** Encrypts one message with a fresh random nonce. */
export async function encryptMessage(
  key: CryptoKey,
  plaintext: string,
  aad: Uint8Array<ArrayBuffer>,
): Promise<{ nonce: Uint8Array<ArrayBuffer>; ciphertext: Uint8Array<ArrayBuffer> }> {
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const ciphertext = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: aad },
      key,
      encoder.encode(plaintext),
    ),
  );
  return { nonce, ciphertext };
}

/** Decrypts one message; null when it was tampered with or made under another key or AAD. */
export async function decryptMessage(
  key: CryptoKey,
  nonce: Uint8Array<ArrayBuffer>,
  ciphertext: Uint8Array<ArrayBuffer>,
  aad: Uint8Array<ArrayBuffer>,
): Promise<string | null> {
  try {
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: nonce, additionalData: aad },
      key,
      ciphertext,
    );
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(plain);
  } catch {
    return null;
  }
}

/** SHA-256 of the raw key, hex: what both parties compare aloud. */
export async function keyFingerprint(key: CryptoKey): Promise<string> {
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", key));
  return bytesToHex(sha256(raw));
}

/**
 * Base64 both ways (the protocol carries bytes as base64): the standard alphabet with `=`
 * padding (RFC 4648, section 4), by the runtime's `Uint8Array.prototype.toBase64` and
 * `Uint8Array.fromBase64`.
 *
 * `decode` takes what `atob` took: ASCII whitespace is skipped and padding may be left
 * out, bits past the last whole byte are ignored; it throws a `SyntaxError` on anything
 * else (a character outside the alphabet, the URL-safe `-` and `_` included, a lone
 * trailing character, misplaced or excess padding).
 */
export const base64 = {
  encode: (bytes: Uint8Array): string => bytes.toBase64(),
  decode: (text: string): Uint8Array<ArrayBuffer> => Uint8Array.fromBase64(text),
};
