// The session on its own: capsules on a CONNECT stream made of in-memory streams, no QUIC.
import assert from "node:assert/strict";
import { DATAGRAM_QUEUE, flowCapsuleValue, isFlowCapsule, WebTransportSession } from "./session.ts";
import {
  CapsuleType,
  decodeCloseSession,
  encodeCapsule,
  encodeCloseSession,
  readCapsule,
} from "./capsule.ts";
import { encodeFrame, FrameReader, FrameType } from "./frames.ts";
import { encodeVarint } from "./varint.ts";
import { FlowCapsule } from "./flow.ts";

/** A session whose CONNECT stream is in memory: `peer` writes to it, `written` is what it sent. */
function memorySession() {
  let peer!: ReadableStreamDefaultController<Uint8Array>;
  const written: Uint8Array[] = [];
  const finished = Promise.withResolvers<void>();
  const datagrams: Uint8Array[] = [];
  const session = new WebTransportSession({
    id: 0,
    conn: { sendDatagram: (d: Uint8Array) => void datagrams.push(d) } as unknown as Deno.QuicConn,
    connect: {
      readable: new ReadableStream(),
      writable: new WritableStream({
        write: (chunk) => void written.push(chunk),
        close: () => finished.resolve(),
      }),
    },
    url: new URL("https://example.test/"),
    headers: new Map(),
    connectRest: new ReadableStream<Uint8Array>({ start: (c) => void (peer = c) }).getReader(),
    dialect: "draft16",
    protocol: "",
  });
  return { session, peer, written, finished: finished.promise, datagrams };
}

/** The capsules in DATA frames among `chunks`. */
function capsulesIn(chunks: Uint8Array[]) {
  const frames = new FrameReader();
  for (const chunk of chunks) frames.push(chunk);
  const capsules = [];
  for (let frame = frames.next(); frame; frame = frames.next()) {
    assert.equal(frame.type, FrameType.DATA);
    capsules.push(readCapsule(frame.payload)!.capsule);
  }
  return capsules;
}

Deno.test("session: the peer's close capsule ends the session with its code and reason, and we answer with FIN", async () => {
  const { session, peer, finished } = memorySession();
  peer.enqueue(encodeFrame(FrameType.DATA, encodeCloseSession(4242, "bye")));
  assert.deepEqual(await session.closed, { closeCode: 4242, reason: "bye" });
  await finished;
});

Deno.test("session: a close capsule split across reads and frames still arrives whole", async () => {
  const { session, peer } = memorySession();
  const capsule = encodeCloseSession(7, "split");
  peer.enqueue(encodeFrame(FrameType.DATA, capsule.subarray(0, 3)).subarray(0, 2));
  peer.enqueue(encodeFrame(FrameType.DATA, capsule.subarray(0, 3)).subarray(2));
  peer.enqueue(encodeFrame(FrameType.DATA, capsule.subarray(3)));
  assert.deepEqual(await session.closed, { closeCode: 7, reason: "split" });
});

Deno.test('session: FIN without a capsule ends the session quietly (0, "")', async () => {
  const { session, peer, finished } = memorySession();
  peer.close();
  assert.deepEqual(await session.closed, { closeCode: 0, reason: "" });
  await finished;
});

Deno.test("session: a DRAIN capsule resolves draining; the session goes on", async () => {
  const { session, peer } = memorySession();
  peer.enqueue(
    encodeFrame(
      FrameType.DATA,
      encodeCapsule(CapsuleType.DRAIN_WEBTRANSPORT_SESSION, new Uint8Array(0)),
    ),
  );
  await session.draining;
  const ended = await Promise.race([session.closed.then(() => "closed"), Promise.resolve("open")]);
  assert.equal(ended, "open");
});

Deno.test("session: close() sends the close capsule then FIN; a bad code sends nothing", async () => {
  const { session, written, finished } = memorySession();
  await assert.rejects(session.close({ closeCode: 2 ** 32 }), RangeError);
  assert.equal(written.length, 0);
  await session.close({ closeCode: 9, reason: "done" });
  await finished;
  const [capsule] = capsulesIn(written);
  assert.equal(capsule!.type, CapsuleType.CLOSE_WEBTRANSPORT_SESSION);
  assert.deepEqual(decodeCloseSession(capsule!.value), { code: 9, reason: "done" });
  assert.deepEqual(await session.closed, { closeCode: 9, reason: "done" });
});

Deno.test("session: drain() sends a DRAIN capsule", async () => {
  const { session, written } = memorySession();
  await session.drain();
  assert.deepEqual(capsulesIn(written).map((c) => c.type), [
    CapsuleType.DRAIN_WEBTRANSPORT_SESSION,
  ]);
});

Deno.test(`session: incoming datagrams past ${DATAGRAM_QUEUE} unread are dropped and counted`, async () => {
  const { session, datagrams } = memorySession();
  for (let i = 0; i < DATAGRAM_QUEUE + 5; i++) session._datagram(new Uint8Array([i & 0xff]));
  assert.equal(session.droppedDatagrams, 5);
  const reader = session.datagrams.readable.getReader();
  assert.deepEqual([...(await reader.read()).value!], [0]);
  await session.datagrams.writable.getWriter().write(new Uint8Array([1]));
  assert.equal(datagrams.length, 1, "outgoing datagrams go to the connection");
});

Deno.test("flowCapsuleValue(): exact up to 2^53 - 1; stream counts past 2^60 are Infinity, other huge values 2^53 - 1", () => {
  assert.equal(flowCapsuleValue(FlowCapsule.WT_MAX_DATA, encodeVarint(1234)), 1234);
  assert.equal(
    flowCapsuleValue(FlowCapsule.WT_MAX_DATA, encodeVarint(Number.MAX_SAFE_INTEGER)),
    Number.MAX_SAFE_INTEGER,
  );
  const huge = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]); // 2^62 - 1
  assert.equal(flowCapsuleValue(FlowCapsule.WT_MAX_DATA, huge), Number.MAX_SAFE_INTEGER);
  assert.equal(flowCapsuleValue(FlowCapsule.WT_MAX_STREAMS_BIDI, huge), Infinity);
  assert.equal(flowCapsuleValue(FlowCapsule.WT_STREAMS_BLOCKED_UNI, huge), Infinity);
  // 2^60 exactly is allowed as a stream count.
  const twoTo60 = new Uint8Array([0xd0, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(flowCapsuleValue(FlowCapsule.WT_MAX_STREAMS_UNI, twoTo60), Number.MAX_SAFE_INTEGER);
  assert.equal(flowCapsuleValue(FlowCapsule.WT_MAX_DATA, new Uint8Array(0)), 0, "not a varint");
});

Deno.test("isFlowCapsule() knows the flow-control capsules and nothing else", () => {
  for (const type of Object.values(FlowCapsule)) assert.ok(isFlowCapsule(type));
  assert.ok(!isFlowCapsule(CapsuleType.CLOSE_WEBTRANSPORT_SESSION));
  assert.ok(!isFlowCapsule(CapsuleType.DRAIN_WEBTRANSPORT_SESSION));
});
