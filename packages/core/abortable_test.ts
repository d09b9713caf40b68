import assert from "node:assert/strict";
import { abortable } from "./abortable.ts";

const never = () => new Promise<never>(() => {});

Deno.test("abortable(): the promise's value or rejection when it settles first; no signal, the promise itself", async () => {
  const signal = new AbortController().signal;
  assert.equal(await abortable(Promise.resolve(5), signal), 5);
  await assert.rejects(abortable(Promise.reject(new Error("no")), signal), /no/);
  const own = Promise.resolve(1);
  assert.equal(abortable(own, undefined), own);
});

Deno.test("abortable(): the signal's reason when it aborts before, right after the call, or later", async () => {
  for (const when of ["before", "sync", "later"] as const) {
    const controller = new AbortController();
    const reason = new Error(when);
    if (when === "before") controller.abort(reason);
    const waited = abortable(never(), controller.signal);
    if (when === "sync") controller.abort(reason);
    if (when === "later") setTimeout(() => controller.abort(reason), 5);
    await assert.rejects(waited, (error) => error === reason);
  }
});

Deno.test("abortable(): a promise rejecting after the abort is not an unhandled rejection", async () => {
  for (const already of [true, false]) {
    const controller = new AbortController();
    if (already) controller.abort();
    let fail = (_: Error) => {};
    const late = new Promise<never>((_, reject) => (fail = reject));
    const waited = abortable(late, controller.signal);
    controller.abort();
    await assert.rejects(waited);
    fail(new Error("late")); // would fail the test as an unhandled rejection
    await new Promise((r) => setTimeout(r, 0));
  }
});
