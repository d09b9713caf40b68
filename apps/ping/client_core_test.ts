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
  backoff: { initialMs: 100, maxMs: 5000, jitter: "full" as const },
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
    { type: "arm-deadline", ms: 60_000 },
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

Deno.test("core: a late reply (after its timeout) and a duplicated one are ignored; a ping in flight when the connection is lost is reported lost then, and its late reply is ignored", () => {
  const { state, commands } = run([
    { type: "start", now: 0 },
    { type: "connected", now: 0, linkId: 1 },
    { type: "timeout", now: 2000, seq: 1 },
    { type: "reply", now: 2001, line: "pong 1 xxxx", transport: "webtransport" },
    { type: "tick", now: 2002 },
    { type: "connection-lost", now: 2003, linkId: 1, reason: "connection closed" },
    { type: "connected", now: 2010, linkId: 2 },
    { type: "reply", now: 2020, line: "pong 2 xxxx", transport: "webtransport" },
    { type: "timeout", now: 4002, seq: 2 },
    { type: "tick", now: 4003 },
    { type: "reply", now: 4004, line: "pong 3 xxxx", transport: "webtransport" },
    { type: "reply", now: 4005, line: "pong 3 xxxx", transport: "webtransport" },
  ], { ...CONFIG, count: 0 });
  assert.deepEqual(
    reports(commands).map((e) => e.type === "lost" ? `lost ${e.seq}` : e.type),
    ["connected", "timeout", "outage", "lost 2", "connected", "reply"],
  );
  assert.deepEqual(reports(commands).find((e) => e.type === "lost"), {
    type: "lost",
    seq: 2,
    reason: "connection lost",
    inFlight: true,
  });
  assert.equal(state.received, 1);
  assert.equal(state.timeouts, 1);
  assert.equal(state.lostNoConnection, 1);
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
    // The outage began at 601, the last thing heard: its deadline is 60 s after that.
    { type: "arm-deadline", ms: 601 + 60_000 - 2700 },
    { type: "connect", url: A.href },
  ]);
  assert.equal(state.phase, "connecting");
  assert.deepEqual(state.outages, [{ reason: "no answer for 2099 ms", startedAt: 601 }]);
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
    { type: "arm-deadline", ms: 60_000 },
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
      // The outage began with the first attempt, at 0.
      event: { type: "connected", url: A.href, attempt: 2, first: true, afterOutageMs: 80 },
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
    reason: "no ping service at this path (a duet ping server's is /ping: https://HOST:PORT/ping)",
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

Deno.test("core: a backoff that would end past the give-up deadline is not announced; the deadline ends the run on time", () => {
  const config = {
    ...CONFIG,
    giveUpAfterMs: 1000,
    backoff: { initialMs: 5000, maxMs: 5000, jitter: "full" as const },
  };
  const failed = run([
    { type: "start", now: 0 },
    { type: "connect-failed", now: 100, reason: "down", jitter: 0.99 },
  ], config);
  // 4,950 ms drawn, 900 left of the budget (the outage began with the attempt, at 0).
  assert.deepEqual(failed.commands, [
    { type: "arm-deadline", ms: 1000 },
    { type: "connect", url: A.href },
  ]);
  assert.equal(failed.state.phase, "backoff");
  const { state, commands } = run([{ type: "deadline", now: 1000 }], config, failed.state);
  assert.deepEqual(commands, [
    { type: "report", event: { type: "gave-up", outageMs: 1000 } },
    { type: "stop" },
  ]);
  assert.deepEqual(tally(state, 5000).outages, [{
    reason: "down",
    startedAt: 0,
    durationMs: 1000,
  }]);
});

