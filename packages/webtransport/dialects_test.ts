// Every dialect, subprotocols, early data, close reasons and the session limit, client to
// server over real QUIC on loopback. The raw client here is built from the package's own
// codecs, so it can do what connectWebTransport() never does: send streams and datagrams
// before the CONNECT is answered, or open two sessions on one connection.
import assert from "node:assert/strict";
import {
  chooseProtocol,
  connectWebTransport,
  type Dialect,
  DIALECTS,
  encodeCapsule,
  encodeDatagram,
  encodeFieldSection,
  encodeFrame,
  encodeSettings,
  encodeVarint,
  type Field,
  FrameReader,
  FrameType,
  generateCertificate,
  type GeneratedCertificate,
  localSettings,
  type ServeOptions,
  serveWebTransport,
  type SessionRequest,
  StreamType,
  truncateReason,
  upgradeToken,
  WebTransportProtocolError,
  type WebTransportServer,
  type WebTransportSession,
  WebTransportUnsupportedError,
} from "./mod.ts";
import { decodeFieldSection } from "./qpack.ts";
import { H3Connection } from "./connection.ts";
import { readFrame } from "./streams.ts";
import { echo } from "./testdata/echo.ts";
import { waitFor } from "@duet/testkit";

const options = { sanitizeOps: false, sanitizeResources: false }; // QUIC winds down after the test
const bytes = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const pin = (c: GeneratedCertificate) => [{ algorithm: "sha-256" as const, value: c.sha256 }];

async function readText(stream: ReadableStream<Uint8Array>): Promise<string> {
  let out = "";
  for await (const chunk of stream) out += text(chunk);
  return out;
}

/** A server whose session requests go to `onRequest`; closed by the returned function. */
async function withServer(
  serve: Partial<ServeOptions>,
  onRequest: (request: SessionRequest) => Promise<void>,
  body: (server: WebTransportServer, certificate: GeneratedCertificate) => Promise<void>,
): Promise<void> {
  const certificate = await generateCertificate();
  const server = serveWebTransport({
    cert: certificate.certPem,
    key: certificate.keyPem,
    ...serve,
  });
  (async () => {
    for await (const request of server.requests) onRequest(request).catch(() => {});
  })();
  try {
    await body(server, certificate);
  } finally {
    server.close();
  }
}

/** A QUIC connection to our server on loopback, pinning its certificate. */
function quicConnection(port: number, certificate: GeneratedCertificate): Promise<Deno.QuicConn> {
  return Deno.connectQuic({
    hostname: "127.0.0.1",
    port,
    alpnProtocols: ["h3"],
    serverCertificateHashes: pin(certificate),
  } as Deno.ConnectQuicOptions<false>);
}

/** A QUIC connection that has sent no HTTP/3 SETTINGS yet; `settle()` sends them. */
async function bareConnection(port: number, certificate: GeneratedCertificate) {
  const conn = await quicConnection(port, certificate);
  const settle = async (dialects: Dialect[]) => {
    const control = (await conn.createUnidirectionalStream()).getWriter();
    await control.write(
      new Uint8Array([
        ...encodeVarint(StreamType.CONTROL),
        ...encodeFrame(FrameType.SETTINGS, encodeSettings(localSettings("client", dialects))),
      ]),
    );
    return control; // held: closing a control stream is an error
  };
  return { conn, settle };
}

/** A raw HTTP/3 client connection that has the server's SETTINGS. */
async function rawConnection(port: number, certificate: GeneratedCertificate, dialects: Dialect[]) {
  const conn = await quicConnection(port, certificate);
  const h3 = new H3Connection(conn, undefined, { role: "client", dialects });
  h3.run().catch(() => {});
  await h3.peerSettings();
  return { conn, h3 };
}

