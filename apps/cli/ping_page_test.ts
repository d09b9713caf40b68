// The page the server serves (`duet ping serve`, its own process), in headless Chromium and
// Firefox: it pings over a stream, datagrams and the WebSocket (through wsping), shows it,
// shows an outage as one (cards, banner, a gap in the chart) and reconnects by itself when
// the server goes away and comes back with a new certificate. Screenshots are left for
// people to look at (DUET_SCREENSHOT_DIR, default a temporary directory).
import assert from "node:assert/strict";
import {
  findChromium,
  findFirefox,
  freePort,
  launchChromium,
  launchFirefox,
  testWith,
  waitFor,
} from "@duet/testkit";
import { spawnDuet, type SpawnedDuet } from "./testdata/spawn.ts";

const chromium = await findChromium();
const firefox = await findFirefox();

/**
 * The server runs as its own process, as in real life: Deno keeps a closed QUIC
 * endpoint's UDP socket bound until garbage collection, so one process cannot restart a
 * server on the same port at once (see packages/webtransport/README.md).
 */
async function startServer(port: number, extra: string[] = []): Promise<SpawnedDuet> {
  const server = spawnDuet(["ping", "serve", "--port", String(port), ...extra], {
    direct: true,
  });
  await waitFor(() => server.lines.stdout.some((l) => l.startsWith("page ")), "the server", 20_000);
  return server;
}

async function stopServer(server: SpawnedDuet): Promise<void> {
  try {
    server.child.kill("SIGKILL");
  } catch { /* gone */ }
  await server.child.status;
  await server.done;
}

testWith(chromium, {
  name: "page: pings over stream, datagram and WebSocket, charts them, and reconnects " +
    "after a server restart",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const port = freePort();
    let server = await startServer(port);
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 800, height: 640 } });
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(error.message));
      await page.goto(`http://127.0.0.1:${port}/`);
      const state = () =>
        page.evaluate(() =>
          (globalThis as unknown as {
            duetPing: {
              wt: string;
              ws: string;
              protocol: string | null;
              reconnects: number;
              counts: Record<"stream" | "datagram" | "ws", { sent: number; received: number }>;
            };
          }).duetPing
        );
      await waitFor(
        async () => {
          const s = await state();
          return s.counts.stream.received >= 4 && s.counts.datagram.received >= 4 &&
            s.counts.ws.received >= 3;
        },
        "replies on all three transports",
        20_000,
      );
      const before = await state();
      assert.equal(before.wt, "connected");
      assert.equal(before.protocol, "duet-ping.v1", "the page offers duet-ping.v1 and gets it");
      assert.equal(before.ws, "connected");
      assert.match(
        await page.locator("#card-stream [data-field=last]").innerText(),
        /^(\d+\.\d|<0\.1) ms$/,
        "Chromium's clock steps by 100 µs: one decimal",
      );
      assert.match(await page.locator("#card-ws [data-field=detail]").innerText(), /replies/);
      const dir = Deno.env.get("DUET_SCREENSHOT_DIR") ?? await Deno.makeTempDir();
      const shot = `${dir}/ping-page.png`;
      await page.screenshot({ path: shot });
      // deno-lint-ignore no-console -- where the screenshot is, for the person running the tests
      console.info(`screenshot: ${shot}`);

      await stopServer(server); // killed: no close, the page must notice by itself
      await waitFor(async () => (await state()).wt === "reconnecting", "the page to notice");
      server = await startServer(port); // a new certificate: the page fetches it
      const received = (await state()).counts.stream.received;
      await waitFor(
        async () => {
          const s = await state();
          return s.wt === "connected" && s.counts.stream.received > received + 2;
        },
        "the page to reconnect and ping again",
        20_000,
      );
      assert.ok((await state()).reconnects >= 1);
      assert.deepEqual(errors, [], "no uncaught errors in the page");
    } finally {
      await browser.close();
      await stopServer(server);
    }
  },
});

