/**
 * wsping's behaviour as runtime-neutral test cases: the same cases run on Deno
 * (wsping_test.ts), Node 20, Node 22+, Bun (runtime_entry.ts) and in Chromium
 * (browser_entry.ts, in testdata/browser_tests.html), against testdata/echo_server.ts. No node:assert here: browsers
 * have none, so the few checks needed are written out.
 *
 * @module
 */
import type {
  WebSocketConstructor,
  wsPing as wsPingFunction,
  WsPingError as WsPingErrorClass,
} from "./mod.ts";

/** What a case needs. */
export interface SuiteContext {
  /** ws://HOST:PORT of the echo server. */
  ws: string;
  /** http://HOST:PORT of the echo server. */
  http: string;
  /** The implementation under test (the TypeScript module or the bundled ES module). */
  wsPing: typeof wsPingFunction;
  /** Its error class. */
  WsPingError: typeof WsPingErrorClass;
  /** Passed as options.WebSocket when the runtime has no global WebSocket. */
  WebSocket?: WebSocketConstructor;
}

/** One test case. */
export interface Case {
  name: string;
  run(ctx: SuiteContext): Promise<void>;
}

function check(condition: boolean, message: string): void {
  if (!condition) throw new Error(`check failed: ${message}`);
}

function equal<T>(actual: T, expected: T, what: string): void {
  if (actual !== expected) {
    const show = (
      v: unknown,
    ) => (typeof v === "string" && v.length > 80
      ? `${v.slice(0, 80)}... (${v.length} chars)`
      : JSON.stringify(v));
    throw new Error(`${what}: expected ${show(expected)}, got ${show(actual)}`);
  }
}

/** Runs `promise`, expecting a WsPingError with `code`; returns it. */
async function rejectsWith(
  ctx: SuiteContext,
  promise: Promise<unknown>,
  code: string,
): Promise<Error> {
  try {
    const value = await promise;
    throw new Error(
      `expected a WsPingError ${code}, but it resolved with ${JSON.stringify(value)}`,
    );
  } catch (error) {
    check(error instanceof ctx.WsPingError, `a WsPingError, got ${error}`);
    equal((error as WsPingErrorClass).code, code, "error code");
    check((error as Error).message.length > 0, "a message");
    return error as Error;
  }
}

function options(ctx: SuiteContext, extra: Record<string, unknown> = {}) {
  return { ...(ctx.WebSocket ? { WebSocket: ctx.WebSocket } : {}), ...extra };
}

async function stats(ctx: SuiteContext): Promise<{ open: number; total: number }> {
  return await (await fetch(`${ctx.http}/stats`)).json();
}

/** Waits until the server has seen every socket closed (bounded). */
async function serverSocketsClosed(ctx: SuiteContext): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if ((await stats(ctx)).open === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`the server still has ${(await stats(ctx)).open} sockets open`);
}

