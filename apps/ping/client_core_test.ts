// The ping client's decisions alone (no sockets, no timers, no clock): scripted runs of
// the state machine, and fast-check properties over any interleaving of ticks, replies
// (late, duplicated, after a reconnection), timeouts, connection results, lost links,
// watchdog turns and the user's abort, checked against the rules: every ping sent is
// accounted for exactly once, the counts add up at every step, nothing after the stop.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  INITIAL_PING_STATE,
  type PingCoreCommand,
  type PingCoreConfig,
  type PingCoreEvent,
  type PingCoreState,
  type PingEvent,
  stepPing,
  tally,
} from "./client_core.ts";

const A = { href: "https://a.test:4433/ping", host: "a.test:4433" };
const B = { href: "https://b.test:4433/ping", host: "b.test:4433" };

const CONFIG: PingCoreConfig = {
  targets: [A],
  count: 3,
  intervalMs: 1000,
  payloadBytes: 4,
  timeoutMs: 2000,
  heartbeatMs: 500,
  deadAfterMs: 2000,
  backoff: { baseMs: 100, maxMs: 5000 },
  giveUpAfterMs: 60_000,
};

/** Runs `events` from the start; the final state and every command, in order. */
function run(events: PingCoreEvent[], config = CONFIG, from = INITIAL_PING_STATE) {
  let state = from;
  const commands: PingCoreCommand[] = [];
  for (const event of events) {
    const step = stepPing(state, event, config);
    state = step.state;
    commands.push(...step.commands);
  }
  return { state, commands };
}

const reports = (commands: PingCoreCommand[]): PingEvent[] =>
  commands.flatMap((c) => (c.type === "report" ? [c.event] : []));

Deno.test("core: connects, pings on each tick, matches replies, stops once count are accounted for", () => {
  const { state, commands } = run([
    { type: "start", now: 0 },
    { type: "connected", now: 5, linkId: 1 },
    { type: "reply", now: 7, line: "pong 1 xxxx", transport: "webtransport" },
    { type: "tick", now: 1005 },
    { type: "reply", now: 1008, line: "error nope", transport: "webtransport" },
    { type: "reply", now: 1009, line: "pong 2 xxxx", transport: "websocket" },
    { type: "tick", now: 2005 },
    { type: "timeout", now: 4005, seq: 3 },
  ]);
  assert.deepEqual(commands, [
    { type: "connect", url: A.href },
    { type: "report", event: { type: "connected", url: A.href, attempt: 0, first: true } },
    { type: "start-ticking", ms: 1000 },
    { type: "arm-timeout", seq: 1, ms: 2000 },
    { type: "send", line: "ping 1 xxxx" },
    {
      type: "report",
      event: { type: "reply", seq: 1, rttMs: 2, bytes: 11, transport: "webtransport" },
    },
    { type: "arm-timeout", seq: 2, ms: 2000 },
    { type: "send", line: "ping 2 xxxx" },
    {
      type: "report",
      event: { type: "reply", seq: 2, rttMs: 4, bytes: 11, transport: "websocket" },
    },
    { type: "arm-timeout", seq: 3, ms: 2000 },
    { type: "send", line: "ping 3 xxxx" },
    { type: "report", event: { type: "timeout", seq: 3 } },
    { type: "stop" },
  ]);
  assert.deepEqual(tally(state, 4005), {
    transmitted: 3,
    received: 2,
    receivedOverWebSocket: 1,
    timeouts: 1,
    lostNoConnection: 0,
    errors: 0,
    lossPercent: 100 / 3,
    outages: [],
    outageMs: 0,
    gaveUp: false,
  });
  assert.equal(state.phase, "stopped");
});

