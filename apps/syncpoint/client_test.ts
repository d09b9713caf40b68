// The client's retries: the pure decision (retryDecision) directly and as properties, then
// waitForSecondParty against real servers on loopback, behind a scripted front that plays
// the load balancer of a rolling update (503s, dropped connections, proxy pages).
import assert from "node:assert/strict";
import fc from "fast-check";
import { tcpServer, waitFor } from "@duet/testkit";
import { concatBytes } from "@noble/hashes/utils.js";
import {
  ANSWER_GRACE_MS,
  type AttemptFailure,
  DEFAULT_RETRY,
  isRetryable,
  LAST_ATTEMPT_MS,
  MAX_ANSWER_BYTES,
  parseRetryAfter,
  retryDecision,
  type RetryEvent,
  SyncpointError,
  UNASKED_WAIT_CAP_MS,
  waitForSecondParty,
  type WaitOptions,
} from "./client.ts";
import { startSyncpoint } from "./server.ts";

const answer = (status: number, code: string, retryAfterMs?: number): AttemptFailure => ({
  kind: "answer",
  status,
  code,
  ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
});
const network: AttemptFailure = { kind: "network" };

Deno.test("retryDecision: what is retried, after how long, and when it stops", () => {
  // Retry-After honoured (never earlier), spread by up to initialDelayMs.
  assert.deepEqual(retryDecision(answer(503, "shutting_down", 1000), 1, 10_000, 0), {
    retry: true,
    delayMs: 1000,
  });
  assert.deepEqual(retryDecision(answer(429, "rate_limited", 3000), 1, 10_000, 0.5), {
    retry: true,
    delayMs: 3050,
  });
  // ... capped so that LAST_ATTEMPT_MS remains.
  assert.deepEqual(retryDecision(answer(503, "capacity", 1000), 1, 300, 0), {
    retry: true,
    delayMs: 300 - LAST_ATTEMPT_MS,
  });
  // Backoff without Retry-After: 100 ms doubling to 2 s, a random half taken off.
  const backoff = (attempt: number, random: number) =>
    retryDecision(network, attempt, 60_000, random);
  assert.deepEqual([1, 2, 3, 4, 5, 6, 10].map((a) => backoff(a, 0.999_999)), [
    { retry: true, delayMs: 100 },
    { retry: true, delayMs: 200 },
    { retry: true, delayMs: 400 },
    { retry: true, delayMs: 800 },
    { retry: true, delayMs: 1600 },
    { retry: true, delayMs: 2000 },
    { retry: true, delayMs: 2000 },
  ]);
  assert.deepEqual(backoff(1, 0), { retry: true, delayMs: 50 });
  assert.deepEqual(backoff(10, 0), { retry: true, delayMs: 1000 });
  assert.deepEqual(retryDecision(answer(409, "conflict"), 2, 5_000, 0), {
    retry: true,
    delayMs: 100,
  });
  for (const [status, code] of [[502, "bad_response"], [504, "bad_response"], [503, "unknown"]]) {
    assert.equal(retryDecision(answer(status as number, code as string), 1, 5000, 0).retry, true);
  }
  // Permanent: the same request would get the same answer; 408 spent the wait granted.
  for (
    const [status, code] of [
      [400, "invalid_id"],
      [400, "invalid_timeout"],
      [400, "invalid_payload"],
      [404, "not_found"],
      [405, "method_not_allowed"],
      [408, "timeout"],
      [413, "payload_too_large"],
      [500, "internal"],
      [200, "bad_response"],
    ] as const
  ) {
    assert.deepEqual(retryDecision(answer(status, code), 1, 60_000, 0.5), {
      retry: false,
      reason: "permanent",
    }, `${status} ${code}`);
  }
  // Out of time, out of attempts.
  assert.deepEqual(retryDecision(network, 1, LAST_ATTEMPT_MS - 1, 0), {
    retry: false,
    reason: "deadline",
  });
  assert.deepEqual(retryDecision(network, 1, -5, 0), { retry: false, reason: "deadline" });
  assert.deepEqual(retryDecision(network, 1, LAST_ATTEMPT_MS, 0), { retry: true, delayMs: 0 });
  assert.deepEqual(retryDecision(network, 3, 60_000, 0, { maxAttempts: 3 }), {
    retry: false,
    reason: "attempts",
  });
  assert.equal(retryDecision(network, 2, 60_000, 0, { maxAttempts: 3 }).retry, true);
  // Another policy.
  assert.deepEqual(
    retryDecision(network, 4, 60_000, 0.999_999, { initialDelayMs: 10, maxDelayMs: 50 }),
    { retry: true, delayMs: 50 },
  );
});