testWith(chromium, {
  name: "page: reached by a name (ping.test) with ?token= on a server that asks for one: " +
    "WebTransport goes to that name, and the token goes to WebTransport and /ws",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const port = freePort();
    const server = await startServer(port, ["--token", "s3cret"]);
    // The name resolves to loopback in this browser only; a page from a name over plain
    // HTTP is not a secure context (no WebTransport) unless the browser is told to treat
    // it as one, which a real deployment gets from HTTPS.
    const browser = await launchChromium({
      args: [
        "--host-resolver-rules=MAP ping.test 127.0.0.1",
        `--unsafely-treat-insecure-origin-as-secure=http://ping.test:${port}`,
      ],
    });
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(error.message));
      await page.goto(`http://ping.test:${port}/?token=s3cret`);
      await waitFor(
        () =>
          page.evaluate(() => {
            const { counts } = (globalThis as unknown as {
              duetPing: { counts: Record<string, { received: number }> };
            }).duetPing;
            return counts["stream"]!.received >= 2 && counts["datagram"]!.received >= 2 &&
              counts["ws"]!.received >= 2;
          }),
        "replies on all three transports",
        20_000,
      );
      assert.match(await page.locator("#target").innerText(), /^https:\/\/ping\.test:\d+\/ping /);
      assert.deepEqual(errors, [], "no uncaught errors in the page");
    } finally {
      await browser.close();
      await stopServer(server);
    }
  },
});

testWith(chromium, {
  name: "page: with two ?url= it uses the first, and when that server is SIGKILLed it " +
    "switches to the second and pings on (WebTransport and /ws)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const [portA, portB] = [freePort(), freePort()];
    const first = await startServer(portA);
    // The page comes from the first server: the second must allow its origin.
    const second = await startServer(portB, ["--allow-origin", `http://127.0.0.1:${portA}`]);
    const [a, b] = [portA, portB].map((port) => `https://127.0.0.1:${port}/ping`);
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(error.message));
      await page.goto(
        `http://127.0.0.1:${portA}/?url=${encodeURIComponent(a!)}&url=${encodeURIComponent(b!)}`,
      );
      type State = {
        wt: string;
        target: string | null;
        switches: { to: string; from: string; reason: string }[];
        counts: Record<"stream" | "datagram" | "ws", { received: number }>;
      };
      const state = () =>
        page.evaluate(() => (globalThis as unknown as { duetPing: State }).duetPing);
      await waitFor(
        async () => {
          const s = await state();
          return s.wt === "connected" && s.counts.stream.received >= 3 &&
            s.counts.datagram.received >= 3 && s.counts.ws.received >= 3;
        },
        "replies from the first server",
        20_000,
      );
      assert.equal((await state()).target, a);
      assert.deepEqual((await state()).switches, []);
      await stopServer(first);
      const before = await state();
      await waitFor(
        async () => {
          const s = await state();
          return s.wt === "connected" && s.target === b &&
            s.counts.stream.received >= before.counts.stream.received + 3 &&
            s.counts.ws.received >= before.counts.ws.received + 3;
        },
        "the page to switch to the second server and ping on",
        20_000,
      );
      const { switches } = await state();
      assert.equal(switches.length, 1, JSON.stringify(switches));
      assert.equal(switches[0]!.to, b);
      assert.equal(switches[0]!.from, a);
      assert.match(
        await page.locator("#target").innerText(),
        new RegExp(`^${b!.replaceAll(".", "\\.")} `),
      );
      assert.match(
        await page.locator("#log").innerText(),
        new RegExp(`switching to ${b!.replaceAll(".", "\\.")}: 127\\.0\\.0\\.1:${portA} lost`),
      );
      assert.deepEqual(errors, [], "no uncaught errors in the page");
    } finally {
      await browser.close();
      await stopServer(first);
      await stopServer(second);
    }
  },
});

/** What the outage test reads of a page, in Chromium (Playwright) or Firefox (puppeteer). */
interface BrowserPage {
  /** Runs `fn` in the page and resolves with its (JSON) result. */
  evaluate<T>(fn: () => T): Promise<T>;
  screenshot(options: { path: string }): Promise<unknown>;
}

