// The page's pure decisions and figures (page/model.ts), without a browser.
import assert from "node:assert/strict";
import {
  addSample,
  cardDetail,
  chartScale,
  hexBytes,
  median,
  pageMode,
  parseTargets,
  type Sample,
  WINDOW_MS,
} from "./page/model.ts";

Deno.test("page model: ?url= gives the https URLs in order; none (or none valid) means the page's own server", () => {
  assert.deepEqual(parseTargets(""), [null]);
  assert.deepEqual(parseTargets("?url=nonsense&url=http://a.test/ping"), [null]);
  assert.deepEqual(
    parseTargets(
      `?url=${encodeURIComponent("https://a.test:1/ping")}&url=x&url=https://b.test:2/ping`,
    )
      .map(String),
    ["https://a.test:1/ping", "https://b.test:2/ping"],
  );
});

Deno.test("page model: the mode: WebTransport when connected, WebSocket only when QUIC got no answer and /ws answers", () => {
  assert.equal(
    pageMode({ wt: "connected", ws: "reconnecting", unreachable: null }),
    "webtransport",
  );
  assert.equal(
    pageMode({ wt: "reconnecting", ws: "connected", unreachable: "no QUIC answer in 3 s" }),
    "websocket-only",
  );
  assert.equal(pageMode({ wt: "reconnecting", ws: "connected", unreachable: null }), "none");
  assert.equal(pageMode({ wt: "connecting", ws: "connecting", unreachable: "x" }), "none");
});

Deno.test("page model: samples keep the last minute; the card's median and counts; the chart's scale cuts spikes", () => {
  const series: Sample[] = [];
  addSample(series, { at: 0, rtt: 40 });
  addSample(series, { at: 1000, rtt: 1 });
  addSample(series, { at: 2000, rtt: 2 });
  assert.equal(median(series), 2);
  addSample(series, { at: WINDOW_MS + 500, rtt: 3 });
  assert.deepEqual(series.map((s) => s.rtt), [1, 2, 3], "the 40 ms one is older than a minute");
  assert.equal(cardDetail(series, 5, 3), "p50 2.00 ms · 3 replies · 2 lost or pending");
  assert.equal(cardDetail(series, 2, 3), "p50 2.00 ms · 3 replies · 0 lost or pending");
  const rtts = [...Array.from({ length: 99 }, () => 1), 40];
  assert.deepEqual(chartScale(rtts), { top: 1.5, above: 1 });
  assert.deepEqual(chartScale([]), { top: 1.5, above: 0 });
  assert.deepEqual([...hexBytes("00ff10")], [0, 255, 16]);
});