Deno.test("retryDecision properties: never past the deadline, never a permanent error, bounded", () => {
  const failure = fc.oneof(
    fc.constant(network),
    fc.record({
      kind: fc.constant("answer" as const),
      status: fc.oneof(
        fc.constantFrom(200, 400, 404, 405, 408, 409, 413, 429, 500, 502, 503, 504),
        fc.integer({ min: 100, max: 599 }),
      ),
      code: fc.constantFrom("timeout", "conflict", "shutting_down", "bad_response", "x"),
      retryAfterMs: fc.option(fc.integer({ min: 0, max: 10_000_000 }), { nil: undefined }),
    }),
  );
  const policy = fc.record({
    initialDelayMs: fc.integer({ min: 0, max: 10_000 }),
    maxDelayMs: fc.integer({ min: 0, max: 100_000 }),
    maxAttempts: fc.option(fc.integer({ min: 1, max: 50 }), { nil: undefined }),
  }, { requiredKeys: ["initialDelayMs", "maxDelayMs"] });
  fc.assert(
    fc.property(
      failure,
      fc.integer({ min: 1, max: 10_000 }),
      fc.double({ min: -1000, max: 4_000_000, noNaN: true }),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      policy,
      (failure, attempt, remainingMs, random, policy) => {
        const decision = retryDecision(failure, attempt, remainingMs, random, policy);
        if (!isRetryable(failure)) {
          assert.deepEqual(decision, { retry: false, reason: "permanent" });
          return;
        }
        if (policy.maxAttempts !== undefined && attempt >= policy.maxAttempts) {
          assert.deepEqual(decision, { retry: false, reason: "attempts" });
          return;
        }
        if (remainingMs < LAST_ATTEMPT_MS) {
          assert.deepEqual(decision, { retry: false, reason: "deadline" });
          return;
        }
        assert.equal(decision.retry, true);
        if (!decision.retry) return;
        const { delayMs } = decision;
        assert.ok(Number.isInteger(delayMs) && delayMs >= 0, String(delayMs));
        // Never sleeps past the deadline: the next attempt keeps LAST_ATTEMPT_MS.
        assert.ok(delayMs + LAST_ATTEMPT_MS <= remainingMs, `${delayMs} vs ${remainingMs}`);
        const retryAfter = failure.kind === "answer" ? failure.retryAfterMs : undefined;
        if (retryAfter === undefined) {
          // Backoff: bounded by maxDelayMs, at least half the step (unless capped).
          // (The doubling stops at 2^52: past it 0 x 2^n would be 0 x Infinity, NaN.)
          const doubled = policy.initialDelayMs * 2 ** Math.min(attempt - 1, 52);
          const step = Math.min(policy.maxDelayMs, doubled);
          assert.ok(delayMs <= Math.ceil(step), `${delayMs} > ${step}`);
          assert.ok(
            delayMs >= Math.floor(Math.min(step / 2, remainingMs - LAST_ATTEMPT_MS)),
            `${delayMs} < ${step}/2`,
          );
        } else {
          // Retry-After: never earlier unless the deadline says so; spread bounded.
          assert.ok(delayMs <= retryAfter + policy.initialDelayMs);
          assert.ok(delayMs >= Math.min(retryAfter, Math.floor(remainingMs - LAST_ATTEMPT_MS)));
        }
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("parseRetryAfter: seconds or an HTTP date, else nothing", () => {
  assert.equal(parseRetryAfter("1"), 1000);
  assert.equal(parseRetryAfter(" 0 "), 0);
  assert.equal(parseRetryAfter(null), undefined);
  assert.equal(parseRetryAfter("soon"), undefined);
  assert.equal(parseRetryAfter("-1"), undefined);
  const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:28:03 GMT", now), 3000);
  assert.equal(parseRetryAfter("Wed, 21 Oct 2015 07:27:00 GMT", now), 0);
});

// --- Against servers on loopback -----------------------------------------------------

/** A request the front saw: its path and the `timeout_ms` it asked for. */
interface Seen {
  path: string;
  timeoutMs: number | undefined;
}

/** What the front does with one request. */
type Step =
  /** Closes the connection without an answer. */
  | "drop"
  /** Forwards to the current backend and relays its answer. */
  | "pass"
  /** Answers this. */
  | { status: number; body: string; headers?: Record<string, string> };

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A load balancer in front of syncpoint instances, on its own loopback port, speaking raw
 * HTTP/1.1 (so it can drop a connection). `script(n)` says what to do with the n-th request
 * (0-based); `backend` is where "pass" goes, changeable at any time.
 */
function front(script: (n: number, seen: Seen) => Step) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const seen: Seen[] = [];
  const connections = new Set<Deno.Conn>();
  const handling = new Set<Promise<void>>();
  const state = { backend: undefined as URL | undefined };
  const handle = async (conn: Deno.Conn) => {
    try {
      const request = await readRequest(conn);
      if (!request) return;
      const url = new URL(request.target, "http://front");
      const timeout = url.searchParams.get("timeout_ms");
      const entry = { path: url.pathname, timeoutMs: timeout === null ? undefined : +timeout };
      seen.push(entry);
      const step = script(seen.length - 1, entry);
      if (step === "drop") return;
      let status: number, body: string, headers: Record<string, string>;
      if (step === "pass") {
        const response = await fetch(new URL(request.target, state.backend), {
          method: request.method,
          body: request.body,
        });
        status = response.status;
        body = await response.text();
        headers = Object.fromEntries(
          [...response.headers].filter(([name]) => name === "retry-after"),
        );
        headers["content-type"] = response.headers.get("content-type") ?? "text/plain";
      } else {
        ({ status, body } = step);
        headers = step.headers ?? {};
      }
      const bytes = encoder.encode(body);
      const head = `HTTP/1.1 ${status} X\r\n` +
        Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("") +
        `content-length: ${bytes.byteLength}\r\nconnection: close\r\n\r\n`;
      await writeAll(conn, concatBytes(encoder.encode(head), bytes));
    } catch {
      // The client left; nothing to answer.
    } finally {
      connections.delete(conn);
      conn.close();
    }
  };
  const accepting = (async () => {
    for await (const conn of listener) {
      connections.add(conn);
      const done = handle(conn);
      handling.add(done);
      done.finally(() => handling.delete(done));
    }
  })();
  return {
    url: new URL(`http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}/`),
    seen,
    state,
    async close() {
      listener.close();
      await accepting.catch(() => {});
      for (const conn of connections) conn.close();
      await Promise.allSettled([...handling]);
    },
  };
}

async function readRequest(
  conn: Deno.Conn,
): Promise<{ method: string; target: string; body: string } | undefined> {
  let bytes = new Uint8Array(0);
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const text = decoder.decode(bytes);
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) {
      const [method = "", target = ""] = text.slice(0, text.indexOf("\r\n")).split(" ");
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1] ?? 0);
      const headBytes = encoder.encode(text.slice(0, end + 4)).byteLength;
      if (bytes.byteLength - headBytes >= length) {
        return { method, target, body: decoder.decode(bytes.subarray(headBytes)) };
      }
    }
    const read = await conn.read(buffer);
    if (read === null) return undefined;
    bytes = concatBytes(bytes, buffer.subarray(0, read));
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let offset = 0; offset < bytes.byteLength;) {
    offset += await conn.write(bytes.subarray(offset));
  }
}

