import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { EarlyData, type EarlyLimits } from "./early.ts";

test("early streams and datagrams are handed over in arrival order, per session", () => {
  const early = new EarlyData<string>();
  assert.equal(early.addStream(0, "a"), true);
  assert.equal(early.addStream(4, "b"), true);
  assert.equal(early.addStream(0, "c"), true);
  assert.equal(early.addDatagram(0, new Uint8Array([1])), true);
  assert.equal(early.addDatagram(0, new Uint8Array([2, 2])), true);
  const zero = early.take(0);
  assert.deepEqual(zero.streams, ["a", "c"]);
  assert.deepEqual(zero.datagrams.map((d) => [...d]), [[1], [2, 2]]);
  assert.deepEqual(early.take(0), { streams: [], datagrams: [] });
  assert.deepEqual(early.size, { streams: 1, datagrams: 0, datagramBytes: 0 });
  assert.deepEqual(early.takeAll().streams, ["b"]);
  assert.deepEqual(early.size, { streams: 0, datagrams: 0, datagramBytes: 0 });
});

test("past a bound the newest stream is refused and the newest datagram dropped", () => {
  const early = new EarlyData<number>({ streams: 2, datagrams: 2, datagramBytes: 10 });
  assert.equal(early.addStream(0, 1), true);
  assert.equal(early.addStream(8, 2), true);
  assert.equal(early.addStream(0, 3), false);
  assert.equal(early.addDatagram(0, new Uint8Array(8)), true);
  assert.equal(early.addDatagram(0, new Uint8Array(3)), false); // 11 bytes
  assert.equal(early.addDatagram(0, new Uint8Array(2)), true);
  assert.equal(early.addDatagram(0, new Uint8Array(0)), false); // a third
  early.take(0); // room again
  assert.equal(early.addStream(0, 4), true);
  assert.equal(early.addDatagram(4, new Uint8Array(10)), true);
});

type Op =
  | { op: "stream"; id: number }
  | { op: "datagram"; id: number; size: number }
  | { op: "take"; id: number }
  | { op: "takeAll" };

test("property: under any interleaving nothing is lost or reordered and no bound is passed", () => {
  const id = fc.constantFrom(0, 4, 8);
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ op: fc.constant("stream" as const), id }),
    fc.record({ op: fc.constant("datagram" as const), id, size: fc.nat(40) }),
    fc.record({ op: fc.constant("take" as const), id }),
    fc.record({ op: fc.constant("takeAll" as const) }),
  );
  const limits = fc.record({
    streams: fc.nat(6),
    datagrams: fc.nat(6),
    datagramBytes: fc.nat(100),
  });
  fc.assert(fc.property(limits, fc.array(op, { maxLength: 60 }), (bounds: EarlyLimits, ops) => {
    const early = new EarlyData<number>(bounds);
    // The model: what each session should hold, and every item ever kept or handed over.
    const model = new Map<number, { streams: number[]; datagrams: number[] }>();
    const kept = new Set<number>();
    const handed = new Set<number>();
    let serial = 0;
    const hand = (
      got: { streams: number[]; datagrams: Uint8Array[] },
      want: { streams: number[]; datagrams: number[] },
    ) => {
      assert.deepEqual(got.streams, want.streams);
      assert.deepEqual(got.datagrams.map((d) => d[0] ?? -1), want.datagrams.map((n) => n));
      for (const n of [...want.streams, ...want.datagrams]) handed.add(n);
    };
    for (const step of ops) {
      const entry = (i: number) =>
        model.get(i) ?? model.set(i, { streams: [], datagrams: [] }).get(i)!;
      if (step.op === "stream") {
        const n = serial++;
        if (early.addStream(step.id, n)) (entry(step.id).streams.push(n), kept.add(n));
      } else if (step.op === "datagram") {
        const n = serial++ % 256;
        const payload = new Uint8Array(step.size).fill(n);
        if (early.addDatagram(step.id, payload)) {
          // Datagrams are told apart by their first byte; an empty one reads as -1.
          entry(step.id).datagrams.push(step.size ? n : -1);
        }
      } else if (step.op === "take") {
        hand(early.take(step.id), model.get(step.id) ?? { streams: [], datagrams: [] });
        model.delete(step.id);
      } else {
        const got = early.takeAll();
        const want = { streams: [] as number[], datagrams: [] as number[] };
        for (const held of model.values()) {
          want.streams.push(...held.streams);
          want.datagrams.push(...held.datagrams);
        }
        hand(got, want);
        model.clear();
      }
      const size = early.size;
      assert.ok(size.streams <= bounds.streams);
      assert.ok(size.datagrams <= bounds.datagrams);
      assert.ok(size.datagramBytes <= bounds.datagramBytes);
      const held = [...model.values()];
      assert.equal(size.streams, held.reduce((sum, h) => sum + h.streams.length, 0));
      assert.equal(size.datagrams, held.reduce((sum, h) => sum + h.datagrams.length, 0));
    }
    // Every kept stream was either handed over or is still held.
    for (const n of kept) {
      assert.ok(handed.has(n) || [...model.values()].some((h) => h.streams.includes(n)));
    }
  }));
});
