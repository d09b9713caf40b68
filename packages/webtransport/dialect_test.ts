import { test } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type Dialect,
  DIALECTS,
  localSettings,
  negotiate,
  peerDialects,
  requestDialect,
  requestFields,
  responseFields,
  sessionsPerConnection,
  upgradeToken,
} from "./dialect.ts";
import { Setting } from "./frames.ts";
import { H3, H3Error } from "./errors.ts";

const RANK = ["draft02", "draft07", "draft14", "draft16"];

test(
  "a server announces every dialect under its own setting, with a session limit of 1, " +
    "and flow-control windows",
  () => {
    const settings = localSettings("server", DIALECTS, {
      maxData: 10,
      maxStreamsBidi: 20,
      maxStreamsUni: 30,
    });
    assert.deepEqual(
      [...settings],
      [
        [Setting.QPACK_MAX_TABLE_CAPACITY, 0],
        [Setting.QPACK_BLOCKED_STREAMS, 0],
        [Setting.ENABLE_CONNECT_PROTOCOL, 1],
        [Setting.H3_DATAGRAM, 1],
        [0x2c7cf000, 1], // SETTINGS_WT_ENABLED, drafts 15-16
        [0x14e9cd29, 1], // SETTINGS_WT_MAX_SESSIONS, drafts 13-14
        [0xc671706a, 1], // SETTINGS_WEBTRANSPORT_MAX_SESSIONS, drafts 07-12
        [0x2b603742, 1], // SETTINGS_ENABLE_WEBTRANSPORT, draft 02
        [0x2b61, 10], // SETTINGS_WT_INITIAL_MAX_DATA
        [0x2b64, 30], // SETTINGS_WT_INITIAL_MAX_STREAMS_UNI
        [0x2b65, 20], // SETTINGS_WT_INITIAL_MAX_STREAMS_BIDI
      ],
    );
    // Only drafts 13-16 have flow control to ask for.
    const old = localSettings("server", ["draft07", "draft02"]);
    for (const id of [0x2b61, 0x2b64, 0x2b65]) assert.equal(old.has(id), false);
    const client = localSettings("client", ["draft02"]);
    assert.equal(client.has(Setting.ENABLE_CONNECT_PROTOCOL), false);
    assert.equal(client.get(Setting.ENABLE_WEBTRANSPORT), 1);
    assert.throws(() => localSettings("client", []), RangeError);
    assert.throws(() => localSettings("client", ["draft99" as Dialect]), RangeError);
  },
);

test("peerDialects() reads what Chromium 156 and a draft-16 server send", () => {
  // Chromium 156's SETTINGS, as captured (README): draft-02 only.
  const chromium = new Map([
    [0x01, 65536],
    [0x06, 16384],
    [0x07, 100],
    [0x33, 1],
    [0xffd277, 1],
    [0x2b603742, 1],
    [0x1f * 7 + 0x21, 42], // GREASE
  ]);
  assert.deepEqual(peerDialects("client", chromium), ["draft02"]);
  assert.deepEqual(peerDialects("server", localSettings("server", DIALECTS)), DIALECTS);
  // The draft-04 datagram setting alone is enough.
  assert.deepEqual(peerDialects("client", new Map([[0xffd277, 1], [0xc671706a, 4]])), ["draft07"]);
});

test("peerDialects(): no datagrams or (from a server) no extended CONNECT means no WebTransport", () => {
  assert.deepEqual(peerDialects("client", new Map([[0x2c7cf000, 1]])), []);
  assert.deepEqual(peerDialects("server", new Map([[0x33, 1], [0x2c7cf000, 1]])), []);
  assert.deepEqual(peerDialects("client", new Map([[0x33, 1], [0x14e9cd29, 0]])), []);
});

test("peerDialects(): a server's SETTINGS_WT_ENABLED above 1 is H3_SETTINGS_ERROR", () => {
  const settings = new Map([[0x33, 1], [0x08, 1], [0x2c7cf000, 2]]);
  assert.throws(
    () => peerDialects("server", settings),
    (error) => error instanceof H3Error && error.code === H3.SETTINGS_ERROR,
  );
  // From a client the value is only a version announcement; 2 announces nothing we know.
  assert.deepEqual(peerDialects("client", settings), []);
});

test("property: negotiate() picks the newest dialect both sides announce, or none", () => {
  const dialects = fc.subarray([...DIALECTS]) as fc.Arbitrary<Dialect[]>;
  fc.assert(fc.property(dialects, dialects, (ours, theirs) => {
    const chosen = negotiate(ours, theirs);
    const common = ours.filter((d) => theirs.includes(d));
    if (common.length === 0) return chosen === undefined;
    return chosen !== undefined && common.includes(chosen) &&
      common.every((d) => RANK.indexOf(d) <= RANK.indexOf(chosen)) &&
      chosen === negotiate(theirs, ours);
  }));
});

test("requestDialect(): the upgrade token names the syntax", () => {
  assert.equal(requestDialect("webtransport-h3", DIALECTS, DIALECTS), "draft16");
  assert.equal(requestDialect("webtransport", DIALECTS, DIALECTS), "draft14");
  assert.equal(requestDialect("webtransport", DIALECTS, ["draft02"]), "draft02");
  // webtransport-h3 from a client that did not announce draft 16 is not ours to guess.
  assert.equal(requestDialect("webtransport-h3", DIALECTS, ["draft14"]), undefined);
  assert.equal(requestDialect("webtransport", DIALECTS, ["draft16"]), undefined);
  assert.equal(requestDialect("websocket", DIALECTS, DIALECTS), undefined);
  assert.equal(requestDialect(undefined, DIALECTS, DIALECTS), undefined);
  assert.equal(requestDialect("webtransport", ["draft16"], DIALECTS), undefined);
});

test("each dialect's token, draft-02 header pair, and session limit", () => {
  assert.deepEqual(DIALECTS.map(upgradeToken), [
    "webtransport-h3",
    "webtransport",
    "webtransport",
    "webtransport",
  ]);
  assert.deepEqual(requestFields("draft02"), [["sec-webtransport-http3-draft02", "1"]]);
  assert.deepEqual(responseFields("draft02"), [["sec-webtransport-http3-draft", "draft02"]]);
  for (const dialect of ["draft07", "draft14", "draft16"] as const) {
    assert.deepEqual(requestFields(dialect), []);
    assert.deepEqual(responseFields(dialect), []);
    assert.equal(sessionsPerConnection(dialect), 1);
  }
  assert.equal(sessionsPerConnection("draft02"), Infinity);
});
