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
