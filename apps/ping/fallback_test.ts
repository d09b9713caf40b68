// The fallback decisions alone (no sockets, no timers): scripted runs of the state
// machine, and a fast-check property over any interleaving of connection results, lost
// links, probe timers and the end of the run, checked against a model of the shell.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  describeTransportChange,
  type FallbackCommand,
  type FallbackConfig,
  type FallbackEvent,
  type FallbackState,
  INITIAL_FALLBACK_STATE,
  stepFallback,
  type Transport,
  webSocketUrls,
} from "./fallback.ts";

const on: FallbackConfig = { enabled: true, probeIntervalMs: 5000 };
const off: FallbackConfig = { enabled: false, probeIntervalMs: 5000 };

/** Runs `events` from the start; the final state and every command, in order. */
function run(events: FallbackEvent[], config = on) {
  let state = INITIAL_FALLBACK_STATE;
  const commands: FallbackCommand[] = [];
  for (const event of events) {
    const step = stepFallback(state, event, config);
    state = step.state;
    commands.push(...step.commands);
  }
  return { state, commands };
}

Deno.test("fallback: QUIC answers: WebTransport, nothing announced, no WebSocket", () => {
  const { state, commands } = run([{ type: "connect" }, { type: "quic-up", id: 1 }]);
  assert.deepEqual(commands, [
    { type: "try-quic", id: 1, probe: false },
    { type: "use", id: 1, transport: "webtransport", kind: "connect" },
  ]);
  assert.equal(state.phase, "up");
  assert.equal(state.using, "webtransport");
});

Deno.test("fallback: no QUIC answer, the WebSocket opens: it is used, announced once with the reason, and probes follow until QUIC answers", () => {
  const { state, commands } = run([
    { type: "connect" },
    { type: "quic-unreachable", id: 1, reason: "no QUIC answer in 2 s" },
    { type: "ws-up", id: 2 },
    { type: "probe-due" },
    { type: "quic-unreachable", id: 3, reason: "no QUIC answer in 2 s" },
    { type: "probe-due" },
    { type: "quic-up", id: 4 },
  ]);
  assert.deepEqual(commands, [
    { type: "try-quic", id: 1, probe: false },
    { type: "try-ws", id: 2 },
    {
      type: "use",
      id: 2,
      transport: "websocket",
      kind: "connect",
      announce: { reason: "no QUIC answer in 2 s" },
    },
    { type: "arm-probe", ms: 5000 },
    { type: "try-quic", id: 3, probe: true },
    { type: "arm-probe", ms: 5000 },
    { type: "try-quic", id: 4, probe: true },
    {
      type: "use",
      id: 4,
      transport: "webtransport",
      kind: "probe",
      announce: { reason: "WebTransport answers again" },
    },
    { type: "retire", id: 2 },
  ]);
  assert.equal(state.using, "webtransport");
  assert.equal(state.linkId, 4);
  assert.equal(state.probeArmed, false);
});

Deno.test("fallback: a refusal or a trust failure is no reason to fall back; nor is anything with fallback off", () => {
  const refused = run([
    { type: "connect" },
    { type: "quic-failed", id: 1, reason: "refused with 401" },
  ]);
  assert.deepEqual(refused.commands.at(-1), { type: "failed", reason: "refused with 401" });
  assert.equal(refused.state.phase, "idle");
  const disabled = run([
    { type: "connect" },
    { type: "quic-unreachable", id: 1, reason: "no QUIC answer in 2 s" },
  ], off);
  assert.deepEqual(disabled.commands.at(-1), { type: "failed", reason: "no QUIC answer in 2 s" });
});

Deno.test("fallback: the WebSocket fails too: the attempt fails with the WebTransport reason", () => {
  const { state, commands } = run([
    { type: "connect" },
    { type: "quic-unreachable", id: 1, reason: "no QUIC answer in 2 s" },
    { type: "ws-failed", id: 2, reason: "connection refused" },
  ]);
  assert.deepEqual(commands.at(-1), { type: "failed", reason: "no QUIC answer in 2 s" });
  assert.equal(state.phase, "idle");
});

