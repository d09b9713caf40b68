// The page's pure decisions and figures (page/model.ts), without a browser.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  cardView,
  chartScale,
  chartSegments,
  clockResolution,
  currentReplies,
  type FigureEvent,
  type Figures,
  formatRtt,
  hexBytes,
  initialFigures,
  type Kind,
  median,
  outageLine,
  pageMode,
  parseTargets,
  rttDecimals,
  stepFigures,
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

Deno.test("page model: the chart's scale cuts spikes; hex", () => {
  const rtts = [...Array.from({ length: 99 }, () => 1), 40];
  assert.deepEqual(chartScale(rtts), { top: 1.5, above: 1 });
  assert.deepEqual(chartScale([]), { top: 1.5, above: 0 });
  assert.deepEqual([...hexBytes("00ff10")], [0, 255, 16]);
  assert.equal(median([{ at: 0, rtt: 3 }, { at: 1, rtt: 1 }, { at: 2, rtt: 2 }]), 2);
  assert.ok(Number.isNaN(median([])));
});

/** Runs `events` from the empty figures. */
const run = (events: FigureEvent[]): Figures => events.reduce(stepFigures, initialFigures());
const WT: Kind[] = ["stream", "datagram"];

Deno.test("page model: an outage: the cards say unreachable with the last reply labelled, the line breaks, then resumes", () => {
  let f = run([
    { type: "up", kinds: WT, at: 0 },
    { type: "sent", kind: "stream", at: 0 },
    { type: "reply", kind: "stream", seq: 1, at: 1.5, rtt: 1.5 },
    { type: "sent", kind: "stream", at: 500 },
    { type: "reply", kind: "stream", seq: 2, at: 502, rtt: 2.25 },
  ]);
  assert.deepEqual(cardView(f.kinds.stream, 600, 1), {
    status: "live",
    last: "2.3 ms",
    detail: "p50 2.3 ms · 2 replies · 0 lost or pending",
  });
  assert.equal(outageLine(f, 600), null);
  // The server goes: pings go unanswered, then the session is found dead.
  f = stepFigures(f, { type: "sent", kind: "stream", at: 1000 });
  assert.equal(cardView(f.kinds.stream, 2600, 1).status, "silent", "no reply for 2.1 s");
  assert.equal(cardView(f.kinds.stream, 2600, 1).last, "no reply for 2 s");
  assert.equal(cardView(f.kinds.stream, 2600, 1).detail, "last reply 2.3 ms, 2 s ago");
  f = stepFigures(f, { type: "down", kinds: WT, at: 3600 });
  const down = cardView(f.kinds.stream, 6500, 1);
  assert.deepEqual(down, {
    status: "down",
    last: "unreachable",
    detail: "reconnecting · last reply 2.3 ms, 6 s ago",
  });
  assert.doesNotMatch(down.last, /ms/, "no round trip presented as current");
  assert.deepEqual(currentReplies(f.kinds.stream), []);
  assert.deepEqual(f.outages, [{ from: 502, to: null }], "from the last reply heard");
  assert.equal(outageLine(f, 6500), "Server unreachable: no reply for 6 s · reconnecting");
  // A late reply to a ping of the dead connection is not taken, down or after the reconnect.
  assert.equal(stepFigures(f, { type: "reply", kind: "stream", seq: 3, at: 6600, rtt: 5 }), f);
  f = stepFigures(f, { type: "up", kinds: WT, at: 8000 });
  assert.equal(stepFigures(f, { type: "reply", kind: "stream", seq: 3, at: 8001, rtt: 5 }), f);
  assert.deepEqual(cardView(f.kinds.stream, 8001, 1).status, "waiting");
  assert.equal(cardView(f.kinds.stream, 8001, 1).last, "–");
  f = [
    { type: "sent", kind: "stream", at: 8000 },
    { type: "reply", kind: "stream", seq: 4, at: 8007, rtt: 7 },
    { type: "sent", kind: "stream", at: 8500 },
    { type: "reply", kind: "stream", seq: 5, at: 8509, rtt: 9 },
  ].reduce((acc, e) => stepFigures(acc, e as FigureEvent), f);
  assert.deepEqual(f.outages, [{ from: 502, to: 8000 }]);
  assert.equal(outageLine(f, 8600), null);
  assert.deepEqual(cardView(f.kinds.stream, 8600, 1), {
    status: "live",
    last: "9.0 ms",
    detail: "p50 9.0 ms · 4 replies · 1 lost or pending",
  }, "the p50 is of this connection's replies only (7 and 9), the counts are since the start");
  assert.deepEqual(
    chartSegments(f.kinds.stream.samples).map((run) => run.map((s) => s.seq)),
    [[1, 2], [4, 5]],
  );
});

