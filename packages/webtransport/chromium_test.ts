// The codecs against a real browser: a server made of Deno's raw QUIC API and this
// package's frames, SETTINGS and QPACK accepts a WebTransport session from headless
// Chromium, using a generated certificate pinned by its hash (`captureSession` in
// `_browser_cases.ts`, shared with `firefox_test.ts`).
import assert from "node:assert/strict";
import { findChromium, testWith } from "@duet/testkit";
import { captureSession, withChromium } from "./_browser_cases.ts";
import { Setting, StreamType } from "./mod.ts";

const chromium = await findChromium();

testWith(chromium, {
  name: "Chromium opens a WebTransport session with a server built from these codecs",
  sanitizeOps: false, // the QUIC connection winds down after the test's assertions
  sanitizeResources: false,
  fn: async () => {
    const { result, seen, origin } = await captureSession(withChromium);
    assert.equal(result, "ready");
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
  },
});
