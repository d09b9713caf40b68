// The session layer against headless Chromium 156: streams of both kinds in both
// directions ending with FIN, datagrams, close codes and reasons both ways, rejection.
// And 10,000 sequential streams in one session (Deno's own wrapper fails at #100; this layer
// failed at 500-800 until it held its control stream, see README).
import assert from "node:assert/strict";
import { findChromium, testWith, withChromiumPage } from "@duet/testkit";
import {
  type CloseInfo,
  generateCertificate,
  serveWebTransport,
  type WebTransportSession,
} from "./mod.ts";
import { acceptEchoSessions } from "./testdata/echo.ts";

const chromium = await findChromium();
const bytes = (s: string) => new TextEncoder().encode(s);

async function withServer(
  fn: (
    page: import("playwright-core").Page,
    port: number,
    hash: number[],
    sessions: WebTransportSession[],
  ) => Promise<void>,
): Promise<void> {
  const certificate = await generateCertificate();
  const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
  const sessions = acceptEchoSessions(server);
  try {
    await withChromiumPage((page) => fn(page, server.addr.port, [...certificate.sha256], sessions));
  } finally {
    server.close();
  }
}

const options = { sanitizeOps: false, sanitizeResources: false }; // QUIC winds down after the test

testWith(chromium, {
  name: "server: Chromium streams both kinds and datagrams echo; FIN ends each stream",
  ...options,
  fn: () =>
    withServer(async (page, port, hash, sessions) => {
      const result = await page.evaluate(async ({ port, hash }) => {
        const wt = new WebTransport(`https://127.0.0.1:${port}/echo`, {
          serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
        });
        await wt.ready;
        const read = async (r: ReadableStream<Uint8Array>) => {
          let s = "";
          for await (const c of r as unknown as AsyncIterable<Uint8Array>) {
            s += new TextDecoder().decode(c);
          }
          return s;
        };
        const bidi = await wt.createBidirectionalStream();
        const w = bidi.writable.getWriter();
        await w.write(new TextEncoder().encode("ping 1\n"));
        await w.close();
        const bidiReply = await read(bidi.readable);
        const uni = await wt.createUnidirectionalStream();
        const uw = uni.getWriter();
        await uw.write(new TextEncoder().encode("привет"));
        await uw.close();
        const incoming = wt.incomingUnidirectionalStreams.getReader();
        const uniReply = await read((await incoming.read()).value!);
        const dw = wt.datagrams.writable.getWriter();
        await dw.write(new TextEncoder().encode("dgram"));
        const datagram = new TextDecoder().decode(
          (await wt.datagrams.readable.getReader().read()).value,
        );
        wt.close({ closeCode: 7, reason: "bye" });
        return { bidiReply, uniReply, datagram };
      }, { port, hash });
      assert.deepEqual(result, {
        bidiReply: "echo: ping 1\n",
        uniReply: "uni echo: привет",
        datagram: "dgram",
      });
      const closed: CloseInfo = await sessions[0]!.closed;
      assert.deepEqual(
        closed,
        { closeCode: 7, reason: "bye" },
        "the browser's close code and reason arrive",
      );
    }),
});