Deno.test("fallback: the WebSocket is lost during a probe: an outage; the probe's late session is discarded; reconnecting over the WebSocket again is not announced twice", () => {
  const { commands } = run([
    { type: "connect" },
    { type: "quic-unreachable", id: 1, reason: "r" },
    { type: "ws-up", id: 2 },
    { type: "probe-due" },
    { type: "lost", id: 2, reason: "WebSocket closed" },
    { type: "quic-up", id: 3 },
    { type: "connect" },
    { type: "quic-unreachable", id: 4, reason: "r" },
    { type: "ws-up", id: 5 },
  ]);
  assert.deepEqual(commands.slice(5), [
    { type: "outage", reason: "WebSocket closed" },
    { type: "discard", id: 3 },
    { type: "try-quic", id: 4, probe: false },
    { type: "try-ws", id: 5 },
    { type: "use", id: 5, transport: "websocket", kind: "connect" },
    { type: "arm-probe", ms: 5000 },
  ]);
});

Deno.test("fallback: webSocketUrls: wss first, ws only on loopback; same host and port; bad targets refused", () => {
  assert.deepEqual(webSocketUrls(new URL("https://127.0.0.1:4433/ping?x=1#f")).map(String), [
    "wss://127.0.0.1:4433/ws",
    "ws://127.0.0.1:4433/ws",
  ]);
  assert.deepEqual(webSocketUrls(new URL("https://[::1]:9/ping")).map(String), [
    "wss://[::1]:9/ws",
    "ws://[::1]:9/ws",
  ]);
  assert.deepEqual(webSocketUrls(new URL("https://user:pw@ping.example.com/ping")).map(String), [
    "wss://ping.example.com/ws",
  ]);
  assert.throws(() => webSocketUrls(new URL("http://127.0.0.1:1/ping")), TypeError);
  fc.assert(
    fc.property(fc.domain(), fc.integer({ min: 1, max: 65535 }), (host, port) => {
      const urls = webSocketUrls(new URL(`https://${host}:${port}/ping`));
      return urls.length === 1 && urls[0]!.protocol === "wss:" && urls[0]!.pathname === "/ws" &&
        urls[0]!.hostname === host && !urls[0]!.search;
    }),
  );
});

Deno.test("fallback: the lines the user reads", () => {
  assert.equal(
    describeTransportChange({
      transport: "websocket",
      url: "ws://127.0.0.1:4433/ws",
      reason: "no QUIC answer in 2 s",
    }),
    "WebTransport unreachable (no QUIC answer in 2 s; UDP blocked?); pinging over WebSocket ws://127.0.0.1:4433/ws",
  );
  assert.equal(
    describeTransportChange({
      transport: "webtransport",
      url: "https://127.0.0.1:4433/ping",
      reason: "WebTransport answers again",
    }),
    "WebTransport reachable again; pinging over WebTransport https://127.0.0.1:4433/ping",
  );
});

// ---- The property: any interleaving, checked against a model of the shell ----

/** One thing that can happen next; `pick` chooses among what is in flight or open. */
type Action =
  | { kind: "connect" }
  | { kind: "complete"; pick: number; outcome: "up" | "unreachable" | "failed" }
  | { kind: "lose"; pick: number }
  | { kind: "probe" }
  | { kind: "stop" };

// The end of the run is rare, so that runs get far before it.
const action: fc.Arbitrary<Action> = fc.oneof(
  { arbitrary: fc.constant({ kind: "connect" as const }), weight: 10 },
  {
    arbitrary: fc.record({
      kind: fc.constant("complete" as const),
      pick: fc.nat(),
      outcome: fc.constantFrom("up" as const, "unreachable" as const, "failed" as const),
    }),
    weight: 20,
  },
  { arbitrary: fc.record({ kind: fc.constant("lose" as const), pick: fc.nat() }), weight: 5 },
  { arbitrary: fc.constant({ kind: "probe" as const }), weight: 10 },
  { arbitrary: fc.constant({ kind: "stop" as const }), weight: 1 },
);