/** Sends an extended CONNECT; the status comes later, so the caller may send early data. */
async function sendConnect(conn: Deno.QuicConn, dialect: Dialect, path = "/echo") {
  const stream = await conn.createBidirectionalStream();
  const request: Field[] = [
    [":method", "CONNECT"],
    [":protocol", upgradeToken(dialect)],
    [":scheme", "https"],
    [":authority", "127.0.0.1"],
    [":path", path],
  ];
  if (dialect === "draft02") request.push(["sec-webtransport-http3-draft02", "1"]);
  const writer = stream.writable.getWriter();
  await writer.write(encodeFrame(FrameType.HEADERS, encodeFieldSection(request)));
  writer.releaseLock();
  const status = (async () => {
    const reader = stream.readable.getReader();
    const frame = await readFrame(new FrameReader(), reader).catch(() => undefined);
    reader.releaseLock(); // the tests that read on have nothing else coming before the FIN
    return frame ? Number(new Map(decodeFieldSection(frame.payload)).get(":status")) : 0;
  })();
  return { id: Number(stream.writable.id), stream, status };
}

async function writeAll(stream: WritableStream<Uint8Array>, ...chunks: Uint8Array[]) {
  const writer = stream.getWriter();
  for (const chunk of chunks) await writer.write(chunk);
  await writer.close();
}

const header = (...values: number[]) => new Uint8Array(values.flatMap((v) => [...encodeVarint(v)]));

for (const dialect of DIALECTS) {
  Deno.test({
    name: `dialects: our client and server speak ${dialect} end to end: streams, datagrams, close`,
    ...options,
    async fn() {
      const served: WebTransportSession[] = [];
      await withServer({}, async (request) => {
        assert.equal(request.dialect, dialect);
        const session = await request.accept();
        served.push(session);
        echo(session, { prefix: "echo: " });
      }, async (server, certificate) => {
        const session = await connectWebTransport(`https://127.0.0.1:${server.addr.port}/echo`, {
          serverCertificateHashes: pin(certificate),
          dialects: [dialect],
        });
        assert.equal(session.dialect, dialect);
        const bidi = await session.createBidirectionalStream();
        await writeAll(bidi.writable, bytes("bidi"));
        assert.equal(await readText(bidi.readable), "echo: bidi");
        await writeAll(await session.createUnidirectionalStream(), bytes("uni"));
        const reader = session.incomingUnidirectionalStreams.getReader();
        assert.equal(await readText((await reader.read()).value!), "uni echo: uni");
        await session.datagrams.writable.getWriter().write(bytes("datagram"));
        const datagram = await session.datagrams.readable.getReader().read();
        assert.equal(text(datagram.value!), "datagram");
        await session.close({ closeCode: 42, reason: `bye in ${dialect}` });
        assert.equal(served[0]!.dialect, dialect);
        assert.deepEqual(await served[0]!.closed, { closeCode: 42, reason: `bye in ${dialect}` });
      });
    },
  });
}

Deno.test({
  name: "dialects: the newest both announce is spoken; none in common fails with a clear error",
  ...options,
  async fn() {
    const accept = async (request: SessionRequest) => void await request.accept();
    await withServer({ dialects: ["draft02", "draft14"] }, accept, async (server, certificate) => {
      const url = `https://127.0.0.1:${server.addr.port}/echo`;
      const session = await connectWebTransport(url, { serverCertificateHashes: pin(certificate) });
      assert.equal(session.dialect, "draft14");
      await session.close();
      await assert.rejects(
        connectWebTransport(url, {
          serverCertificateHashes: pin(certificate),
          dialects: ["draft16"],
        }),
        (error) =>
          error instanceof WebTransportUnsupportedError &&
          error.message ===
            "The server speaks WebTransport draft14, draft02; this client offered draft16",
      );
    });
  },
});

