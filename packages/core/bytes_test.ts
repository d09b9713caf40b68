import assert from "node:assert/strict";
import fc from "fast-check";
import { ByteQueue, concatChunks } from "./bytes.ts";

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

Deno.test("ByteQueue: under any pushes and consumes, it holds what a plain array model holds, and views handed out never change", () => {
  const step = fc.oneof(
    fc.record({ push: fc.uint8Array({ maxLength: 300 }) }),
    fc.record({ consume: fc.nat({ max: 400 }) }),
  );
  fc.assert(
    fc.property(fc.array(step, { maxLength: 60 }), (steps) => {
      const queue = new ByteQueue();
      let model: number[] = [];
      const handedOut: [Uint8Array, number[]][] = [];
      for (const s of steps) {
        if ("push" in s) {
          queue.push(s.push.slice());
          model.push(...s.push);
        } else {
          const count = Math.min(s.consume, model.length);
          handedOut.push([queue.bytes.subarray(0, count), model.slice(0, count)]);
          queue.consume(count);
          model = model.slice(count);
        }
        assert.equal(queue.length, model.length);
        assert.deepEqual([...queue.bytes], model);
      }
      for (const [view, was] of handedOut) assert.deepEqual([...view], was);
    }),
  );
});

Deno.test("ByteQueue: consuming more than is held, a negative or a fractional count is a RangeError; an emptied queue holds no store", () => {
  const queue = new ByteQueue();
  queue.push(new Uint8Array([1, 2, 3]));
  for (const count of [4, -1, 0.5, NaN]) assert.throws(() => queue.consume(count), RangeError);
  queue.push(new Uint8Array(1000));
  queue.consume(1003);
  assert.equal(queue.bytes.buffer.byteLength, 0);
});

Deno.test("ByteQueue: a large store mostly taken moves what is left to a small one, views kept", () => {
  const queue = new ByteQueue();
  queue.push(new Uint8Array(1 << 20).fill(1));
  queue.push(new Uint8Array([2, 3])); // joined: a store of ours, about 2 MiB
  const view = queue.bytes.subarray(0, 4);
  queue.consume(1 << 20);
  assert.deepEqual([...queue.bytes], [2, 3]);
  assert.ok(queue.bytes.buffer.byteLength < 1024, `${queue.bytes.buffer.byteLength} bytes kept`);
  assert.deepEqual([...view], [1, 1, 1, 1]);
  queue.push(new Uint8Array([4]));
  assert.deepEqual([...queue.bytes], [2, 3, 4]);
});