/** The shell as the client is, with every rule it relies on checked as it goes. */
class Model {
  state: FallbackState = INITIAL_FALLBACK_STATE;
  /** Connections being opened, by id, and on what. */
  inFlight = new Map<number, Transport>();
  /** Links that came up and wait for a verdict. */
  arrived = new Set<number>();
  /** The link pings go over, and its transport; links replaced or lost are closed. */
  current: { id: number; transport: Transport } | null = null;
  /** A connection attempt awaits its end (use or failed). */
  attempting = false;
  timerArmed = false;
  stopped = false;
  issued = new Set<number>();
  announced: Transport[] = [];
  constructor(readonly config: FallbackConfig) {}

  dispatch(event: FallbackEvent) {
    const { state, commands } = stepFallback(this.state, event, this.config);
    const tries = commands.filter((c) => c.type === "try-quic" || c.type === "try-ws");
    assert.ok(tries.length <= 1, "one connection opened at a time");
    if (commands.some((c) => c.type === "try-ws")) {
      assert.equal(event.type, "quic-unreachable", "the WebSocket only after no QUIC answer");
      assert.ok(this.config.enabled, "never a WebSocket with fallback off");
    }
    this.state = state;
    for (const command of commands) this.perform(command);
    assert.equal(this.arrived.size, 0, "every link that came up is used or discarded at once");
    assert.equal(this.timerArmed, state.probeArmed, "the timer is armed iff the state says so");
    if (this.stopped) {
      assert.ok(!this.timerArmed && state.quicAttempt === null && state.wsAttempt === null);
    }
    if (state.phase === "up" && state.using === "websocket") {
      // Liveness: on the WebSocket, WebTransport is always about to be probed or being so.
      assert.ok(state.probeArmed || state.quicAttempt !== null, "never stuck on the WebSocket");
    }
    if (state.phase === "up") {
      assert.deepEqual(this.current, { id: state.linkId, transport: state.using });
    }
    for (const id of [state.quicAttempt, state.wsAttempt]) {
      if (id !== null) assert.ok(this.inFlight.has(id), "the machine waits only on real attempts");
    }
  }

  perform(command: FallbackCommand) {
    switch (command.type) {
      case "try-quic":
      case "try-ws":
        assert.ok(!this.issued.has(command.id), "ids are never reused");
        assert.ok(!this.stopped, "nothing opened after the end");
        this.issued.add(command.id);
        this.inFlight.set(command.id, command.type === "try-quic" ? "webtransport" : "websocket");
        if (command.type === "try-quic" && !command.probe) assert.ok(this.attempting);
        if (command.type === "try-quic" && command.probe) {
          assert.equal(this.current?.transport, "websocket", "probes only from the WebSocket");
        }
        return;
      case "use": {
        assert.ok(this.arrived.delete(command.id), "only a link that came up is used");
        if (command.kind === "connect") {
          assert.ok(this.attempting && this.current === null);
          this.attempting = false;
        } else {
          assert.equal(this.current?.transport, "websocket");
        }
        const before = this.announced.at(-1) ?? "webtransport";
        if (command.announce) {
          assert.notEqual(before, command.transport, "announced only when it changes");
          this.announced.push(command.transport);
        } else {
          assert.equal(before, command.transport, "a change is always announced");
        }
        this.current = { id: command.id, transport: command.transport };
        return;
      }
      case "retire":
        // The replaced link: the one in use just before (already replaced in `current`).
        assert.notEqual(this.current?.id, command.id);
        return;
      case "discard":
        assert.ok(this.arrived.delete(command.id));
        return;
      case "failed":
        assert.ok(this.attempting && this.current === null);
        this.attempting = false;
        return;
      case "outage":
        assert.ok(this.current !== null);
        this.current = null;
        return;
      case "arm-probe":
        assert.equal(command.ms, this.config.probeIntervalMs);
        this.timerArmed = true;
        return;
      case "disarm-probe":
        assert.ok(this.timerArmed);
        this.timerArmed = false;
        return;
    }
  }