const syncpointError = (status: number, code: string, retryAfter?: string): Step => ({
  status,
  body: JSON.stringify({ status: "error", code, message: `scripted ${code}` }),
  headers: {
    "content-type": "application/json",
    ...(retryAfter === undefined ? {} : { "retry-after": retryAfter }),
  },
});

Deno.test("a rolling update: the instance drains (503 shutting_down), the retry waits on the next one and pairs", async () => {
  const old = await startSyncpoint({ port: 0 });
  const lb = front(() => "pass");
  lb.state.backend = old.url;
  let next: Awaited<ReturnType<typeof startSyncpoint>> | undefined;
  try {
    const events: RetryEvent[] = [];
    const waiting = waitForSecondParty(lb.url, "roll", {
      payload: "one",
      timeoutMs: 20_000,
      retry: { onRetry: (event) => events.push(event) },
    });
    await waitFor(() => old.rendezvous.waiting === 1, "the party to wait on the old instance");
    // The update: a new instance takes the traffic, the old one drains.
    next = await startSyncpoint({ port: 0 });
    lb.state.backend = next.url;
    await old.shutdown();
    await waitFor(() => next!.rendezvous.waiting === 1, "the party to wait on the new instance");
    const partner = await waitForSecondParty(next.url, "roll", { payload: "two" });
    const result = await waiting;
    assert.equal(result.role, "first");
    assert.equal(result.peerPayload, "two");
    assert.deepEqual(partner, { role: "second", waitedMs: 0, peerPayload: "one" });
    // Two attempts: the second after the 503's Retry-After: 1, asking only for what remained.
    assert.equal(lb.seen.length, 2);
    assert.equal(events.length, 1);
    const [event] = events as [RetryEvent];
    assert.ok(event.error instanceof SyncpointError);
    assert.equal(event.error.code, "shutting_down");
    assert.equal(event.error.status, 503);
    assert.ok(event.delayMs >= 1000, `Retry-After: 1 honoured (${event.delayMs} ms)`);
    assert.equal(lb.seen[0]!.timeoutMs, 20_000);
    assert.ok(lb.seen[1]!.timeoutMs! <= event.remainingMs - event.delayMs + 1);
    assert.ok(lb.seen[1]!.timeoutMs! <= 20_000 - 1000, "what remained after the delay");
  } finally {
    await lb.close();
    await old.shutdown();
    await next?.shutdown();
  }
});

