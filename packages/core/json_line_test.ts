import assert from "node:assert/strict";
import fc from "fast-check";
import { jsonLine } from "./json_line.ts";

Deno.test("jsonLine(): the same value for a parser, no raw control character for a terminal", () => {
  assert.equal(jsonLine({ s: "a\x7f\x9bb" }), '{"s":"a\\u007f\\u009bb"}');
  fc.assert(
    fc.property(fc.jsonValue(), (value) => {
      const line = jsonLine(value);
      assert.deepEqual(JSON.parse(line), JSON.parse(JSON.stringify(value)));
      // deno-lint-ignore no-control-regex
      assert.ok(!/[\u0000-\u001f\u007f-\u009f]/.test(line));
    }),
  );
});
