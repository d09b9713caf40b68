import assert from "node:assert/strict";
import { checkDuration, checkTransport, settledWithin } from "./duration.ts";

const DAY_MS = 86_400_000;

Deno.test("checkDuration() takes any number of ms ≥ 0, past setTimeout's 2^31 - 1 included", () => {
  for (const ms of [0, 1.5, 2 ** 31 - 1, 2 ** 31, 30 * DAY_MS, Infinity]) {
    assert.equal(checkDuration("graceMs", ms), ms);
  }
});

Deno.test("checkDuration() refuses negative, NaN and non-numbers with a RangeError naming the option", () => {
  for (const ms of [-1, NaN, "5" as unknown as number, undefined as unknown as number]) {
    assert.throws(
      () => checkDuration("graceMs", ms),
      (e) => e instanceof RangeError && /graceMs/.test(e.message),
    );
  }
  assert.throws(
    () => checkDuration("settingsTimeoutMs", 0, { zero: false }),
    /settingsTimeoutMs must be .* > 0/,
  );
  assert.throws(() => checkDuration("x", Infinity, { infinite: false }), RangeError);
  assert.throws(() => checkDuration("x", 1.5, { integer: true }), RangeError);
  assert.throws(() => checkDuration("x", 11, { max: 10 }), /≤ 10/);
  assert.equal(checkDuration("x", 10, { max: 10 }), 10);
});

Deno.test("checkTransport() takes whole ms ≥ 0 for the idle timeout and keep-alive, 30 days included", () => {
  const transport = { maxIdleTimeout: 30 * DAY_MS, keepAliveInterval: 2 ** 31 };
  assert.equal(checkTransport(transport), transport);
  assert.equal(checkTransport(undefined), undefined);
  for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 53]) {
    assert.throws(() => checkTransport({ maxIdleTimeout: bad }), /transport\.maxIdleTimeout/);
    assert.throws(() => checkTransport({ keepAliveInterval: bad }), /transport\.keepAliveInterval/);
  }
});

Deno.test("settledWithin(): the promise first is true, the time first is false; a rejection counts as settled", async () => {
  assert.equal(await settledWithin(Promise.resolve(), 1_000), true);
  assert.equal(await settledWithin(Promise.reject(new Error("x")), 1_000), true);
  assert.equal(await settledWithin(new Promise(() => {}), 10), false);
});

Deno.test("settledWithin(): 2^31 - 1, 2^31, 30 days and Infinity do not run out early", async () => {
  for (const ms of [2 ** 31 - 1, 2 ** 31, 30 * DAY_MS, Infinity]) {
    const done = Promise.withResolvers<void>();
    const waiting = settledWithin(done.promise, ms);
    const early = await Promise.race([
      waiting.then(() => "ran out"),
      new Promise((resolve) => setTimeout(() => resolve("still waiting"), 50)),
    ]);
    assert.equal(early, "still waiting", `${ms} ms`);
    done.resolve();
    assert.equal(await waiting, true, "and the timer is cancelled once it settles");
  }
});
