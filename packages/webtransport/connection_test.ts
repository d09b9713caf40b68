// The HTTP/3 connection on a fake QUIC connection: options, the SETTINGS timer, requests.
import assert from "node:assert/strict";
import { H3Connection, RequestAnswer, requestUrl, SETTINGS_TIMEOUT_MS } from "./connection.ts";
import { FrameReader, FrameType } from "./frames.ts";
import { decodeFieldSection } from "./qpack.ts";
import { H3 } from "./errors.ts";

const DAY_MS = 86_400_000;

/** A QUIC connection that never receives anything; `closes` records close() calls. */
function fakeConn() {
  const closed = Promise.withResolvers<Deno.QuicCloseInfo>();
  const closes: Deno.QuicCloseInfo[] = [];
  const ends: (() => void)[] = [];
  const incoming = () => new ReadableStream({ start: (c) => void ends.push(() => c.close()) });
  const conn = {
    incomingUnidirectionalStreams: incoming(),
    incomingBidirectionalStreams: incoming(),
    readDatagram: () => closed.promise.then(() => Promise.reject(new Error("closed"))),
    createUnidirectionalStream: () => Promise.resolve(new WritableStream()),
    closed: closed.promise,
    close(info: Deno.QuicCloseInfo) {
      closes.push(info);
      for (const end of ends) end();
      closed.resolve(info);
    },
  } as unknown as Deno.QuicConn;
  return { conn, closes };
}

Deno.test("H3Connection: settingsTimeoutMs must be > 0 (RangeError naming it); Infinity is no limit", () => {
  for (const bad of [0, -1, NaN]) {
    assert.throws(
      () =>
        new H3Connection(fakeConn().conn, undefined, { role: "client", settingsTimeoutMs: bad }),
      (e) => e instanceof RangeError && /settingsTimeoutMs/.test(e.message),
    );
  }
  new H3Connection(fakeConn().conn, undefined, { role: "client", settingsTimeoutMs: Infinity });
  assert.equal(SETTINGS_TIMEOUT_MS, 5_000);
});

Deno.test("H3Connection: a peer without SETTINGS is closed with H3_MISSING_SETTINGS when the timeout passes", async () => {
  const { conn, closes } = fakeConn();
  const run = new H3Connection(conn, undefined, { role: "client", settingsTimeoutMs: 20 }).run();
  await run;
  assert.equal(closes.length, 1);
  assert.equal(closes[0]!.closeCode, H3.MISSING_SETTINGS);
});

Deno.test("H3Connection: SETTINGS timeouts of 2^31 - 1, 2^31 and 30 days do not fire early", async () => {
  for (const settingsTimeoutMs of [2 ** 31 - 1, 2 ** 31, 30 * DAY_MS]) {
    const { conn, closes } = fakeConn();
    const run = new H3Connection(conn, undefined, { role: "client", settingsTimeoutMs }).run();
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(closes, [], `${settingsTimeoutMs} ms: not closed after 100 ms`);
    conn.close({ closeCode: 0, reason: "test over" });
    await run; // and the long timer is cancelled with the connection
  }
});

Deno.test("requestUrl(): https with an authority and an absolute path; no userinfo", () => {
  const url = (fields: Record<string, string>) => requestUrl(new Map(Object.entries(fields)));
  const ok = { ":scheme": "https", ":authority": "example.test:4433", ":path": "/a?b=c" };
  assert.equal(url(ok)?.href, "https://example.test:4433/a?b=c");
  assert.equal(url({ ...ok, ":scheme": "http" }), undefined);
  assert.equal(url({ ...ok, ":authority": "" }), undefined);
  assert.equal(url({ ...ok, ":authority": "user@example.test" }), undefined);
  assert.equal(url({ ...ok, ":path": "a" }), undefined);
  assert.equal(url({ ...ok, ":authority": "exa mple" }), undefined, "not a URL");
});

Deno.test("RequestAnswer: answered once; refuse() forgets the request, sends the status and FIN", async () => {
  const written: Uint8Array[] = [];
  let finished = false;
  let ended = 0;
  const answer = new RequestAnswer(0, {
    readable: new ReadableStream(),
    writable: new WritableStream({
      write: (chunk) => void written.push(chunk),
      close: () => void (finished = true),
    }),
  }, () => ended++);
  answer.decide();
  assert.throws(() => answer.decide(), /already answered/);
  await answer.refuse(404);
  assert.equal(ended, 1);
  assert.ok(finished);
  const frames = new FrameReader();
  frames.push(written[0]!);
  const frame = frames.next()!;
  assert.equal(frame.type, FrameType.HEADERS);
  assert.deepEqual(decodeFieldSection(frame.payload), [[":status", "404"]]);
});
