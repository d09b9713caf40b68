/**
 * Meeting by a code (`duet chat --code CODE`), the client's side as pure functions: the two
 * parties run CPace (packages/pake) over the code through the server, which relays each
 * party's newest `code` frame (protocol.ts, version 5), and each confirms the key they
 * share. Each party's CPace message carries its chat public key as CPace's associated data,
 * so the key CPace gives binds both chat keys: a confirmation that verifies proves that the
 * peer holds the code and that the chat key the server relayed for it is the one it sent,
 * and that it got ours. The conversation is then verified without comparing fingerprints.
 *
 * - Inputs: the password-related string is the code's canonical text; the session id is
 *   `duet-chat-code/v1 SERVICE ROOM` (the service's id from the welcome), so a run gives no
 *   key for another room or service. Party 0 is CPace's initiator, party 1 its responder.
 * - A party sends its message on every connection, and with it, once it has the peer's, its
 *   confirmation: the draft's tag (HMAC-SHA-512 under a key from the ISK, over its own
 *   message) and the peer message it answers. A confirmation that answers another message
 *   of ours (an earlier run's) is stale and waits for the peer's answer to this one.
 * - The outcome is `verified` when the peer's confirmation of our message verifies and the
 *   public key in its message is the one the server relayed; `mismatch` otherwise, for
 *   good: another code, a relay that substituted a key or a message, a message that is no
 *   CPace message or is our own sent back. Nothing is sent under the key before `verified`.
 * - Each peer message a run answers is one guess at the code for whoever sent it, so a run
 *   answers at most {@link MAX_PEER_MESSAGES} distinct ones and then ends (the client counts
 *   them across the runs of one process: a run for a changed key starts from the count),
 *   so someone in the middle gets that many guesses per start of the client, never more.
 *
 * @module
 */
import {
  confirmationTag,
  type CPaceInputs,
  type CPaceResult,
  type CPaceStart,
  finish,
  isReflection,
  parseCode,
  start,
  verifyConfirmation,
} from "@duet/pake";
import { equalBytes } from "@noble/curves/utils.js";
import type { CodeWire } from "./protocol.ts";
import { hexToBytes, utf8ToBytes } from "@noble/hashes/utils.js";

/** What a party knows when it starts a run. */
export interface CodeRunInputs {
  /** The code as typed (packages/pake, parseCode: tolerant of case and separators). */
  code: string;
  /** The service's id, from the welcome. */
  service: string;
  /** The room's id. */
  room: string;
  /** This party's index in the room: 0 is CPace's initiator. */
  party: 0 | 1;
  /** This party's chat public key, 66 hex (compressed secp256k1). */
  publicKey: string;
}

/** One run: the inputs both sides must share, this party's scalar and message. */
export interface CodeRun {
  readonly inputs: CPaceInputs;
  readonly own: CPaceStart;
  readonly order: "initiator" | "responder";
}

/**
 * Starts a run for `at`.
 *
 * @throws {TypeError} from parseCode when `at.code` is not a code.
 */
export function startCodeRun(at: CodeRunInputs): CodeRun {
  const inputs: CPaceInputs = {
    prs: utf8ToBytes(parseCode(at.code).text),
    sid: utf8ToBytes(`duet-chat-code/v1 ${at.service} ${at.room}`),
  };
  return {
    inputs,
    own: start(inputs, hexToBytes(at.publicKey)),
    order: at.party === 0 ? "initiator" : "responder",
  };
}

/** A `code` frame's content: a message and, perhaps, the confirmation of a peer message. */
export interface CodeFrame {
  message: Uint8Array;
  confirm?: { tag: Uint8Array; answers: Uint8Array };
}

/** A code frame in its wire form. */
export function codeFrameToWire(frame: CodeFrame): CodeWire {
  return {
    message: frame.message.toBase64(),
    ...(frame.confirm
      ? {
        confirm: { tag: frame.confirm.tag.toBase64(), answers: frame.confirm.answers.toBase64() },
      }
      : {}),
  };
}

