// The server's duration options (below), and the session layer against headless Chromium 156: streams of both kinds in both
// directions ending with FIN, datagrams, close codes and reasons both ways, pinned
// certificate hashes, rejection, abort and cancel. And 10,000 sequential streams in one
// session (Deno's own wrapper fails at #100; this layer failed at 500-800 until it held its
// control stream, see README). The cases are in `_browser_cases.ts`, shared with
// `firefox_test.ts`.
import assert from "node:assert/strict";
import { findChromium, testWith, waitFor } from "@duet/testkit";
import { interopCases, withChromium } from "./_browser_cases.ts";
import { AddressCap, serveWebTransport } from "./server.ts";
import { connectWebTransport } from "./client.ts";
import { generateCertificate } from "./cert.ts";
import { acceptEchoSessions } from "./testdata/echo.ts";

const chromium = await findChromium();
const cases = interopCases("Chromium", withChromium);

testWith(chromium, cases.streamsAndDatagrams);
testWith(chromium, cases.browserCloses);
testWith(chromium, cases.serverOpensAndCloses);
testWith(chromium, cases.sequentialStreams);
testWith(chromium, cases.pinnedHashes);
testWith(chromium, cases.rejected);
testWith(chromium, cases.abort);
testWith(chromium, cases.cancel);
testWith(chromium, cases.dialectProtocolAndReasons);

const DAY_MS = 86_400_000;
const quic = { sanitizeOps: false, sanitizeResources: false }; // QUIC winds down after the test
const pin = (value: Uint8Array) => ({ algorithm: "sha-256" as const, value });

Deno.test("server: duration options out of range are a RangeError naming the option; nothing listens", async () => {
  const { certPem: cert, keyPem: key } = await generateCertificate();
  const bad = [
    [{ settingsTimeoutMs: 0 }, /settingsTimeoutMs/],
    [{ settingsTimeoutMs: -1 }, /settingsTimeoutMs/],
    [{ settingsTimeoutMs: NaN }, /settingsTimeoutMs/],
    [{ transport: { maxIdleTimeout: -1 } }, /transport\.maxIdleTimeout/],
    [{ transport: { maxIdleTimeout: 1.5 } }, /transport\.maxIdleTimeout/],
    [{ transport: { keepAliveInterval: NaN } }, /transport\.keepAliveInterval/],
  ] as const;
  for (const [options, message] of bad) {
    assert.throws(
      () => serveWebTransport({ cert, key, ...options }),
      (e) => e instanceof RangeError && message.test(e.message),
    );
  }
});

Deno.test({
  name: "server: shutdown() refuses a bad graceMs before stopping anything",
  ...quic,
  async fn() {
    const certificate = await generateCertificate();
    const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
    acceptEchoSessions(server);
    try {
      for (const graceMs of [-1, NaN]) {
        await assert.rejects(
          server.shutdown({ graceMs }),
          (e) => e instanceof RangeError && /graceMs/.test(e.message),
        );
      }
      const session = await connectWebTransport(`https://127.0.0.1:${server.addr.port}/echo`, {
        serverCertificateHashes: [pin(certificate.sha256)],
      });
      await session.close();
    } finally {
      server.close();
    }
  },
});

for (const graceMs of [2 ** 31 - 1, 2 ** 31, 30 * DAY_MS]) {
  Deno.test({
    name:
      `server: shutdown({ graceMs: ${graceMs} }) waits for the sessions instead of closing them at once`,
    ...quic,
    async fn() {
      const certificate = await generateCertificate();
      const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
      const sessions = acceptEchoSessions(server);
      const client = await connectWebTransport(`https://127.0.0.1:${server.addr.port}/echo`, {
        serverCertificateHashes: [pin(certificate.sha256)],
      });
      await waitFor(() => sessions.length === 1, "the session accepted");
      let done = false;
      const shutdown = server.shutdown({ graceMs, reason: "too early" }).then(() => (done = true));
      await client.draining;
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal(done, false, "still in its grace period after 200 ms");
      await client.close({ closeCode: 0, reason: "finished" });
      await shutdown;
      assert.deepEqual(await sessions[0]!.closed, { closeCode: 0, reason: "finished" });
    },
  });
}

Deno.test({
  name:
    "server: idle timeouts and keep-alives of 2^31 - 1, 2^31 and 30 days are QUIC's to keep: sessions work",
  ...quic,
  async fn() {
    const certificate = await generateCertificate();
    for (const ms of [2 ** 31 - 1, 2 ** 31, 30 * DAY_MS]) {
      const transport = { maxIdleTimeout: ms, keepAliveInterval: ms };
      const server = serveWebTransport({
        cert: certificate.certPem,
        key: certificate.keyPem,
        transport,
        settingsTimeoutMs: ms,
      });
      acceptEchoSessions(server);
      try {
        const session = await connectWebTransport(`https://127.0.0.1:${server.addr.port}/echo`, {
          serverCertificateHashes: [pin(certificate.sha256)],
          transport,
        });
        await new Promise((resolve) => setTimeout(resolve, 100));
        const ended = await Promise.race([
          session.closed.then(() => "closed"),
          Promise.resolve("open"),
        ]);
        assert.equal(ended, "open", `${ms} ms`);
        await session.close();
      } finally {
        server.close();
      }
    }
  },
});

Deno.test("AddressCap: at most max per address; a place given back (once) frees it; 0 is no cap", () => {
  const cap = new AddressCap(2);
  const a = cap.take("10.0.0.1");
  const b = cap.take("10.0.0.1");
  assert.ok(a && b);
  assert.equal(cap.take("10.0.0.1"), undefined);
  assert.ok(cap.take("10.0.0.2"), "another address has its own count");
  a();
  a();
  assert.equal(cap.held("10.0.0.1"), 1, "giving back twice counts once");
  assert.ok(cap.take("10.0.0.1"));
  const none = new AddressCap(0);
  for (let i = 0; i < 5; i++) assert.ok(none.take("10.0.0.1"));
});
