import assert from "node:assert/strict";
import { MAX_TIMEOUT_MS, setLongTimeout } from "./long_timeout.ts";

Deno.test("setLongTimeout(): a delay past 2^31 − 1 ms does not fire early, where setTimeout does", async () => {
  const early: string[] = [];
  // The runtime's own timer, for contrast: past the bound it fires almost at once.
  const raw = setTimeout(() => early.push("setTimeout"), MAX_TIMEOUT_MS + 1);
  const cancelAtBound = setLongTimeout(() => early.push("at bound"), MAX_TIMEOUT_MS);
  const cancelPast = setLongTimeout(() => early.push("past bound"), MAX_TIMEOUT_MS + 1);
  const cancelMonth = setLongTimeout(() => early.push("30 days"), 2_592_000_000);
  await new Promise((resolve) => setTimeout(resolve, 100));
  clearTimeout(raw);
  cancelAtBound();
  cancelPast();
  cancelMonth();
  assert.deepEqual(early, ["setTimeout"]);
});

Deno.test("setLongTimeout(): fires once after a short delay; cancel before stops it, after is harmless", async () => {
  let fired = 0;
  const cancel = setLongTimeout(() => fired++, 10);
  await new Promise((resolve) => setTimeout(resolve, 50));
  cancel();
  assert.equal(fired, 1);
  const stop = setLongTimeout(() => fired++, 10);
  stop();
  stop();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(fired, 1);
});

Deno.test("setLongTimeout(): Infinity never fires; negative and NaN are refused", () => {
  const cancel = setLongTimeout(() => assert.fail("fired"), Infinity);
  cancel();
  assert.throws(() => setLongTimeout(() => {}, -1), RangeError);
  assert.throws(() => setLongTimeout(() => {}, NaN), RangeError);
  for (const ms of ["1e3", "", null, true, { valueOf: () => 5 }]) {
    assert.throws(() => setLongTimeout(() => {}, ms as unknown as number), RangeError, String(ms));
  }
});

Deno.test("setLongTimeout(): with unref, a pending timer does not keep the process alive", async () => {
  const code = `import { setLongTimeout } from ${
    JSON.stringify(import.meta.resolve("./long_timeout.ts"))
  };
setLongTimeout(() => console.log("fired"), 60_000, { unref: true });
console.log("done");`;
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.equal(new TextDecoder().decode(output.stdout), "done\n");
});
