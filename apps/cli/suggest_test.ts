import assert from "node:assert/strict";
import { editDistance } from "./suggest.ts";

Deno.test("editDistance: insertions, deletions and substitutions, each one step", () => {
  assert.equal(editDistance("wait", "wait"), 0);
  assert.equal(editDistance("wiat", "wait"), 2); // a swap is two substitutions
  assert.equal(editDistance("srve", "serve"), 1);
  assert.equal(editDistance("serv", "serve"), 1);
  assert.equal(editDistance("", "abc"), 3);
  assert.equal(editDistance("abc", ""), 3);
  assert.equal(editDistance("kitten", "sitting"), 3);
  assert.equal(editDistance("zzz", "wait"), 4);
});
