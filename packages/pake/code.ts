/**
 * Codes people can say: `7-guitar-orbit-lazy`, a number and words from the BIP-39 English list
 * (2,048 words, each chosen so that its first four letters identify it). The number counts as
 * public (it is easy to overhear, and adds under 10 bits), so the entropy stated is the
 * words' alone; the whole code, number included, is what both parties feed to CPace as its
 * password-related string, so a code with another number is another code. Where the parties
 * meet is the application's (a room, a rendezvous id), not the number.
 *
 * Entropy: each word carries 11 bits (one of 2,048, drawn uniformly from the Web Crypto
 * CSPRNG), so three words make 33 bits. CPace gives an attacker one online guess per run, so
 * a three-word code is guessed with probability 2^-33 per attempt, about one in 8.6 billion.
 *
 * Typed back tolerantly: any case, and spaces, dots, underscores, commas or hyphens (or dashes) between
 * the parts; a word may be shortened to its first four letters or more (BIP-39 words are
 * unique there; the few of three letters are typed in full). The canonical form is lowercase, hyphen-separated, with every word in full.
 *
 * @module
 */
import { wordlist } from "@scure/bip39/wordlists/english.js";

/** Words in a code made by {@link generateCode} by default. */
export const DEFAULT_WORDS = 3;
/** Bits of secret per word: log2 of the list's 2,048 words. */
export const BITS_PER_WORD = 11;
/** The largest number a code begins with (counted as public: see the module). */
export const MAX_CODE_NUMBER = 999;

const WORDS: ReadonlySet<string> = new Set(wordlist);
const BY_PREFIX: ReadonlyMap<string, string> = new Map(
  wordlist.map((word) => [word.slice(0, 4), word]),
);

/** The list's word that `part` spells in full or by its first four letters or more. */
function wordFor(part: string): string | undefined {
  if (WORDS.has(part)) return part;
  const word = part.length >= 4 ? BY_PREFIX.get(part.slice(0, 4)) : undefined;
  return word !== undefined && word.startsWith(part) ? word : undefined;
}

/** A code, parsed: its public number, its secret words, and the canonical text. */
export interface Code {
  /** The number in front (1 to {@link MAX_CODE_NUMBER}), part of the code, counted as public. */
  number: number;
  /** The words, in full and lowercase. */
  words: string[];
  /** `NUMBER-word-word-...`: what both sides must have, byte for byte. */
  text: string;
  /** Bits of secret in the words ({@link BITS_PER_WORD} each). */
  entropyBits: number;
}

/** A uniformly random integer in [0, n) from `random` bytes, by rejection sampling. */
function uniform(n: number, random: (length: number) => Uint8Array): number {
  const limit = 2 ** 32 - (2 ** 32 % n);
  for (;;) {
    const [a = 0, b = 0, c = 0, d = 0] = random(4);
    const value = ((a << 24) >>> 0) + (b << 16) + (c << 8) + d;
    if (value < limit) return value % n;
  }
}

const cryptoRandom = (length: number) => crypto.getRandomValues(new Uint8Array(length));

/**
 * A new code: a number from 1 to {@link MAX_CODE_NUMBER} and `words` words, each drawn
 * uniformly from the 2,048 of BIP-39's English list by the CSPRNG.
 *
 * @param words How many words (at least 2: 22 bits; 3 by default: 33 bits).
 * @throws RangeError when `words` is not a whole number from 2 to 16.
 */
export function generateCode(
  words: number = DEFAULT_WORDS,
  random: (length: number) => Uint8Array = cryptoRandom,
): Code {
  if (!Number.isInteger(words) || words < 2 || words > 16) {
    throw new RangeError(`a code has 2 to 16 words, not ${words}`);
  }
  const number = 1 + uniform(MAX_CODE_NUMBER, random);
  const chosen = Array.from({ length: words }, () => wordlist[uniform(wordlist.length, random)]!);
  return codeOf(number, chosen);
}

function codeOf(number: number, words: string[]): Code {
  return {
    number,
    words,
    text: [number, ...words].join("-"),
    entropyBits: words.length * BITS_PER_WORD,
  };
}

/**
 * Reads a code as a person typed it (see the module): `7-Guitar-Orbit`, `7 guit orbi`.
 *
 * @throws TypeError saying what is wrong: no number in front, a number out of range, too few
 *   words, or a word that is not in the list (naming it).
 */
export function parseCode(typed: string): Code {
  // Hyphens as typed on any keyboard count: the en and em dashes, the minus sign.
  const parts = typed.trim().toLowerCase().split(/[\s.,_\-\u2010-\u2015\u2212]+/).filter(
    Boolean,
  );
  const [first, ...rest] = parts;
  if (first === undefined || !/^\d+$/.test(first)) {
    throw new TypeError(
      `a code starts with its number, as in 7-guitar-orbit-lazy; "${typed}" does not`,
    );
  }
  const number = Number(first);
  if (number < 1 || number > MAX_CODE_NUMBER) {
    throw new TypeError(`a code's number is from 1 to ${MAX_CODE_NUMBER}, not ${first}`);
  }
  if (rest.length < 2) {
    throw new TypeError(
      `a code has at least two words after its number; "${typed}" has ${rest.length}`,
    );
  }
  const words = rest.map((part) => {
    const word = wordFor(part);
    if (word === undefined) {
      throw new TypeError(`"${part}" is not a word of the code list (BIP-39 English)`);
    }
    return word;
  });
  return codeOf(number, words);
}
