// Codes: generated from the CSPRNG with the entropy stated, typed back tolerantly, refused
// with a reason when they are not codes; and a code is what CPace agrees on.
import assert from "node:assert/strict";
import fc from "fast-check";
import { wordlist } from "@scure/bip39/wordlists/english.js";
import { BITS_PER_WORD, generateCode, MAX_CODE_NUMBER, parseCode } from "./code.ts";
import { confirmationTag, finish, start, verifyConfirmation } from "./cpace.ts";

Deno.test("generateCode: a number and three words by default, 33 bits, canonical text", () => {
  const code = generateCode();
  assert.match(code.text, /^\d{1,3}(-[a-z]{3,8}){3}$/);
  assert.equal(code.words.length, 3);
  assert.equal(code.entropyBits, 33);
  assert.ok(code.number >= 1 && code.number <= MAX_CODE_NUMBER);
  for (const word of code.words) assert.ok(wordlist.includes(word), word);
  assert.equal(generateCode(5).entropyBits, 5 * BITS_PER_WORD);
  for (const bad of [1, 17, 2.5, Number.NaN]) assert.throws(() => generateCode(bad), RangeError);
});

Deno.test("generateCode: every word and number is reachable, and the draws are uniform (rejection sampling)", () => {
  // A counter for a random source: each 4-byte draw is the next integer. A code takes three
  // draws (the number, two words); 3 and 2,048 are coprime, so the word draws of 2,048 codes
  // meet every index of the list.
  let n = 0;
  const counting = (length: number) => {
    const bytes = new Uint8Array(length);
    new DataView(bytes.buffer).setUint32(0, n++);
    return bytes;
  };
  const seen = new Set<string>();
  for (let i = 0; i < 2048; i++) for (const word of generateCode(2, counting).words) seen.add(word);
  assert.equal(seen.size, 2048);
  // Draws past the largest multiple of the range are rejected, not folded onto small values.
  const high = [0xff, 0xff, 0xff, 0xff];
  let first = true;
  const biased = (length: number) => {
    const bytes = new Uint8Array(length);
    if (first) bytes.set(high);
    first = false;
    return bytes;
  };
  assert.equal(
    generateCode(2, biased).number,
    1,
    "0xffffffff is rejected, the next draw (0) taken",
  );
});

Deno.test("parseCode: case, separators and four-letter prefixes are forgiven; the canonical text is one", () => {
  const canonical = "7-guitar-orbit-lazy";
  for (
    const typed of [
      canonical,
      "7 Guitar Orbit LAZY",
      "  7_guit.orbi,lazy ",
      "007-guitar-orbit-lazy",
      "7—guitar–orbit−lazy",
      "007-guitar-orbit-lazy",
    ]
  ) {
    assert.equal(parseCode(typed).text, canonical, typed);
  }
  assert.equal(parseCode("12-act-add").text, "12-act-add", "three-letter words in full");
  assert.equal(parseCode("12-acti-add").text, "12-action-add");
});

Deno.test("parseCode: what is not a code is refused, saying why", () => {
  const cases: [string, RegExp][] = [
    ["guitar-orbit-lazy", /starts with its number/],
    ["", /starts with its number/],
    ["0-guitar-orbit", /from 1 to 999, not 0/],
    ["1000-guitar-orbit", /from 1 to 999, not 1000/],
    ["7-guitar", /at least two words/],
    ["7-guitar-orbitz", /"orbitz" is not a word/],
    ["7-gui-orbit", /"gui" is not a word/],
    ["7-guitar-zzzz", /"zzzz" is not a word/],
  ];
  for (const [typed, why] of cases) assert.throws(() => parseCode(typed), why, typed);
});

Deno.test("property: any generated code, typed back in any case and spacing, parses to itself", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 6 }),
      fc.boolean(),
      fc.constantFrom(" ", "-", "_", "."),
      (words, upper, sep) => {
        const code = generateCode(words);
        const typed = code.text.split("-").join(sep);
        assert.equal(parseCode(upper ? typed.toUpperCase() : typed).text, code.text);
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("a code typed differently on each side still agrees; a different code never confirms", () => {
  const prs = (typed: string) => new TextEncoder().encode(parseCode(typed).text);
  const sid = new TextEncoder().encode("syncpoint:room-7");
  const one = { prs: prs("7-guitar-orbit-lazy"), sid };
  const two = { prs: prs("7 GUIT orbi lazy"), sid };
  const a = start(one);
  const b = start(two);
  const atA = finish(one, a, b.message, "parallel")!;
  const atB = finish(two, b, a.message, "parallel")!;
  assert.equal(verifyConfirmation(atB, two, a.message, confirmationTag(atA, one, a)), true);
  const other = { prs: prs("7-guitar-orbit-leaf"), sid };
  const c = start(other);
  const atC = finish(other, c, a.message, "parallel")!;
  const atA2 = finish(one, a, c.message, "parallel")!;
  assert.equal(verifyConfirmation(atC, other, a.message, confirmationTag(atA2, one, a)), false);
});
