// wsping on Deno: the shared suite (suite.ts) with the echo server in-process and Deno's
// resource and op sanitizers on, then the WebAssembly state machine on its own.
import assert from "node:assert/strict";
import { wsPing, WsPingError } from "./mod.ts";
import { Action, Event, loadMachine, machineBytes } from "./machine.ts";
import { MAX_TIMER_MS, setDeadline } from "./_deadline.ts";
import { cases } from "./suite.ts";
import { startEchoServer } from "./testdata/echo_server.ts";

for (const testCase of cases) {
  Deno.test(testCase.name, async () => {
    const server = await startEchoServer();
    try {
      await testCase.run({ ws: server.ws, http: server.http, wsPing, WsPingError });
    } finally {
      await server.close();
    }
  });
}

const reasonOf = (answer: number) => (answer >> 8) & 0xff;

Deno.test("machine: the happy path is open -> send, text -> resolve + close + finish", async () => {
  const machine = await loadMachine();
  const h = machine.create();
  assert.equal(machine.state(h), 1, "connecting");
  assert.equal(machine.dispatch(h, Event.open), Action.send);
  assert.equal(machine.state(h), 2, "sent");
  assert.equal(machine.dispatch(h, Event.text), Action.resolve | Action.close | Action.finish);
  assert.equal(machine.state(h), 3, "answered");
  for (const late of Object.values(Event)) {
    assert.equal(machine.dispatch(h, late), 0, `late event ${late} is ignored`);
  }
  machine.release(h);
  assert.equal(machine.state(h), 0, "free");
});

Deno.test("machine: every failure gives reject + finish with the right reason", async () => {
  const machine = await loadMachine();
  const cases: [string, number[], number, boolean][] = [
    // [label, events, reason, closes the socket]
    ["error before open", [Event.error], 1, true],
    ["close before open", [Event.close], 1, false],
    ["close after open", [Event.open, Event.close], 2, false],
    ["timeout while connecting", [Event.timeout], 3, true],
    ["timeout after send", [Event.open, Event.timeout], 3, true],
    ["abort while connecting", [Event.abort], 4, true],
    ["abort after send", [Event.open, Event.abort], 4, true],
    ["binary first message", [Event.open, Event.binary], 5, true],
    ["error after open", [Event.open, Event.error], 6, true],
  ];
  for (const [label, events, reason, closes] of cases) {
    const h = machine.create();
    let answer = 0;
    for (const event of events) answer = machine.dispatch(h, event);
    assert.ok(answer & Action.reject, `${label}: rejects`);
    assert.ok(answer & Action.finish, `${label}: finishes`);
    assert.equal(!!(answer & Action.close), closes, `${label}: closes the socket`);
    assert.equal(answer & Action.resolve, 0, `${label}: does not resolve`);
    assert.equal(reasonOf(answer), reason, `${label}: reason`);
    assert.equal(
      machine.dispatch(h, Event.text),
      0,
      `${label}: a message after the end is ignored`,
    );
    machine.release(h);
  }
});

Deno.test("machine: a message before open, bad handles and double releases are ignored", async () => {
  const machine = await loadMachine();
  const h = machine.create();
  assert.equal(machine.dispatch(h, Event.text), 0, "no message before open");
  assert.equal(machine.state(h), 1);
  machine.release(h); // not finished: refused
  assert.equal(machine.state(h), 1, "a live machine cannot be released");
  assert.equal(machine.dispatch(-1, Event.open), 0);
  assert.equal(machine.dispatch(1 << 20, Event.open), 0);
  assert.equal(machine.dispatch(h, 99), 0, "unknown event");
  machine.dispatch(h, Event.abort);
  machine.release(h);
  const live = machine.liveCount();
  machine.release(h);
  assert.equal(machine.liveCount(), live, "a second release changes nothing");
});

Deno.test("machine: handles are reused, so sequential pings need no new memory", async () => {
  const machine = await loadMachine();
  const memory = (machine as unknown as { memory: WebAssembly.Memory }).memory;
  const pagesBefore = memory.buffer.byteLength;
  const liveBefore = machine.liveCount();
  const seen = new Set<number>();
  for (let i = 0; i < 10_000; i++) {
    const h = machine.create();
    seen.add(h);
    machine.dispatch(h, Event.open);
    machine.dispatch(h, Event.text);
    machine.release(h);
  }
  assert.equal(seen.size, 1, "one handle serves every sequential ping");
  assert.equal(machine.liveCount(), liveBefore);
  assert.equal(memory.buffer.byteLength, pagesBefore, "WebAssembly memory did not grow");
});