Deno.test("page model: a lost ping breaks the line within a connection; a lone reply is a run of one", () => {
  const f = run([
    { type: "up", kinds: WT, at: 0 },
    ...[1, 2, 3, 4, 5].map((n) => ({ type: "sent", kind: "datagram", at: n * 500 }) as FigureEvent),
    { type: "reply", kind: "datagram", seq: 1, at: 501, rtt: 1 },
    { type: "reply", kind: "datagram", seq: 2, at: 1001, rtt: 1 },
    { type: "reply", kind: "datagram", seq: 4, at: 2001, rtt: 1 },
    { type: "reply", kind: "datagram", seq: 3, at: 2002, rtt: 502 },
  ]);
  assert.deepEqual(
    chartSegments(f.kinds.datagram.samples).map((run) => run.map((s) => s.seq)),
    [[1, 2], [4], [3]],
  );
});

Deno.test("page model: the WebSocket's connection owns the ping that found the server again, not older ones", () => {
  let f = run([
    { type: "sent", kind: "ws", at: 0 },
    { type: "up", kinds: ["ws"], at: 10, firstSeq: 1 },
    { type: "reply", kind: "ws", seq: 1, at: 10, rtt: 10 },
    { type: "sent", kind: "ws", at: 500 },
    { type: "down", kinds: ["ws"], at: 2500 },
    { type: "sent", kind: "ws", at: 3000 },
    { type: "sent", kind: "ws", at: 3500 },
  ]);
  // It claims ping 2 (of the connection before): refused; 4 it may claim.
  const claimed = stepFigures(f, { type: "up", kinds: ["ws"], at: 3520, firstSeq: 2 });
  assert.equal(claimed.kinds.ws.firstSeq, 3);
  f = stepFigures(f, { type: "up", kinds: ["ws"], at: 3520, firstSeq: 4 });
  f = stepFigures(f, { type: "reply", kind: "ws", seq: 4, at: 3520, rtt: 20 });
  assert.equal(cardView(f.kinds.ws, 3600, 0).last, "20 ms");
  assert.equal(stepFigures(f, { type: "reply", kind: "ws", seq: 3, at: 3600, rtt: 600 }), f);
});

Deno.test("page model: replies and outages older than a minute are dropped", () => {
  let f = run([
    { type: "up", kinds: ["ws"], at: 0 },
    { type: "sent", kind: "ws", at: 0 },
    { type: "reply", kind: "ws", seq: 1, at: 5, rtt: 5 },
    { type: "down", kinds: ["ws"], at: 1000 },
    { type: "up", kinds: ["ws"], at: 2000 },
  ]);
  assert.equal(f.outages.length, 1);
  f = [
    { type: "sent", kind: "ws", at: WINDOW_MS + 3000 },
    { type: "reply", kind: "ws", seq: 2, at: WINDOW_MS + 3010, rtt: 10 },
    { type: "down", kinds: ["ws"], at: WINDOW_MS + 3100 },
  ].reduce((acc, e) => stepFigures(acc, e as FigureEvent), f);
  assert.deepEqual(f.kinds.ws.samples.map((s) => s.seq), [2]);
  assert.deepEqual(f.outages, [{ from: WINDOW_MS + 3010, to: null }]);
  assert.equal(cardView(initialFigures().kinds.ws, 0, 1).status, "idle");
});