Deno.test("dropped connections, a proxy's 502 page and a 409 are retried with backoff; then paired", async () => {
  const server = await startSyncpoint({ port: 0 });
  const lb = front((n) =>
    [
      "drop" as const,
      "drop" as const,
      { status: 502, body: "<html>Bad Gateway</html>", headers: { "content-type": "text/html" } },
      syncpointError(409, "conflict"),
    ][n] ?? "pass"
  );
  lb.state.backend = server.url;
  try {
    const partner = waitForSecondParty(server.url, "lost", { payload: "A", timeoutMs: 20_000 });
    await waitFor(() => server.rendezvous.waiting === 1, "the partner to wait");
    const events: RetryEvent[] = [];
    const result = await waitForSecondParty(lb.url, "lost", {
      payload: "B",
      timeoutMs: 20_000,
      retry: { onRetry: (event) => events.push(event), initialDelayMs: 20 },
    });
    assert.deepEqual(result, { role: "second", waitedMs: 0, peerPayload: "A" });
    assert.equal((await partner).peerPayload, "B");
    assert.equal(lb.seen.length, 5);
    assert.deepEqual(events.map((e) => e.attempt), [1, 2, 3, 4]);
    assert.ok(events[0]!.error instanceof TypeError, String(events[0]!.error));
    assert.ok(events[1]!.error instanceof TypeError);
    assert.deepEqual(
      events.slice(2).map((
        e,
      ) => [(e.error as SyncpointError).status, (e.error as SyncpointError).code]),
      [[502, "bad_response"], [409, "conflict"]],
    );
    // Backoff of 20 ms doubling, a random half off: attempt n waits 10·2^(n-1)..20·2^(n-1).
    events.forEach((e, i) => {
      assert.ok(e.delayMs >= 10 * 2 ** i && e.delayMs <= 20 * 2 ** i, `${i}: ${e.delayMs}`);
    });
    // Each retry asks for what remains, less and less.
    for (let i = 1; i < lb.seen.length; i++) {
      assert.ok(lb.seen[i]!.timeoutMs! < lb.seen[i - 1]!.timeoutMs!);
      assert.ok(lb.seen[i]!.timeoutMs! <= events[i - 1]!.remainingMs - events[i - 1]!.delayMs + 1);
    }
  } finally {
    await lb.close();
    await server.shutdown();
  }
});

Deno.test("permanent errors are not retried: 400, 413, 408 after the wait, 404, a bad port; nor anything with retry: false", async () => {
  const server = await startSyncpoint({ port: 0 });
  const lb = front(() => "pass");
  lb.state.backend = server.url;
  const events: RetryEvent[] = [];
  const retry = { onRetry: (event: RetryEvent) => events.push(event) };
  try {
    const refusal = (promise: Promise<unknown>) =>
      promise.then(() => assert.fail("paired?"), (e) => e as SyncpointError);
    const badId = await refusal(waitForSecondParty(lb.url, "a b", { retry }));
    assert.deepEqual([badId.status, badId.code], [400, "invalid_id"]);
    const tooLarge = await refusal(
      waitForSecondParty(lb.url, "big", { payload: "x".repeat(64 * 1024 + 1), retry }),
    );
    assert.deepEqual([tooLarge.status, tooLarge.code], [413, "payload_too_large"]);
    const lonely = await refusal(waitForSecondParty(lb.url, "lonely", { timeoutMs: 50, retry }));
    assert.deepEqual([lonely.status, lonely.code], [408, "timeout"]);
    const nowhere = await refusal(waitForSecondParty(new URL("/nowhere/", lb.url), "x", { retry }));
    assert.deepEqual([nowhere.status, nowhere.code], [404, "not_found"]);
    assert.equal(lb.seen.length, 4, "one request each");
    assert.deepEqual(events, []);
  } finally {
    await lb.close();
    await server.shutdown();
  }
  // A port fetch refuses by its own rules (the Fetch standard's bad ports) never gets better:
  // rejected at once, with fetch's own error, and no retry.
  await assert.rejects(
    waitForSecondParty("http://127.0.0.1:1/", "bad-port", { retry, timeoutMs: 5000 }),
    (e) => e instanceof TypeError && /port 1/.test(String((e as Error).message)),
  );
  assert.deepEqual(events, []);
  // retry: false: one request, its outcome as is.
  const down = front(() => syncpointError(503, "shutting_down", "0"));
  try {
    await assert.rejects(
      waitForSecondParty(down.url, "once", { retry: false, timeoutMs: 5000 }),
      (e) => e instanceof SyncpointError && e.code === "shutting_down" && e.retryAfterMs === 0,
    );
    assert.equal(down.seen.length, 1);
  } finally {
    await down.close();
  }
});

