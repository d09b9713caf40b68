// The page the server serves (`duet ping serve`, its own process), in headless Chromium: it
// pings over a stream, datagrams and the WebSocket (through wsping), shows it, and reconnects
// by itself when the server goes away and comes back with a new certificate. A screenshot is
// left for people to look at (DUET_SCREENSHOT_DIR, default a temporary directory).
import assert from "node:assert/strict";
import { findChromium, freePort, launchChromium, testWith, waitFor } from "@duet/testkit";
import { spawnDuet, type SpawnedDuet } from "./testdata/spawn.ts";

const chromium = await findChromium();

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
        /^\d+\.\d\d ms$/,
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
