import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeSettings,
  encodeFrame,
  encodeSettings,
  FrameReader,
  FrameType,
  Setting,
} from "./frames.ts";
import { encodeVarint } from "./varint.ts";
import { H3, H3Error } from "./errors.ts";

const code = (c: number) => (error: unknown) => error instanceof H3Error && error.code === c;

test("FrameReader reads frames split at every byte boundary, and two in one chunk", () => {
  const bytes = new Uint8Array([
    ...encodeFrame(FrameType.HEADERS, new Uint8Array([9, 8, 7])),
    ...encodeFrame(FrameType.DATA, new Uint8Array(300).fill(1)),
  ]);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const reader = new FrameReader();
    const frames = [];
    for (const chunk of [bytes.subarray(0, cut), bytes.subarray(cut)]) {
      reader.push(chunk);
      for (let frame = reader.next(); frame; frame = reader.next()) frames.push(frame);
    }
    assert.deepEqual(
      frames.map((f) => [f.type, f.payload.length]),
      [[1, 3], [0, 300]],
      `cut at ${cut}`,
    );
    assert.equal(reader.buffered, 0);
  }
});

test("FrameReader refuses an oversized frame before its payload arrives", () => {
  const reader = new FrameReader(1024);
  reader.push(new Uint8Array([...encodeVarint(FrameType.DATA), ...encodeVarint(1_000_000)]));
  assert.throws(() => reader.next(), code(H3.EXCESSIVE_LOAD));
});

test("FrameReader refuses HTTP/2-only frame types with FRAME_UNEXPECTED", () => {
  for (const type of [0x02, 0x06, 0x08, 0x09]) {
    const reader = new FrameReader();
    reader.push(encodeFrame(type, new Uint8Array(0)));
    assert.throws(() => reader.next(), code(H3.FRAME_UNEXPECTED), `type ${type}`);
  }
});

test("FrameReader keeps unknown (reserved, GREASE) frame types for the caller to skip", () => {
  const reader = new FrameReader();
  reader.push(encodeFrame(0x21 + 0x1f * 1000, new Uint8Array([1])));
  assert.equal(reader.next()?.type, 0x21 + 0x1f * 1000);
});

test("SETTINGS round-trip, with large GREASE identifiers", () => {
  const settings = new Map([
    [Setting.QPACK_MAX_TABLE_CAPACITY, 0],
    [Setting.ENABLE_CONNECT_PROTOCOL, 1],
    [Setting.H3_DATAGRAM, 1],
    [Setting.ENABLE_WEBTRANSPORT, 1],
    [Setting.WEBTRANSPORT_MAX_SESSIONS, 16],
    [0x1f * 2 ** 40 + 0x21, 7],
  ]);
  assert.deepEqual(decodeSettings(encodeSettings(settings)), settings);
});

test("decodeSettings() refuses duplicates, HTTP/2-only settings and truncation with SETTINGS_ERROR", () => {
  const twice = new Uint8Array([
    ...encodeVarint(0x06),
    ...encodeVarint(100),
    ...encodeVarint(0x06),
    ...encodeVarint(1),
  ]);
  assert.throws(() => decodeSettings(twice), code(H3.SETTINGS_ERROR));
  for (const http2 of [0x02, 0x03, 0x04, 0x05]) {
    assert.throws(
      () => decodeSettings(encodeSettings(new Map([[http2, 1]]))),
      code(H3.SETTINGS_ERROR),
    );
  }
  assert.throws(() => decodeSettings(encodeVarint(0x06)), code(H3.SETTINGS_ERROR), "value missing");
  assert.throws(
    () => decodeSettings(new Uint8Array([0x06, 0x40])),
    code(H3.SETTINGS_ERROR),
    "value cut",
  );
  assert.deepEqual(decodeSettings(new Uint8Array(0)), new Map());
});

test("decodeSettings() tells apart ids past 2^53, which a number rounds to one value", () => {
  // 2^62 - 1 and 2^62 - 2 (8-byte varints) both round to 2^62 as numbers.
  const top = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
  const belowTop = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe];
  const distinct = new Uint8Array([...top, 1, ...belowTop, 2]);
  assert.equal(decodeSettings(distinct).size, 1, "two unknown ids, kept under one rounded key");
  const same = new Uint8Array([...top, 1, ...top, 2]);
  assert.throws(() => decodeSettings(same), code(H3.SETTINGS_ERROR));
  assert.throws(() => decodeSettings(same), /0x3fffffffffffffff appears twice/);
});

test("property: FrameReader on random bytes yields frames or throws H3Error, nothing else", () => {
  fc.assert(
    fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 6 }), (chunks) => {
      const reader = new FrameReader(256);
      try {
        for (const chunk of chunks) {
          reader.push(chunk);
          while (reader.next());
        }
      } catch (error) {
        assert.ok(error instanceof H3Error, String(error));
      }
    }),
    { numRuns: 1000 },
  );
});