Deno.test({
  name: "subprotocols: the server picks from the client's list; both sides see the choice",
  ...options,
  async fn() {
    const offered: string[][] = [];
    await withServer({}, async (request) => {
      offered.push(request.protocols);
      if (request.url.pathname === "/wrong") {
        await assert.rejects(request.accept({ protocol: "not-offered" }), RangeError);
        await request.accept({ protocol: request.protocols[0] });
        return;
      }
      const protocol = chooseProtocol(request.protocols, ["duet-ping.v1"]);
      echo(await request.accept(protocol ? { protocol } : {}));
    }, async (server, certificate) => {
      const base = `https://127.0.0.1:${server.addr.port}`;
      const trust = { serverCertificateHashes: pin(certificate) };
      for (const dialect of DIALECTS) {
        const session = await connectWebTransport(`${base}/echo`, {
          ...trust,
          dialects: [dialect],
          protocols: ["duet-ping.v2", "duet-ping.v1"],
        });
        assert.equal(session.protocol, "duet-ping.v1", dialect);
        await session.close();
      }
      const none = await connectWebTransport(`${base}/echo`, trust);
      assert.equal(none.protocol, "");
      await none.close();
      assert.deepEqual(offered.at(-1), []);
      // The server answers a protocol this client did not offer (the request's list was
      // replaced by a header of the caller's): the client refuses the session.
      await assert.rejects(
        connectWebTransport(`${base}/wrong`, {
          ...trust,
          protocols: ["mine"],
          headers: [["wt-available-protocols", '"theirs"']],
        }),
        WebTransportProtocolError,
      );
      await assert.rejects(
        connectWebTransport(`${base}/echo`, { ...trust, protocols: ["a", "a"] }),
        SyntaxError,
      );
    });
  },
});

Deno.test({
  name: "early data: streams and datagrams sent before the CONNECT is answered reach the session",
  ...options,
  async fn() {
    const got = { uni: [] as string[], bidi: [] as string[], datagrams: [] as string[] };
    const accepted = Promise.withResolvers<WebTransportSession>();
    await withServer({}, async (request) => {
      // The application takes its time: everything below arrives before the 200.
      await new Promise((resolve) => setTimeout(resolve, 200));
      accepted.resolve(await request.accept());
    }, async (server, certificate) => {
      const { conn } = await rawConnection(server.addr.port, certificate, ["draft16"]);
      const { id, status } = await sendConnect(conn, "draft16");
      await writeAll(
        await conn.createUnidirectionalStream(),
        header(StreamType.WEBTRANSPORT, id),
        bytes("early uni"),
      );
      const bidi = await conn.createBidirectionalStream();
      await writeAll(bidi.writable, header(FrameType.WEBTRANSPORT_STREAM, id), bytes("early bidi"));
      await conn.sendDatagram(encodeDatagram(id, bytes("early datagram")));
      const session = await accepted.promise;
      assert.equal(await status, 200);
      const uni = await session.incomingUnidirectionalStreams.getReader().read();
      got.uni.push(await readText(uni.value!));
      const stream = await session.incomingBidirectionalStreams.getReader().read();
      got.bidi.push(await readText(stream.value!.readable));
      await writeAll(stream.value!.writable, bytes("reply"));
      got.datagrams.push(text((await session.datagrams.readable.getReader().read()).value!));
      assert.deepEqual(got, {
        uni: ["early uni"],
        bidi: ["early bidi"],
        datagrams: ["early datagram"],
      });
      assert.equal(await readText(bidi.readable), "reply");
      conn.close({ closeCode: 0, reason: "" });
    });
  },
});

Deno.test({
  name: "early data: past the bound the extra streams are refused and datagrams dropped; " +
    "a refused session's early streams are refused",
  ...options,
  async fn() {
    const accepted = Promise.withResolvers<WebTransportSession>();
    const limits = { streams: 2, datagrams: 2, datagramBytes: 1024 };
    await withServer({ earlyLimits: limits }, async (request) => {
      await new Promise((resolve) => setTimeout(resolve, 200));
      if (request.url.pathname === "/refused") {
        await assert.rejects(request.reject(200), RangeError);
        return await request.reject(404);
      }
      accepted.resolve(await request.accept());
    }, async (server, certificate) => {
      const { conn } = await rawConnection(server.addr.port, certificate, ["draft02"]);
      const { id, status } = await sendConnect(conn, "draft02");
      for (let i = 0; i < 4; i++) {
        await writeAll(
          await conn.createUnidirectionalStream(),
          header(StreamType.WEBTRANSPORT, id),
          bytes(`uni ${i}`),
        );
        await conn.sendDatagram(encodeDatagram(id, bytes(`datagram ${i}`)));
      }
      // Let all four of each arrive before the session exists.
      await new Promise((resolve) => setTimeout(resolve, 50));
      const session = await accepted.promise;
      assert.equal(await status, 200);
      const unis: string[] = [];
      const datagrams: string[] = [];
      (async () => {
        for await (const uni of session.incomingUnidirectionalStreams) {
          unis.push(await readText(uni));
        }
      })();
      (async () => {
        for await (const datagram of session.datagrams.readable) datagrams.push(text(datagram));
      })();
      await waitFor(
        () => unis.length === 2 && datagrams.length === 2,
        "two early streams and datagrams",
      );
      await new Promise((resolve) => setTimeout(resolve, 100)); // and no more come
      assert.equal(unis.length, 2);
      assert.equal(datagrams.length, 2);
      for (const u of unis) assert.match(u, /^uni [0-3]$/);
      for (const d of datagrams) assert.match(d, /^datagram [0-3]$/);

      // A session the application refuses: its early bidirectional stream gets no data
      // and ends (our FIN), and nothing of it reaches an application.
      const refused = await sendConnect(conn, "draft02", "/refused");
      const bidi = await conn.createBidirectionalStream();
      await writeAll(
        bidi.writable,
        header(FrameType.WEBTRANSPORT_STREAM, refused.id),
        bytes("never"),
      );
      assert.equal(await refused.status, 404);
      assert.equal(await readText(bidi.readable), "");
      conn.close({ closeCode: 0, reason: "" });
    });
  },
});