Deno.test("the deadline is kept: a service that always answers 503 ends in its error, each retry asking for less", async () => {
  const lb = front(() => syncpointError(503, "backend_unavailable"));
  const budget = 1_500;
  const events: RetryEvent[] = [];
  try {
    const started = performance.now();
    const error = await waitForSecondParty(lb.url, "down", {
      timeoutMs: budget,
      retry: { onRetry: (e) => events.push(e), initialDelayMs: 40, maxDelayMs: 200 },
    }).then(() => assert.fail("paired?"), (e) => e);
    const elapsed = performance.now() - started;
    assert.ok(error instanceof SyncpointError);
    assert.deepEqual([error.status, error.code], [503, "backend_unavailable"]);
    // It did not give up before the deadline's last window.
    assert.ok(elapsed >= budget - LAST_ATTEMPT_MS, `gave up after ${elapsed} ms`);
    assert.equal(lb.seen.length, events.length + 1, "one request per attempt");
    assert.ok(lb.seen.length >= 5, `${lb.seen.length} attempts`); // at most 200 ms apart
    assert.equal(lb.seen[0]!.timeoutMs, budget);
    for (let i = 1; i < lb.seen.length; i++) {
      const { remainingMs, delayMs } = events[i - 1]!;
      assert.ok(delayMs <= 200 && delayMs + LAST_ATTEMPT_MS <= remainingMs);
      assert.ok(lb.seen[i]!.timeoutMs! < lb.seen[i - 1]!.timeoutMs!, "less and less");
      assert.ok(lb.seen[i]!.timeoutMs! <= remainingMs - delayMs + 1, "never more than remains");
      assert.ok(lb.seen[i]!.timeoutMs! >= 1);
    }
  } finally {
    await lb.close();
  }
});

Deno.test("the caller's signal aborts at once, also during a retry's delay", async () => {
  const lb = front(() => syncpointError(429, "rate_limited", "30"));
  try {
    const controller = new AbortController();
    const reason = new Error("enough");
    const events: RetryEvent[] = [];
    const waiting = waitForSecondParty(lb.url, "abort", {
      timeoutMs: 60_000,
      signal: controller.signal,
      retry: {
        onRetry: (event) => {
          events.push(event);
          setTimeout(() => controller.abort(reason), 20); // during the 30 s delay
        },
      },
    });
    await assert.rejects(waiting, (e) => e === reason);
    assert.equal(events.length, 1);
    assert.ok(events[0]!.delayMs >= 30_000);
    assert.equal(lb.seen.length, 1, "no second attempt");
    // Already aborted: no request at all.
    await assert.rejects(
      waitForSecondParty(lb.url, "abort", { signal: controller.signal }),
      (e) => e === reason,
    );
    assert.equal(lb.seen.length, 1);
  } finally {
    await lb.close();
  }
});

Deno.test("an unreachable service: retried until the deadline, then what fetch threw", async () => {
  const lb = front(() => "drop");
  await lb.close(); // nobody listens on this port any more
  const events: RetryEvent[] = [];
  await assert.rejects(
    waitForSecondParty(lb.url, "gone", {
      timeoutMs: 400,
      retry: { onRetry: (e) => events.push(e), initialDelayMs: 20 },
    }),
    TypeError,
  );
  assert.ok(events.length >= 2, `${events.length} retries`);
  assert.ok(events.every((e) => e.error instanceof TypeError));
  assert.equal(DEFAULT_RETRY.initialDelayMs, 100);
});

