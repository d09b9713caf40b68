import assert from "node:assert/strict";
import { checkTransport, settledWithin } from "./duration.ts";

const DAY_MS = 86_400_000;

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