Deno.test({
  name:
    "early data: datagrams and a stream the server sends right after accepting reach our client",
  ...options,
  async fn() {
    await withServer({}, async (request) => {
      const session = await request.accept();
      const writer = session.datagrams.writable.getWriter();
      for (let i = 0; i < 10; i++) await writer.write(bytes(`datagram ${i}`));
      await writeAll(await session.createUnidirectionalStream(), bytes("right away"));
    }, async (server, certificate) => {
      const session = await connectWebTransport(`https://127.0.0.1:${server.addr.port}/`, {
        serverCertificateHashes: pin(certificate),
      });
      const datagrams: string[] = [];
      const reader = session.datagrams.readable.getReader();
      while (datagrams.length < 10) datagrams.push(text((await reader.read()).value!));
      assert.deepEqual(datagrams, Array.from({ length: 10 }, (_, i) => `datagram ${i}`));
      const uni = await session.incomingUnidirectionalStreams.getReader().read();
      assert.equal(await readText(uni.value!), "right away");
      await session.close();
    });
  },
});

Deno.test({
  name: "close reasons of 1,023, 1,024 and 1,025 bytes, and characters across the boundary, " +
    "arrive cut on a character boundary, both directions",
  ...options,
  async fn() {
    const reasons = [
      "x".repeat(1023),
      "x".repeat(1024),
      "x".repeat(1025),
      "x".repeat(2000),
      "x".repeat(1023) + "é",
      "x".repeat(1022) + "€",
      "x".repeat(1021) + "😀",
      "😀".repeat(300),
    ];
    const served: WebTransportSession[] = [];
    await withServer(
      {},
      async (request) => void served.push(await request.accept()),
      async (server, certificate) => {
        const url = `https://127.0.0.1:${server.addr.port}/`;
        for (const [i, reason] of reasons.entries()) {
          // The client closes.
          const session = await connectWebTransport(url, {
            serverCertificateHashes: pin(certificate),
          });
          await waitFor(() => served.length === 2 * i + 1, "the session on the server");
          await session.close({ closeCode: i, reason });
          assert.deepEqual(await served[2 * i]!.closed, {
            closeCode: i,
            reason: truncateReason(reason),
          });
          assert.deepEqual(await session.closed, { closeCode: i, reason: truncateReason(reason) });
          // The server closes.
          const other = await connectWebTransport(url, {
            serverCertificateHashes: pin(certificate),
          });
          await waitFor(() => served.length === 2 * i + 2, "the session on the server");
          await served[2 * i + 1]!.close({ closeCode: 100 + i, reason });
          assert.deepEqual(await other.closed, {
            closeCode: 100 + i,
            reason: truncateReason(reason),
          });
        }
        // A bad code is the caller's error, and nothing is sent.
        const session = await connectWebTransport(url, {
          serverCertificateHashes: pin(certificate),
        });
        await assert.rejects(session.close({ closeCode: 2 ** 32 }), RangeError);
        await session.close();
      },
    );
  },
});

