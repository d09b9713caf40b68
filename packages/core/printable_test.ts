import assert from "node:assert/strict";
import fc from "fast-check";
import { printable } from "./printable.ts";

Deno.test("printable(): escape sequences, newlines and C1 controls become visible, the rest stays", () => {
  assert.equal(printable("\x1b[2J\x1b]52;c;aGk=\x07"), "␛[2J␛]52;c;aGk=␇");
  assert.equal(printable("hi\nalice: forged"), "hi␊alice: forged");
  assert.equal(printable("a\tb\rc\x00\x7f"), "a␉b␍c␀␡");
  assert.equal(printable("\u0085\u009b31m"), "\\u{85}\\u{9b}31m");
  assert.equal(printable("привет 👋🏽 \u200f שלום"), "привет 👋🏽 \u200f שלום");
});

Deno.test("printable(): no control character survives, and text without any is unchanged", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary" }), (text) => {
      const shown = printable(text);
      // deno-lint-ignore no-control-regex
      assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(shown));
      // deno-lint-ignore no-control-regex
      if (!/[\u0000-\u001f\u007f-\u009f]/.test(text)) assert.equal(shown, text);
    }),
  );
});
