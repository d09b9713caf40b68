import assert from "node:assert/strict";
import { describeEvent, readLines, runLineMode } from "./line.ts";
import type { ClientEvent } from "./client.ts";
import { KeyStore } from "./keystore.ts";

/** A stream that gives `lines` and then never ends; `cancelled` resolves once it is cancelled. */
function endlessInput(lines: string[]) {
  let cancelled!: () => void;
  const wasCancelled = new Promise<void>((resolve) => (cancelled = resolve));
  let pulls = 0;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const line of lines) controller.enqueue(new TextEncoder().encode(`${line}\n`));
    },
    pull() {
      pulls++;
      return new Promise(() => {}); // nothing more, ever
    },
    cancel() {
      cancelled();
    },
  });
  return { stream, wasCancelled, pulls: () => pulls };
}

/** Rejects after `ms`, naming `what`, unless `promise` settles first. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("readLines: a signal that aborts right after the call, before the first line is asked for, ends it with nothing read", async () => {
  const input = endlessInput(["one", "two"]);
  const controller = new AbortController();
  const lines = readLines(input.stream, controller.signal);
  controller.abort();
  const got: string[] = [];
  for await (const line of lines) got.push(line);
  assert.deepEqual(got, []);
  await within(1_000, "the input cancelled", input.wasCancelled);
});

Deno.test("readLines: a signal that aborts while the next line is awaited ends it at once; lines before it are given", async () => {
  const input = endlessInput(["one", "two"]);
  const controller = new AbortController();
  const got: string[] = [];
  await within(
    2_000,
    "readLines ended",
    (async () => {
      for await (const line of readLines(input.stream, controller.signal)) {
        got.push(line);
        if (got.length === 2) setTimeout(() => controller.abort(), 10);
      }
    })(),
  );
  assert.deepEqual(got, ["one", "two"]);
  await within(1_000, "the input cancelled", input.wasCancelled);
});

Deno.test("runLineMode: a signal that aborts right after the call, before any await, ends the session before a line is taken", async () => {
  const dir = await Deno.makeTempDir();
  const keyStore = await KeyStore.open(`${dir}/keys.sqlite`);
  try {
    const input = endlessInput(["hello, is anyone there?"]);
    const controller = new AbortController();
    const out: string[] = [];
    const session = runLineMode({
      server: "127.0.0.1:1", // nothing listens: the line would wait in the outbox
      name: "alice",
      room: "tea",
      keyStore,
      input: input.stream,
      out: (text) => out.push(text),
      err: () => {},
      signal: controller.signal,
      lingerMs: 60_000,
    });
    controller.abort();
    const result = await within(5_000, "runLineMode ended", session);
    assert.deepEqual(
      result,
      { unsent: 0, refused: 0, reached: false, quit: false },
      "the line was not taken",
    );
    assert.deepEqual(out, []);
    await within(1_000, "the input cancelled", input.wasCancelled);
  } finally {
    keyStore.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runLineMode: a signal that aborts while unsent messages linger ends the session at once", async () => {
  const dir = await Deno.makeTempDir();
  const keyStore = await KeyStore.open(`${dir}/keys.sqlite`);
  try {
    const encoder = new TextEncoder();
    const controller = new AbortController();
    let sawState: () => void;
    const connecting = new Promise<void>((resolve) => (sawState = resolve));
    const started = performance.now();
    const session = runLineMode({
      server: "127.0.0.1:1",
      name: "alice",
      room: "tea",
      keyStore,
      // One line, then the end of input: it lingers (up to lingerMs) in the outbox.
      input: new ReadableStream({
        start(c) {
          c.enqueue(encoder.encode("kept for the next start\n"));
          c.close();
        },
      }),
      out: () => {},
      err: (text) => {
        if (text.startsWith("[")) sawState();
      },
      signal: controller.signal,
      lingerMs: 60_000,
    });
    await connecting;
    setTimeout(() => controller.abort(), 100);
    const result = await within(5_000, "runLineMode ended", session);
    assert.equal(result.unsent, 1, "the message stays in the outbox");
    assert.ok(performance.now() - started < 5_000);
  } finally {
    keyStore.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("runLineMode: a lingerMs that is not milliseconds in [0, 2^31 - 1] is a RangeError naming it", async () => {
  const dir = await Deno.makeTempDir();
  const keyStore = await KeyStore.open(`${dir}/keys.sqlite`);
  try {
    for (const lingerMs of [-1, NaN, Infinity, 2 ** 31, "1e3", null]) {
      await assert.rejects(
        runLineMode({
          server: "127.0.0.1:1",
          name: "alice",
          room: "tea",
          keyStore,
          input: new ReadableStream({ start: (c) => c.close() }),
          out: () => {},
          err: () => {},
          signal: new AbortController().signal,
          lingerMs: lingerMs as number,
        }),
        (error) => error instanceof RangeError && /lingerMs/.test(error.message),
        String(lingerMs),
      );
    }
  } finally {
    keyStore.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("describeEvent: a restored key that a code failed, waits for a code, or waits for /accept-key, each in its words", () => {
  const fingerprint = "32c40211" + "0".repeat(56);
  const restored = (fields: { pending: boolean; codeFailed: boolean; awaitingCode?: boolean }) =>
    describeEvent({ type: "restored_key", fingerprint, verified: false, ...fields }, "tea");
  const failed = restored({ pending: true, codeFailed: true });
  assert.equal(failed?.stream, "err");
  assert.match(failed!.text, /a code run failed against the peer's key.*--code and the right code/);
  assert.equal(restored({ pending: true, codeFailed: false, awaitingCode: true }), undefined);
  const pending = restored({ pending: true, codeFailed: false });
  assert.match(pending!.text, /not trusted yet.*\/accept-key 32c40211, or a code confirms it/);
  assert.doesNotMatch(pending!.text, /CHANGED|changed/);
  assert.equal(restored({ pending: false, codeFailed: false }), undefined);
  // The code's states: waiting (with and without a peer), confirmed now or before, failed.
  const code = (fields: Partial<Extract<ClientEvent, { type: "code" }>>) =>
    describeEvent({ type: "code", state: "waiting", peer: null, ...fields }, "tea")?.text;
  assert.match(code({})!, /waiting for the other party to come and confirm the code/);
  assert.match(code({ peer: "bob" })!, /waiting for bob to confirm the code/);
  assert.match(
    code({ state: "verified", peer: "bob", fingerprint })!,
    /code confirmed: bob has the same code/,
  );
  assert.match(
    code({ state: "verified", peer: "bob", earlier: true })!,
    /confirmed by a code before.*not needed/,
  );
  assert.equal(code({ state: "failed", peer: "bob" }), undefined, "the fatal line says it");
});
