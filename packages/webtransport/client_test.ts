// Our client against our server over real QUIC on loopback: streams, datagrams, close
// codes both ways, many streams, rejection, trust, and a peer that sends garbage.
import assert from "node:assert/strict";
import {
  type CertificateAuthority,
  connectWebTransport,
  encodeFrame,
  encodeVarint,
  FrameType,
  generateCertificateAuthority,
  H3,
  serveWebTransport,
  StreamType,
  WebTransportRejectedError,
  type WebTransportSession,
} from "./mod.ts";
import { acceptEchoSessions } from "./testdata/echo.ts";

const bytes = (s: string) => new TextEncoder().encode(s);
const options = { sanitizeOps: false, sanitizeResources: false }; // QUIC winds down after the test

async function readAll(stream: ReadableStream<Uint8Array>): Promise<string> {
  let out = "";
  for await (const chunk of stream) out += new TextDecoder().decode(chunk, { stream: true });
  return out;
}

let authority: CertificateAuthority | undefined;

async function withServer(
  fn: (url: string, ca: string, sessions: WebTransportSession[]) => Promise<void>,
) {
  authority ??= await generateCertificateAuthority();
  const leaf = await authority.issue();
  const server = serveWebTransport({ cert: leaf.certPem, key: leaf.keyPem });
  const sessions = acceptEchoSessions(server);
  try {
    await fn(`https://127.0.0.1:${server.addr.port}`, authority.certPem, sessions);
  } finally {
    server.close();
  }
}

Deno.test({
  name: "client: streams of both kinds and datagrams echo through our server",
  ...options,
  fn: () =>
    withServer(async (url, ca) => {
      const session = await connectWebTransport(`${url}/echo`, {
        caCerts: [ca],
        origin: "https://app.test",
      });
      const bidi = await session.createBidirectionalStream();
      const writer = bidi.writable.getWriter();
      await writer.write(bytes("hello, мир"));
      await writer.close();
      assert.equal(await readAll(bidi.readable), "echo: hello, мир");
      const uni = (await session.createUnidirectionalStream()).getWriter();
      await uni.write(bytes("one way"));
      await uni.close();
      const { value: back } = await session.incomingUnidirectionalStreams.getReader().read();
      assert.equal(await readAll(back!), "uni echo: one way");
      await session.datagrams.writable.getWriter().write(bytes("dgram"));
      const { value: datagram } = await session.datagrams.readable.getReader().read();
      assert.equal(new TextDecoder().decode(datagram), "dgram");
      await session.close();
    }),
});

