// The accept watchdog's decision (http1.ts), apart from sockets and timers.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type AcceptProbe,
  RECOVERY_CHECK_MS,
  type WatchdogSettings,
  watchdogStep,
} from "./_watchdog.ts";

const settings: WatchdogSettings = {
  watchdogMs: 1_000,
  recoveredAfterMs: 5_000,
  unacceptedProbes: 3,
};
const unopened: AcceptProbe = { kind: "unopened", reason: "EMFILE" };
const unaccepted: AcceptProbe = { kind: "unaccepted", reason: "connections were not accepted" };

Deno.test("watchdogStep: a probe that cannot be opened is an accept failure at once", () => {
  assert.deepEqual(
    watchdogStep(
      { probe: unopened, outage: false, now: 10, unaccepted: 0, healthySince: 0 },
      settings,
    ),
    { action: "fail", reason: "EMFILE", unaccepted: 0, healthySince: 0 },
  );
});

Deno.test("watchdogStep: unaccepted probes fail on the third in a row, and an accepted one resets the count", () => {
  let counters = { unaccepted: 0, healthySince: 0 };
  const actions: string[] = [];
  for (const probe of [unaccepted, unaccepted, undefined, unaccepted, unaccepted, unaccepted]) {
    const step = watchdogStep({ ...counters, probe, outage: false, now: 10 }, settings);
    actions.push(step.action === "fail" ? "fail" : `wait ${step.ms}`);
    counters = { unaccepted: step.unaccepted, healthySince: step.healthySince };
  }
  assert.deepEqual(actions, [
    "wait 1000",
    "wait 1000",
    "wait 1000",
    "wait 1000",
    "wait 1000",
    "fail",
  ]);
  assert.deepEqual(counters, { unaccepted: 0, healthySince: 0 });
});

Deno.test("watchdogStep: in an outage, accepting checks every 250 ms and recovers after recoveredAfterMs", () => {
  let counters = { unaccepted: 0, healthySince: 0 };
  const steps = [];
  for (const now of [1_000, 1_250, 5_999, 6_000]) {
    const step = watchdogStep({ ...counters, probe: undefined, outage: true, now }, settings);
    counters = { unaccepted: step.unaccepted, healthySince: step.healthySince };
    steps.push(step);
  }
  assert.deepEqual(steps.map((s) => s.action === "wait" && [s.ms, s.recovered]), [
    [RECOVERY_CHECK_MS, false],
    [RECOVERY_CHECK_MS, false],
    [RECOVERY_CHECK_MS, false],
    [RECOVERY_CHECK_MS, true],
  ]);
  assert.equal(counters.healthySince, 1_000, "counted from the first accepting check");
  // A watchdog period below 250 ms is kept; outside an outage, the period.
  const fast = { ...settings, watchdogMs: 50 };
  const seen = { probe: undefined, now: 1, unaccepted: 0, healthySince: 0 };
  assert.equal((watchdogStep({ ...seen, outage: true }, fast) as { ms: number }).ms, 50);
  assert.equal((watchdogStep({ ...seen, outage: false }, settings) as { ms: number }).ms, 1_000);
});

Deno.test("watchdogStep: recoveredAfterMs of 0 ends an outage at its first accepting check", () => {
  const step = watchdogStep(
    { probe: undefined, outage: true, now: 42, unaccepted: 0, healthySince: 0 },
    { ...settings, recoveredAfterMs: 0 },
  );
  assert.deepEqual(step, {
    action: "wait",
    ms: RECOVERY_CHECK_MS,
    recovered: true,
    unaccepted: 0,
    healthySince: 42,
  });
});

const probeArb: fc.Arbitrary<AcceptProbe> = fc.constantFrom(undefined, unopened, unaccepted);

Deno.test("watchdogStep (property): fails exactly on an unopened probe or the limit of unaccepted ones in a row; recovers only in an outage, after recoveredAfterMs of accepting", () => {
  fc.assert(
    fc.property(
      fc.record({
        watchdogMs: fc.integer({ min: 1, max: 100_000 }),
        recoveredAfterMs: fc.integer({ min: 0, max: 100_000 }),
        unacceptedProbes: fc.integer({ min: 1, max: 10 }),
      }),
      fc.array(fc.tuple(probeArb, fc.integer({ min: 0, max: 10_000 })), { maxLength: 100 }),
      (settings, checks) => {
        // The outage as http1.ts keeps it: on from a failure, off once recovered.
        let outage = false;
        let counters = { unaccepted: 0, healthySince: 0 };
        let streak = 0; // unaccepted probes in a row (the model)
        let acceptingSince: number | undefined; // first accepting check since the last failure
        let now = 1;
        for (const [probe, elapsed] of checks) {
          now += elapsed;
          const step = watchdogStep({ ...counters, probe, outage, now }, settings);
          streak = probe?.kind === "unaccepted" ? streak + 1 : 0;
          const fails = probe?.kind === "unopened" || streak >= settings.unacceptedProbes;
          assert.equal(step.action === "fail", fails);
          if (step.action === "fail") {
            assert.equal(step.reason, probe!.reason);
            assert.deepEqual([step.unaccepted, step.healthySince], [0, 0]);
            streak = 0;
            acceptingSince = undefined;
            outage = true;
          } else {
            assert.equal(step.unaccepted, streak);
            assert.ok(step.ms > 0 && step.ms <= settings.watchdogMs);
            if (outage && probe === undefined) {
              acceptingSince ??= now;
              assert.equal(step.ms, Math.min(settings.watchdogMs, RECOVERY_CHECK_MS));
              assert.equal(step.recovered, now - acceptingSince >= settings.recoveredAfterMs);
            } else {
              assert.equal(step.ms, settings.watchdogMs);
              assert.equal(step.recovered, false);
            }
            if (step.recovered) outage = false;
          }
          counters = { unaccepted: step.unaccepted, healthySince: step.healthySince };
        }
      },
    ),
  );
});