/**
 * A code frame from its wire form. The protocol's schema has checked the base64; should it
 * not decode all the same, the frame has an empty message, which no run takes for one.
 */
export function codeFrameFromWire(wire: CodeWire): CodeFrame {
  try {
    return {
      message: Uint8Array.fromBase64(wire.message),
      ...(wire.confirm
        ? {
          confirm: {
            tag: Uint8Array.fromBase64(wire.confirm.tag),
            answers: Uint8Array.fromBase64(wire.confirm.answers),
          },
        }
        : {}),
    };
  } catch {
    return { message: new Uint8Array(0) };
  }
}

/** Why a run failed: said to the person in {@link mismatchText}. */
export type MismatchReason =
  /** The peer's confirmation does not verify: another code, or a relay in the middle. */
  | "codes_differ"
  /** The key in the peer's message is not the key the server relayed for the peer. */
  | "key_substituted"
  /** The peer's message is no CPace message (or its share is not a valid element). */
  | "not_a_code_message"
  /** The peer's message is our own, sent back: a run with nobody. */
  | "reflected"
  /**
   * More peer messages than {@link MAX_PEER_MESSAGES} in one run: each one answered is a
   * guess at the code for whoever sent it.
   */
  | "too_many_messages";

/**
 * The most distinct peer messages a run answers: an earlier run's message the server still
 * held, the peer's current one, and one restart of the peer's; past that the run ends, so
 * anyone in the middle gets at most this many guesses at the code per run.
 */
export const MAX_PEER_MESSAGES = 3;

/** Where a run is. */
export interface CodeState {
  /** `pending` until the peer's confirmation of our message is checked. */
  outcome: "pending" | "verified" | { mismatch: MismatchReason };
  /** The peer's newest message, and the key it gives with ours (undefined: not valid). */
  peer?: { message: Uint8Array; result: CPaceResult | undefined };
  /** The peer's confirmation not yet checked (it came before the peer's key or message). */
  pendingConfirm?: { tag: Uint8Array; answers: Uint8Array };
  /** Distinct peer messages this run has taken (and answered, when valid). */
  taken: number;
  /** What we send on each connection: our message, and our confirmation once we have one. */
  frame: CodeFrame;
}

/** What a step asks the shell to do. */
export type CodeCommand =
  /** Send this `code` frame (now, if connected; it is sent again on each connection). */
  | { type: "send"; frame: CodeFrame }
  /** The peer's key is confirmed by the code: trust it, and send under it. */
  | { type: "verified" }
  /** The run failed for good: stop, send nothing. */
  | { type: "mismatch"; reason: MismatchReason };

/** A run's first state: our message, to send once in the room. */
export function initialCodeState(run: CodeRun): CodeState {
  return { outcome: "pending", frame: { message: run.own.message }, taken: 0 };
}

/**
 * The peer's `code` frame came (`peerKey`: the peer's public key as the server relayed it,
 * 66 hex, or null while none has come). Pure; never throws on hostile input.
 */
export function onPeerCode(
  state: CodeState,
  run: CodeRun,
  frame: CodeFrame,
  peerKey: string | null,
): { state: CodeState; commands: CodeCommand[] } {
  if (state.outcome !== "pending") return { state, commands: [] };
  let next = state;
  const commands: CodeCommand[] = [];
  if (!next.peer || !equalBytes(next.peer.message, frame.message)) {
    // Before any answer: each message answered is one guess for whoever sent it.
    if (next.taken >= MAX_PEER_MESSAGES) return failRun(state, "too_many_messages", []);
    if (isReflection(run.own, frame.message)) return failRun(state, "reflected", []);
    const result = finish(run.inputs, run.own, frame.message, run.order);
    next = { ...next, peer: { message: frame.message.slice(), result }, taken: next.taken + 1 };
    if (result) {
      const own = {
        message: run.own.message,
        confirm: { tag: confirmationTag(result, run.inputs, run.own), answers: frame.message },
      };
      next = { ...next, frame: own };
      commands.push({ type: "send", frame: own });
    }
  }
  if (frame.confirm) next = { ...next, pendingConfirm: frame.confirm };
  return settle(next, run, peerKey, commands);
}

