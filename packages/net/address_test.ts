// Counting per address: a cap per address, 0 for none, addresses holding nothing forgotten.
import assert from "node:assert/strict";
import { AddressCounter, hostPort } from "./address.ts";

Deno.test("AddressCounter: a cap per address, 0 for none; addresses holding nothing are forgotten", () => {
  const two = new AddressCounter(2);
  assert.equal(two.tryAcquire("a"), true);
  assert.equal(two.tryAcquire("a"), true);
  assert.equal(two.tryAcquire("a"), false, "a third from one address");
  assert.equal(two.tryAcquire("b"), true, "another address has its own slots");
  assert.equal(two.total, 3);
  two.release("a");
  assert.equal(two.held("a"), 1);
  assert.equal(two.tryAcquire("a"), true, "room again");
  two.release("a");
  two.release("a");
  two.release("b");
  assert.equal(two.total, 0);
  assert.equal(two.held("a"), 0);
  two.release("never"); // a stray release does not go negative
  assert.equal(two.held("never"), 0);
  const none = new AddressCounter(0);
  for (let i = 0; i < 1000; i++) assert.equal(none.tryAcquire("a"), true);
  assert.equal(none.held("a"), 1000);
});

Deno.test("hostPort: one value for a host and a port, IPv6 in brackets", () => {
  assert.equal(hostPort("127.0.0.1", 7070), "127.0.0.1:7070");
  assert.equal(hostPort("::1", 7070), "[::1]:7070");
  assert.equal(hostPort("localhost", 0), "localhost:0");
});