Deno.test({
  name: "client: close codes and reasons cross both ways",
  ...options,
  fn: () =>
    withServer(async (url, ca, sessions) => {
      const first = await connectWebTransport(`${url}/echo`, { caCerts: [ca] });
      await first.close({ closeCode: 4242, reason: "client says bye" });
      for (let i = 0; i < 200 && sessions.length < 1; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.deepEqual(await sessions[0]!.closed, { closeCode: 4242, reason: "client says bye" });

      const second = await connectWebTransport(`${url}/echo`, { caCerts: [ca] });
      for (let i = 0; i < 200 && sessions.length < 2; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      await sessions[1]!.close({ closeCode: 7, reason: "server says bye" });
      assert.deepEqual(await second.closed, { closeCode: 7, reason: "server says bye" });
    }),
});

Deno.test({
  name: "client: 10,000 sequential streams in one session",
  ...options,
  fn: () =>
    withServer(async (url, ca) => {
      const session = await connectWebTransport(`${url}/echo`, { caCerts: [ca] });
      let ok = 0;
      for (let i = 0; i < 10_000; i++) {
        const stream = await session.createBidirectionalStream();
        const writer = stream.writable.getWriter();
        writer.write(bytes(`${i}`));
        writer.close();
        if ((await readAll(stream.readable)) === `echo: ${i}`) ok++;
      }
      assert.equal(ok, 10_000);
      await session.close();
    }),
});

Deno.test({
  name: "client: a rejected path gives WebTransportRejectedError with the status",
  ...options,
  fn: () =>
    withServer(async (url, ca) => {
      const error = await connectWebTransport(`${url}/nope`, { caCerts: [ca] }).catch((e) => e);
      assert.ok(error instanceof WebTransportRejectedError, String(error));
      assert.equal(error.status, 404);
    }),
});

Deno.test({
  name: "client: a server certificate from an untrusted CA is refused",
  ...options,
  fn: () =>
    withServer(async (url) => {
      const stranger = await generateCertificateAuthority();
      await assert.rejects(connectWebTransport(`${url}/echo`, { caCerts: [stranger.certPem] }));
      await assert.rejects(
        connectWebTransport(`${url}/echo`),
        "system roots do not trust it either",
      );
    }),
});

Deno.test({
  name: "server: a peer whose control stream does not start with SETTINGS is closed with " +
    "H3_MISSING_SETTINGS, and the server keeps serving others",
  ...options,
  fn: () =>
    withServer(async (url, ca) => {
      const port = Number(new URL(url).port);
      const rogue = await Deno.connectQuic({
        hostname: "127.0.0.1",
        port,
        alpnProtocols: ["h3"],
        caCerts: [ca],
      });
      const control = (await rogue.createUnidirectionalStream()).getWriter();
      await control.write(
        new Uint8Array([
          ...encodeVarint(StreamType.CONTROL),
          ...encodeFrame(FrameType.DATA, bytes("junk")),
        ]),
      );
      const closed = await rogue.closed;
      assert.equal(closed.closeCode, H3.MISSING_SETTINGS);
      const honest = await connectWebTransport(`${url}/echo`, { caCerts: [ca] });
      const stream = await honest.createBidirectionalStream();
      const writer = stream.writable.getWriter();
      await writer.write(bytes("still here?"));
      await writer.close();
      assert.equal(await readAll(stream.readable), "echo: still here?");
      await honest.close();
    }),
});

// ---- an abort signal is honoured at every await of a connect ----

/** Rejects within 1 s of the abort, with the signal's own reason. */
async function assertAbortedWith(connecting: Promise<unknown>, reason: unknown, abortedAt: number) {
  await assert.rejects(connecting, (error) => error === reason);
  const late = performance.now() - abortedAt;
  assert.ok(late < 1_000, `rejected ${late.toFixed(0)} ms after the abort`);
}

Deno.test({
  name: "client: a signal aborted before the call rejects with its reason",
  ...options,
  async fn() {
    const controller = new AbortController();
    const reason = new Error("not wanted");
    controller.abort(reason);
    await assertAbortedWith(
      connectWebTransport("https://127.0.0.1:9/echo", { signal: controller.signal }),
      reason,
      performance.now(),
    );
  },
});

Deno.test({
  name: "client: an abort synchronously after the call, or after a microtask, is honoured",
  ...options,
  fn: () =>
    withServer(async (url, ca) => {
      for (
        const wait of [
          () => {},
          () => Promise.resolve(),
          () => new Promise((r) => setTimeout(r, 0)),
        ]
      ) {
        const controller = new AbortController();
        const reason = new DOMException("changed my mind", "AbortError");
        const connecting = connectWebTransport(`${url}/echo`, {
          caCerts: [ca],
          signal: controller.signal,
        });
        await wait();
        controller.abort(reason);
        await assertAbortedWith(connecting, reason, performance.now());
      }
    }),
});

Deno.test({
  name:
    "client: an abort during the QUIC handshake (a server that never answers) is honoured at once",
  ...options,
  async fn() {
    const blackHole = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    try {
      const { port } = blackHole.addr as Deno.NetAddr;
      const controller = new AbortController();
      const connecting = connectWebTransport(`https://127.0.0.1:${port}/echo`, {
        signal: controller.signal,
        transport: { maxIdleTimeout: 3_000 },
      });
      await blackHole.receive(); // the client's first flight has gone out
      const reason = new Error("handshake abandoned");
      controller.abort(reason);
      await assertAbortedWith(connecting, reason, performance.now());
    } finally {
      blackHole.close();
    }
  },
});

Deno.test({
  name:
    "client: an abort while waiting for the server's SETTINGS is honoured and closes the connection",
  ...options,
  async fn() {
    authority ??= await generateCertificateAuthority();
    const leaf = await authority.issue();
    const endpoint = new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 });
    const listener = endpoint.listen({
      cert: leaf.certPem,
      key: leaf.keyPem,
      alpnProtocols: ["h3"],
    });
    try {
      const controller = new AbortController();
      const connecting = connectWebTransport(`https://127.0.0.1:${endpoint.addr.port}/echo`, {
        caCerts: [authority.certPem],
        signal: controller.signal,
      });
      // A server that completes the handshake and then says nothing: no SETTINGS.
      const silent = await (await listener[Symbol.asyncIterator]().next()).value!.accept();
      const reason = new Error("no SETTINGS for me");
      controller.abort(reason);
      await assertAbortedWith(connecting, reason, performance.now());
      const closed = await silent.closed;
      assert.equal(closed.closeCode, H3.REQUEST_CANCELLED, "the client closed the connection");
    } finally {
      endpoint.close();
    }
  },
});

Deno.test({
  name:
    "client: an abort while the server decides on the CONNECT is honoured; aborting later does nothing",
  ...options,
  async fn() {
    authority ??= await generateCertificateAuthority();
    const leaf = await authority.issue();
    const server = serveWebTransport({ cert: leaf.certPem, key: leaf.keyPem });
    const requests = server.requests.getReader();
    const url = `https://127.0.0.1:${server.addr.port}/echo`;
    try {
      const controller = new AbortController();
      const connecting = connectWebTransport(url, {
        caCerts: [authority.certPem],
        signal: controller.signal,
      });
      const { value: request } = await requests.read(); // the CONNECT is in, unanswered
      const reason = new Error("took too long");
      controller.abort(reason);
      await assertAbortedWith(connecting, reason, performance.now());
      const accepted = await request!.accept().catch(() => undefined);
      if (accepted) {
        assert.deepEqual(
          await accepted.closed,
          { closeCode: 0, reason: "" },
          "the session dies with its connection",
        );
      }

      // Once the session is returned, the signal is done with.
      const later = new AbortController();
      const connected = connectWebTransport(url, {
        caCerts: [authority.certPem],
        signal: later.signal,
      });
      const { value: next } = await requests.read();
      const session = await next!.accept();
      const client = await connected;
      later.abort(new Error("too late"));
      await session.datagrams.writable.getWriter().write(bytes("still here"));
      const { value } = await client.datagrams.readable.getReader().read();
      assert.equal(new TextDecoder().decode(value), "still here");
      await client.close();
    } finally {
      server.close();
    }
  },
});