Deno.test("page model: round trips get the decimals the clock has: Firefox's 1 ms, Chromium's 100 µs, isolation's 5 µs", () => {
  const firefox = clockResolution([10, 11, 12, 17, 18], false);
  assert.equal(firefox, 1);
  assert.equal(rttDecimals(firefox), 0);
  assert.equal(formatRtt(3.4, rttDecimals(firefox)), "3 ms");
  assert.equal(formatRtt(0.4, 0), "<1 ms", "below the clock's step");
  // Chromium's readings are multiples of 0.1 in binary floating point, a hair either side.
  const chromium = clockResolution([1.1, 1.2000000000000002, 1.3, 1.4, 5.8], false);
  assert.equal(rttDecimals(chromium), 1);
  assert.equal(formatRtt(3.25, 1), "3.3 ms");
  assert.equal(formatRtt(0.04, 1), "<0.1 ms");
  // A clock seen finer than the spec allows is taken at the spec's floor.
  assert.equal(clockResolution([1, 1.001, 1.002], false), 0.1);
  assert.equal(clockResolution([1, 1.001, 1.002], true), 0.005);
  assert.equal(rttDecimals(0.005), 2);
  assert.equal(rttDecimals(0.02), 1, "Firefox isolated: 20 µs, one decimal");
  assert.equal(rttDecimals(16.7), 0, "resistFingerprinting: no decimals");
  assert.equal(rttDecimals(1e-6), 3);
  assert.equal(clockResolution([4], false), 1, "a clock not seen to move");
});

/** One step of a generated run: time passes, a connection comes up or goes, a ping or a reply. */
type Action =
  | { t: "wait"; ms: number }
  | { t: "up"; kinds: Kind[]; claim: boolean }
  | { t: "down"; kinds: Kind[] }
  | { t: "sent"; kind: Kind }
  | { t: "reply"; kind: Kind; pick: number; rtt: number };

/** Actions on the kinds of `pool` (runs on one kind meet each case more often). */
function actionArb(pool: Kind[]): fc.Arbitrary<Action> {
  const kindArb = fc.constantFrom(...pool);
  const kindsArb = fc.uniqueArray(kindArb, { minLength: 1, maxLength: pool.length });
  return fc.oneof(
    fc.record({ t: fc.constant("wait" as const), ms: fc.oneof(fc.nat(3000), fc.constant(70_000)) }),
    fc.record({ t: fc.constant("up" as const), kinds: kindsArb, claim: fc.boolean() }),
    fc.record({ t: fc.constant("down" as const), kinds: kindsArb }),
    { arbitrary: fc.record({ t: fc.constant("sent" as const), kind: kindArb }), weight: 2 },
    {
      arbitrary: fc.record({
        t: fc.constant("reply" as const),
        kind: kindArb,
        pick: fc.oneof(fc.constant(0), fc.nat()), // 0: the newest, else any
        rtt: fc.double({ min: 0, max: 500, noNaN: true }),
      }),
      weight: 2,
    },
  );
}
const runArb = fc.constantFrom<Kind[]>(["ws"], ["stream"], ["stream", "datagram", "ws"])
  .chain((pool) => fc.array(actionArb(pool), { maxLength: 150, size: "max" }));

/**
 * What the harness knows of one kind, independently of the model: whether it is up, the
 * connection it is on (counted here), which connection each ping belongs to (-1: sent while
 * down and not claimed), the first ping a connection coming up may claim (one sent since
 * the last down), the pings not answered yet, and the event index of every down.
 */
interface Truth {
  up: boolean;
  connection: number;
  claimFrom: number;
  owner: number[];
  outstanding: number[];
  downs: number[];
  replyIndex: Map<number, number>;
}