Deno.test("core: a late reply (after its timeout) and a duplicated one are ignored; a reply after a reconnection still counts", () => {
  const { state, commands } = run([
    { type: "start", now: 0 },
    { type: "connected", now: 0, linkId: 1 },
    { type: "timeout", now: 2000, seq: 1 },
    { type: "reply", now: 2001, line: "pong 1 xxxx", transport: "webtransport" },
    { type: "tick", now: 2002 },
    { type: "connection-lost", now: 2003, linkId: 1, reason: "connection closed" },
    { type: "connected", now: 2010, linkId: 2 },
    { type: "reply", now: 2020, line: "pong 2 xxxx", transport: "webtransport" },
    { type: "reply", now: 2021, line: "pong 2 xxxx", transport: "webtransport" },
  ], { ...CONFIG, count: 0 });
  assert.deepEqual(
    reports(commands).map((e) => e.type),
    ["connected", "timeout", "outage", "connected", "reply"],
  );
  assert.equal(state.received, 1);
  assert.equal(state.timeouts, 1);
  const connected = reports(commands).filter((e) => e.type === "connected");
  assert.deepEqual(connected[1], {
    type: "connected",
    url: A.href,
    attempt: 0,
    first: false,
    afterOutageMs: 7,
  });
});

Deno.test("core: heartbeats while idle; nothing heard for deadAfterMs drops the link and reconnects", () => {
  const { state, commands } = run([
    { type: "start", now: 0 },
    { type: "connected", now: 0, linkId: 7 },
    { type: "reply", now: 1, line: "pong 1 xxxx", transport: "webtransport" },
    { type: "watchdog", now: 600 },
    { type: "reply", now: 601, line: "pong hb1", transport: "webtransport" },
    { type: "watchdog", now: 2700 },
  ], { ...CONFIG, count: 0 });
  const after = commands.slice(
    commands.findIndex((c) => c.type === "send" && c.line === "ping hb1"),
  );
  assert.deepEqual(after, [
    { type: "send", line: "ping hb1" },
    { type: "send", line: "ping hb2" },
    { type: "drop-link", linkId: 7, reason: "no answer for 2099 ms" },
    { type: "report", event: { type: "outage", reason: "no answer for 2099 ms" } },
    { type: "connect", url: A.href },
  ]);
  assert.equal(state.phase, "connecting");
  assert.equal(state.outages.length, 1);
  // The loss of the dropped link, reported afterwards by the fallback machine, is ignored.
  assert.deepEqual(
    stepPing(state, { type: "connection-lost", now: 2701, linkId: 7, reason: "x" }, CONFIG)
      .commands,
    [],
  );
});

Deno.test("core: failover: the next server at once, backoff (jittered) after a whole pass, then round again", () => {
  const config = { ...CONFIG, targets: [A, B] };
  const { commands } = run([
    { type: "start", now: 0 },
    { type: "connect-failed", now: 10, reason: "refused", jitter: 0.5 },
    { type: "connect-failed", now: 20, reason: "timed out", jitter: 0.5 },
    { type: "retry", now: 70 },
    { type: "connected", now: 80, linkId: 3 },
  ], config);
  assert.deepEqual(commands, [
    { type: "connect", url: A.href },
    {
      type: "report",
      event: {
        type: "switching",
        url: B.href,
        from: A.href,
        reason: "a.test:4433 failed (refused)",
      },
    },
    { type: "connect", url: B.href },
    {
      type: "report",
      event: { type: "reconnecting", attempt: 1, delayMs: 50, error: "timed out" },
    },
    { type: "reconnect-after", ms: 50 },
    {
      type: "report",
      event: {
        type: "switching",
        url: A.href,
        from: B.href,
        reason: "all 2 servers failed; going round again",
      },
    },
    { type: "connect", url: A.href },
    {
      type: "report",
      event: { type: "connected", url: A.href, attempt: 2, first: true, afterOutageMs: 70 },
    },
    { type: "start-ticking", ms: 1000 },
    { type: "arm-timeout", seq: 1, ms: 2000 },
    { type: "send", line: "ping 1 xxxx" },
  ]);
});

Deno.test("core: every server of a pass refusing (401, 404) ends the run; a 500 does not", () => {
  const config = { ...CONFIG, targets: [A, B] };
  const refused = run([
    { type: "start", now: 0 },
    { type: "connect-failed", now: 1, reason: "401", status: 401, jitter: 0 },
    { type: "connect-failed", now: 2, reason: "404", status: 404, jitter: 0 },
  ], config);
  assert.deepEqual(reports(refused.commands).at(-1), {
    type: "refused",
    status: 404,
    reason: "no ping service at this path",
  });
  assert.equal(refused.commands.at(-1)?.type, "stop");
  assert.equal(tally(refused.state, 2).refusedStatus, 404);
  const mixed = run([
    { type: "start", now: 0 },
    { type: "connect-failed", now: 1, reason: "401", status: 401, jitter: 0 },
    { type: "connect-failed", now: 2, reason: "500", status: 500, jitter: 0 },
  ], config);
  assert.equal(mixed.state.phase, "backoff");
});