testWith(chromium, {
  name:
    "server: a server-opened stream reaches Chromium, and the server's close code and reason too",
  ...options,
  fn: () =>
    withServer(async (page, port, hash, sessions) => {
      const opened = page.evaluate(async ({ port, hash }) => {
        const wt = new WebTransport(`https://127.0.0.1:${port}/echo`, {
          serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
        });
        await wt.ready;
        const { value: stream } = await wt.incomingBidirectionalStreams.getReader().read();
        let got = "";
        for await (const c of stream!.readable as unknown as AsyncIterable<Uint8Array>) {
          got += new TextDecoder().decode(c);
        }
        const closed = await wt.closed;
        return { got, closeCode: closed.closeCode, reason: closed.reason };
      }, { port, hash });
      for (let i = 0; i < 500 && sessions.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      const session = sessions[0]!;
      const stream = await session.createBidirectionalStream();
      const writer = stream.writable.getWriter();
      await writer.write(bytes("hello from the server"));
      await writer.close();
      await new Promise((r) => setTimeout(r, 100));
      await session.close({ closeCode: 42, reason: "done" });
      assert.deepEqual(await opened, {
        got: "hello from the server",
        closeCode: 42,
        reason: "done",
      });
    }),
});

testWith(chromium, {
  name: "server: 10,000 sequential streams in one Chromium session all complete",
  ...options,
  fn: () =>
    withServer(async (page, port, hash) => {
      const completed = await page.evaluate(async ({ port, hash }) => {
        const wt = new WebTransport(`https://127.0.0.1:${port}/echo`, {
          serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
        });
        await wt.ready;
        let ok = 0;
        try {
          for (let i = 0; i < 10_000; i++) {
            const s = await wt.createBidirectionalStream();
            const w = s.writable.getWriter();
            w.write(new TextEncoder().encode(`${i}`));
            // Not awaited: close() resolves when the FIN is acknowledged (~25 ms of delayed
            // ACK); the echo below already proves the FIN arrived.
            w.close();
            let reply = "";
            for await (const c of s.readable as unknown as AsyncIterable<Uint8Array>) {
              reply += new TextDecoder().decode(c);
            }
            if (reply === `echo: ${i}`) ok++;
          }
        } catch (error) {
          return `failed after ${ok}: ${error}`;
        }
        wt.close();
        return ok;
      }, { port, hash });
      assert.equal(completed, 10_000);
    }),
});

testWith(chromium, {
  name: "server: a rejected request fails the browser's session with no data",
  ...options,
  fn: () =>
    withServer(async (page, port, hash) => {
      const result = await page.evaluate(async ({ port, hash }) => {
        const wt = new WebTransport(`https://127.0.0.1:${port}/nope`, {
          serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
        });
        try {
          await wt.ready;
          return "ready";
        } catch (error) {
          return `rejected: ${(error as Error).name}`;
        }
      }, { port, hash });
      assert.match(result, /^rejected: /);
    }),
});

testWith(chromium, {
  name: "server: Chromium's abort() (RESET_STREAM) and cancel() (STOP_SENDING) reach the " +
    "server as errors, not as a clean end",
  ...options,
  async fn() {
    const certificate = await generateCertificate();
    const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
    const abortSeen = Promise.withResolvers<string>();
    const cancelSeen = Promise.withResolvers<string>();
    (async () => {
      for await (const request of server.requests) {
        const session = await request.accept();
        for await (const stream of session.incomingBidirectionalStreams) {
          (async () => {
            const reader = stream.readable.getReader();
            const kind = new TextDecoder().decode((await reader.read()).value);
            if (kind === "abort") {
              const next = await reader.read().then(
                (r) => r.done ? "clean end" : "data",
                () => "reset",
              );
              return abortSeen.resolve(next);
            }
            const writer = stream.writable.getWriter();
            try {
              for (let i = 0; i < 100_000; i++) await writer.write(new Uint8Array(1024));
              cancelSeen.resolve("never stopped");
            } catch {
              cancelSeen.resolve("stopped");
            }
          })();
        }
      }
    })();
    try {
      await withChromiumPage(async (page) => {
        await page.evaluate(async ({ port, hash }) => {
          const wt = new WebTransport(`https://127.0.0.1:${port}/abort`, {
            serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
          });
          await wt.ready;
          const aborted = await wt.createBidirectionalStream();
          const w = aborted.writable.getWriter();
          await w.write(new TextEncoder().encode("abort"));
          await new Promise((r) => setTimeout(r, 50));
          await w.abort("changed my mind");
          const cancelled = await wt.createBidirectionalStream();
          await cancelled.writable.getWriter().write(new TextEncoder().encode("cancel"));
          const r = cancelled.readable.getReader();
          await r.read();
          await r.cancel();
        }, { port: server.addr.port, hash: [...certificate.sha256] });
        assert.equal(await abortSeen.promise, "reset");
        assert.equal(await cancelSeen.promise, "stopped");
      });
    } finally {
      server.close();
    }
  },
});
