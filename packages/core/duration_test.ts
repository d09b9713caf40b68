import assert from "node:assert/strict";
import { checkDuration } from "./duration.ts";
import { MAX_TIMEOUT_MS } from "./long_timeout.ts";

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

Deno.test("checkDuration() with max MAX_TIMEOUT_MS: 2^31 - 1 passes, 2^31 and 30 days are refused, saying how long that is", () => {
  const bounds = { max: MAX_TIMEOUT_MS };
  assert.equal(checkDuration("idleTimeoutMs", 2 ** 31 - 1, bounds), 2 ** 31 - 1);
  for (const ms of [2 ** 31, 30 * DAY_MS, Infinity]) {
    assert.throws(
      () => checkDuration("idleTimeoutMs", ms, bounds),
      /idleTimeoutMs .*about 24\.8 days/,
    );
  }
});