Deno.test("core: a deadline timer that fires a fraction of a millisecond early waits out the rest, then gives up", () => {
  const config = {
    ...CONFIG,
    giveUpAfterMs: 1000,
    backoff: { initialMs: 5000, maxMs: 5000, jitter: "full" as const },
  };
  const failed = run([
    { type: "start", now: 0 },
    { type: "connect-failed", now: 100, reason: "down", jitter: 0.99 },
  ], config);
  // Timers count whole milliseconds and the clock does not: 999.6 ms for a 1000 ms timer
  // was seen, and the run then waited forever (no backoff was announced past the deadline).
  const early = run([{ type: "deadline", now: 999.6 }], config, failed.state);
  assert.equal(early.commands.length, 1);
  const [rearm] = early.commands as [{ type: string; ms: number }];
  assert.equal(rearm.type, "arm-deadline");
  assert.ok(Math.abs(rearm.ms - 0.4) < 1e-9, `${rearm.ms}`);
  const { commands } = run([{ type: "deadline", now: 1000.1 }], config, early.state);
  assert.deepEqual(commands.at(-1), { type: "stop" });
});

Deno.test("core: the circuit breaker: a retry that comes after the deadline (a late timer) gives up instead of trying", () => {
  const { state, commands } = run([
    { type: "start", now: 0 },
    { type: "connect-failed", now: 100, reason: "down", jitter: 0.5 },
    { type: "retry", now: 1200 },
  ], { ...CONFIG, giveUpAfterMs: 1000 });
  assert.deepEqual(commands.slice(-4), [
    { type: "report", event: { type: "reconnecting", attempt: 1, delayMs: 50, error: "down" } },
    { type: "reconnect-after", ms: 50 },
    { type: "report", event: { type: "gave-up", outageMs: 1200 } },
    { type: "stop" },
  ]);
  assert.equal(state.gaveUp, true);
  assert.deepEqual(tally(state, 1300).outages, [
    { reason: "down", startedAt: 0, durationMs: 1200 },
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
    { type: "lost", seq: 1, reason: "connection lost", inFlight: true },
    { type: "lost", seq: 2, reason: "no connection" },
  ]);
  assert.equal(commands.at(-1)?.type, "stop");
  const summary = tally(state, 2001);
  assert.equal(summary.transmitted, 3);
  assert.equal(summary.timeouts, 1, "ping 3 was in flight at the stop");
  assert.equal(summary.lostNoConnection, 2, "ping 1 in flight at the loss, ping 2 due during it");
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
  backoff: fc.constant({ initialMs: 100, maxMs: 1000, jitter: "full" as const } as const),
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
        reason: "the server's certificate is not one you trust: it is not issued by a CA " +
          "trusted here, and no hash given matches it",
        detail: "invalid peer certificate: UnknownIssuer",
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

Deno.test("core: the first attempt fails: the outage began when it began; the attempt announced is made, and the deadline ends the next one while it is under way", () => {
  // The item's own figures: a QUIC handshake gets no answer for 2 s, 3 s of budget.
  const config = { ...CONFIG, giveUpAfterMs: 3000 };
  const { state, commands } = run([
    { type: "start", now: 0 },
    {
      type: "connect-failed",
      now: 2000,
      reason: "connecting timed out after 2000 ms",
      jitter: 0.04,
    },
    { type: "retry", now: 2004 },
    { type: "deadline", now: 3000 },
    { type: "connect-failed", now: 3001, reason: "aborted", jitter: 0 },
  ], config);
  assert.deepEqual(commands, [
    { type: "arm-deadline", ms: 3000 },
    { type: "connect", url: A.href },
    {
      type: "report",
      event: {
        type: "reconnecting",
        attempt: 1,
        delayMs: 4,
        error: "connecting timed out after 2000 ms",
      },
    },
    { type: "reconnect-after", ms: 4 },
    { type: "connect", url: A.href },
    { type: "report", event: { type: "gave-up", outageMs: 3000 } },
    { type: "stop" },
  ]);
  assert.deepEqual(tally(state, 3500).outages, [
    { reason: "connecting timed out after 2000 ms", startedAt: 0, durationMs: 3000 },
  ]);
});

Deno.test("core: a first attempt still under way at the deadline ends the run there, with the outage counted from the start", () => {
  const { state, commands } = run([
    { type: "start", now: 0 },
    { type: "deadline", now: 500 },
  ], { ...CONFIG, giveUpAfterMs: 500 });
  assert.deepEqual(reports(commands), [{ type: "gave-up", outageMs: 500 }]);
  assert.deepEqual(tally(state, 900), {
    ...tally(INITIAL_PING_STATE, 0),
    outages: [{ reason: "no connection yet", startedAt: 0, durationMs: 500 }],
    outageMs: 500,
    gaveUp: true,
  });
});

Deno.test("core: a path found dead: the outage counts from the last thing heard, and the pings in flight are reported lost at once, before anything of the reconnection", () => {
  const config = { ...CONFIG, count: 0, intervalMs: 100 };
  const { state, commands } = run([
    { type: "start", now: 0 },
    { type: "connected", now: 0, linkId: 1 },
    { type: "reply", now: 1, line: "pong 1 xxxx", transport: "webtransport" },
    { type: "tick", now: 100 },
    { type: "tick", now: 200 },
    { type: "watchdog", now: 2100 }, // 2099 ms since the reply at 1
    { type: "connected", now: 2600, linkId: 2 },
    { type: "tick", now: 2700 },
    { type: "reply", now: 2701, line: "pong 3 xxxx", transport: "webtransport" }, // too late
    { type: "reply", now: 2702, line: "pong 4 xxxx", transport: "webtransport" },
    { type: "timeout", now: 2800, seq: 2 }, // its timer fires later: already accounted for
  ], config);
  assert.deepEqual(
    reports(commands).map((e) =>
      e.type === "lost" || e.type === "reply" ? `${e.type} ${e.seq}` : e.type
    ),
    ["connected", "reply 1", "outage", "lost 2", "lost 3", "connected", "reply 4"],
  );
  const connected = reports(commands).filter((e) => e.type === "connected")[1];
  assert.deepEqual(connected, {
    type: "connected",
    url: A.href,
    attempt: 0,
    first: false,
    afterOutageMs: 2599,
  });
  assert.deepEqual(tally(state, 3000).outages, [
    { reason: "no answer for 2099 ms", startedAt: 1, durationMs: 2599 },
  ]);
  assert.equal(state.timeouts, 0);
  assert.equal(state.lostNoConnection, 2);
});

Deno.test("core: a loss found after the budget is spent (the path silent longer than giveUpAfterMs) gives up at once", () => {
  const { commands } = run([
    { type: "start", now: 0 },
    { type: "connected", now: 0, linkId: 1 },
    { type: "watchdog", now: 2100 },
  ], { ...CONFIG, count: 0, giveUpAfterMs: 1000 });
  assert.deepEqual(commands.slice(-6), [
    { type: "drop-link", linkId: 1, reason: "no answer for 2100 ms" },
    { type: "report", event: { type: "outage", reason: "no answer for 2100 ms" } },
    { type: "report", event: { type: "lost", seq: 1, reason: "connection lost", inFlight: true } },
    { type: "arm-deadline", ms: 0 },
    { type: "report", event: { type: "gave-up", outageMs: 2100 } },
    { type: "stop" },
  ]);
});

Deno.test("core: a failure is said once per outage: the same reason again is marked repeated, a new outage says it afresh", () => {
  const fail = (now: number) =>
    ({ type: "connect-failed", now, reason: "refused", jitter: 0 }) as const;
  const { commands } = run([
    { type: "start", now: 0 },
    fail(1),
    { type: "retry", now: 2 },
    fail(3),
    { type: "retry", now: 4 },
    { type: "connect-failed", now: 5, reason: "other", jitter: 0 },
    { type: "retry", now: 6 },
    { type: "connected", now: 7, linkId: 1 },
    { type: "connection-lost", now: 8, linkId: 1, reason: "gone" },
    fail(9),
  ], { ...CONFIG, count: 0 });
  assert.deepEqual(
    reports(commands).filter((e) => e.type === "reconnecting").map((e) =>
      e.type === "reconnecting" && `${e.error}${e.repeated ? " (repeated)" : ""}`
    ),
    ["refused", "refused (repeated)", "other", "refused"],
  );
});

Deno.test("core: a trust document reached but not usable ends the run at once, fetched trust or not; one line naming each server when they differ", () => {
  const permanent = (now: number, reason: string) =>
    ({ type: "connect-failed", now, reason, permanent: true, jitter: 0 }) as const;
  const one = run([{ type: "start", now: 0 }, permanent(1, "no hashes; pass --ca")]);
  assert.deepEqual(one.commands.slice(-2), [
    {
      type: "report",
      event: { type: "untrusted", reason: "no hashes; pass --ca", document: true },
    },
    { type: "stop" },
  ]);
  assert.equal(tally(one.state, 1).untrusted, true);
  const two = run([
    { type: "start", now: 0 },
    permanent(1, "bad document"),
    permanent(2, "no hashes"),
  ], { ...CONFIG, targets: [A, B] });
  assert.deepEqual(reports(two.commands).at(-1), {
    type: "untrusted",
    reason: "a.test:4433: bad document; b.test:4433: no hashes",
    document: true,
  });
  // One server that does not answer keeps the run going: it may come back.
  const mixed = run([
    { type: "start", now: 0 },
    permanent(1, "bad document"),
    { type: "connect-failed", now: 2, reason: "cannot reach the server", jitter: 0 },
  ], { ...CONFIG, targets: [A, B] });
  assert.equal(mixed.state.phase, "backoff");
});

Deno.test("core: a ping too large for the path ends the run at once with its size, no reconnection", () => {
  const { state, commands } = run([
    { type: "start", now: 0 },
    { type: "connected", now: 0, linkId: 4 },
    { type: "too-large", now: 1, linkId: 3, reason: "datagram too large" }, // not the link in use
    { type: "too-large", now: 2, linkId: 4, reason: "datagram too large" },
  ], { ...CONFIG, payloadBytes: 2000 });
  assert.deepEqual(commands.slice(-2), [
    { type: "report", event: { type: "too-large", bytes: 2007, reason: "datagram too large" } },
    { type: "stop" },
  ]);
  assert.ok(!commands.some((c) => c.type === "connect" && commands.indexOf(c) > 1));
  const summary = tally(state, 2);
  assert.equal(summary.tooLarge, true);
  assert.equal(summary.transmitted, 1);
  assert.equal(summary.timeouts, 1, "the ping that did not fit, in flight at the stop");
});

// ---- Outage accounting, against a model of the shell's timers ----

/** What may happen to a run whose timers fire on time. */
type Happening =
  | { kind: "advance"; ms: number } // time passes: due timers and replies fire, in order
  | { kind: "connect-ok" } // the attempt under way connects
  | { kind: "connect-fail"; status: number | undefined; jitter: number }
  | { kind: "close" } // the link in use is reported lost
  | { kind: "silence" } // the server stops answering on the link in use, unannounced
  | { kind: "abort" };

const happening: fc.Arbitrary<Happening> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("advance"), ms: fc.nat(2500) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("connect-ok") }) },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("connect-fail"),
      status: fc.constantFrom(undefined, undefined, 500, 401),
      jitter: fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("close") }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("silence") }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("abort") }) },
);

