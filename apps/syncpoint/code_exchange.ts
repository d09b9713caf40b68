/**
 * A rendezvous protected by a code both people know (`duet syncpoint wait ID --code CODE`):
 * the two parties run CPace (packages/pake) through the service, which only relays, then
 * exchange their payloads encrypted under the key they agreed. A party with another code, or
 * a relay in the middle, makes both sides fail the key confirmation, and neither payload is
 * revealed: each goes out only as AES-256-GCM ciphertext under a key the other side cannot
 * have without the code.
 *
 * Two rounds through the same service, each an ordinary rendezvous:
 *
 * 1. `ID~1`: each party's CPace message (`lv_cat(Y, AD)`, base64). The roles the service
 *    gives (first, second) order the transcript: the first party is CPace's initiator, so
 *    the key binds who came first.
 * 2. `ID~2`: each party's confirmation tag (64 bytes, the draft's HMAC-SHA-512 over the
 *    message it sent), then, if it has a payload, a 12-byte nonce and the payload sealed
 *    with AES-256-GCM under HKDF-SHA-256(ISK, salt = sid, info = "duet syncpoint payload
 *    ROLE"), the role being the sender's; base64.
 *
 * The session id is `duet-syncpoint-code/v1 ID`: a run under one id gives no key for
 * another.
 *
 * @module
 */
import {
  confirmationTag,
  type CPaceInputs,
  finish,
  isReflection,
  parseCode,
  start,
  verifyConfirmation,
} from "@duet/pake";
import { type PairResult, SyncpointError, waitForSecondParty, type WaitOptions } from "./client.ts";
import { concatBytes } from "@noble/hashes/utils.js";

/** The exchange failed in a way that says something about the other party (not the network). */
export class CodeExchangeError extends Error {
  /**
   * `code_mismatch`: the confirmation failed (another code, or someone in the middle);
   * `not_code_exchange`: what came back is no exchange message (the other party did not use a
   * code); `partner_left`: the other party did not come to the second round; `id_too_long`:
   * no room for the rounds' suffix.
   */
  readonly code: "code_mismatch" | "not_code_exchange" | "partner_left" | "id_too_long";
  /**
   * The error for one failed exchange.
   *
   * @param code See the property.
   * @param message For people: what happened and what to do.
   */
  constructor(code: CodeExchangeError["code"], message: string) {
    super(message);
    this.name = "CodeExchangeError";
    this.code = code;
  }
}

/** The longest id a code exchange can use: the rounds add `~1` and `~2`. */
export const MAX_CODE_ID_LENGTH = 126;
/** Bytes a sealed payload adds before base64: the tag (64), the nonce (12), GCM's tag (16). */
const OVERHEAD = 64 + 12 + 16;

/**
 * The largest payload (UTF-8 bytes) a code exchange can carry through a service that takes
 * `maxPayloadBytes`: base64 makes 3 bytes 4, and the tag, nonce and GCM tag come first.
 */
export function maxCodePayloadBytes(maxPayloadBytes: number): number {
  return Math.floor(maxPayloadBytes / 4) * 3 - OVERHEAD;
}

const encoder = new TextEncoder();
const toBase64 = (bytes: Uint8Array) => bytes.toBase64();
/** The bytes of base64 `text`, or undefined when there is none or it is not base64. */
function fromBase64(text: string | null): Uint8Array | undefined {
  if (text === null) return undefined;
  try {
    return Uint8Array.fromBase64(text);
  } catch {
    return undefined;
  }
}

/** The AES-256-GCM key the party of `role` seals its payload with. */
async function payloadKey(isk: Uint8Array, sid: Uint8Array, role: string): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey("raw", isk as BufferSource, "HKDF", false, [
    "deriveKey",
  ]);
  return await crypto.subtle.deriveKey(
    {
      name: "HKDF",
      hash: "SHA-256",
      salt: sid as BufferSource,
      info: encoder.encode(`duet syncpoint payload ${role}`),
    },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

/** `payload` sealed with AES-256-GCM under `key`: a fresh 12-byte nonce, then the ciphertext. */
async function seal(payload: string, key: CryptoKey): Promise<Uint8Array> {
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const cipher = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce },
    key,
    encoder.encode(payload),
  );
  return concatBytes(nonce, new Uint8Array(cipher));
}

