// The hold limits' pure accounting (the arrival rate's token bucket is @duet/net/rate's,
// tested in packages/net/rate_test.ts).
import assert from "node:assert/strict";
import fc from "fast-check";
import { type HoldLimits, isLoopback, WaitingLedger } from "./limits.ts";

Deno.test("WaitingLedger: per-address limit first, then count and bytes; 0 turns a limit off", () => {
  const ledger = new WaitingLedger({
    maxWaiting: 3,
    maxWaitingBytes: 100,
    maxWaitingPerAddress: 2,
  });
  assert.equal(ledger.admit("a", 10), undefined);
  assert.equal(ledger.admit("a", 10), undefined);
  assert.equal(ledger.admit("a", 0), "too_many_waiting");
  assert.equal(ledger.admit(undefined, 81), "capacity", "20 + 81 bytes > 100");
  assert.equal(ledger.admit(undefined, 80), undefined, "exactly 100 bytes");
  assert.equal(ledger.admit("b", 0), "capacity", "3 parties held");
  assert.deepEqual([ledger.waiting, ledger.bytes, ledger.of("a"), ledger.addresses], [
    3,
    100,
    2,
    1,
  ]);
  ledger.release("a", 10);
  ledger.release("a", 10);
  ledger.release(undefined, 80);
  assert.deepEqual([ledger.waiting, ledger.bytes, ledger.addresses], [0, 0, 0]);
  const unlimited = new WaitingLedger({
    maxWaiting: 1,
    maxWaitingBytes: 0,
    maxWaitingPerAddress: 0,
  });
  assert.equal(unlimited.admit("a", 1e9), undefined);
  assert.equal(unlimited.addresses, 0, "no per-address accounting when it is off");
  assert.throws(
    () => new WaitingLedger({ maxWaiting: 0, maxWaitingBytes: 0, maxWaitingPerAddress: 0 }),
    RangeError,
  );
});

Deno.test("WaitingLedger property: any sequence of admissions and releases keeps every limit and leaks nothing", () => {
  const limits = fc.record({
    maxWaiting: fc.integer({ min: 1, max: 8 }),
    maxWaitingBytes: fc.constantFrom(0, 50, 200),
    maxWaitingPerAddress: fc.integer({ min: 0, max: 4 }),
  });
  const op = fc.oneof(
    fc.record({
      admit: fc.constant(true),
      address: fc.option(fc.constantFrom("a", "b", "c"), { nil: undefined }),
      bytes: fc.integer({ min: 0, max: 60 }),
    }),
    fc.record({ admit: fc.constant(false), index: fc.nat() }),
  );
  fc.assert(
    fc.property(limits, fc.array(op, { maxLength: 200 }), (limits: HoldLimits, ops) => {
      const ledger = new WaitingLedger(limits);
      const held: { address: string | undefined; bytes: number }[] = [];
      const ofAddress = (a: string) => held.filter((h) => h.address === a).length;
      const sum = () => held.reduce((n, h) => n + h.bytes, 0);
      for (const o of ops) {
        if (o.admit) {
          const { address, bytes } = o;
          const expected = address !== undefined && limits.maxWaitingPerAddress > 0 &&
              ofAddress(address) >= limits.maxWaitingPerAddress
            ? "too_many_waiting"
            : held.length >= limits.maxWaiting ||
                (limits.maxWaitingBytes > 0 && sum() + bytes > limits.maxWaitingBytes)
            ? "capacity"
            : undefined;
          assert.equal(ledger.admit(address, bytes), expected);
          if (expected === undefined) held.push({ address, bytes });
        } else if (held.length > 0) {
          const [gone] = held.splice(o.index % held.length, 1);
          ledger.release(gone!.address, gone!.bytes);
        }
        assert.equal(ledger.waiting, held.length);
        assert.equal(ledger.bytes, sum());
        assert.ok(ledger.waiting <= limits.maxWaiting);
        if (limits.maxWaitingBytes > 0) assert.ok(ledger.bytes <= limits.maxWaitingBytes);
        for (const a of ["a", "b", "c"]) {
          if (limits.maxWaitingPerAddress > 0) {
            assert.equal(ledger.of(a), ofAddress(a));
            assert.ok(ledger.of(a) <= limits.maxWaitingPerAddress);
          }
        }
      }
      for (const h of held.splice(0)) ledger.release(h.address, h.bytes);
      assert.deepEqual([ledger.waiting, ledger.bytes, ledger.addresses], [0, 0, 0]);
    }),
  );
});

Deno.test("isLoopback: 127/8, ::1 and IPv4-mapped 127/8, nothing else", () => {
  for (const address of ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "::FFFF:127.0.0.2"]) {
    assert.equal(isLoopback(address), true, address);
  }
  for (
    const address of ["10.0.0.1", "128.0.0.1", "::2", "::ffff:10.0.0.1", "2001:db8::1", "1.127.0.0"]
  ) {
    assert.equal(isLoopback(address), false, address);
  }
});