/**
 * The peer's key came or changed (`peerKey`, 66 hex): a confirmation that waited for it is
 * checked now. A peer message made for another key is an earlier run's (the server forgets
 * a party's code message when its key changes, and relays the key first): it is dropped, and
 * the run waits for the message made for this key.
 */
export function onPeerKey(
  state: CodeState,
  run: CodeRun,
  peerKey: string,
): { state: CodeState; commands: CodeCommand[] } {
  if (state.outcome !== "pending") return { state, commands: [] };
  const ad = state.peer?.result?.peerAd;
  if (ad && !sameKey(ad, peerKey)) {
    const { peer: _peer, pendingConfirm: _confirm, ...rest } = state;
    return { state: { ...rest, frame: { message: run.own.message } }, commands: [] };
  }
  return settle(state, run, peerKey, []);
}

function sameKey(ad: Uint8Array, hex: string): boolean {
  try {
    return equalBytes(ad, hexToBytes(hex));
  } catch {
    return false;
  }
}

/** Ends the run for good with `reason`, after `commands`. */
function failRun(
  state: CodeState,
  reason: MismatchReason,
  commands: CodeCommand[],
): { state: CodeState; commands: CodeCommand[] } {
  return {
    state: { ...state, outcome: { mismatch: reason } },
    commands: [...commands, { type: "mismatch", reason }],
  };
}

/** Decides what can be decided: a bad message or key at once, a confirmation once it answers us. */
function settle(
  state: CodeState,
  run: CodeRun,
  peerKey: string | null,
  commands: CodeCommand[],
): { state: CodeState; commands: CodeCommand[] } {
  const fail = (reason: MismatchReason) => failRun(state, reason, commands);
  const peer = state.peer;
  if (!peer) return { state, commands };
  if (!peer.result) return fail("not_a_code_message");
  if (peerKey === null) return { state, commands };
  if (!sameKey(peer.result.peerAd, peerKey)) return fail("key_substituted");
  const confirm = state.pendingConfirm;
  // A confirmation of another message of ours is an earlier run's: this one's is to come.
  if (!confirm || !equalBytes(confirm.answers, run.own.message)) return { state, commands };
  if (!verifyConfirmation(peer.result, run.inputs, peer.message, confirm.tag)) {
    return fail("codes_differ");
  }
  return {
    state: { ...state, outcome: "verified", pendingConfirm: undefined },
    commands: [...commands, { type: "verified" }],
  };
}

/**
 * What a failed run tells the person (`peer`: the peer's name), a sentence without a final
 * period: what happened, what it means, what to do.
 */
export function mismatchText(reason: MismatchReason, peer: string): string {
  switch (reason) {
    case "codes_differ":
      return `The code did not match: ${peer} typed another code, or someone in the middle ` +
        "tried to stand in for one of you. Nothing was sent. Check the code with " +
        `${peer} (or make a new one with --code new) and start again`;
    case "key_substituted":
      return `The key the server passed on for ${peer} is not the key in ${peer}'s code ` +
        "message: someone in the middle substituted it. Nothing was sent. Do not use this " +
        "server for this conversation";
    case "not_a_code_message":
      return `${peer}'s client sent a code message that is not one (a bug, or someone in ` +
        "the middle). Nothing was sent";
    case "reflected":
      return `The code message that came as ${peer}'s is this client's own, sent back: ` +
        "someone in the middle tried to make it confirm a key with itself. Nothing was sent";
    case "too_many_messages":
      return `${peer}'s side sent more code messages than one run takes (${peer} started ` +
        "over and over before the code was confirmed, or someone in the middle is guessing " +
        "the code). Nothing was sent. Both of you: start again with the code";
  }
}
