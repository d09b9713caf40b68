import assert from "node:assert/strict";
import fc from "fast-check";
import { concatChunks } from "./bytes.ts";

Deno.test("concatChunks(): the chunks in order, in a new array of their total length", () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 20 }), (chunks) => {
      const before = chunks.map((chunk) => [...chunk]);
      const joined = concatChunks(chunks);
      assert.deepEqual([...joined], before.flat());
      assert.ok(chunks.every((chunk) => chunk.buffer !== joined.buffer));
      assert.deepEqual(chunks.map((chunk) => [...chunk]), before);
    }),
  );
  assert.equal(concatChunks([]).length, 0);
});

Deno.test("concatChunks(): a million one-byte chunks, past what a spread call can take", () => {
  const chunks = Array.from({ length: 1_000_000 }, (_, i) => new Uint8Array([i & 0xff]));
  const joined = concatChunks(chunks);
  assert.equal(joined.length, 1_000_000);
  assert.equal(joined[999_999], 999_999 & 0xff);
});