Deno.test("core: the backoff never waits past the give-up deadline, so the breaker opens on time", () => {
  const config = { ...CONFIG, giveUpAfterMs: 1000, backoff: { baseMs: 5000, maxMs: 5000 } };
  const failed = run([
    { type: "start", now: 0 },
    { type: "connect-failed", now: 100, reason: "down", jitter: 0.99 },
  ], config);
  // The outage began at 100: 1,000 ms of budget leaves 1,000 ms, not the 4,950 drawn.
  assert.deepEqual(failed.commands.find((c) => c.type === "reconnect-after"), {
    type: "reconnect-after",
    ms: 1000,
  });
  const { commands } = run([{ type: "retry", now: 1100 }], config, failed.state);
  assert.deepEqual(commands.slice(-2), [
    { type: "report", event: { type: "gave-up", outageMs: 1000 } },
    { type: "stop" },
  ]);
});

Deno.test("core: the circuit breaker: an outage past giveUpAfterMs gives up at the next attempt", () => {
  const { state, commands } = run([
    { type: "start", now: 0 },
    { type: "connect-failed", now: 100, reason: "down", jitter: 0.99 },
    { type: "retry", now: 1200 },
  ], { ...CONFIG, giveUpAfterMs: 1000 });
  assert.deepEqual(commands.slice(-2), [
    { type: "report", event: { type: "gave-up", outageMs: 1100 } },
    { type: "stop" },
  ]);
  assert.equal(state.gaveUp, true);
  assert.deepEqual(tally(state, 1300).outages, [
    { reason: "down", startedAt: 100, durationMs: 1200 },
  ]);
});

Deno.test("core: a tick while disconnected loses that ping at once; abort stops with pings in flight counted as timed out", () => {
  const { state, commands } = run([
    { type: "start", now: 0 },
    { type: "connected", now: 0, linkId: 1 },
    { type: "connection-lost", now: 10, linkId: 1, reason: "gone" },
    { type: "tick", now: 1000 },
    { type: "connected", now: 1500, linkId: 2 },
    { type: "tick", now: 2000 },
    { type: "abort", now: 2001 },
    { type: "reply", now: 2002, line: "pong 3 xxxx", transport: "webtransport" },
    { type: "tick", now: 3000 },
  ], { ...CONFIG, count: 0 });
  assert.deepEqual(reports(commands).filter((e) => e.type === "lost"), [
    { type: "lost", seq: 2, reason: "no connection" },
  ]);
  assert.equal(commands.at(-1)?.type, "stop");
  const summary = tally(state, 2001);
  assert.equal(summary.transmitted, 3);
  assert.equal(summary.timeouts, 2, "pings 1 and 3 were in flight");
  assert.equal(summary.lostNoConnection, 1);
});

Deno.test("core: aborted before the start: stopped, nothing sent, no connection tried", () => {
  const { state, commands } = run([
    { type: "abort", now: 0 },
    { type: "start", now: 0 },
    { type: "tick", now: 1 },
  ]);
  assert.deepEqual(commands, [{ type: "stop" }]);
  assert.equal(state.transmitted, 0);
});

// ---- Properties ----

/** One thing that may happen, made concrete against what the machine has done so far. */
type Action =
  | { kind: "advance"; ms: number }
  | { kind: "tick" }
  | { kind: "watchdog" }
  | { kind: "reply"; pick: number; pong: boolean; websocket: boolean }
  | { kind: "heartbeat-reply" }
  | { kind: "garbage"; line: string }
  | { kind: "timeout"; pick: number }
  | { kind: "connected" }
  | { kind: "connect-failed"; status: number | undefined; jitter: number }
  | { kind: "retry" }
  | { kind: "lost"; stale: boolean }
  | { kind: "replaced" }
  | { kind: "abort" };

