import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  DEFAULT_WINDOWS,
  FlowCapsule,
  flowControlEnabled,
  FlowControlError,
  initialLimits,
  MAX_STREAM_COUNT,
  SessionFlow,
} from "./flow.ts";
import { localSettings } from "./dialect.ts";
import { Setting } from "./frames.ts";

const limits = (maxData: number, maxStreamsBidi: number, maxStreamsUni: number) => ({
  maxData,
  maxStreamsBidi,
  maxStreamsUni,
});

test("flow control is on only in drafts 13-16 and only when both sides ask", () => {
  const asking = localSettings("client", ["draft16", "draft14"]);
  const notAsking = localSettings("client", ["draft02"]);
  assert.equal(flowControlEnabled("draft16", asking, asking), true);
  assert.equal(flowControlEnabled("draft14", asking, asking), true);
  assert.equal(flowControlEnabled("draft16", asking, notAsking), false);
  assert.equal(flowControlEnabled("draft07", asking, asking), false);
  assert.equal(flowControlEnabled("draft02", asking, asking), false);
  // Drafts 13-14 also count a session limit above 1 as asking; draft 16 has no such limit.
  const manySessions = new Map([[Setting.WT_MAX_SESSIONS, 2]]);
  assert.equal(flowControlEnabled("draft14", asking, manySessions), true);
  assert.equal(flowControlEnabled("draft16", asking, manySessions), false);
  assert.deepEqual(initialLimits(new Map()), limits(0, 0, 0));
  assert.deepEqual(initialLimits(asking), DEFAULT_WINDOWS);
});

test("a sender spends the peer's credit and waits at its limits until a capsule raises them", () => {
  const flow = new SessionFlow(limits(10, 1, 0), DEFAULT_WINDOWS);
  assert.equal(flow.takeStream("bidi"), true);
  assert.equal(flow.takeStream("bidi"), false);
  assert.equal(flow.takeStream("uni"), false);
  assert.deepEqual(flow.streamsBlocked("uni"), {
    type: FlowCapsule.WT_STREAMS_BLOCKED_UNI,
    value: 0,
  });
  assert.equal(flow.takeData(4), 4);
  assert.equal(flow.takeData(100), 6);
  assert.equal(flow.takeData(1), 0);
  assert.deepEqual(flow.dataBlocked(), { type: FlowCapsule.WT_DATA_BLOCKED, value: 10 });
  assert.equal(flow.onCapsule(FlowCapsule.WT_MAX_DATA, 15), true);
  assert.equal(flow.takeData(100), 5);
  assert.equal(flow.onCapsule(FlowCapsule.WT_MAX_STREAMS_UNI, 1), true);
  assert.equal(flow.takeStream("uni"), true);
  assert.equal(flow.onCapsule(FlowCapsule.WT_DATA_BLOCKED, 3), false, "informational");
  assert.equal(flow.onCapsule(0x2843, 0), false, "not flow control");
});

test("limits that do not rise, stream limits above 2^60 and per-stream capsules are errors", () => {
  const flow = new SessionFlow(limits(10, 1, 1), DEFAULT_WINDOWS);
  assert.throws(() => flow.onCapsule(FlowCapsule.WT_MAX_DATA, 10), FlowControlError);
  assert.throws(() => flow.onCapsule(FlowCapsule.WT_MAX_STREAMS_BIDI, 0), FlowControlError);
  assert.throws(
    () => flow.onCapsule(FlowCapsule.WT_MAX_STREAMS_UNI, MAX_STREAM_COUNT * 2),
    FlowControlError,
  );
  assert.throws(
    () => flow.onCapsule(FlowCapsule.WT_STREAMS_BLOCKED_BIDI, MAX_STREAM_COUNT * 2),
    FlowControlError,
  );
  assert.throws(() => flow.onCapsule(FlowCapsule.WT_MAX_STREAM_DATA, 100), FlowControlError);
  assert.throws(() => flow.onCapsule(FlowCapsule.WT_STREAM_DATA_BLOCKED, 100), FlowControlError);
});

test("a receiver checks the peer against its windows and raises them at half used", () => {
  const flow = new SessionFlow(DEFAULT_WINDOWS, limits(100, 4, 2));
  flow.receivedData(40);
  assert.equal(flow.consumedData(40), undefined, "60 left of 100: not yet");
  flow.receivedData(20);
  assert.deepEqual(flow.consumedData(20), { type: FlowCapsule.WT_MAX_DATA, value: 160 });
  assert.throws(() => flow.receivedData(101), FlowControlError, "161 > 160");
  flow.receivedStream("uni");
  flow.receivedStream("uni");
  assert.throws(() => flow.receivedStream("uni"), FlowControlError);
  assert.deepEqual(flow.closedStream("uni"), { type: FlowCapsule.WT_MAX_STREAMS_UNI, value: 3 });
  flow.receivedStream("bidi");
  assert.equal(flow.closedStream("bidi"), undefined, "3 of 4 left");
});