for (
  const [dialect, statuses] of [["draft16", [200, 429]], ["draft14", [200, 429]], ["draft02", [
    200,
    200,
  ]]] as const
) {
  Deno.test({
    name: `sessions per connection: a second session on one ${dialect} connection is ${
      statuses[1] === 429 ? "refused (429)" : "served"
    }`,
    ...options,
    async fn() {
      await withServer(
        {},
        async (request) => void await request.accept(),
        async (server, certificate) => {
          const { conn } = await rawConnection(server.addr.port, certificate, [dialect]);
          const first = await sendConnect(conn, dialect);
          const second = await sendConnect(conn, dialect);
          assert.deepEqual([await first.status, await second.status].sort(), [...statuses]);
          conn.close({ closeCode: 0, reason: "" });
        },
      );
    },
  });
}

Deno.test({
  name: "flow control: small windows both ways; senders wait for credit and every stream completes",
  ...options,
  async fn() {
    const served: WebTransportSession[] = [];
    const small = { maxData: 16, maxStreamsBidi: 2, maxStreamsUni: 1 };
    await withServer({ flowWindows: small }, async (request) => {
      const session = await request.accept();
      served.push(session);
      echo(session, { prefix: "echo: " });
    }, async (server, certificate) => {
      const session = await connectWebTransport(`https://127.0.0.1:${server.addr.port}/`, {
        serverCertificateHashes: pin(certificate),
        flowWindows: { maxData: 8, maxStreamsBidi: 1, maxStreamsUni: 1 },
      });
      assert.ok(session.flow, "both sides asked: flow control is on");
      assert.deepEqual(session.flow.state.send, small);
      for (let i = 0; i < 6; i++) {
        const stream = await session.createBidirectionalStream();
        await writeAll(stream.writable, bytes(`${i}`.repeat(40)));
        assert.equal(await readText(stream.readable), `echo: ${`${i}`.repeat(40)}`);
      }
      const uniReplies = session.incomingUnidirectionalStreams.getReader();
      for (let i = 0; i < 3; i++) {
        await writeAll(await session.createUnidirectionalStream(), bytes(`uni ${i} `.repeat(10)));
        assert.equal(
          await readText((await uniReplies.read()).value!),
          `uni echo: ${`uni ${i} `.repeat(10)}`,
        );
      }
      // The server raised its limits as the echo read; ours were raised for its replies.
      const state = session.flow.state;
      assert.equal(state.opened.bidi, 6);
      assert.ok(state.send.maxStreamsBidi >= 6, `bidi limit ${state.send.maxStreamsBidi}`);
      assert.ok(state.send.maxData >= state.sentData && state.sentData === 6 * 40 + 3 * 60);
      assert.ok(served[0]!.flow!.state.sentData > 8, "the server sent past our first window");
      await session.close();
    });
  },
});

Deno.test({
  name: "flow control: a peer past its stream limit, or lowering a limit, ends the session; " +
    "without flow control the same capsule is ignored",
  ...options,
  async fn() {
    const served: WebTransportSession[] = [];
    await withServer(
      { flowWindows: { maxData: 1000, maxStreamsBidi: 10, maxStreamsUni: 1 } },
      async (request) => {
        served.push(await request.accept()); // reads nothing: no stream of the peer's ends
      },
      async (server, certificate) => {
        // Two unidirectional streams where one is granted.
        let { conn } = await rawConnection(server.addr.port, certificate, ["draft16"]);
        let connect = await sendConnect(conn, "draft16");
        assert.equal(await connect.status, 200);
        for (const i of [1, 2]) {
          await writeAll(
            await conn.createUnidirectionalStream(),
            header(StreamType.WEBTRANSPORT, connect.id),
            bytes(`${i}`),
          );
        }
        const over = await served[0]!.closed;
        assert.match(over.reason, /^WT_FLOW_CONTROL_ERROR: The peer opened uni stream 2 of 1$/);
        conn.close({ closeCode: 0, reason: "" });

        // A WT_MAX_DATA that lowers the limit the server granted us.
        const lower = encodeFrame(FrameType.DATA, encodeCapsule(0x190b4d3d, encodeVarint(5)));
        ({ conn } = await rawConnection(server.addr.port, certificate, ["draft16"]));
        connect = await sendConnect(conn, "draft16");
        assert.equal(await connect.status, 200);
        await connect.stream.writable.getWriter().write(lower);
        assert.match(
          (await served[1]!.closed).reason,
          /^WT_FLOW_CONTROL_ERROR: WT_MAX_DATA of 5 does not raise/,
        );
        conn.close({ closeCode: 0, reason: "" });

        // draft02 has no flow control: the capsule is ignored and the session goes on.
        ({ conn } = await rawConnection(server.addr.port, certificate, ["draft02"]));
        connect = await sendConnect(conn, "draft02");
        assert.equal(await connect.status, 200);
        await connect.stream.writable.getWriter().write(lower);
        await new Promise((resolve) => setTimeout(resolve, 100));
        assert.equal(served[2]!.flow, undefined);
        const still = await Promise.race([
          served[2]!.closed,
          new Promise((resolve) => setTimeout(() => resolve("open"), 100)),
        ]);
        assert.equal(still, "open");
        conn.close({ closeCode: 0, reason: "" });
      },
    );
  },
});