const timedConfig: fc.Arbitrary<PingCoreConfig> = fc.record({
  targets: fc.constantFrom([A], [A, B]),
  count: fc.nat(8),
  intervalMs: fc.integer({ min: 50, max: 1500 }),
  payloadBytes: fc.constant(1),
  timeoutMs: fc.integer({ min: 10, max: 3000 }),
  heartbeatMs: fc.integer({ min: 10, max: 500 }),
  deadAfterMs: fc.integer({ min: 600, max: 3000 }),
  backoff: fc.constant({ initialMs: 100, maxMs: 2000, jitter: "full" as const } as const),
  giveUpAfterMs: fc.oneof(
    { weight: 4, arbitrary: fc.integer({ min: 1, max: 4000 }) },
    { weight: 1, arbitrary: fc.constant(Infinity) },
  ),
});

/** The shell, modelled: timers that fire when due, a server that answers in `RTT` ms. */
class TimedWorld {
  static readonly RTT = 3;
  now = 0;
  state = INITIAL_PING_STATE;
  stopped = false;
  #order = 0;
  timers: { due: number; order: number; fire: () => PingCoreEvent | undefined }[] = [];
  link: { id: number; silent: boolean } | null = null;
  nextLinkId = 1;
  connecting = false;
  readonly reports: { at: number; event: PingEvent }[] = [];
  readonly connects: number[] = [];
  readonly drops: number[] = [];
  lastHeard = 0;