const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("advance"), ms: fc.nat(3000) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("tick") }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("watchdog") }) },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("reply"),
      pick: fc.nat(20),
      pong: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, fc.constant(false)),
      websocket: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("heartbeat-reply") }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("garbage"),
      line: fc.oneof(fc.constant("pong"), fc.constant("pong 0"), fc.string({ maxLength: 8 })),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("timeout"), pick: fc.nat(20) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("connected") }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("connect-failed"),
      status: fc.constantFrom(undefined, 401, 403, 500),
      jitter: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("retry") }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("lost"), stale: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("replaced") }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("abort") }) },
);

const configArbitrary: fc.Arbitrary<PingCoreConfig> = fc.record({
  targets: fc.constantFrom([A], [A, B], [A, B, A]),
  count: fc.nat(6),
  intervalMs: fc.constant(1000),
  payloadBytes: fc.nat(3),
  timeoutMs: fc.integer({ min: 1, max: 3000 }),
  heartbeatMs: fc.integer({ min: 1, max: 1000 }),
  deadAfterMs: fc.integer({ min: 1, max: 4000 }),
  backoff: fc.constant({ baseMs: 100, maxMs: 1000 }),
  giveUpAfterMs: fc.integer({ min: 0, max: 10_000 }),
});

/**
 * What a shell would know from the commands: the pings sent and the timers armed. Turns
 * an action into an event (a reply to the `pick`-th ping sent, say, answered or not).
 */
class World {
  now = 0;
  nextLinkId = 1;
  sent: number[] = [];
  armed: number[] = [];

  event(action: Action, state: PingCoreState): PingCoreEvent | undefined {
    const now = this.now;
    const pick = (list: number[], n: number) => list.length ? list[n % list.length] : undefined;
    switch (action.kind) {
      case "advance":
        this.now += action.ms;
        return undefined;
      case "tick":
      case "watchdog":
      case "retry":
      case "abort":
        return { type: action.kind, now };
      case "reply": {
        const seq = pick(this.sent, action.pick);
        if (seq === undefined) return undefined;
        return {
          type: "reply",
          now,
          line: action.pong ? `pong ${seq} x` : `error ${seq}`,
          transport: action.websocket ? "websocket" : "webtransport",
        };
      }
      case "heartbeat-reply":
        return { type: "reply", now, line: "pong hb1", transport: "webtransport" };
      case "garbage":
        return { type: "reply", now, line: action.line, transport: "webtransport" };
      case "timeout": {
        const seq = pick(this.armed, action.pick);
        return seq === undefined ? undefined : { type: "timeout", now, seq };
      }
      case "connected":
        return { type: "connected", now, linkId: this.nextLinkId++ };
      case "connect-failed":
        return {
          type: "connect-failed",
          now,
          reason: "failed",
          ...(action.status === undefined ? {} : { status: action.status }),
          jitter: action.jitter,
        };
      case "lost":
        return {
          type: "connection-lost",
          now,
          linkId: action.stale ? -1 : state.linkId ?? -1,
          reason: "lost",
        };
      case "replaced":
        return { type: "link-replaced", now, linkId: this.nextLinkId++ };
    }
  }

  saw(command: PingCoreCommand): void {
    if (command.type === "send" && /^ping \d+/.test(command.line)) {
      this.sent.push(Number(command.line.split(" ")[1]));
    }
    if (command.type === "arm-timeout") this.armed.push(command.seq);
  }
}