const BAD_TARGETS: [authority: string, path: string][] = [
  ["a b", "/x"],
  ["127.0.0.1", "nopath"],
  ["evil@127.0.0.1", "/x"],
];

Deno.test({
  name: "robustness: a bad authority or path, or userinfo, is 400 and the connection goes on",
  ...options,
  async fn() {
    await withServer(
      {},
      async (request) => void await request.accept(),
      async (server, certificate) => {
        const { conn } = await rawConnection(server.addr.port, certificate, ["draft02"]);
        for (const [authority, path] of BAD_TARGETS) {
          const stream = await conn.createBidirectionalStream();
          const writer = stream.writable.getWriter();
          await writer.write(encodeFrame(
            FrameType.HEADERS,
            encodeFieldSection([
              [":method", "CONNECT"],
              [":protocol", "webtransport"],
              [":scheme", "https"],
              [":authority", authority],
              [":path", path],
            ]),
          ));
          const frame = await readFrame(new FrameReader(), stream.readable.getReader());
          const status = new Map(decodeFieldSection(frame!.payload)).get(":status");
          assert.equal(status, "400", `${authority} ${path}`);
        }
        assert.equal(
          await (await sendConnect(conn, "draft02")).status,
          200,
          "the connection serves on",
        );
        conn.close({ closeCode: 0, reason: "" });
      },
    );
  },
});

Deno.test({
  name: "robustness: CONNECTs before SETTINGS wait, at most 8, answered in order; no SETTINGS " +
    "within the timeout closes the connection with H3_MISSING_SETTINGS",
  ...options,
  async fn() {
    const accept = async (request: SessionRequest) => void await request.accept();
    await withServer({ settingsTimeoutMs: 500 }, accept, async (server, certificate) => {
      const { conn, settle } = await bareConnection(server.addr.port, certificate);
      const connects = [];
      for (let i = 0; i < 10; i++) connects.push(await sendConnect(conn, "draft16"));
      await new Promise((resolve) => setTimeout(resolve, 100));
      const control = await settle(["draft16"]);
      const statuses = await Promise.all(connects.map((c) => c.status));
      // The first waited and is the session; the next seven waited and are past the limit of
      // one session; the last two found eight waiting and were refused at once.
      assert.deepEqual(statuses, [200, 429, 429, 429, 429, 429, 429, 429, 429, 429]);
      conn.close({ closeCode: 0, reason: "" });
      control.releaseLock();

      const silent = await bareConnection(server.addr.port, certificate);
      const waiting = await sendConnect(silent.conn, "draft16");
      const closed = await silent.conn.closed;
      assert.equal(closed.closeCode, 0x10a); // H3_MISSING_SETTINGS
      assert.match(closed.reason, /No SETTINGS within 500 ms/);
      assert.equal(await waiting.status, 0, "no answer: the connection is gone");
    });
  },
});

