// The client's shell and its helpers at the edges of time: durations at and past
// setTimeout's range (2^31 - 1 ms, where setTimeout and AbortSignal.timeout fire almost
// at once), out-of-range options refused with a RangeError naming them, and the stop
// signal honoured whenever it fires (already aborted, or right after the call).
import assert from "node:assert/strict";
import { MAX_TIMEOUT_MS } from "@duet/core/long-timeout";
import {
  CLIENT_DEFAULTS,
  discoverServer,
  fetchServerInfo,
  type PingEvent,
  type PingOptions,
  runPing,
  startPingServer,
} from "./mod.ts";

const options = { sanitizeOps: false, sanitizeResources: false }; // QUIC winds down after the test
const untrusted = {
  serverCertificateHashes: [{ algorithm: "sha-256" as const, value: new Uint8Array(32) }],
};

/** A UDP port that swallows every packet: a QUIC handshake there never gets an answer. */
function silentUdp(): { url: URL; close(): void } {
  const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (udp.addr as Deno.NetAddr).port;
  return { url: new URL(`https://127.0.0.1:${port}/ping`), close: () => udp.close() };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("runPing: counts and durations out of range are refused with a RangeError naming the option", async () => {
  const base: PingOptions = {
    ...CLIENT_DEFAULTS,
    url: new URL("https://127.0.0.1:1/ping"),
    trust: {},
  };
  const cases: [Partial<PingOptions>, RegExp][] = [
    [{ count: -1 }, /count/],
    [{ count: 1.5 }, /count/],
    [{ payloadBytes: -1 }, /payloadBytes/],
    [{ intervalMs: 0 }, /intervalMs/],
    [{ intervalMs: Infinity }, /intervalMs/],
    [{ heartbeatMs: NaN }, /heartbeatMs/],
    [{ timeoutMs: -1 }, /timeoutMs/],
    [{ deadAfterMs: Infinity }, /deadAfterMs/],
    [{ giveUpAfterMs: NaN }, /giveUpAfterMs/],
    [{ backoff: { initialMs: -1, maxMs: 10, jitter: "full" as const } }, /backoff\.initialMs/],
    [{ probeIntervalMs: -5 }, /probeIntervalMs/],
    // QUIC's keep-alive and idle timeout take whole milliseconds.
    [{ heartbeatMs: 1.5 }, /heartbeatMs/],
    [{ heartbeatMs: 1e308 }, /heartbeatMs/],
    [{ deadAfterMs: 5000.5 }, /deadAfterMs/],
  ];
  for (const [bad, name] of cases) {
    await assert.rejects(
      runPing({ ...base, ...bad }),
      (e) => e instanceof RangeError && name.test(e.message),
      JSON.stringify(bad),
    );
  }
});

Deno.test({
  name: "runPing: a signal already aborted: the summary at once, nothing sent, no connection tried",
  ...options,
  async fn() {
    const events: PingEvent[] = [];
    const summary = await runPing({
      ...CLIENT_DEFAULTS,
      url: new URL("https://127.0.0.1:1/ping"),
      trust: () => Promise.reject(new Error("no connection may be tried")),
      signal: AbortSignal.abort(),
    }, (event) => events.push(event));
    assert.deepEqual(events, []);
    assert.equal(summary.transmitted, 0);
    assert.equal(summary.gaveUp, false);
  },
});

for (const timeoutMs of [MAX_TIMEOUT_MS, MAX_TIMEOUT_MS + 1, 30 * 24 * 3600_000]) {
  Deno.test({
    name: `runPing: a connection deadline of ${timeoutMs} ms (at and past setTimeout's range) ` +
      "waits, and aborting right after the call ends the run at once",
    ...options,
    async fn() {
      const silent = silentUdp();
      try {
        const events: PingEvent[] = [];
        const controller = new AbortController();
        const started = performance.now();
        const run = runPing({
          ...CLIENT_DEFAULTS,
          url: silent.url,
          trust: untrusted,
          fallback: false,
          timeoutMs,
          deadAfterMs: 200,
          signal: controller.signal,
        }, (event) => events.push(event));
        await sleep(400);
        // With setTimeout, the deadline fired at once: failed attempts and backoff by now.
        assert.deepEqual(events, [], "the connection attempt is still waiting");
        controller.abort();
        const summary = await run;
        assert.ok(performance.now() - started < 3000, "the abort ended the attempt under way");
        assert.equal(summary.transmitted, 0);

        // Aborted synchronously, right after the call: before any await of the run.
        const again = new AbortController();
        const quick = runPing({
          ...CLIENT_DEFAULTS,
          url: silent.url,
          trust: untrusted,
          timeoutMs,
          signal: again.signal,
        });
        again.abort();
        const t0 = performance.now();
        assert.equal((await quick).transmitted, 0);
        assert.ok(performance.now() - t0 < 2000);
      } finally {
        silent.close();
      }
    },
  });
}

Deno.test({
  name: "runPing: an interval past setTimeout's range sends one ping, not one per millisecond",
  ...options,
  async fn() {
    const server = await startPingServer({ port: 0 });
    try {
      const controller = new AbortController();
      const events: PingEvent[] = [];
      const run = runPing({
        ...CLIENT_DEFAULTS,
        url: server.url,
        trust: {
          serverCertificateHashes: server.certificateHashes().map((value) => ({
            algorithm: "sha-256" as const,
            value,
          })),
        },
        intervalMs: MAX_TIMEOUT_MS + 1,
        heartbeatMs: MAX_TIMEOUT_MS + 1,
        signal: controller.signal,
      }, (event) => events.push(event));
      await sleep(500);
      controller.abort();
      const summary = await run;
      assert.equal(summary.transmitted, 1, JSON.stringify(events));
      assert.equal(summary.received, 1);
    } finally {
      await server.shutdown(100);
    }
  },
});

Deno.test({
  name:
    "fetchServerInfo: a timeout past setTimeout's range waits for the answer; a negative one is a RangeError",
  ...options,
  async fn() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 }); // accepts, never answers
    const conns: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of listener) conns.push(conn);
    })();
    try {
      const fetching = fetchServerInfo(
        "127.0.0.1",
        listener.addr.port,
        undefined,
        MAX_TIMEOUT_MS + 1,
      );
      fetching.catch(() => {});
      const first = await Promise.race([
        fetching.then(() => "answered", () => "failed"),
        sleep(400).then(() => "waiting"),
      ]);
      assert.equal(first, "waiting", "AbortSignal.timeout would have given up at once");
    } finally {
      listener.close();
      for (const conn of conns) conn.close();
      await accepting.catch(() => {});
    }
    await assert.rejects(
      fetchServerInfo("127.0.0.1", 1, undefined, -1),
      (e) => e instanceof RangeError && /timeoutMs/.test(e.message),
    );
    await assert.rejects(
      discoverServer({ timeoutMs: NaN }),
      (e) => e instanceof RangeError && /timeoutMs/.test(e.message),
    );
  },
});