  act(a: Action) {
    switch (a.kind) {
      case "connect":
        // The reconnect loop asks only while it has no link and no attempt under way.
        if (this.stopped || this.attempting || this.current) return;
        this.attempting = true;
        this.dispatch({ type: "connect" });
        return;
      case "complete": {
        const ids = [...this.inFlight.keys()];
        if (!ids.length) return;
        const id = ids[a.pick % ids.length]!;
        const transport = this.inFlight.get(id)!;
        this.inFlight.delete(id);
        if (a.outcome === "up") {
          this.arrived.add(id);
          this.dispatch({ type: transport === "webtransport" ? "quic-up" : "ws-up", id });
        } else if (transport === "webtransport") {
          this.dispatch({
            type: a.outcome === "unreachable" ? "quic-unreachable" : "quic-failed",
            id,
            reason: a.outcome,
          });
        } else {
          this.dispatch({ type: "ws-failed", id, reason: a.outcome });
        }
        return;
      }
      case "lose":
        // The link in use, or (stale) any id issued before.
        if (this.current && a.pick % 2 === 0) {
          this.dispatch({ type: "lost", id: this.current.id, reason: "lost" });
        } else if (this.issued.size) {
          const ids = [...this.issued];
          const id = ids[a.pick % ids.length]!;
          const before = this.current;
          this.dispatch({ type: "lost", id, reason: "lost" });
          if (before && before.id !== id) assert.deepEqual(this.current, before);
        }
        return;
      case "probe":
        if (!this.timerArmed) return;
        this.timerArmed = false;
        this.dispatch({ type: "probe-due" });
        return;
      case "stop":
        if (this.stopped) return;
        this.stopped = true;
        if (this.attempting) this.attempting = false; // the shell rejects it itself
        this.dispatch({ type: "stop" });
        return;
    }
  }
}

Deno.test("fallback property: over any interleaving of QUIC/WebSocket results, losses, probe timers and the end, every link is used or discarded once, changes are announced exactly when they happen, probing never stops while on the WebSocket, and fallback off never opens a WebSocket", () => {
  fc.assert(
    fc.property(
      fc.boolean(),
      fc.array(action, { maxLength: 80, size: "max" }),
      (enabled, actions) => {
        const model = new Model({ enabled, probeIntervalMs: 250 });
        for (const a of actions) model.act(a);
        // The end: everything still opening comes up late and is discarded.
        model.act({ kind: "stop" });
        while (model.inFlight.size) model.act({ kind: "complete", pick: 0, outcome: "up" });
        assert.equal(model.inFlight.size, 0);
        if (!enabled) assert.ok(!model.announced.includes("websocket"));
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("fallback property: a blocked-then-open path always ends on WebTransport once QUIC answers a probe", () => {
  fc.assert(
    fc.property(fc.nat({ max: 20 }), (failedProbes) => {
      const model = new Model(on);
      model.act({ kind: "connect" });
      model.act({ kind: "complete", pick: 0, outcome: "unreachable" });
      model.act({ kind: "complete", pick: 0, outcome: "up" }); // the WebSocket
      assert.equal(model.current?.transport, "websocket");
      for (let i = 0; i < failedProbes; i++) {
        model.act({ kind: "probe" });
        model.act({ kind: "complete", pick: 0, outcome: "unreachable" });
        assert.equal(model.current?.transport, "websocket");
      }
      model.act({ kind: "probe" });
      model.act({ kind: "complete", pick: 0, outcome: "up" });
      assert.equal(model.current?.transport, "webtransport");
      assert.deepEqual(model.announced, ["websocket", "webtransport"]);
    }),
  );
});