/** The page's state and its cards and outage line, as shown. */
interface Shown {
  wt: string;
  ws: string;
  decimals: number;
  counts: Record<Kind, { sent: number; received: number }>;
  figures: { outages: { from: number; to: number | null }[] };
  chart: { runs: Record<Kind, [number, number][]>; outages: number };
  cards: Record<Kind, { status: string; last: string; detail: string }>;
  outage: { hidden: boolean; text: string };
}
type Kind = "stream" | "datagram" | "ws";
const KINDS: Kind[] = ["stream", "datagram", "ws"];

function shown(page: BrowserPage): Promise<Shown> {
  return page.evaluate(() => {
    const g = globalThis as unknown as {
      duetPing: Omit<Shown, "cards" | "outage">;
      document: {
        getElementById(id: string): {
          hidden: boolean;
          textContent: string | null;
          dataset: Record<string, string>;
          querySelector(s: string): { textContent: string | null };
        };
      };
    };
    const card = (kind: string) => {
      const el = g.document.getElementById(`card-${kind}`);
      return {
        status: el.dataset["status"] ?? "",
        last: el.querySelector('[data-field="last"]').textContent ?? "",
        detail: el.querySelector('[data-field="detail"]').textContent ?? "",
      };
    };
    const outage = g.document.getElementById("outage");
    // A copy through JSON: the page's state is a plain object.
    return JSON.parse(JSON.stringify({
      ...g.duetPing,
      cards: { stream: card("stream"), datagram: card("datagram"), ws: card("ws") },
      outage: { hidden: outage.hidden, text: outage.textContent ?? "" },
    }));
  });
}

/**
 * The outage, in one browser: replies on all three (with as many decimals as its clock
 * has: `decimals`), the server SIGKILLed and kept down (the page tries again and again and
 * goes on saying it is unreachable, never showing an old round trip as current), then
 * started again on the same port: the page resumes, and the chart's lines break across
 * the outage. Screenshots before, during and after.
 */
