// The ping server as a RunningService (packages/core/service.ts): its address, an
// idempotent shutdown, and `finished` settling after it.
import assert from "node:assert/strict";
import type { RunningService } from "@duet/core/service";
import { startPingServer } from "./mod.ts";

const options = { sanitizeOps: false, sanitizeResources: false }; // QUIC winds down after the test

Deno.test({
  name:
    "server: a RunningService: addr is the port, shutdown is idempotent, finished resolves after it",
  ...options,
  async fn() {
    const server = await startPingServer({ port: 0 });
    const service: RunningService = server;
    assert.equal(service.addr.port, server.port);
    assert.equal(service.addr.hostname, "127.0.0.1");
    let finished = false;
    service.finished.then(() => finished = true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(finished, false, "still running");
    // A bad grace period is refused before anything stops.
    await assert.rejects(
      server.shutdown(-1),
      (e) => e instanceof RangeError && /graceMs/.test(e.message),
    );
    assert.equal((await fetch(new URL("/healthz", server.httpUrl))).status, 200, "still serving");
    const first = server.shutdown(100);
    const second = service.shutdown();
    assert.equal(first, second, "one shutdown");
    await first;
    await service.finished;
    assert.equal(finished, true);
    await assert.rejects(fetch(new URL("/healthz", server.httpUrl)));
  },
});

Deno.test("server: idleTimeoutMs that QUIC cannot take is refused under its own name", async () => {
  for (const bad of [Infinity, Number.NaN, -1, 0.5, 0]) {
    await assert.rejects(
      startPingServer({ port: 0, idleTimeoutMs: bad }),
      (e) => e instanceof RangeError && e.message.startsWith("idleTimeoutMs must be"),
      String(bad),
    );
  }
});