Deno.test("machine: 65,536 pings may be in flight; the next one is refused", async () => {
  const machine = await loadMachine();
  const liveBefore = machine.liveCount();
  const handles: number[] = [];
  for (let h = machine.create(); h >= 0; h = machine.create()) handles.push(h);
  assert.equal(handles.length, 65_536 - liveBefore, "created up to the capacity");
  assert.equal(machine.liveCount(), 65_536);
  assert.equal(new Set(handles).size, handles.length, "every handle distinct");
  assert.equal(machine.create(), -1);
  const error = await wsPing("ws://127.0.0.1:9/", "x").catch((e) => e);
  assert.ok(error instanceof WsPingError && error.code === "too_many_pings");
  for (const h of handles) {
    machine.dispatch(h, Event.abort);
    machine.release(h);
  }
  assert.equal(machine.liveCount(), 0);
});

Deno.test("wsPing leaves no pending machine and no open socket after 1,000 pings", async () => {
  const server = await startEchoServer();
  const machine = await loadMachine();
  try {
    const heap = () => Deno.memoryUsage().heapUsed;
    for (let i = 0; i < 100; i++) await wsPing(`${server.ws}/echo`, "warm");
    const before = heap();
    for (let i = 0; i < 1000; i++) await wsPing(`${server.ws}/echo`, `n${i}`);
    assert.equal(machine.liveCount(), 0);
    for (let i = 0; i < 200 && server.stats().open > 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(server.stats().open, 0, "every socket closed");
    // A leak of one socket per ping would be megabytes; allow GC noise but not that.
    const growth = heap() - before;
    assert.ok(growth < 8 * 1024 * 1024, `heap grew by ${(growth / 1024 / 1024).toFixed(1)} MiB`);
  } finally {
    await server.close();
  }
});

Deno.test("the embedded module is under 16 KB and imports nothing", () => {
  const bytes = machineBytes();
  assert.ok(bytes.length < 16 * 1024, `${bytes.length} bytes`);
  const module = new WebAssembly.Module(bytes as BufferSource);
  assert.deepEqual(WebAssembly.Module.imports(module), []);
  assert.deepEqual(
    WebAssembly.Module.exports(module).map((e) => e.name).sort(),
    ["create", "dispatch", "liveCount", "memory", "release", "state"],
  );
});

Deno.test("setDeadline: a delay longer than one step fires at its deadline, not before", async () => {
  // The same chaining as a delay past 2^31-1 ms, with a 20 ms step instead of 24.8 days.
  assert.equal(MAX_TIMER_MS, 2 ** 31 - 1);
  const started = performance.now();
  const fired = await new Promise<number>((resolve) => {
    setDeadline(() => resolve(performance.now() - started), 110, 20);
  });
  assert.ok(fired >= 109, `fired after ${fired.toFixed(1)} ms`);
  assert.ok(fired < 1000, `fired after ${fired.toFixed(1)} ms`);
});

Deno.test("setDeadline: cancelling between steps stops it; cancelling twice is harmless", async () => {
  let calls = 0;
  const cancel = setDeadline(() => calls++, 100, 20);
  await new Promise((resolve) => setTimeout(resolve, 50)); // two steps in
  cancel();
  await new Promise((resolve) => setTimeout(resolve, 100));
  cancel();
  assert.equal(calls, 0);
});

Deno.test("setDeadline: at the bound one timer is armed; past it the first step is the bound", () => {
  const delays: number[] = [];
  const realSetTimeout = globalThis.setTimeout;
  globalThis.setTimeout = ((fn: () => void, ms: number) => {
    delays.push(ms);
    return realSetTimeout(fn, 0);
  }) as typeof setTimeout;
  const cancels: (() => void)[] = [];
  try {
    for (const ms of [MAX_TIMER_MS, 2 ** 31, 2_592_000_000]) {
      cancels.push(setDeadline(() => {}, ms));
    }
  } finally {
    globalThis.setTimeout = realSetTimeout;
    for (const cancel of cancels) cancel();
  }
  assert.ok(delays.every((ms) => ms <= MAX_TIMER_MS), `no overflowing delay: ${delays}`);
  assert.ok(delays[0]! > MAX_TIMER_MS - 5, `2^31-1 is armed as is: ${delays[0]}`);
  assert.deepEqual(delays.slice(1), [MAX_TIMER_MS, MAX_TIMER_MS], "longer ones step at the bound");
});
