import assert from "node:assert/strict";
import { type RunningService, startServices, superviseServices } from "./service.ts";

/** A service that records its shutdown in `log`; `fail()` makes it stop by itself. */
function service(name: string, log: string[]): RunningService & { fail(error: Error): void } {
  let settle!: (error?: Error) => void;
  const finished = new Promise<void>((resolve, reject) => {
    settle = (error) => error ? reject(error) : resolve();
  });
  finished.catch(() => {});
  return {
    addr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
    finished,
    shutdown() {
      log.push(`stop ${name}`);
      settle();
      return Promise.resolve();
    },
    fail: (error) => settle(error),
  };
}

Deno.test("startServices(): a failed start shuts down those started, last first, and rethrows", async () => {
  const log: string[] = [];
  await assert.rejects(
    startServices([
      { name: "a", start: () => Promise.resolve(service("a", log)) },
      { name: "b", start: () => Promise.resolve(service("b", log)) },
      { name: "c", start: () => Promise.reject(new Error("port taken")) },
      { name: "d", start: () => assert.fail("started after a failure") },
    ], (name) => log.push(`started ${name}`)),
    /port taken/,
  );
  assert.deepEqual(log, ["started a", "started b", "stop b", "stop a"]);
});

Deno.test("superviseServices(): the signal stops every service", async () => {
  const log: string[] = [];
  const controller = new AbortController();
  const services = await startServices([
    { name: "a", start: () => Promise.resolve(service("a", log)) },
    { name: "b", start: () => Promise.resolve(service("b", log)) },
  ]);
  const running = superviseServices(services, controller.signal);
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.deepEqual(log, []);
  controller.abort();
  await running;
  assert.deepEqual(log, ["stop b", "stop a"]);
});

Deno.test("superviseServices(): one service failing stops the others and its error is thrown", async () => {
  const log: string[] = [];
  const a = service("a", log);
  const b = service("b", log);
  const running = superviseServices([a, b], new AbortController().signal);
  a.fail(new Error("database gone"));
  await assert.rejects(running, /database gone/);
  assert.deepEqual(log, ["stop b", "stop a"]);
});

Deno.test("superviseServices(): an already aborted signal stops at once", async () => {
  const log: string[] = [];
  await superviseServices([service("a", log)], AbortSignal.abort());
  assert.deepEqual(log, ["stop a"]);
});

Deno.test("startServices(): a signal aborted during start-up starts nothing more and unwinds", async () => {
  const log: string[] = [];
  const controller = new AbortController();
  const services = await startServices(
    [
      { name: "a", start: () => Promise.resolve(service("a", log)) },
      {
        name: "b",
        start: () => {
          controller.abort(); // Ctrl-C while b starts
          return Promise.resolve(service("b", log));
        },
      },
      { name: "c", start: () => assert.fail("started after the abort") },
    ],
    (name) => log.push(`started ${name}`),
    controller.signal,
  );
  assert.deepEqual(services, []);
  assert.deepEqual(log, ["started a", "started b", "stop b", "stop a"]);
});