/** The cases. */
export const cases: Case[] = [
  {
    name: "wsPing() resolves with the echo of a short message",
    run: async (ctx) =>
      equal(await ctx.wsPing(`${ctx.ws}/echo`, "ping", options(ctx)), "ping", "reply"),
  },
  {
    name: "wsPing() round-trips Unicode text unchanged",
    run: async (ctx) => {
      const text = "привет, мир 👋🏽 — 你好 — e\u0301 — \u{1F9D1}\u200D\u{1F4BB}";
      equal(await ctx.wsPing(`${ctx.ws}/echo`, text, options(ctx)), text, "reply");
    },
  },
  {
    name: "wsPing() round-trips an empty message and a 1 MiB message",
    run: async (ctx) => {
      equal(await ctx.wsPing(`${ctx.ws}/echo`, "", options(ctx)), "", "empty reply");
      const big = "x".repeat(1024 * 1024 - 3) + "end";
      equal(await ctx.wsPing(`${ctx.ws}/echo`, big, options(ctx)), big, "1 MiB reply");
    },
  },
  {
    name: "wsPing() resolves with the first message and ignores later ones",
    run: async (ctx) => {
      equal(await ctx.wsPing(`${ctx.ws}/twice`, "m", options(ctx)), "first: m", "reply");
      await serverSocketsClosed(ctx);
    },
  },
  {
    name: "wsPing() rejects an invalid URL with invalid_url",
    run: async (ctx) => {
      await rejectsWith(ctx, ctx.wsPing("not a url", "x", options(ctx)), "invalid_url");
      await rejectsWith(ctx, ctx.wsPing("", "x", options(ctx)), "invalid_url");
    },
  },
  {
    name: "wsPing() rejects other schemes with invalid_scheme",
    run: async (ctx) => {
      await rejectsWith(ctx, ctx.wsPing(ctx.http + "/echo", "x", options(ctx)), "invalid_scheme");
      await rejectsWith(ctx, ctx.wsPing("ftp://127.0.0.1/", "x", options(ctx)), "invalid_scheme");
    },
  },
  {
    name: "wsPing() rejects a bad timeoutMs with invalid_timeout",
    run: async (ctx) => {
      for (const timeoutMs of [0, -1, Number.NaN, Infinity, -Infinity, "100" as unknown]) {
        await rejectsWith(
          ctx,
          ctx.wsPing(`${ctx.ws}/echo`, "x", options(ctx, { timeoutMs })),
          "invalid_timeout",
        );
      }
    },
  },
  {
    name: "wsPing() rejects a refused connection with connection_failed",
    run: async (ctx) => {
      // Port 9 (discard) on loopback: nothing listens there in the test environments.
      await rejectsWith(
        ctx,
        ctx.wsPing("ws://127.0.0.1:9/", "x", options(ctx, { timeoutMs: 5000 })),
        "connection_failed",
      );
    },
  },
  {
    name: "wsPing() rejects a refused upgrade (HTTP 403) with connection_failed",
    run: async (ctx) => {
      await rejectsWith(
        ctx,
        ctx.wsPing(`${ctx.ws}/reject`, "x", options(ctx)),
        "connection_failed",
      );
    },
  },
  {
    name: "wsPing() rejects a connection closed before any message with closed",
    run: async (ctx) => {
      await rejectsWith(ctx, ctx.wsPing(`${ctx.ws}/close`, "x", options(ctx)), "closed");
    },
  },
  {
    name: "wsPing() rejects with timeout when no message comes, and closes the socket",
    run: async (ctx) => {
      const error = await rejectsWith(
        ctx,
        ctx.wsPing(`${ctx.ws}/silent`, "x", options(ctx, { timeoutMs: 150 })),
        "timeout",
      );
      check(error.message.includes("150 ms"), `the message names the timeout: ${error.message}`);
      await serverSocketsClosed(ctx);
    },
  },
  {
    name: "wsPing() rejects with aborted when the signal aborts, with its reason as cause",
    run: async (ctx) => {
      const controller = new AbortController();
      const reason = new Error("user gave up");
      const pending = ctx.wsPing(
        `${ctx.ws}/silent`,
        "x",
        options(ctx, { signal: controller.signal }),
      );
      setTimeout(() => controller.abort(reason), 30);
      const error = await rejectsWith(ctx, pending, "aborted");
      equal((error as Error & { cause?: unknown }).cause, reason, "cause");
      await serverSocketsClosed(ctx);
    },
  },
  {
    name: "wsPing() with an already aborted signal rejects without connecting",
    run: async (ctx) => {
      const before = (await stats(ctx)).total;
      await rejectsWith(
        ctx,
        ctx.wsPing(`${ctx.ws}/echo`, "x", options(ctx, { signal: AbortSignal.abort() })),
        "aborted",
      );
      equal((await stats(ctx)).total, before, "sockets accepted");
    },
  },
  {
    name: "wsPing() honours an abort issued synchronously after the call, opening no socket",
    run: async (ctx) => {
      const before = (await stats(ctx)).total;
      const controller = new AbortController();
      const reason = new Error("changed my mind");
      const pending = ctx.wsPing(
        `${ctx.ws}/echo`,
        "x",
        options(ctx, { signal: controller.signal }),
      );
      controller.abort(reason);
      const error = await rejectsWith(ctx, pending, "aborted");
      equal((error as Error & { cause?: unknown }).cause, reason, "cause");
      equal((await stats(ctx)).total, before, "sockets accepted");
    },
  },
  {
    name: "wsPing() honours an abort after any number of microtasks (module loading included)",
    run: async (ctx) => {
      // Every await point before the socket's listeners are in place: 0 to 40 microtasks
      // after the call covers loading the module (cached or not) and the steps after it.
      // The echo would need the event loop, so any missed abort shows as a reply.
      for (let ticks = 0; ticks <= 40; ticks++) {
        const controller = new AbortController();
        const pending = ctx.wsPing(
          `${ctx.ws}/echo`,
          "x",
          options(ctx, { signal: controller.signal }),
        );
        for (let i = 0; i < ticks; i++) await Promise.resolve();
        controller.abort(ticks);
        const error = await rejectsWith(ctx, pending, "aborted");
        equal((error as Error & { cause?: unknown }).cause, ticks, `cause after ${ticks} ticks`);
      }
      await serverSocketsClosed(ctx);
    },
  },
  {
    name: "wsPing() honours an abort fired once the module loaded, while the socket is made",
    run: async (ctx) => {
      const Base = ctx.WebSocket ??
        (globalThis as unknown as { WebSocket: WebSocketConstructor }).WebSocket;
      const controller = new AbortController();
      // The constructor is the first thing wsPing calls after loading the module.
      const Aborting = function (url: string) {
        controller.abort("while constructing");
        return new Base(url);
      } as unknown as WebSocketConstructor;
      const error = await rejectsWith(
        ctx,
        ctx.wsPing(`${ctx.ws}/echo`, "x", { WebSocket: Aborting, signal: controller.signal }),
        "aborted",
      );
      equal((error as Error & { cause?: unknown }).cause, "while constructing", "cause");
      await serverSocketsClosed(ctx);
    },
  },
  {
    name: "wsPing() honours an abort while connecting (a slow handshake)",
    run: async (ctx) => {
      const controller = new AbortController();
      const started = Date.now();
      const pending = ctx.wsPing(
        `${ctx.ws}/hold?ms=3000`,
        "x",
        options(ctx, { signal: controller.signal }),
      );
      setTimeout(() => controller.abort("connect took too long"), 50);
      const error = await rejectsWith(ctx, pending, "aborted");
      equal((error as Error & { cause?: unknown }).cause, "connect took too long", "cause");
      check(Date.now() - started < 2000, `rejected at the abort, not later`);
    },
  },
  {
    name: "wsPing() timeoutMs of 2^31-1, 2^31 and 30 days does not fire early",
    run: async (ctx) => {
      // setTimeout overflows past 2^31-1 ms and fires at once: 30 days timed out in 29 ms.
      for (const timeoutMs of [2 ** 31 - 1, 2 ** 31, 2_592_000_000, Number.MAX_SAFE_INTEGER]) {
        const controller = new AbortController();
        const pending = ctx.wsPing(
          `${ctx.ws}/silent`,
          "x",
          options(ctx, { timeoutMs, signal: controller.signal }),
        );
        setTimeout(() => controller.abort("done waiting"), 150);
        await rejectsWith(ctx, pending, "aborted");
        equal(
          await ctx.wsPing(`${ctx.ws}/echo`, "long", options(ctx, { timeoutMs })),
          "long",
          `reply with timeoutMs ${timeoutMs}`,
        );
      }
      await serverSocketsClosed(ctx);
    },
  },
  {
    name: "wsPing() still times out at a short timeoutMs counted from the call",
    run: async (ctx) => {
      const started = Date.now();
      await rejectsWith(
        ctx,
        ctx.wsPing(`${ctx.ws}/hold?ms=3000`, "x", options(ctx, { timeoutMs: 100 })),
        "timeout",
      );
      const took = Date.now() - started;
      check(took >= 95 && took < 2000, `timed out after ${took} ms`);
    },
  },
  {
    name: "wsPing() rejects a binary reply with binary_message",
    run: async (ctx) => {
      await rejectsWith(ctx, ctx.wsPing(`${ctx.ws}/binary`, "x", options(ctx)), "binary_message");
    },
  },
  {
    name: "wsPing() uses options.WebSocket when given",
    run: async (ctx) => {
      const Base = ctx.WebSocket ??
        (globalThis as unknown as { WebSocket: WebSocketConstructor }).WebSocket;
      let made = 0;
      const Counting = function (url: string) {
        made++;
        return new Base(url);
      } as unknown as WebSocketConstructor;
      equal(
        await ctx.wsPing(`${ctx.ws}/echo`, "via option", { WebSocket: Counting }),
        "via option",
        "reply",
      );
      equal(made, 1, "sockets made by the given constructor");
    },
  },
  {
    name: "wsPing() answers 100 concurrent pings, each with its own reply",
    run: async (ctx) => {
      const replies = await Promise.all(
        Array.from(
          { length: 100 },
          (_, i) => ctx.wsPing(`${ctx.ws}/delay?ms=${i % 7}`, `n${i}`, options(ctx)),
        ),
      );
      replies.forEach((reply, i) => equal(reply, `n${i}`, `reply ${i}`));
      await serverSocketsClosed(ctx);
    },
  },
  {
    name: "wsPing() runs 1,000 sequential pings and leaves no socket open",
    run: async (ctx) => {
      for (let i = 0; i < 1000; i++) {
        equal(await ctx.wsPing(`${ctx.ws}/echo`, `seq ${i}`, options(ctx)), `seq ${i}`, "reply");
      }
      await serverSocketsClosed(ctx);
    },
  },
];
