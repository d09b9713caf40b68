// The codecs against a real browser: a server made of Deno's raw QUIC API and this
// package's frames, SETTINGS and QPACK accepts a WebTransport session from headless
// Chromium, using a generated certificate pinned by its hash. The session layer proper
// is not written yet; this fixture is the smallest server Chromium accepts.
import assert from "node:assert/strict";
import { findChromium, testWith, withChromiumPage } from "@duet/testkit";
import {
  decodeFieldSection,
  decodeSettings,
  encodeFieldSection,
  encodeFrame,
  encodeSettings,
  encodeVarint,
  type Field,
  FrameReader,
  FrameType,
  generateCertificate,
  readVarint,
  Setting,
  StreamType,
} from "./mod.ts";

const chromium = await findChromium();

interface Seen {
  settings?: Map<number, number>;
  connect?: Field[];
  uniStreamTypes: number[];
}

/** Accepts one connection and one session; records what Chromium sent. */
async function serveOneSession(conn: Deno.QuicConn, seen: Seen): Promise<void> {
  const control = (await conn.createUnidirectionalStream()).getWriter();
  await control.write(
    new Uint8Array([
      ...encodeVarint(StreamType.CONTROL),
      ...encodeFrame(
        FrameType.SETTINGS,
        encodeSettings(
          new Map([
            [Setting.QPACK_MAX_TABLE_CAPACITY, 0],
            [Setting.QPACK_BLOCKED_STREAMS, 0],
            [Setting.ENABLE_CONNECT_PROTOCOL, 1],
            [Setting.H3_DATAGRAM, 1],
            [Setting.ENABLE_WEBTRANSPORT, 1],
          ]),
        ),
      ),
    ]),
  );
  (async () => {
    for await (const stream of conn.incomingUnidirectionalStreams) {
      (async () => {
        const reader = new FrameReader();
        let type: number | undefined;
        for await (const chunk of stream) {
          if (type === undefined) {
            const header = readVarint(chunk)!;
            type = header.value;
            seen.uniStreamTypes.push(type);
            reader.push(chunk.subarray(header.length));
          } else {
            reader.push(chunk);
          }
          if (type !== StreamType.CONTROL) continue;
          for (let frame = reader.next(); frame; frame = reader.next()) {
            if (frame.type === FrameType.SETTINGS) seen.settings = decodeSettings(frame.payload);
          }
        }
      })().catch(() => {});
    }
  })().catch(() => {});
  for await (const stream of conn.incomingBidirectionalStreams) {
    const reader = new FrameReader();
    const source = stream.readable.getReader();
    let frame;
    while (!(frame = reader.next())) {
      const { value, done } = await source.read();
      if (done) return;
      reader.push(value);
    }
    assert.equal(frame.type, FrameType.HEADERS);
    seen.connect = decodeFieldSection(frame.payload);
    await stream.writable.getWriter().write(
      encodeFrame(
        FrameType.HEADERS,
        encodeFieldSection([[":status", "200"], ["sec-webtransport-http3-draft", "draft02"]]),
      ),
    );
    return;
  }
}

testWith(chromium, {
  name: "Chromium opens a WebTransport session with a server built from these codecs",
  sanitizeOps: false, // the QUIC connection winds down after the test's assertions
  sanitizeResources: false,
  fn: async () => {
    const certificate = await generateCertificate();
    const endpoint = new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 });
    const listener = endpoint.listen({
      cert: certificate.certPem,
      key: certificate.keyPem,
      alpnProtocols: ["h3"],
    });
    const seen: Seen = { uniStreamTypes: [] };
    const served = (async (): Promise<Deno.QuicConn | undefined> => {
      for await (const incoming of listener) {
        const conn = await incoming.accept();
        await serveOneSession(conn, seen);
        return conn;
      }
      return undefined;
    })();
    try {
      await withChromiumPage(async (tab, origin) => {
        const result = await tab.evaluate(async ({ port, hash }) => {
          const wt = new WebTransport(`https://127.0.0.1:${port}/ping`, {
            serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
          });
          try {
            await wt.ready;
            return "ready";
          } catch (error) {
            return `failed: ${error}`;
          }
        }, { port: endpoint.addr.port, hash: [...certificate.sha256] });
        assert.equal(result, "ready");
        const conn = await served;
        // What Chromium 156 sends, as captured: the draft-02 WebTransport setting and datagrams.
        assert.equal(seen.settings?.get(Setting.ENABLE_WEBTRANSPORT), 1);
        assert.equal(seen.settings?.get(Setting.H3_DATAGRAM), 1);
        const connect = new Map(seen.connect);
        assert.equal(connect.get(":method"), "CONNECT");
        assert.equal(connect.get(":protocol"), "webtransport");
        assert.equal(connect.get(":path"), "/ping");
        assert.equal(connect.get("sec-webtransport-http3-draft02"), "1");
        assert.equal(connect.get("origin"), origin);
        assert.ok(seen.uniStreamTypes.includes(StreamType.CONTROL));
        conn?.close({ closeCode: 0, reason: "" });
      });
    } finally {
      endpoint.close();
    }
  },
});