Deno.test("core property: over any interleaving of events and faults, every ping is accounted for exactly once, the counts add up at every step, and nothing comes after the stop", () => {
  fc.assert(
    fc.property(configArbitrary, fc.array(action, { maxLength: 80 }), (config, actions) => {
      const world = new World();
      let state = INITIAL_PING_STATE;
      const reported = new Set<number>();
      let stops = 0, firsts = 0, timeoutReports = 0;
      const feed = (event: PingCoreEvent) => {
        const before = state;
        const step = stepPing(state, event, config);
        state = step.state;
        if (before.phase === "stopped") {
          assert.deepEqual(step.commands, [], "no command after stop");
          assert.equal(state, before, "nothing changes after stop");
          return;
        }
        for (const command of step.commands) {
          assert.equal(stops, 0, "nothing after the stop command");
          world.saw(command);
          if (command.type === "stop") stops++;
          if (command.type !== "report") continue;
          const e = command.event;
          if (
            e.type === "reply" || e.type === "error-reply" || e.type === "timeout" ||
            e.type === "lost"
          ) {
            assert.ok(!reported.has(e.seq), `ping ${e.seq} reported twice`);
            assert.ok(e.seq >= 1 && e.seq <= state.transmitted);
            reported.add(e.seq);
            if (e.type === "timeout") timeoutReports++;
          }
          if (e.type === "connected" && e.first) firsts++;
        }
        // The counts add up at every step.
        assert.equal(
          state.received + state.errors + state.timeouts + state.lostNoConnection +
            state.pending.size,
          state.transmitted,
        );
        if (config.count) assert.ok(state.transmitted <= config.count);
        if (state.phase === "up") assert.notEqual(state.linkId, null);
        for (const seq of state.pending.keys()) assert.ok(!reported.has(seq));
      };
      feed({ type: "start", now: 0 });
      for (const act of actions) {
        const event = world.event(act, state);
        if (event) feed(event);
      }
      // The user stops the run if it has not stopped by itself.
      feed({ type: "abort", now: world.now });
      assert.equal(stops, 1, "stopped exactly once");
      assert.ok(firsts <= 1, "one first connection at most");
      // Every ping sent was reported once, or was in flight at the stop and counted as
      // timed out there (silently: the run was over).
      const summary = tally(state, world.now);
      assert.equal(summary.transmitted - reported.size, summary.timeouts - timeoutReports);
      assert.equal(
        summary.received + summary.errors + summary.timeouts + summary.lostNoConnection,
        summary.transmitted,
      );
      assert.ok(summary.outages.every((o) => o.durationMs !== undefined && o.durationMs >= 0));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("core property: with count > 0, answering every ping in time ends the run with all of them received", () => {
  fc.assert(
    fc.property(
      configArbitrary.filter((c) => c.count > 0),
      fc.array(fc.nat(900), { minLength: 1, maxLength: 10 }),
      (config, rtts) => {
        let state = INITIAL_PING_STATE;
        const step = (event: PingCoreEvent) => {
          const result = stepPing(state, event, config);
          state = result.state;
          return result.commands;
        };
        step({ type: "start", now: 0 });
        let commands = step({ type: "connected", now: 0, linkId: 1 });
        let now = 0;
        for (let i = 0; i < config.count; i++) {
          const sent = commands.find((c) => c.type === "send" && !c.line.startsWith("ping hb"));
          assert.ok(sent && sent.type === "send", `ping ${i + 1} sent`);
          const rtt = Math.min(rtts[i % rtts.length]!, config.timeoutMs - 1);
          const line = sent.line.replace(/^ping/, "pong");
          commands = step({ type: "reply", now: now + rtt, line, transport: "webtransport" });
          now += config.intervalMs;
          if (i + 1 < config.count) commands = step({ type: "tick", now });
        }
        assert.equal(commands.at(-1)?.type, "stop");
        assert.equal(state.received, config.count);
        assert.equal(tally(state, now).lossPercent, 0);
      },
    ),
  );
});

Deno.test("core: a certificate the handshake refuses ends the run when the trust is fixed, and is retried when it is fetched", () => {
  const refused = [
    { type: "start", now: 0 },
    {
      type: "connect-failed",
      now: 5,
      reason: "invalid peer certificate: UnknownIssuer",
      untrusted: true,
      jitter: 0,
    },
  ] as const;
  const fixed = run([...refused], { ...CONFIG, fixedTrust: true });
  assert.equal(fixed.state.phase, "stopped");
  assert.equal(fixed.state.untrusted, true);
  assert.deepEqual(fixed.commands.slice(-2), [
    {
      type: "report",
      event: {
        type: "untrusted",
        reason:
          "the server's certificate is not one you trust (invalid peer certificate: UnknownIssuer)",
      },
    },
    { type: "stop" },
  ]);
  assert.equal(tally(fixed.state, 6).untrusted, true);
  // Hashes fetched from the server before each attempt: a rotation may heal it, so retry.
  const fetched = run([...refused], CONFIG);
  assert.equal(fetched.state.phase, "backoff");
  assert.equal(fetched.state.untrusted, false);
});