Deno.test("page model (fast-check): over any run of replies, losses, disconnects and reconnects, no line crosses a disconnection or a loss, and only the current connection's replies are shown as current", () => {
  fc.assert(
    fc.property(runArb, (actions) => {
      let f = initialFigures(), now = 0;
      const truth = {} as Record<Kind, Truth>;
      for (const kind of ["stream", "datagram", "ws"] as Kind[]) {
        truth[kind] = {
          up: false,
          connection: 0,
          claimFrom: 1,
          owner: [],
          outstanding: [],
          downs: [],
          replyIndex: new Map(),
        };
      }
      actions.forEach((a, index) => {
        if (a.t === "wait") now += a.ms;
        else if (a.t === "sent") {
          f = stepFigures(f, { type: "sent", kind: a.kind, at: now });
          const tr = truth[a.kind];
          tr.owner.push(tr.up ? tr.connection : -1);
          tr.outstanding.push(tr.owner.length);
        } else if (a.t === "reply") {
          const tr = truth[a.kind];
          if (!tr.outstanding.length) return;
          const at = tr.outstanding.length - 1 - a.pick % tr.outstanding.length;
          const seq = tr.outstanding.splice(at, 1)[0]!;
          const before = f;
          f = stepFigures(f, { type: "reply", kind: a.kind, seq, at: now, rtt: a.rtt });
          const taken = f !== before;
          assert.equal(taken, tr.up && tr.owner[seq - 1] === tr.connection, "taken iff current");
          if (taken) tr.replyIndex.set(seq, index);
        } else if (a.t === "down") {
          f = stepFigures(f, { type: "down", kinds: a.kinds, at: now });
          for (const kind of a.kinds) {
            if (!truth[kind].up) continue;
            truth[kind].downs.push(index);
            truth[kind].up = false;
            truth[kind].claimFrom = truth[kind].owner.length + 1;
          }
        } else {
          // A claim names the last ping sent, as the WebSocket loop does; the model may
          // grant it only if that ping was sent while down.
          for (const kind of a.kinds) {
            const tr = truth[kind];
            const firstSeq = a.claim && a.kinds.length === 1 ? tr.owner.length : undefined;
            f = stepFigures(f, { type: "up", kinds: [kind], at: now, firstSeq });
            if (tr.up) continue;
            tr.up = true;
            tr.connection++;
            if (firstSeq && firstSeq >= tr.claimFrom) tr.owner[firstSeq - 1] = tr.connection;
          }
        }
        for (const kind of ["stream", "datagram", "ws"] as Kind[]) check(f, truth[kind], kind, now);
      });
    }),
    { numRuns: 1000 },
  );
});

/** The properties, after every step. */
function check(f: Figures, tr: Truth, kind: Kind, now: number): void {
  const k = f.kinds[kind];
  assert.equal(k.up, tr.up);
  for (const segment of chartSegments(k.samples)) {
    for (let i = 1; i < segment.length; i++) {
      const [a, b] = [tr.replyIndex.get(segment[i - 1]!.seq)!, tr.replyIndex.get(segment[i]!.seq)!];
      assert.ok(!tr.downs.some((d) => d > a && d < b), "a line across a disconnection");
      assert.equal(segment[i]!.seq, segment[i - 1]!.seq + 1, "a line across a lost ping");
    }
  }
  const current = currentReplies(k);
  for (const s of current) {
    assert.equal(tr.owner[s.seq - 1], tr.connection, "an old reply as current");
  }
  const view = cardView(k, now, 1);
  if (!tr.up) {
    assert.ok(view.status === "down" || view.status === "idle");
    assert.doesNotMatch(view.last, /ms/, "no round trip as current while down");
    assert.equal(current.length, 0);
  } else if (view.status === "live") {
    assert.equal(view.last, formatRtt(current.at(-1)!.rtt, 1));
  } else {
    assert.doesNotMatch(view.last, /ms$/, "no figure shown as current but a current one");
  }
  const open = f.outages.at(-1)?.to === null;
  const anyUp = Object.values(f.kinds).some((x) => x.up);
  if (open) assert.ok(!anyUp, "an open outage while something is up");
  assert.equal(outageLine(f, now) !== null, open);
}