async function outageShownAndOvercome(
  page: BrowserPage,
  load: (url: string) => Promise<unknown>,
  browserName: string,
  decimals: number,
): Promise<void> {
  const port = freePort();
  let server = await startServer(port);
  const dir = Deno.env.get("DUET_SCREENSHOT_DIR") ?? await Deno.makeTempDir();
  const shoot = async (when: string) => {
    const path = `${dir}/ping-page-${browserName}-${when}.png`;
    await page.screenshot({ path });
    // deno-lint-ignore no-console -- where the screenshot is, for the person running the tests
    console.info(`screenshot: ${path}`);
  };
  const figure = decimals
    ? new RegExp(`^(\\d+\\.\\d{${decimals}}|<0\\.\\d+) ms$`)
    : /^(\d+|<1) ms$/;
  try {
    await load(`http://127.0.0.1:${port}/`);
    await waitFor(
      async () => {
        const s = await shown(page);
        return KINDS.every((k) => s.cards[k].status === "live" && s.counts[k].received >= 3);
      },
      "live figures on all three transports",
      20_000,
    );
    const up = await shown(page);
    assert.equal(up.decimals, decimals, "the precision the browser's clock has");
    for (const k of KINDS) assert.match(up.cards[k].last, figure, k);
    assert.ok(up.outage.hidden);
    await shoot("1-before");

    await stopServer(server); // killed: no close, the page must notice by itself
    await waitFor(
      async () => {
        const s = await shown(page);
        return KINDS.every((k) => s.cards[k].status === "down") && s.wt === "reconnecting" &&
          s.ws === "reconnecting";
      },
      "the page to show the outage",
      20_000,
    );
    // Kept down while the page tries again: still shown as an outage, nothing new counted.
    const down = await shown(page);
    await waitFor(
      async () => (await shown(page)).counts.ws.sent >= down.counts.ws.sent + 2,
      "the page to try the WebSocket twice more",
      20_000,
    );
    const still = await shown(page);
    await shoot("2-during");
    for (const k of KINDS) {
      assert.equal(still.cards[k].status, "down", k);
      assert.equal(still.cards[k].last, "unreachable", `${k}: no round trip shown as current`);
      assert.match(still.cards[k].detail, /^reconnecting · last reply \S+ ms, \d+ s ago$/, k);
      assert.equal(still.counts[k].received, down.counts[k].received, k);
    }
    assert.ok(!still.outage.hidden);
    assert.match(still.outage.text, /^Server unreachable: no reply for \d+ s · reconnecting$/);
    assert.equal(still.figures.outages.at(-1)?.to, null);
    assert.equal(still.chart.outages, 1, "the outage is shaded on the chart");

    server = await startServer(port); // a new certificate: the page fetches it
    await waitFor(
      async () => {
        const s = await shown(page);
        return KINDS.every((k) =>
          s.cards[k].status === "live" && s.counts[k].received >= still.counts[k].received + 3
        );
      },
      "the page to reconnect and show live figures again",
      30_000,
    );
    const after = await shown(page);
    await shoot("3-after");
    assert.ok(after.outage.hidden);
    const outage = after.figures.outages.at(-1)!;
    assert.ok(outage.to !== null && outage.to > outage.from, JSON.stringify(outage));
    for (const k of KINDS) {
      assert.match(after.cards[k].last, figure, k);
      const runs = after.chart.runs[k];
      assert.ok(runs.some(([, to]) => to <= outage.from), `${k}: a line before the outage`);
      assert.ok(runs.some(([from]) => from >= outage.to!), `${k}: a line after it`);
      for (const [from, to] of runs) {
        assert.ok(!(from <= outage.from && to >= outage.to!), `${k}: a line across the outage`);
      }
    }
  } finally {
    await stopServer(server);
  }
}

testWith(chromium, {
  name: "page (Chromium): an outage is shown as one (cards unreachable, banner, shaded gap in " +
    "the chart, no old round trip as current), kept while the server stays down, then left",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 800, height: 640 } });
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(error.message));
      await outageShownAndOvercome(
        page as unknown as BrowserPage,
        (url) => page.goto(url),
        "chromium",
        1, // Chromium's clock steps by 100 µs on a page that is not cross-origin isolated
      );
      assert.deepEqual(errors, [], "no uncaught errors in the page");
    } finally {
      await browser.close();
    }
  },
});

testWith(firefox, {
  name: "page (Firefox): an outage is shown as one, kept while the server stays down, then " +
    "left; round trips in whole milliseconds, as Firefox's clock has them",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const profileDir = await Deno.makeTempDir({ prefix: "duet-firefox-" });
    let browser: import("puppeteer-core").Browser | undefined;
    try {
      browser = await launchFirefox(profileDir);
      const page = await browser.newPage();
      await page.setViewport({ width: 800, height: 640 });
      const errors: string[] = [];
      page.on("pageerror", (error) => errors.push(String(error)));
      await outageShownAndOvercome(
        page as unknown as BrowserPage,
        (url) => page.goto(url),
        "firefox",
        0, // Firefox's clock steps by 1 ms on a page that is not cross-origin isolated
      );
      // Firefox reports each refused WebSocket connection as an error of the page (while
      // the server is down, wsping's sockets are refused); nothing else may be there.
      const refused = /can.t establish a connection to the server at ws:\/\/127\.0\.0\.1:\d+\/ws/;
      assert.deepEqual(errors.filter((e) => !refused.test(e)), [], "no uncaught errors");
    } finally {
      const child = browser?.process();
      await browser?.close().catch(() => {});
      if (child && child.exitCode === null && child.pid !== undefined) {
        try {
          Deno.kill(child.pid, "SIGKILL");
        } catch { /* exited meanwhile */ }
      }
      await Deno.remove(profileDir, { recursive: true }).catch(() => {});
    }
  },
});