Deno.test({
  name: "robustness: however the peer ends a session (FIN only, a malformed close capsule), " +
    "the server ends its side of the CONNECT stream too",
  ...options,
  async fn() {
    const served: WebTransportSession[] = [];
    const accept = async (request: SessionRequest) => void served.push(await request.accept());
    await withServer({}, accept, async (server, certificate) => {
      const { conn } = await rawConnection(server.addr.port, certificate, ["draft02"]);
      // A close capsule of two bytes: shorter than its 32-bit code.
      const badClose = encodeFrame(FrameType.DATA, encodeCapsule(0x2843, new Uint8Array([0, 0])));
      const endings: Uint8Array[][] = [[], [badClose]];
      for (const ending of endings) {
        const connect = await sendConnect(conn, "draft02");
        assert.equal(await connect.status, 200);
        await writeAll(connect.stream.writable, ...ending);
        // What follows the 200 on the CONNECT stream: our FIN, and nothing else.
        assert.equal(await readText(connect.stream.readable), "");
        assert.deepEqual(await served.at(-1)!.closed, { closeCode: 0, reason: "" });
      }
      conn.close({ closeCode: 0, reason: "" });
    });
  },
});

Deno.test({
  name: "robustness: ids beyond what a number holds exactly are errors, not rounded " +
    "(a stream's session id, a datagram's quarter id, a stream limit above 2^60)",
  ...options,
  async fn() {
    const served: WebTransportSession[] = [];
    const accept = async (request: SessionRequest) => void served.push(await request.accept());
    await withServer({}, accept, async (server, certificate) => {
      // 2^62 - 1 as a varint: odd, and a multiple of 4 once rounded to a number.
      const huge = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
      let { conn } = await rawConnection(server.addr.port, certificate, ["draft02"]);
      const uni = (await conn.createUnidirectionalStream()).getWriter();
      await uni.write(new Uint8Array([...encodeVarint(StreamType.WEBTRANSPORT), ...huge]));
      assert.equal((await conn.closed).closeCode, 0x108); // H3_ID_ERROR

      ({ conn } = await rawConnection(server.addr.port, certificate, ["draft02"]));
      await conn.sendDatagram(new Uint8Array([...huge, 1, 2, 3]));
      assert.equal((await conn.closed).closeCode, 0x33); // H3_DATAGRAM_ERROR

      ({ conn } = await rawConnection(server.addr.port, certificate, ["draft16"]));
      const connect = await sendConnect(conn, "draft16");
      assert.equal(await connect.status, 200);
      // WT_MAX_STREAMS (bidirectional) of 2^60 + 1: as a number it would be 2^60, allowed.
      const above = new Uint8Array([0xd0, 0, 0, 0, 0, 0, 0, 1]);
      const writer = connect.stream.writable.getWriter();
      await writer.write(encodeFrame(FrameType.DATA, encodeCapsule(0x190b4d3f, above)));
      assert.match(
        (await served.at(-1)!.closed).reason,
        /^WT_FLOW_CONTROL_ERROR: WT_MAX_STREAMS of Infinity is above 2\^60$/,
      );
      conn.close({ closeCode: 0, reason: "" });
    });
  },
});

Deno.test({
  name: "robustness: connections per address are capped when asked (closed as the handshake " +
    "ends, with the reason), and a closed one frees its place",
  ...options,
  async fn() {
    const accept = async (request: SessionRequest) => void await request.accept();
    await withServer({ maxConnectionsPerAddress: 2 }, accept, async (server, certificate) => {
      const url = `https://127.0.0.1:${server.addr.port}/`;
      const trust = { serverCertificateHashes: pin(certificate) };
      const held = [await connectWebTransport(url, trust), await connectWebTransport(url, trust)];
      await assert.rejects(
        connectWebTransport(url, trust),
        /closed the connection before its HTTP\/3 SETTINGS \(code 0x107: too many connections from this address\)/,
      );
      await held[0]!.close();
      // The server sees the connection end shortly after the session's.
      let again: WebTransportSession | undefined;
      await waitFor(async () => {
        again = await connectWebTransport(url, trust).catch(() => undefined);
        return again !== undefined;
      }, "a place again");
      await again!.close();
      await held[1]!.close();
    });
  },
});
