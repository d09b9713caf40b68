// The session layer and the codecs against headless Firefox 153 ESR (Debian's firefox-esr,
// driven by puppeteer-core over WebDriver BiDi): the same cases as Chromium's, from
// `_browser_cases.ts`, plus what Firefox sends, as captured (see README).
import assert from "node:assert/strict";
import { findFirefox, testWith } from "@duet/testkit";
import { captureSession, interopCases, withFirefox } from "./_browser_cases.ts";
import { Setting, StreamType } from "./mod.ts";

const firefox = await findFirefox();
// Firefox 153 has no W3C `protocols` option or `protocol` attribute (measured: the page
// sees no attribute and the server no WT-Available-Protocols).
const cases = interopCases("Firefox", withFirefox, { protocols: false });

testWith(firefox, cases.streamsAndDatagrams);
// Firefox sends its close capsule (in a DATA frame, no FIN) and its QUIC CONNECTION_CLOSE in
// the same flight. The server lost the code 2 closes in 5 until it read a closed connection's
// CONNECT streams to their end before ending their sessions (connection.ts, H3Connection.run).
testWith(firefox, cases.browserCloses);
testWith(firefox, cases.serverOpensAndCloses);
testWith(firefox, cases.sequentialStreams);
testWith(firefox, cases.pinnedHashes);
testWith(firefox, cases.rejected);
testWith(firefox, cases.abort);
testWith(firefox, cases.dialectProtocolAndReasons);
testWith(firefox, {
  ...cases.cancel,
  // FAILS with Firefox 153: reader.cancel() on a WebTransport stream's readable sends no
  // STOP_SENDING (its qlog, network.http.http3.enable_qlog, shows a RESET_STREAM for abort()
  // and no STOP_SENDING frame at all), so the server's writes block on flow control and never
  // fail; Chromium's do. A browser bug, not the server's.
  ignore: true,
});

testWith(firefox, {
  name: "Firefox opens a WebTransport session with a server built from these codecs",
  sanitizeOps: false, // the QUIC connection winds down after the test's assertions
  sanitizeResources: false,
  fn: async () => {
    const { result, seen, origin } = await captureSession(withFirefox);
    assert.equal(result, "ready");
    // What Firefox 153 sends, as captured: draft-02's ENABLE_WEBTRANSPORT, both datagram
    // settings, and ENABLE_CONNECT_PROTOCOL although only a server's means anything.
    assert.equal(seen.settings?.get(Setting.ENABLE_WEBTRANSPORT), 1);
    assert.equal(seen.settings?.get(Setting.H3_DATAGRAM), 1);
    assert.equal(seen.settings?.get(Setting.H3_DATAGRAM_DRAFT04), 1);
    assert.equal(seen.settings?.get(Setting.ENABLE_CONNECT_PROTOCOL), 1);
    assert.equal(seen.settings?.has(Setting.WEBTRANSPORT_MAX_SESSIONS), false);
    const connect = new Map(seen.connect);
    assert.equal(connect.get(":method"), "CONNECT");
    assert.equal(connect.get(":protocol"), "webtransport");
    assert.equal(connect.get(":scheme"), "https");
    assert.equal(connect.get(":path"), "/ping");
    assert.equal(connect.get("sec-webtransport-http3-draft02"), "1");
    assert.equal(connect.get("origin"), origin);
    assert.equal(connect.get("sec-fetch-dest"), "webtransport");
    assert.ok(seen.uniStreamTypes.includes(StreamType.CONTROL));
  },
});
