// Trust, certificate changes, shutdown and aborted streams, client to server over real
// QUIC on loopback.
import assert from "node:assert/strict";
import {
  CertificateRotation,
  connectWebTransport,
  generateCertificate,
  serveWebTransport,
  type WebTransportSession,
} from "./mod.ts";
import { acceptEchoSessions } from "./testdata/echo.ts";
import { waitFor } from "@duet/testkit";

const bytes = (s: string) => new TextEncoder().encode(s);
const options = { sanitizeOps: false, sanitizeResources: false }; // QUIC winds down after the test
const pin = (value: Uint8Array) => ({ algorithm: "sha-256" as const, value });

async function roundTrip(session: WebTransportSession, text: string): Promise<string> {
  const stream = await session.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  await writer.write(bytes(text));
  await writer.close();
  let out = "";
  for await (const chunk of stream.readable) out += new TextDecoder().decode(chunk);
  return out;
}

Deno.test({
  name: "client: a pinned certificate hash is trusted; another hash, an expired " +
    "certificate and a malformed hash are refused",
  ...options,
  async fn() {
    const certificate = await generateCertificate();
    const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
    acceptEchoSessions(server);
    const url = `https://127.0.0.1:${server.addr.port}/echo`;
    try {
      const other = await generateCertificate();
      const session = await connectWebTransport(url, {
        serverCertificateHashes: [pin(other.sha256), pin(certificate.sha256)],
      });
      assert.equal(await roundTrip(session, "pinned"), "echo: pinned");
      await session.close();
      await assert.rejects(
        connectWebTransport(url, { serverCertificateHashes: [pin(other.sha256)] }),
        /invalid peer certificate/,
      );
      await assert.rejects(
        connectWebTransport(url, { serverCertificateHashes: [pin(new Uint8Array(31))] }),
        TypeError,
      );
      await assert.rejects(connectWebTransport(url, { serverCertificateHashes: [] }), TypeError);
    } finally {
      server.close();
    }

    const stale = await generateCertificate({
      validityDays: 1,
      now: new Date(Date.now() - 3 * 86_400_000),
    });
    const staleServer = serveWebTransport({ cert: stale.certPem, key: stale.keyPem });
    acceptEchoSessions(staleServer);
    try {
      await assert.rejects(
        connectWebTransport(`https://127.0.0.1:${staleServer.addr.port}/echo`, {
          serverCertificateHashes: [pin(stale.sha256)],
        }),
        /Expired/,
      );
    } finally {
      staleServer.close();
    }
  },
});

Deno.test({
  name: "server: after a rotation new clients get the next certificate and open " +
    "sessions carry on",
  ...options,
  async fn() {
    const rotation = await CertificateRotation.start();
    const server = serveWebTransport({
      cert: rotation.current.certPem,
      key: rotation.current.keyPem,
    });
    rotation.onRotate((current) => server.setCertificate(current.certPem, current.keyPem));
    acceptEchoSessions(server);
    const url = `https://127.0.0.1:${server.addr.port}/echo`;
    try {
      const [first, second] = rotation.hashes();
      const before = await connectWebTransport(url, {
        serverCertificateHashes: [pin(first!)],
      });
      await rotation.rotate();
      assert.equal(await roundTrip(before, "still"), "echo: still", "the old session lives on");
      const after = await connectWebTransport(url, {
        serverCertificateHashes: rotation.hashes().map(pin),
      });
      assert.deepEqual(rotation.hashes()[0], second);
      assert.equal(await roundTrip(after, "rotated"), "echo: rotated");
      await assert.rejects(
        connectWebTransport(url, { serverCertificateHashes: [pin(first!)] }),
        /invalid peer certificate/,
        "the retired certificate is no longer presented",
      );
      await before.close();
      await after.close();
    } finally {
      rotation.stop();
      server.close();
    }
  },
});

Deno.test({
  name: "server: shutdown() drains sessions (GOAWAY and DRAIN reach the client), lets " +
    "them finish, then closes the rest with a reason",
  ...options,
  async fn() {
    const certificate = await generateCertificate();
    const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
    const sessions = acceptEchoSessions(server);
    const url = `https://127.0.0.1:${server.addr.port}/echo`;
    const trust = { serverCertificateHashes: [pin(certificate.sha256)] };
    const polite = await connectWebTransport(url, trust);
    const stubborn = await connectWebTransport(url, trust);
    await waitFor(() => sessions.length === 2, "both sessions accepted");
    // The polite client finishes its work and leaves when asked to.
    polite.draining.then(() => polite.close({ closeCode: 0, reason: "done" }));
    const shutdown = server.shutdown({ graceMs: 300, reason: "maintenance" });
    await stubborn.draining;
    assert.equal(await roundTrip(stubborn, "in flight"), "echo: in flight", "still served");
    await shutdown;
    assert.deepEqual(await polite.closed, { closeCode: 0, reason: "done" });
    assert.deepEqual(await stubborn.closed, { closeCode: 0, reason: "maintenance" });
    await assert.rejects(
      connectWebTransport(url, { ...trust, transport: { maxIdleTimeout: 500 } }),
      "nobody listens any more",
    );
  },
});

Deno.test({
  name: "streams: a cancelled reader stops the sender (STOP_SENDING): the peer's writes fail",
  ...options,
  async fn() {
    const certificate = await generateCertificate();
    const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
    const outcome = Promise.withResolvers<string>();
    (async () => {
      for await (const request of server.requests) {
        const session = await request.accept();
        for await (const stream of session.incomingBidirectionalStreams) {
          // Keep writing until the client's STOP_SENDING makes writes fail.
          const writer = stream.writable.getWriter();
          try {
            for (let i = 0; i < 100_000; i++) await writer.write(new Uint8Array(1024));
            outcome.resolve("never stopped");
          } catch {
            outcome.resolve("stopped");
          }
        }
      }
    })();
    const url = `https://127.0.0.1:${server.addr.port}/abort`;
    const session = await connectWebTransport(url, {
      serverCertificateHashes: [pin(certificate.sha256)],
    });
    try {
      const stream = await session.createBidirectionalStream();
      await stream.writable.getWriter().write(bytes("go"));
      const reader = stream.readable.getReader();
      await reader.read(); // the server is sending
      await reader.cancel("enough");
      assert.equal(await outcome.promise, "stopped");
    } finally {
      await session.close();
      server.close();
    }
  },
});

Deno.test({
  name: "server: clients that hang up during or right after the handshake do not stop it",
  ...options,
  async fn() {
    const certificate = await generateCertificate();
    const server = serveWebTransport({ cert: certificate.certPem, key: certificate.keyPem });
    acceptEchoSessions(server);
    const trust = { serverCertificateHashes: [pin(certificate.sha256)] };
    try {
      for (let i = 0; i < 20; i++) {
        const conn = await Deno.connectQuic({
          hostname: "127.0.0.1",
          port: server.addr.port,
          alpnProtocols: ["h3"],
          ...trust,
        } as Deno.ConnectQuicOptions<false>);
        conn.close({ closeCode: 0, reason: "" });
      }
      const session = await connectWebTransport(
        `https://127.0.0.1:${server.addr.port}/echo`,
        trust,
      );
      assert.equal(await roundTrip(session, "still serving"), "echo: still serving");
      await session.close();
    } finally {
      server.close();
    }
  },
});
