/**
 * Password-authenticated key exchange for two parties who share a short code: CPace on
 * ristretto255 with SHA-512 (draft-irtf-cfrg-cpace). See cpace.ts for the steps.
 *
 * @example One run, both parties in one place
 * ```ts
 * import { finish, start } from "./mod.ts";
 *
 * const code = new TextEncoder().encode("7-guitar-orbit");
 * const sid = crypto.getRandomValues(new Uint8Array(16));
 * const a = start({ prs: code, sid });
 * const b = start({ prs: code, sid });
 * const keyA = finish({ prs: code, sid }, a, b.message, "initiator")!.isk;
 * const keyB = finish({ prs: code, sid }, b, a.message, "responder")!.isk;
 * // keyA and keyB are equal: 64 bytes
 * ```
 *
 * @module
 */
export {
  calculateGenerator,
  confirmationTag,
  type CPaceInputs,
  type CPaceResult,
  type CPaceStart,
  DSI,
  finish,
  generatorString,
  isReflection,
  lvCat,
  oCat,
  parseLvCat,
  prependLen,
  sampleScalar,
  scalarMultVfy,
  start,
  type TranscriptOrder,
  verifyConfirmation,
} from "./cpace.ts";
export {
  BITS_PER_WORD,
  type Code,
  DEFAULT_WORDS,
  generateCode,
  MAX_CODE_NUMBER,
  parseCode,
} from "./code.ts";