  constructor(readonly config: PingCoreConfig) {
    const every = Math.max(10, Math.min(config.heartbeatMs, config.deadAfterMs) / 4);
    this.#periodic(every, () => ({ type: "watchdog", now: this.now }));
  }

  at(ms: number, fire: () => PingCoreEvent | undefined): void {
    this.timers.push({ due: this.now + ms, order: this.#order++, fire });
  }

  #periodic(ms: number, fire: () => PingCoreEvent): void {
    this.at(ms, () => {
      this.#periodic(ms, fire);
      return fire();
    });
  }

  feed(event: PingCoreEvent): void {
    if (event.type === "reply" || event.type === "connected") this.lastHeard = event.now;
    const step = stepPing(this.state, event, this.config);
    this.state = step.state;
    for (const command of step.commands) this.perform(command);
  }

  perform(command: PingCoreCommand): void {
    switch (command.type) {
      case "connect":
        this.connecting = true;
        this.connects.push(this.now);
        return;
      case "send": {
        const link = this.link;
        if (!link || link.silent) return;
        const reply = command.line.replace(/^ping/, "pong");
        this.at(
          TimedWorld.RTT,
          () =>
            this.link === link && !link.silent
              ? { type: "reply", now: this.now, line: reply, transport: "webtransport" }
              : undefined,
        );
        return;
      }
      case "arm-timeout":
        this.at(command.ms, () => ({ type: "timeout", now: this.now, seq: command.seq }));
        return;
      case "start-ticking":
        this.#periodic(command.ms, () => ({ type: "tick", now: this.now }));
        return;
      case "reconnect-after":
        this.at(command.ms, () => ({ type: "retry", now: this.now }));
        return;
      case "arm-deadline":
        this.at(command.ms, () => ({ type: "deadline", now: this.now }));
        return;
      case "drop-link":
        this.link = null;
        this.drops.push(this.now);
        return;
      case "report":
        this.reports.push({ at: this.now, event: command.event });
        return;
      case "stop":
        this.stopped = true;
        this.connecting = false;
        return;
    }
  }

  advance(ms: number): void {
    const until = this.now + ms;
    for (;;) {
      const next = this.timers.filter((t) => t.due <= until)
        .sort((a, b) => a.due - b.due || a.order - b.order)[0];
      if (!next || this.stopped) break;
      this.timers.splice(this.timers.indexOf(next), 1);
      this.now = next.due;
      const event = next.fire();
      if (event) this.feed(event);
    }
    this.now = until;
  }

  happen(h: Happening): void {
    if (this.stopped) return;
    switch (h.kind) {
      case "advance":
        return this.advance(h.ms);
      case "connect-ok":
        if (!this.connecting) return;
        this.connecting = false;
        this.link = { id: this.nextLinkId++, silent: false };
        return this.feed({ type: "connected", now: this.now, linkId: this.link.id });
      case "connect-fail":
        if (!this.connecting) return;
        this.connecting = false;
        return this.feed({
          type: "connect-failed",
          now: this.now,
          reason: "failed",
          ...(h.status === undefined ? {} : { status: h.status }),
          jitter: h.jitter,
        });
      case "close": {
        const link = this.link;
        if (!link) return;
        this.link = null;
        return this.feed({ type: "connection-lost", now: this.now, linkId: link.id, reason: "x" });
      }
      case "silence":
        if (this.link) this.link.silent = true;
        return;
      case "abort":
        return this.feed({ type: "abort", now: this.now });
    }
  }
}

Deno.test("core property: outages over generated runs with timers on time: their total is the time spent disconnected, the breaker opens at the deadline (or when the loss is found, if later), every attempt announced is made, and every ping is counted once", () => {
  fc.assert(
    fc.property(timedConfig, fc.array(happening, { maxLength: 60 }), (config, happenings) => {
      const world = new TimedWorld(config);
      // The model's own account: when it lost the connection, and the time spent so.
      let lostAt: number | null = null;
      let foundAt = 0;
      let disconnectedMs = 0;
      let everConnected = false;
      const seen = { reports: 0, drops: 0 };
      const check = () => {
        for (; seen.drops < world.drops.length; seen.drops++) {
          // A path found dead: lost since the last thing heard on it.
          lostAt = world.lastHeard;
          foundAt = world.drops[seen.drops]!;
        }
        for (; seen.reports < world.reports.length; seen.reports++) {
          const { at, event } = world.reports[seen.reports]!;
          if (event.type === "gave-up") {
            const start = lostAt ?? 0; // never connected: the first attempt began at 0
            const deadline = start + config.giveUpAfterMs;
            assert.ok(at >= deadline, `gave up at ${at}, before the deadline ${deadline}`);
            assert.ok(
              at <= Math.max(deadline, everConnected ? foundAt : 0),
              `gave up at ${at}, after the deadline ${deadline} (loss found at ${foundAt})`,
            );
            assert.equal(event.outageMs, at - start);
          }
        }
      };
      const act = (h: Happening) => {
        if (world.stopped) return;
        const wasUp = world.link !== null && !world.stopped;
        const before = world.state.phase;
        world.happen(h);
        check();
        if (h.kind === "close" && wasUp && before === "up") {
          lostAt = world.now;
          foundAt = world.now;
        }
        // A failed first connection: since the start (unless it ended the run as refused).
        const refused = world.state.refusedStatus !== null;
        if (h.kind === "connect-fail" && !refused && !everConnected && lostAt === null) lostAt = 0;
        if (h.kind === "connect-ok" && world.state.phase === "up" && before === "connecting") {
          if (lostAt !== null) disconnectedMs += world.now - lostAt;
          lostAt = null;
          everConnected = true;
        }
      };
      world.feed({ type: "start", now: 0 });
      for (const h of happenings) act(h);
      act({ kind: "abort" });
      assert.ok(world.stopped);
      const end = world.state.stoppedAt!;
      if (world.state.gaveUp && lostAt === null) lostAt = 0; // no attempt ended before it
      if (lostAt !== null) disconnectedMs += end - lostAt;
      const summary = tally(world.state, end + 1000);
      assert.equal(summary.outageMs, disconnectedMs, JSON.stringify(summary.outages));

      // Every attempt announced is made when its delay is over, unless the run was ended
      // first by something other than the breaker (the user, the last ping accounted for).
      for (const { at, event } of world.reports) {
        if (event.type !== "reconnecting") continue;
        const due = at + event.delayMs;
        assert.ok(
          world.connects.includes(due) || (due >= end && !world.state.gaveUp),
          `attempt announced at ${at} for ${due} never made (stopped at ${end})`,
        );
      }
      // Every ping sent is counted once: reported once, or in flight at the stop.
      const seqs = world.reports.flatMap(({ event }) =>
        ["reply", "timeout", "lost", "error-reply"].includes(event.type)
          ? [(event as { seq: number }).seq]
          : []
      );
      assert.equal(new Set(seqs).size, seqs.length, "a ping reported twice");
      const timedOut = world.reports.filter(({ event }) => event.type === "timeout").length;
      assert.equal(summary.transmitted - seqs.length, summary.timeouts - timedOut);
      assert.equal(
        summary.received + summary.errors + summary.timeouts + summary.lostNoConnection,
        summary.transmitted,
      );
    }),
    { numRuns: 1500 },
  );
});
