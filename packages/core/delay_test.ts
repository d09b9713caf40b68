import assert from "node:assert/strict";
import { delay } from "./delay.ts";

Deno.test("delay(): resolves after the delay", async () => {
  const start = performance.now();
  await delay(20);
  assert.ok(performance.now() - start >= 19);
});

Deno.test("delay(): an abort before the call, or during the wait, rejects with the reason", async () => {
  const before = new AbortController();
  before.abort(new Error("before"));
  await assert.rejects(delay(10, { signal: before.signal }), /before/);
  const during = new AbortController();
  const waiting = delay(2_592_000_000, { signal: during.signal });
  await delay(5);
  during.abort(new Error("during"));
  await assert.rejects(waiting, /during/);
});

Deno.test("delay(): Infinity waits for the signal only; a negative delay is a RangeError", async () => {
  const controller = new AbortController();
  const waiting = delay(Infinity, { signal: controller.signal });
  controller.abort(new Error("stopped"));
  await assert.rejects(waiting, /stopped/);
  assert.throws(() => delay(-1), RangeError);
  // Not numbers, which `>= 0` alone would coerce ("1e3" would be added to a clock as text).
  for (const ms of ["1e3", "", null, true, { valueOf: () => 5 }]) {
    assert.throws(() => delay(ms as unknown as number), RangeError, String(ms));
  }
});
