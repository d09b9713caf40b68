import assert from "node:assert/strict";
import { timeoutSignal } from "./timeout_signal.ts";

Deno.test("timeoutSignal(): aborts with a TimeoutError after the delay", async () => {
  const signal = timeoutSignal(10);
  assert.equal(signal.aborted, false);
  // The signal's timer is unref'd (it must not hold a process open), so a ref'd timer keeps
  // the test running meanwhile, and fails it if the signal never fires.
  let guard: ReturnType<typeof setTimeout> | undefined;
  await new Promise((resolve, reject) => {
    guard = setTimeout(() => reject(new Error("not aborted within 2 s")), 2_000);
    signal.addEventListener("abort", resolve);
  });
  clearTimeout(guard);
  assert.ok(signal.reason instanceof DOMException);
  assert.equal(signal.reason.name, "TimeoutError");
});

Deno.test("timeoutSignal(): 30 days is 30 days, where AbortSignal.timeout fires at once", async () => {
  const month = 2_592_000_000;
  const ours = timeoutSignal(month);
  const runtime = AbortSignal.timeout(month);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(ours.aborted, false);
  // The fault this module exists for; if a runtime fixes it, this line says so.
  assert.equal(runtime.aborted, true);
});

Deno.test("timeoutSignal(): a negative delay is a RangeError", () => {
  assert.throws(() => timeoutSignal(-5), RangeError);
  for (const ms of ["1e3", "", null, true]) {
    assert.throws(() => timeoutSignal(ms as unknown as number), RangeError, String(ms));
  }
});