/** A fetch that records its calls and answers each with `answer(n)` (0-based). */
function scriptedFetch(answer: (n: number, init?: RequestInit) => Promise<Response>) {
  const calls: RequestInit[] = [];
  const fetchFn = ((_url: string | URL | Request, init?: RequestInit) => {
    calls.push(init ?? {});
    return answer(calls.length - 1, init);
  }) as typeof fetch;
  return { calls, fetch: fetchFn };
}

/** A promise that never settles: a fetch, or a body, that ignores the signal. */
const never = <T>() => new Promise<T>(() => {});

Deno.test("the caller's signal is honoured at every await, even by a fetch that ignores it", async () => {
  const reason = new Error("stop");
  // Synchronously after the call: the fetch has been called, and never answers.
  {
    const { calls, fetch } = scriptedFetch(() => never());
    const controller = new AbortController();
    const waiting = waitForSecondParty("http://syncpoint.invalid", "a", {
      fetch,
      signal: controller.signal,
    });
    controller.abort(reason);
    await assert.rejects(waiting, (e) => e === reason);
    assert.equal(calls.length, 1);
    // Passed on too: fetch's signal follows the caller's (joined with the answer's deadline).
    assert.equal(calls[0]!.signal?.aborted, true, "the signal is passed on too");
    assert.equal(calls[0]!.signal?.reason, reason);
  }
  // During the request.
  {
    const { fetch } = scriptedFetch(() => never());
    const controller = new AbortController();
    const waiting = waitForSecondParty("http://syncpoint.invalid", "b", {
      fetch,
      signal: controller.signal,
    });
    await new Promise((resolve) => setTimeout(resolve, 10));
    controller.abort(reason);
    await assert.rejects(waiting, (e) => e === reason);
  }
  // While the answer's body is read (headers in, the body never ends).
  {
    let bodyStarted = false;
    const { fetch } = scriptedFetch(() =>
      Promise.resolve(
        new Response(
          new ReadableStream({
            pull: () => {
              bodyStarted = true;
              return never();
            },
          }),
          { status: 200 },
        ),
      )
    );
    const controller = new AbortController();
    const waiting = waitForSecondParty("http://syncpoint.invalid", "c", {
      fetch,
      signal: controller.signal,
    });
    await waitFor(() => bodyStarted, "the body read to start");
    controller.abort(reason);
    await assert.rejects(waiting, (e) => e === reason);
  }
  // In onRetry, synchronously before the retry's delay: no second attempt.
  {
    const { calls, fetch } = scriptedFetch(() =>
      Promise.resolve(new Response(JSON.stringify({ code: "capacity" }), { status: 503 }))
    );
    const controller = new AbortController();
    const waiting = waitForSecondParty("http://syncpoint.invalid", "d", {
      fetch,
      signal: controller.signal,
      timeoutMs: 60_000,
      retry: { onRetry: () => controller.abort(reason) },
    });
    await assert.rejects(waiting, (e) => e === reason);
    assert.equal(calls.length, 1);
  }
  // Just as an answer arrived: the abort wins over the pair.
  {
    const controller = new AbortController();
    const { fetch } = scriptedFetch(() => {
      queueMicrotask(() => controller.abort(reason));
      return Promise.resolve(
        new Response(JSON.stringify({ role: "first", waited_ms: 1, peer_payload: null })),
      );
    });
    await assert.rejects(
      waitForSecondParty("http://syncpoint.invalid", "e", { fetch, signal: controller.signal }),
      (e) => e === reason,
    );
  }
});