type Step =
  | { kind: "open"; bidi: boolean }
  | { kind: "send"; bytes: number }
  | { kind: "raise"; what: 0 | 1 | 2; by: number };

test("property: under any interleaving a sender never passes the peer's current limits", () => {
  const step: fc.Arbitrary<Step> = fc.oneof(
    fc.record({ kind: fc.constant("open" as const), bidi: fc.boolean() }),
    fc.record({ kind: fc.constant("send" as const), bytes: fc.nat(50) }),
    fc.record({
      kind: fc.constant("raise" as const),
      what: fc.constantFrom(0, 1, 2) as fc.Arbitrary<0 | 1 | 2>,
      by: fc.integer({ min: -3, max: 30 }),
    }),
  );
  fc.assert(
    fc.property(
      fc.nat(40),
      fc.nat(3),
      fc.nat(3),
      fc.array(step, { maxLength: 80 }),
      (data, bidi, uni, steps) => {
        const flow = new SessionFlow(limits(data, bidi, uni), DEFAULT_WINDOWS);
        const model = { data, bidi, uni, sent: 0, openedBidi: 0, openedUni: 0 };
        for (const s of steps) {
          if (s.kind === "open") {
            const allowed = s.bidi ? model.openedBidi < model.bidi : model.openedUni < model.uni;
            assert.equal(flow.takeStream(s.bidi ? "bidi" : "uni"), allowed);
            if (allowed) s.bidi ? model.openedBidi++ : model.openedUni++;
          } else if (s.kind === "send") {
            const granted = flow.takeData(s.bytes);
            assert.equal(granted, Math.min(s.bytes, model.data - model.sent));
            model.sent += granted;
          } else {
            const type = [
              FlowCapsule.WT_MAX_DATA,
              FlowCapsule.WT_MAX_STREAMS_BIDI,
              FlowCapsule.WT_MAX_STREAMS_UNI,
            ][s.what]!;
            const key = (["data", "bidi", "uni"] as const)[s.what];
            const value = model[key] + s.by;
            if (s.by <= 0) {
              assert.throws(() => flow.onCapsule(type, value), FlowControlError);
            } else {
              assert.equal(flow.onCapsule(type, value), true);
              model[key] = value;
            }
          }
          const state = flow.state;
          assert.ok(state.sentData <= state.send.maxData);
          assert.ok(state.opened.bidi <= state.send.maxStreamsBidi);
          assert.ok(state.opened.uni <= state.send.maxStreamsUni);
        }
      },
    ),
  );
});

test("property: a peer that reads what it is granted is never refused, and keeps being granted", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 64 }),
      fc.array(fc.nat(64), { maxLength: 60 }),
      (window, chunks) => {
        const receiver = new SessionFlow(DEFAULT_WINDOWS, limits(window, 1, 1));
        const sender = new SessionFlow(limits(window, 1, 1), DEFAULT_WINDOWS);
        for (const chunk of chunks) {
          let left = chunk;
          for (let rounds = 0; left > 0; rounds++) {
            assert.ok(rounds < 1000, "the sender is starved");
            const granted = sender.takeData(left);
            left -= granted;
            receiver.receivedData(granted); // never throws: the sender kept to its credit
            const raise = receiver.consumedData(granted);
            if (raise) sender.onCapsule(raise.type, raise.value);
          }
        }
      },
    ),
  );
});

test("counting is needed only below 2^53 - 1: wide windows both ways cost nothing per write", () => {
  assert.equal(new SessionFlow(DEFAULT_WINDOWS, DEFAULT_WINDOWS).meterSend, false);
  assert.equal(new SessionFlow(DEFAULT_WINDOWS, DEFAULT_WINDOWS).meterReceive, false);
  assert.equal(new SessionFlow(limits(2 ** 62, 1, 1), DEFAULT_WINDOWS).meterSend, false);
  const bounded = new SessionFlow(limits(100, 1, 1), { ...DEFAULT_WINDOWS, maxStreamsUni: 10 });
  assert.equal(bounded.meterSend, true);
  assert.equal(bounded.meterReceive, true);
  bounded.onCapsule(FlowCapsule.WT_MAX_DATA, Number.MAX_SAFE_INTEGER);
  assert.equal(bounded.meterSend, false, "raised past any session's reach");
});