/**
 * Waits at `baseUrl` for the other party of `id`, both knowing `code` (as typed: see
 * `parseCode`), and hands over `options.payload` only to a party that proved the same code.
 *
 * @returns The pair, as {@link waitForSecondParty} gives it (the role from round 1, the
 *   partner's payload decrypted, `waitedMs` over both rounds).
 * @throws {CodeExchangeError} `code_mismatch` on both sides when the codes differ or a relay
 *   substituted a message; `not_code_exchange` when the partner sent no exchange message;
 *   `id_too_long`; TypeError from `parseCode` for a code that is not one; whatever
 *   {@link waitForSecondParty} throws (timeouts, refusals, the network).
 */
export async function waitWithCode(
  baseUrl: string | URL,
  id: string,
  code: string,
  options: WaitOptions = {},
): Promise<PairResult> {
  if (id.length > MAX_CODE_ID_LENGTH) {
    throw new CodeExchangeError(
      "id_too_long",
      `an id used with a code is at most ${MAX_CODE_ID_LENGTH} characters (the exchange adds ~1 and ~2)`,
    );
  }
  const started = performance.now();
  const sid = encoder.encode(`duet-syncpoint-code/v1 ${id}`);
  const inputs: CPaceInputs = { prs: encoder.encode(parseCode(code).text), sid };
  const own = start(inputs);
  const { payload, timeoutMs, ...rest } = options;
  const first = await waitForSecondParty(baseUrl, `${id}~1`, {
    ...rest,
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    payload: toBase64(own.message),
  });
  const peerMessage = fromBase64(first.peerPayload);
  // Our own message sent back: CPace gives no key for it, and it is no partner without a
  // code either.
  if (peerMessage && isReflection(own, peerMessage)) {
    throw new CodeExchangeError(
      "code_mismatch",
      "what came back as the other party's message is this party's own: someone in the " +
        "middle sent it back; nothing was revealed",
    );
  }
  const order = first.role === "first" ? "initiator" : "responder";
  const result = peerMessage && finish(inputs, own, peerMessage, order);
  if (!result) {
    throw new CodeExchangeError(
      "not_code_exchange",
      "the other party sent no code exchange message: is it waiting with --code too?",
    );
  }
  const peerRole = first.role === "first" ? "second" : "first";
  const sealed = payload === undefined
    ? new Uint8Array(0)
    : await seal(payload, await payloadKey(result.isk, sid, first.role));
  const tag = confirmationTag(result, inputs, own);
  // Round 2: the partner is there already; it has what remains of the wait, if one was set.
  const remaining = timeoutMs === undefined
    ? undefined
    : Math.max(1, timeoutMs - (performance.now() - started));
  const second = await waitForSecondParty(baseUrl, `${id}~2`, {
    ...rest,
    ...(remaining === undefined ? {} : { timeoutMs: remaining }),
    payload: toBase64(concatBytes(tag, sealed)),
  }).catch((error) => {
    if (error instanceof SyncpointError && error.code === "timeout") {
      throw new CodeExchangeError(
        "partner_left",
        "the other party left after the first round of the code exchange; nothing was revealed " +
          "to it, and its payload never came",
      );
    }
    throw error;
  });
  const answer = fromBase64(second.peerPayload);
  if (!answer || !verifyConfirmation(result, inputs, peerMessage!, answer.subarray(0, 64))) {
    throw new CodeExchangeError(
      "code_mismatch",
      "the other party did not prove the same code: the codes differ, or someone is in the " +
        "middle; nothing was revealed to it",
    );
  }
  let peerPayload: string | null = null;
  if (answer.length > 64) {
    const nonce = answer.slice(64, 76);
    const key = await payloadKey(result.isk, sid, peerRole);
    try {
      const plain = await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: nonce },
        key,
        answer.slice(76),
      );
      peerPayload = new TextDecoder("utf-8", { ignoreBOM: true }).decode(plain);
    } catch {
      throw new CodeExchangeError(
        "code_mismatch",
        "the other party's payload does not open under the agreed key: it was altered on " +
          "the way",
      );
    }
  }
  return {
    role: first.role,
    waitedMs: Math.round(performance.now() - started),
    peerPayload,
  };
}