Deno.test("retry delays past setTimeout's range are waited in full (2^31 − 1, 2^31, 30 days)", async () => {
  const month = 30 * 24 * 3600_000;
  for (const retryAfterMs of [2 ** 31 - 1, 2 ** 31, month]) {
    const { calls, fetch } = scriptedFetch(() =>
      Promise.resolve(
        new Response(JSON.stringify({ code: "rate_limited", message: "slow down" }), {
          status: 429,
          // Retry-After is in whole seconds: the next whole second at or past the delay.
          headers: { "retry-after": String(Math.ceil(retryAfterMs / 1000)) },
        }),
      )
    );
    const controller = new AbortController();
    const events: RetryEvent[] = [];
    const waiting = waitForSecondParty("http://syncpoint.invalid", "long", {
      fetch,
      signal: controller.signal,
      timeoutMs: 2 * month,
      retry: { initialDelayMs: 0, onRetry: (event) => events.push(event) },
    });
    await waitFor(() => events.length === 1, "the first retry to be decided");
    assert.ok(events[0]!.delayMs >= retryAfterMs, `${events[0]!.delayMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(calls.length, 1, `no early retry after a ${retryAfterMs} ms Retry-After`);
    controller.abort(new Error("done"));
    await assert.rejects(waiting, /done/);
  }
  // A deadline that long is asked for in digits (never 1e+21, which servers refuse).
  const { calls, fetch } = scriptedFetch(() => never());
  const asked: string[] = [];
  const recording = ((url: string | URL | Request, init?: RequestInit) => {
    asked.push(new URL(String(url)).searchParams.get("timeout_ms") ?? "");
    return fetch(url, init);
  }) as typeof fetch;
  const controller = new AbortController();
  const waiting = waitForSecondParty("http://syncpoint.invalid", "huge", {
    fetch: recording,
    signal: controller.signal,
    timeoutMs: 1e21,
  });
  controller.abort(new Error("done"));
  await assert.rejects(waiting, /done/);
  assert.equal(calls.length, 1);
  assert.match(asked[0]!, /^[0-9]+$/);
});

Deno.test("invalid durations are refused with a RangeError naming the option, before any request", async () => {
  const { calls, fetch } = scriptedFetch(() => never());
  const cases: [WaitOptions, RegExp][] = [
    [{ timeoutMs: -1 }, /timeoutMs/],
    [{ timeoutMs: NaN }, /timeoutMs/],
    [{ timeoutMs: Infinity }, /timeoutMs/],
    [{ retry: { initialDelayMs: -5 } }, /retry\.initialDelayMs/],
    [{ retry: { initialDelayMs: Infinity } }, /retry\.initialDelayMs/],
    [{ retry: { maxDelayMs: NaN } }, /retry\.maxDelayMs/],
    [{ retry: { maxAttempts: 0 } }, /retry\.maxAttempts/],
  ];
  for (const [options, name] of cases) {
    await assert.rejects(
      waitForSecondParty("http://syncpoint.invalid", "x", { ...options, fetch }),
      (e) => e instanceof RangeError && name.test(e.message),
      JSON.stringify(options),
    );
  }
  assert.equal(calls.length, 0);
  // At and past setTimeout's bound, durations are accepted (and waited in full, above).
  for (const ms of [2 ** 31 - 1, 2 ** 31, 30 * 24 * 3600_000]) {
    const controller = new AbortController();
    const waiting = waitForSecondParty("http://syncpoint.invalid", "x", {
      fetch,
      signal: controller.signal,
      timeoutMs: ms,
      retry: { initialDelayMs: ms, maxDelayMs: ms },
    });
    controller.abort(new Error("accepted"));
    await assert.rejects(waiting, /accepted/);
  }
});

Deno.test("malformed answers are bad_response with a clear message; valid ones parse as before", async () => {
  const json = (status: number, body: unknown, raw?: string) =>
    scriptedFetch(() => Promise.resolve(new Response(raw ?? JSON.stringify(body), { status })))
      .fetch;
  const outcome = (fetch: typeof globalThis.fetch) =>
    waitForSecondParty("http://syncpoint.invalid", "m", { fetch, retry: false }).then(
      (pair) => pair,
      (error) => error as SyncpointError,
    );
  const cases: [number, unknown, RegExp][] = [
    [200, "<html>", /^Not a syncpoint answer \(HTTP 200\): <html>/],
    [200, {}, /^Not a syncpoint answer \(HTTP 200, role: expected first or second\)/],
    [200, { role: "third", waited_ms: 0, peer_payload: null }, /role: expected first or second/],
    [200, { role: "first", peer_payload: null }, /waited_ms: expected number/],
    [200, { role: "first", waited_ms: -3, peer_payload: null }, /waited_ms: negative/],
    [200, { role: "first", waited_ms: 3, peer_payload: 7 }, /peer_payload: expected string/],
    [200, [1, 2], /HTTP 200, the body: expected object/],
    [502, 42, /^Not a syncpoint answer \(HTTP 502\): 42/],
    [503, ["capacity"], /^Not a syncpoint answer \(HTTP 503\)/],
  ];
  for (const [status, body, message] of cases) {
    const raw = typeof body === "string" ? body : undefined;
    const error = await outcome(json(status, body, raw));
    assert.ok(error instanceof SyncpointError, JSON.stringify(body));
    assert.equal(error.code, "bad_response");
    assert.equal(error.status, status);
    assert.match(error.message, message);
    assert.doesNotMatch(error.message, /ZodError|"code":|\n/, "no raw validation dump");
  }
  // An error answer with fields of other types: its status, code unknown, as before.
  const odd = await outcome(json(503, { code: 5, message: ["x"] }));
  assert.ok(odd instanceof SyncpointError);
  assert.deepEqual([odd.status, odd.code, odd.message], [503, "unknown", "HTTP 503"]);
  const refused = await outcome(json(409, { status: "error", code: "conflict", message: "busy" }));
  assert.ok(refused instanceof SyncpointError);
  assert.deepEqual([refused.code, refused.message], ["conflict", "busy"]);
  // A valid pair, with fields the client does not know.
  const pair = await outcome(
    json(200, {
      status: "paired",
      id: "m",
      role: "second",
      waited_ms: 0,
      peer_payload: "hi",
      x: 1,
    }),
  );
  assert.deepEqual(pair, { role: "second", waitedMs: 0, peerPayload: "hi" });
});

Deno.test("a service that accepts the connection and never answers does not hold the wait past its deadline", async () => {
  // A TCP listener that holds each connection and never writes: no 408 will ever come.
  await using mute = tcpServer(() => new Promise(() => {}));
  const events: RetryEvent[] = [];
  const failure = await waitForSecondParty(`http://127.0.0.1:${mute.port}/`, "mute", {
    timeoutMs: 200,
    retry: { onRetry: (event) => events.push(event) },
  }).then(() => assert.fail("paired?"), (error) => error as Error);
  assert.match(
    failure.message,
    new RegExp(`^the service did not answer within 200 ms \\(and ${ANSWER_GRACE_MS} ms`),
  );
  // The deadline had passed: no retry was made after it.
  assert.deepEqual(events, []);
});

