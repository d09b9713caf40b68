import assert from "node:assert/strict";
import {
  type Meter,
  meterIn,
  meterOut,
  readFrame,
  readLeadingVarint,
  refuse,
  remainderStream,
} from "./streams.ts";
import { encodeFrame, FrameReader, FrameType } from "./frames.ts";
import { encodeVarint } from "./varint.ts";
import { FlowCapsule, FlowControlError, type FlowSignal, SessionFlow } from "./flow.ts";

/** A reader delivering `chunks` one read at a time, then the end. */
function chunksReader(...chunks: number[][]): ReadableStreamDefaultReader<Uint8Array> {
  return ReadableStream.from(chunks.map((c) => new Uint8Array(c))).getReader();
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<number[]> {
  const out: number[] = [];
  for await (const chunk of stream) out.push(...chunk);
  return out;
}

const WIDE = Number.MAX_SAFE_INTEGER;

/** A meter over `flow` that records what it sends and lets the test grant credit. */
function testMeter(flow: SessionFlow) {
  const sent: (FlowSignal | undefined)[] = [];
  const errors: FlowControlError[] = [];
  let credit = Promise.withResolvers<void>();
  let ended = false;
  const meter: Meter = {
    flow,
    ended: () => ended,
    credit: () => credit.promise,
    sendCapsule: (signal) => sent.push(signal),
    flowError: (error) => errors.push(error),
  };
  return {
    meter,
    sent,
    errors,
    grant(type: number, value: number) {
      flow.onCapsule(type, value);
      const waiting = credit;
      credit = Promise.withResolvers<void>();
      waiting.resolve();
    },
    end() {
      ended = true;
      credit.resolve();
    },
  };
}

Deno.test("readLeadingVarint() reads a varint split across chunks and keeps what follows", async () => {
  // 0x4041 is a two-byte varint (65), split over two reads, followed by 9.
  const source = chunksReader([0x40], [0x41, 9]);
  const first = await readLeadingVarint(source);
  assert.equal(first?.value, 65);
  assert.equal(first?.length, 2);
  assert.deepEqual([...first!.bytes], [0x40, 0x41, 9]);
  const second = await readLeadingVarint(source, first!.bytes.subarray(first!.length));
  assert.equal(second?.value, 9);
  assert.equal(await readLeadingVarint(chunksReader([0x40])), undefined, "ends mid-varint");
  assert.equal(await readLeadingVarint(chunksReader()), undefined, "ends before it");
});

Deno.test("readFrame() waits for a whole frame; undefined when the stream ends first", async () => {
  const frame = encodeFrame(FrameType.HEADERS, new Uint8Array([1, 2, 3, 4]));
  const source = chunksReader([...frame.subarray(0, 3)], [...frame.subarray(3)]);
  const read = await readFrame(new FrameReader(), source);
  assert.equal(read?.type, FrameType.HEADERS);
  assert.deepEqual([...read!.payload], [1, 2, 3, 4]);
  assert.equal(
    await readFrame(new FrameReader(), chunksReader([...frame.subarray(0, 3)])),
    undefined,
  );
});

Deno.test("remainderStream() gives the bytes after a header, then the rest of the source", async () => {
  assert.deepEqual(
    await collect(remainderStream(chunksReader([3], [4, 5]), new Uint8Array([1, 2]))),
    [
      1,
      2,
      3,
      4,
      5,
    ],
  );
  assert.deepEqual(await collect(remainderStream(chunksReader([7]), new Uint8Array(0))), [7]);
  let cancelled: unknown;
  const source = new ReadableStream<Uint8Array>({ cancel: (reason) => void (cancelled = reason) });
  await remainderStream(source.getReader(), new Uint8Array(0)).cancel("stop");
  assert.equal(cancelled, "stop", "cancel reaches the source (STOP_SENDING)");
});

Deno.test("refuse() cancels what a stream reads and ends what it writes", async () => {
  const events: string[] = [];
  const readable = () => new ReadableStream({ cancel: () => void events.push("cancel") });
  const writable = new WritableStream({ close: () => void events.push("close") });
  refuse({ kind: "bidi", stream: { readable: readable(), writable } });
  refuse({ kind: "uni", stream: readable() });
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(events.sort(), ["cancel", "cancel", "close"]);
});

Deno.test("meterOut() passes a stream through untouched when there is nothing to count", () => {
  const writable = new WritableStream<Uint8Array>();
  const wide = new SessionFlow({ maxData: WIDE, maxStreamsBidi: 1, maxStreamsUni: 1 }, {
    maxData: WIDE,
    maxStreamsBidi: 1,
    maxStreamsUni: 1,
  });
  assert.equal(meterOut(writable, testMeter(wide).meter), writable);
  assert.equal(meterOut(writable, { ...testMeter(wide).meter, flow: undefined }), writable);
});

Deno.test("meterOut() sends what the peer's credit allows, says it is blocked, and waits for more", async () => {
  const flow = new SessionFlow({ maxData: 3, maxStreamsBidi: 1, maxStreamsUni: 1 }, {
    maxData: WIDE,
    maxStreamsBidi: 1,
    maxStreamsUni: 1,
  });
  const { meter, sent, grant } = testMeter(flow);
  const written: number[][] = [];
  const out = meterOut(
    new WritableStream({ write: (chunk) => void written.push([...chunk]) }),
    meter,
  );
  const writer = out.getWriter();
  const write = writer.write(new Uint8Array([1, 2, 3, 4, 5]));
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(written, [[1, 2, 3]], "the first three bytes go, the rest waits");
  assert.deepEqual(sent, [{ type: FlowCapsule.WT_DATA_BLOCKED, value: 3 }]);
  grant(FlowCapsule.WT_MAX_DATA, 5);
  await write;
  assert.deepEqual(written, [[1, 2, 3], [4, 5]]);
});

Deno.test("meterOut(): a write waiting for credit fails when the session ends", async () => {
  const flow = new SessionFlow({ maxData: 0, maxStreamsBidi: 1, maxStreamsUni: 1 }, {
    maxData: WIDE,
    maxStreamsBidi: 1,
    maxStreamsUni: 1,
  });
  const { meter, end } = testMeter(flow);
  const writer = meterOut(new WritableStream(), meter).getWriter();
  const write = writer.write(new Uint8Array([1]));
  end();
  await assert.rejects(write, /The session is closed/);
});

Deno.test("meterIn() counts what the peer sends, raises the window as it is read, and the stream limit when it ends", async () => {
  const flow = new SessionFlow({ maxData: WIDE, maxStreamsBidi: 1, maxStreamsUni: 1 }, {
    maxData: 4,
    maxStreamsBidi: 2,
    maxStreamsUni: 2,
  });
  const { meter, sent } = testMeter(flow);
  flow.receivedStream("bidi");
  const stream = meterIn(ReadableStream.from([new Uint8Array([1, 2, 3])]), meter, "bidi");
  assert.deepEqual(await collect(stream), [1, 2, 3]);
  assert.deepEqual(sent, [
    { type: FlowCapsule.WT_MAX_DATA, value: 7 },
    { type: FlowCapsule.WT_MAX_STREAMS_BIDI, value: 3 },
  ]);
});

Deno.test("meterIn(): a peer past the data window is a flow-control error", async () => {
  const flow = new SessionFlow({ maxData: WIDE, maxStreamsBidi: 1, maxStreamsUni: 1 }, {
    maxData: 2,
    maxStreamsBidi: 1,
    maxStreamsUni: 1,
  });
  const { meter, errors } = testMeter(flow);
  const stream = meterIn(ReadableStream.from([new Uint8Array([1, 2, 3])]), meter, "uni");
  await assert.rejects(collect(stream), FlowControlError);
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof FlowControlError);
});

Deno.test("the header varints of a WebTransport stream, read back to back", async () => {
  const header = [...encodeVarint(FrameType.WEBTRANSPORT_STREAM), ...encodeVarint(4)];
  const source = chunksReader(header, [42]);
  const type = await readLeadingVarint(source);
  assert.equal(type?.value, FrameType.WEBTRANSPORT_STREAM);
  const id = await readLeadingVarint(source, type!.bytes.subarray(type!.length));
  assert.equal(id?.value, 4);
  assert.deepEqual(await collect(remainderStream(source, id!.bytes.subarray(id!.length))), [42]);
});
