import assert from "node:assert/strict";
import { SAME_SIGNAL_MS, stopSignalAction } from "./io.ts";

Deno.test("stop signals: the first stops gracefully, a copy within 500 ms is the same, a later one exits", () => {
  assert.equal(SAME_SIGNAL_MS, 500);
  assert.equal(stopSignalAction(undefined, 1000), "stop");
  assert.equal(stopSignalAction(1000, 1000), "ignore");
  assert.equal(stopSignalAction(1000, 1499), "ignore");
  assert.equal(stopSignalAction(1000, 1500), "exit");
  assert.equal(stopSignalAction(1000, 9000), "exit");
});