Deno.test("a wait that ends in timeout after retries names the whole wait, not the last request's share", async () => {
  const backend = await startSyncpoint({ port: 0 });
  // The first request is dropped; the retry waits on a real instance until the deadline.
  const lb = front((n) => n === 0 ? "drop" : "pass");
  lb.state.backend = backend.url;
  try {
    const started = performance.now();
    const error = await waitForSecondParty(lb.url, "alone", { timeoutMs: 600 }).then(
      () => assert.fail("nobody came, yet it paired"),
      (error: unknown) => error,
    );
    const elapsed = performance.now() - started;
    assert.ok(error instanceof SyncpointError);
    assert.equal(error.code, "timeout");
    assert.equal(error.status, 408);
    const [, said, requests] = error.message.match(
      /^No second party arrived within (\d+) ms \((\d+) requests\)$/,
    ) ?? assert.fail(`unexpected message: ${error.message}`);
    assert.equal(Number(requests), lb.seen.length);
    assert.equal(lb.seen.length, 2);
    // The whole wait: more than the retry's share, which was less than the 600 ms deadline.
    assert.ok(lb.seen[1]!.timeoutMs! < 600);
    assert.ok(Number(said) > lb.seen[1]!.timeoutMs!, `${said} ms said`);
    assert.ok(Number(said) <= Math.ceil(elapsed));
  } finally {
    await lb.close();
    await backend.shutdown();
  }
});

Deno.test("a service that never answers a request that asked no time is given up on after the cap, not waited for ever", async () => {
  await using mute = tcpServer(() => new Promise(() => {}));
  const started = performance.now();
  const failure = await waitForSecondParty(`http://127.0.0.1:${mute.port}/`, "mute", {
    unaskedWaitCapMs: 300,
    retry: false,
  }).then(() => assert.fail("paired?"), (error) => error as Error);
  assert.equal(
    failure.message,
    `the service did not answer within 300 ms (and ${ANSWER_GRACE_MS} ms for its answer ` +
      "to arrive); pass a timeout to wait longer",
  );
  assert.ok(performance.now() - started >= 300 + ANSWER_GRACE_MS - 5);
  assert.equal(UNASKED_WAIT_CAP_MS, 60_000, "a syncpoint's own default cap on a wait");
});

Deno.test("an answer larger than MAX_ANSWER_BYTES is bad_response, cut off rather than read whole", async () => {
  let pulled = 0;
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () =>
      new Response(
        new ReadableStream({
          pull(controller) {
            pulled += 65536;
            controller.enqueue(new Uint8Array(65536).fill(0x61));
          },
        }),
        { status: 200 },
      ),
  );
  const failure = await waitForSecondParty(`http://127.0.0.1:${server.addr.port}/`, "big", {
    timeoutMs: 5_000,
  }).then(() => assert.fail("paired?"), (error) => error);
  assert.ok(failure instanceof SyncpointError);
  assert.equal(failure.code, "bad_response");
  assert.equal(
    failure.message,
    `Not a syncpoint answer (HTTP 200): the answer is larger than ${MAX_ANSWER_BYTES} bytes`,
  );
  assert.ok(pulled < 64 * MAX_ANSWER_BYTES, `${pulled} bytes pulled`);
});
