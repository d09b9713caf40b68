// The ping server and client over real QUIC and TCP on loopback: the three ways of
// pinging, the protocol's error answers, the server's admission rules, its TCP side, and
// trust taken from the published hashes.
import { bytesToHex } from "@noble/hashes/utils.js";
import assert from "node:assert/strict";
import {
  connectWebTransport,
  generateCertificateAuthority,
  WebTransportRejectedError,
  type WebTransportSession,
} from "@duet/webtransport";
import { wsPing } from "@duet/wsping";
import { waitFor, withLogRecords } from "@duet/testkit";
import {
  CLIENT_DEFAULTS,
  MAX_LINE_BYTES,
  type PingEvent,
  type PingMode,
  resolveTrust,
  type RunningPingServer,
  runPing,
  serviceUrl,
  startPingServer,
} from "./mod.ts";

const options = { sanitizeOps: false, sanitizeResources: false }; // QUIC winds down after the test
const bytes = (s: string) => new TextEncoder().encode(s);

async function withServer(
  fn: (server: RunningPingServer) => Promise<void>,
  config: Parameters<typeof startPingServer>[0] = {},
): Promise<void> {
  const server = await startPingServer({ port: 0, ...config });
  try {
    await fn(server);
  } finally {
    await server.shutdown(100);
  }
}

const pinned = (server: RunningPingServer) => ({
  serverCertificateHashes: server.certificateHashes().map((value) => ({
    algorithm: "sha-256" as const,
    value,
  })),
});

async function ask(session: WebTransportSession, request: Uint8Array): Promise<string> {
  const stream = await session.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  await writer.write(request);
  await writer.close().catch(() => {}); // the server may stop reading first
  let reply = "";
  for await (const chunk of stream.readable) reply += new TextDecoder().decode(chunk);
  return reply;
}

for (const mode of ["stream", "new-stream", "datagram"] as PingMode[]) {
  Deno.test({
    name: `ping over ${mode}: every ping answered, and the summary adds up`,
    ...options,
    fn: () =>
      withServer(async (server) => {
        const events: PingEvent[] = [];
        const summary = await runPing({
          ...CLIENT_DEFAULTS,
          url: server.url,
          trust: pinned(server),
          count: 20,
          intervalMs: 10,
          payloadBytes: 100,
          mode,
        }, (event) => events.push(event));
        assert.equal(summary.transmitted, 20);
        assert.equal(summary.received, 20, JSON.stringify(summary));
        assert.equal(summary.lossPercent, 0);
        assert.deepEqual(
          events.filter((e) => e.type === "reply").map((e) => e.type === "reply" && e.seq),
          Array.from({ length: 20 }, (_, i) => i + 1),
        );
        const reply = events.find((e) => e.type === "reply");
        assert.equal(reply?.type === "reply" && reply.bytes, "pong 1 ".length + 100);
        assert.ok(summary.rtt && summary.rtt.min > 0 && summary.rtt.min <= summary.rtt.p50);
        assert.ok(summary.rtt.p50 <= summary.rtt.p99 && summary.rtt.p99 <= summary.rtt.max);
        await waitFor(() => server.sessions === 0, "the client's session to close");
      }),
  });
}

Deno.test({
  name: "server: bad lines get error lines, an oversized line ends the stream, and the " +
    "session keeps serving",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const session = await connectWebTransport(server.url, pinned(server));
      assert.equal(
        await ask(session, bytes("ping a\nHELLO\nping b\n")),
        'pong a\nerror expected "ping" or "ping PAYLOAD", got "HELLO"\npong b\n',
      );
      assert.equal(
        await ask(session, bytes(`ping ${"x".repeat(MAX_LINE_BYTES + 10)}\nping after\n`)),
        `error line longer than ${MAX_LINE_BYTES} bytes\n`,
      );
      assert.equal(await ask(session, bytes("ping c\n")), "pong c\n", "still serving");
      const writer = session.datagrams.writable.getWriter();
      const reader = session.datagrams.readable.getReader();
      await writer.write(bytes("nonsense"));
      assert.equal(
        new TextDecoder().decode((await reader.read()).value),
        'error expected "ping" or "ping PAYLOAD", got "nonsense"',
      );
      await session.close();
    }),
});

Deno.test({
  name: "server: token checked (header or ?token=), wrong path 404, foreign origin 403, " +
    "too many sessions from one address 429",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const trust = pinned(server);
      const status = (p: Promise<WebTransportSession>) =>
        p.then(async (s) => {
          await s.close();
          return 200;
        }, (e) => (e instanceof WebTransportRejectedError ? e.status : String(e)));
      assert.equal(await status(connectWebTransport(server.url, trust)), 401);
      assert.equal(
        await status(
          connectWebTransport(server.url, {
            ...trust,
            headers: [["authorization", "Bearer wrong"]],
          }),
        ),
        401,
      );
      assert.equal(
        await status(
          connectWebTransport(server.url, {
            ...trust,
            headers: [["authorization", "Bearer s3cret"]],
          }),
        ),
        200,
      );
      const withQuery = new URL(server.url);
      withQuery.searchParams.set("token", "s3cret");
      assert.equal(await status(connectWebTransport(withQuery, trust)), 200);
      // The application protocol: ours is answered, none offered is fine, only others: 400.
      const negotiated = await connectWebTransport(withQuery, {
        ...trust,
        protocols: ["x", "duet-ping.v1"],
      });
      assert.equal(negotiated.protocol, "duet-ping.v1");
      await negotiated.close();
      assert.equal(
        await status(connectWebTransport(withQuery, { ...trust, protocols: ["x"] })),
        400,
      );
      const elsewhere = new URL("/other?token=s3cret", server.url);
      assert.equal(await status(connectWebTransport(elsewhere, trust)), 404);
      assert.equal(
        await status(connectWebTransport(withQuery, { ...trust, origin: "https://evil.test" })),
        403,
      );
      assert.equal(
        await status(connectWebTransport(withQuery, { ...trust, origin: "https://app.test" })),
        200,
        "a listed origin",
      );
      assert.equal(
        await status(connectWebTransport(withQuery, { ...trust, origin: server.httpUrl.origin })),
        200,
        "the server's own page",
      );
      const held = [
        await connectWebTransport(withQuery, trust),
        await connectWebTransport(withQuery, trust),
      ];
      assert.equal(await status(connectWebTransport(withQuery, trust)), 429);
      await held[0]!.close();
      await waitFor(() => server.sessions === 1, "the server to see the session end");
      assert.equal(await status(connectWebTransport(withQuery, trust)), 200, "room again");
      await held[1]!.close();
    }, { token: "s3cret", allowedOrigins: ["https://app.test"], maxSessionsPerClient: 2 }),
});

Deno.test({
  name: "server: a cap of 0 sessions per client address means no cap",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const trust = pinned(server);
      const sessions = [];
      for (let i = 0; i < 20; i++) sessions.push(await connectWebTransport(server.url, trust));
      assert.equal(server.sessions, 20, "more than the default 16 from one address");
      for (const session of sessions) await session.close();
    }, { maxSessionsPerClient: 0 }),
});

Deno.test({
  name: "server: TCP side serves /healthz, the published hashes, the page, and /ws through " +
    "the wsping library",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const health = await (await fetch(new URL("/healthz", server.httpUrl))).json();
      assert.deepEqual(health, { status: "ok", sessions: 0 });
      const info = await (await fetch(new URL("/.well-known/duet-ping.json", server.httpUrl)))
        .json();
      // No --public-url: the port and path, which clients join to the host they used.
      assert.deepEqual(info, {
        port: server.port,
        path: "/ping",
        certificateHashes: server.certificateHashes().map((h) => ({
          algorithm: "sha-256",
          value: bytesToHex(h),
        })),
      });
      assert.equal(serviceUrl(info, server.httpUrl.hostname).href, server.url.href);
      assert.equal(info.certificateHashes.length, 2, "current and next");
      const page = await fetch(server.httpUrl);
      assert.equal(page.headers.get("content-type"), "text/html; charset=utf-8");
      assert.match(await page.text(), /<title>duet ping<\/title>/);
      const module = await fetch(new URL("/wsping.mjs", server.httpUrl));
      assert.match(await module.text(), /wsPing/);
      assert.equal((await fetch(new URL("/nothing", server.httpUrl))).status, 404);
      assert.equal(
        (await fetch(new URL("/healthz", server.httpUrl), { method: "POST" })).status,
        405,
      );
      const ws = new URL("/ws", server.httpUrl);
      ws.protocol = "ws:";
      assert.equal(await wsPing(ws.href, "ping 1"), "pong 1");
      assert.equal(
        await wsPing(ws.href, "hello"),
        'error expected "ping" or "ping PAYLOAD", got "hello"',
      );
    }),
});

Deno.test({
  name: "client trust: hashes come from /.well-known over loopback HTTP, never from a " +
    "remote host over plain HTTP",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const trust = await resolveTrust(server.url, {});
      assert.deepEqual(trust, pinned(server));
      const summary = await runPing({
        ...CLIENT_DEFAULTS,
        url: server.url,
        trust: () => resolveTrust(server.url, {}),
        count: 2,
        intervalMs: 10,
      });
      assert.equal(summary.received, 2);
      // 192.0.2.1 (TEST-NET-1) is not loopback: only HTTPS would do, and it cannot answer.
      await assert.rejects(
        resolveTrust(new URL("https://192.0.2.1:9/ping"), {}),
        /plain HTTP is trusted only on loopback; pass --cert-hash or --ca/,
      );
      await assert.rejects(resolveTrust(server.url, { certHashes: ["abc"] }), /64 hex digits/);
    }),
});

Deno.test({
  name: "server: a certificate from --cert/--key serves QUIC and HTTPS, trusted through its CA",
  ...options,
  async fn() {
    const ca = await generateCertificateAuthority();
    const leaf = await ca.issue();
    await withServer(async (server) => {
      assert.equal(server.httpUrl.protocol, "https:");
      const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
      const health = await fetch(new URL("/healthz", server.httpUrl), { client });
      assert.equal(health.status, 200);
      await health.body?.cancel();
      client.close();
      const summary = await runPing({
        ...CLIENT_DEFAULTS,
        url: server.url,
        trust: await resolveTrust(server.url, { caPem: ca.certPem }),
        count: 2,
        intervalMs: 10,
      });
      assert.equal(summary.received, 2);
      assert.equal(server.certificateHashes().length, 1, "a pinnable certificate: its hash");
    }, { cert: { certPem: leaf.certPem, keyPem: leaf.keyPem } });
  },
});

Deno.test({
  name: "client: a server that never answers: the budget runs out and the run says so",
  ...options,
  async fn() {
    const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const port = (udp.addr as Deno.NetAddr).port; // swallows packets, answers nothing
    try {
      const events: PingEvent[] = [];
      const summary = await runPing({
        ...CLIENT_DEFAULTS,
        url: new URL(`https://127.0.0.1:${port}/ping`),
        trust: { serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(32) }] },
        count: 5,
        timeoutMs: 200,
        deadAfterMs: 200,
        backoff: { initialMs: 10, maxMs: 50, jitter: "full" as const },
        giveUpAfterMs: 700,
      }, (event) => events.push(event));
      assert.equal(summary.gaveUp, true);
      assert.equal(summary.received, 0);
      assert.ok(events.some((e) => e.type === "reconnecting"));
      assert.equal(events.at(-1)?.type, "gave-up");
      assert.equal(summary.outages.length, 1);
      assert.ok(summary.outageMs >= 700);
    } finally {
      udp.close();
    }
  },
});

// ---- Failover between several servers ----

Deno.test({
  name: "client failover: two real servers, the first shuts down mid-run; the client " +
    "switches to the second once, says so, and the replies go on",
  ...options,
  async fn() {
    const first = await startPingServer({ port: 0 });
    const second = await startPingServer({ port: 0 });
    const byPort = new Map([[first.port, first], [second.port, second]]);
    const stopRun = new AbortController();
    try {
      const events: PingEvent[] = [];
      const running = runPing({
        ...CLIENT_DEFAULTS,
        url: [first.url, second.url],
        trust: (url) => Promise.resolve(pinned(byPort.get(Number(url.port))!)),
        intervalMs: 20,
        timeoutMs: 500,
        signal: stopRun.signal,
      }, (event) => events.push(event));
      const replies = () => events.filter((e) => e.type === "reply").length;
      await waitFor(() => replies() >= 5, "replies from the first server");
      assert.deepEqual(events[0], {
        type: "connected",
        url: first.url.href,
        attempt: 0,
        first: true,
      });
      assert.equal(second.sessions, 0, "the second server is not used while the first is up");
      await first.shutdown(0);
      await waitFor(
        () => events.some((e) => e.type === "connected" && e.url === second.url.href),
        "the client to switch to the second server",
      );
      assert.ok(
        events.some((e) => e.type === "connected" && e.url === second.url.href && !e.first),
        "a reconnection, not the run's first connection",
      );
      const switchedAt = events.length;
      await waitFor(
        () => events.slice(switchedAt).filter((e) => e.type === "reply").length >= 5,
        "replies from the second server",
      );
      assert.equal(second.sessions, 1);
      stopRun.abort();
      const summary = await running;
      const switches = events.filter((e) => e.type === "switching");
      assert.deepEqual(switches, [{
        type: "switching",
        url: second.url.href,
        from: first.url.href,
        reason: `${first.url.host} lost (the server is going away)`,
      }]);
      assert.deepEqual(
        events.filter((e) => e.type === "connected").map((e) => e.type === "connected" && e.url),
        [first.url.href, second.url.href],
      );
      assert.ok(!events.some((e) => e.type === "reconnecting"), "no backoff: a server was up");
      assert.deepEqual(summary.urls, [first.url.href, second.url.href]);
      assert.deepEqual(summary.servers, [first.url.href, second.url.href], "both were used");
      assert.equal(summary.outages.length, 1);
      assert.equal(
        summary.received + summary.timeouts + summary.lostNoConnection + summary.errors,
        summary.transmitted,
      );
      assert.ok(summary.received >= 10, JSON.stringify(summary));
    } finally {
      stopRun.abort();
      await first.shutdown(0).catch(() => {});
      await second.shutdown(0);
    }
  },
});

Deno.test({
  name: "client failover: servers that never answer are tried in order, round and round, " +
    "with the backoff only between whole rounds, until the budget runs out",
  ...options,
  async fn() {
    // Two UDP sockets that swallow packets: every connection attempt times out.
    const sinks = [0, 1].map(() =>
      Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 })
    );
    const [a, b] = sinks.map((s) =>
      new URL(`https://127.0.0.1:${(s.addr as Deno.NetAddr).port}/ping`)
    );
    try {
      const events: PingEvent[] = [];
      const tried: string[] = [];
      const summary = await runPing({
        ...CLIENT_DEFAULTS,
        url: [a!, b!],
        trust: (url) => {
          tried.push(url.href);
          return Promise.resolve({
            serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(32) }],
          });
        },
        count: 1,
        timeoutMs: 150,
        deadAfterMs: 150,
        backoff: { initialMs: 10, maxMs: 20, jitter: "full" as const },
        giveUpAfterMs: 1000,
      }, (event) => events.push(event));
      assert.equal(summary.gaveUp, true);
      assert.equal(summary.received, 0);
      assert.equal(events.at(-1)?.type, "gave-up");
      assert.ok(tried.length >= 4, `at least two rounds: ${tried.length} attempts`);
      assert.deepEqual(tried, tried.map((_, i) => (i % 2 ? b! : a!).href), "a, b, a, b, ...");
      // Between attempts: a switch; after each whole round: the backoff, then a switch.
      const steps = events.filter((e) => e.type === "switching" || e.type === "reconnecting")
        .map((e) =>
          e.type === "reconnecting" ? `backoff ${e.attempt}` : `to ${new URL(e.url).port}`
        );
      const expected = tried.slice(1).flatMap((href, i) =>
        i % 2
          ? [`backoff ${(i + 1) / 2}`, `to ${new URL(href).port}`]
          : [`to ${new URL(href).port}`]
      );
      // Every backoff and switch announced is followed by its attempt: none after the last.
      assert.deepEqual(steps, expected);
      const first = events.find((e) => e.type === "switching");
      assert.match(
        first?.type === "switching" ? first.reason : "",
        new RegExp(`^127\\.0\\.0\\.1:${a!.port} failed \\(connecting timed out after 150 ms\\)$`),
      );
    } finally {
      for (const sink of sinks) sink.close();
    }
  },
});

// ---- The TCP side's hardening: /ws admission, message bounds, the published document ----

const encoder = new TextEncoder();

/** One raw HTTP/1.1 exchange on a fresh connection: the response's head (and body, if closed). */
async function rawHttp(port: number, request: string, untilHeadEnds = false): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(encoder.encode(request));
    const buffer = new Uint8Array(65_536);
    let text = "";
    for (;;) {
      const n = await conn.read(buffer);
      if (n === null) return text;
      text += new TextDecoder().decode(buffer.subarray(0, n));
      if (untilHeadEnds && text.includes("\r\n\r\n")) return text;
    }
  } finally {
    conn.close();
  }
}

/** The status an upgrade request to `/ws` gets (101 when it is let through). */
async function wsStatus(port: number, query = "", headers: Record<string, string> = {}) {
  const head = await rawHttp(
    port,
    `GET /ws${query} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
      "Sec-WebSocket-Version: 13\r\n" +
      Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("") + "\r\n",
    true,
  );
  return Number(head.split(" ")[1]);
}

/** Opens a WebSocket (the runtime's); rejects if it closes or fails before opening. */
function openWs(url: URL | string, headers?: Record<string, string>): Promise<WebSocket> {
  const socket = new WebSocket(url, headers ? { headers } : undefined);
  socket.binaryType = "arraybuffer";
  return new Promise((resolve, reject) => {
    socket.onopen = () => resolve(socket);
    socket.onerror = () => reject(new Error("the WebSocket did not open"));
  });
}

/** Sends `message` and resolves with the next message's text. */
function wsAsk(socket: WebSocket, message: string | Uint8Array): Promise<string> {
  const reply = new Promise<string>((resolve) => {
    socket.addEventListener("message", (event) => resolve(String(event.data)), { once: true });
  });
  socket.send(message);
  return reply;
}

const closing = (socket: WebSocket) =>
  new Promise<CloseEvent>((resolve) => socket.addEventListener("close", resolve, { once: true }));

const wsUrl = (server: RunningPingServer, query = "") => `ws://127.0.0.1:${server.port}/ws${query}`;

Deno.test({
  name: "/ws: the WebTransport admission: token (header or ?token=) 401, origin 403, sockets " +
    "per address 429, all refused before the upgrade",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const { port } = server;
      // Issue #13: no token and a foreign origin used to get an echo.
      assert.equal(await wsStatus(port, "", { Origin: "http://evil.example" }), 401);
      await assert.rejects(openWs(wsUrl(server), { origin: "http://evil.example" }));
      await assert.rejects(openWs(wsUrl(server)), "the runtime's WebSocket without a token");
      assert.equal(await wsStatus(port, "", { Authorization: "Bearer wrong" }), 401);
      assert.equal(await wsStatus(port, "?token=wrong"), 401);
      assert.equal(
        await wsStatus(port, "?token=s3cret", { Origin: "http://evil.example" }),
        403,
        "the right token from a foreign page",
      );
      assert.equal(await wsStatus(port, "?token=s3cret", { Origin: "https://app.test" }), 101);
      assert.equal(
        await wsStatus(port, "?token=s3cret", { Origin: `http://127.0.0.1:${port}` }),
        101,
        "the server's own page",
      );
      await waitFor(() => server.webSockets === 0, "the raw sockets to be let go");

      const byHeader = await openWs(wsUrl(server), { authorization: "Bearer s3cret" });
      assert.equal(await wsAsk(byHeader, "ping h"), "pong h");
      const byQuery = await openWs(wsUrl(server, "?token=s3cret"));
      assert.equal(await wsAsk(byQuery, "ping q"), "pong q");
      assert.equal(server.webSockets, 2);
      assert.equal(await wsStatus(port, "?token=s3cret"), 429, "a third from one address");
      await assert.rejects(openWs(wsUrl(server, "?token=s3cret")));
      const closed = closing(byHeader);
      byHeader.close();
      await closed;
      await waitFor(() => server.webSockets === 1, "the server to see the socket close");
      const again = await openWs(wsUrl(server, "?token=s3cret"));
      assert.equal(await wsAsk(again, "ping again"), "pong again", "room again");
      for (const socket of [byQuery, again]) {
        const done = closing(socket);
        socket.close();
        await done;
      }
    }, { token: "s3cret", allowedOrigins: ["https://app.test"], maxWebSocketsPerClient: 2 }),
});

Deno.test({
  name: "/ws: messages up to the protocol's 16,384 bytes are answered; a longer one (text " +
    "counted in UTF-8 bytes, or binary) closes the socket with 1009",
  ...options,
  fn: () =>
    withServer(async (server) => {
      const socket = await openWs(wsUrl(server));
      const longest = `ping ${"x".repeat(MAX_LINE_BYTES - 5)}`;
      assert.equal(await wsAsk(socket, longest), `pong ${"x".repeat(MAX_LINE_BYTES - 5)}`);
      assert.equal(await wsAsk(socket, bytes("ping bin")), "pong bin", "binary, answered as text");
      for (
        const tooLong of [
          `${longest}x`,
          `ping ${"€".repeat(5460)}`, // 5,465 characters, 16,385 bytes
          new Uint8Array(MAX_LINE_BYTES + 1).fill(0x70),
        ]
      ) {
        const victim = await openWs(wsUrl(server));
        const closed = closing(victim);
        victim.send(tooLong);
        const event = await closed;
        assert.equal(event.code, 1009, typeof tooLong === "string" ? "text" : "binary");
        assert.equal(event.reason, `message longer than ${MAX_LINE_BYTES} bytes`);
      }
      assert.equal(await wsAsk(socket, "ping still"), "pong still", "other sockets go on");
      const done = closing(socket);
      socket.close();
      await done;
      await waitFor(() => server.webSockets === 0, "every socket let go");
    }),
});

Deno.test({
  name: "/ws: messages past a socket's rate are dropped unanswered, the burst answered; " +
    "rate 0 means no limit",
  ...options,
  async fn() {
    // 1 message per second, 2 at once: of 20 sent together the first 2 are answered.
    await withServer(async (server) => {
      const socket = await openWs(wsUrl(server));
      const replies: string[] = [];
      socket.onmessage = (event) => replies.push(String(event.data));
      for (let i = 1; i <= 20; i++) socket.send(`ping ${i}`);
      // Messages are handled in order: once a later probe is answered, all 20 have been seen.
      for (let k = 0; !replies.some((r) => r.startsWith("pong probe")); k++) {
        assert.ok(k < 100, "a probe answered once the bucket refills");
        socket.send(`ping probe${k}`);
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      const answered = replies.filter((r) => !r.includes("probe"));
      assert.deepEqual(answered.slice(0, 2), ["pong 1", "pong 2"], "the burst");
      assert.ok(answered.length < 20, `dropped past the rate: ${answered.length} answered`);
      assert.ok(answered.every((r) => /^pong \d+$/.test(r)), "dropped, not answered with errors");
      const done = closing(socket);
      socket.close();
      await done;
    }, { wsMessageRate: 1 });
    // No limit: more than the default burst (2 x 1,000) at once, every one answered.
    await withServer(async (server) => {
      const socket = await openWs(wsUrl(server));
      let count = 0;
      const all = Promise.withResolvers<void>();
      socket.onmessage = () => ++count === 3000 && all.resolve();
      for (let i = 0; i < 3000; i++) socket.send(`ping ${i}`);
      await all.promise;
      const done = closing(socket);
      socket.close();
      await done;
    }, { wsMessageRate: 0 });
  },
});

Deno.test({
  name: "/.well-known/duet-ping.json: a forged Host (or X-Forwarded-Host, or an absolute " +
    "request target) never appears; the configured public URL does",
  ...options,
  async fn() {
    const hostile = (port: number) => [
      `GET /.well-known/duet-ping.json HTTP/1.1\r\nHost: evil.example\r\n` +
      `X-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n`,
      `GET http://evil.example:${port}/.well-known/duet-ping.json HTTP/1.1\r\n` +
      `Host: evil.example:${port}\r\nConnection: close\r\n\r\n`,
    ];
    const body = (response: string) => JSON.parse(response.slice(response.indexOf("\r\n\r\n")));
    await withServer(async (server) => {
      for (const request of hostile(server.port)) {
        const response = await rawHttp(server.port, request);
        assert.match(response, /^HTTP\/1\.1 200 /);
        assert.ok(!/evil/i.test(response), response);
        const info = body(response);
        assert.equal(info.url, undefined);
        assert.equal(info.port, server.port);
        assert.equal(
          serviceUrl(info, "ping.example.net").href,
          `https://ping.example.net:${server.port}/ping`,
        );
      }
    });
    await withServer(async (server) => {
      for (const request of hostile(server.port)) {
        const response = await rawHttp(server.port, request);
        assert.ok(!/evil/i.test(response), response);
        assert.equal(body(response).url, "https://ping.example.com/ping");
      }
    }, { publicUrl: "https://ping.example.com/ping" });
  },
});

// ---- Clients that leave: the runtime must tell the server, whatever was sent before ----

/** A client-to-server WebSocket frame (FIN, masked) holding `payload`, up to 64 KiB. */
function wsFrame(payload: Uint8Array, opcode = 0x1): Uint8Array {
  const mask = crypto.getRandomValues(new Uint8Array(4));
  const head = payload.length < 126
    ? [0x80 | opcode, 0x80 | payload.length]
    : [0x80 | opcode, 0x80 | 126, payload.length >> 8, payload.length & 0xff];
  const frame = new Uint8Array(head.length + 4 + payload.length);
  frame.set(head);
  frame.set(mask, head.length);
  payload.forEach((byte, i) => (frame[head.length + 4 + i] = byte ^ mask[i % 4]!));
  return frame;
}

Deno.test({
  name: "/ws: a client that leaves after more than 512 bytes (a long upgrade head, a 1 KB " +
    "and a 10 KB message, half a message) is let go: closed, half-closed (after its answers " +
    "are written) or reset; its slot under --max-ws-per-client comes back",
  ...options,
  fn: () =>
    withServer(async (server) => {
      // Measured on Deno 2.9.6: Deno.serve watches an HTTP/1.1 connection for the client
      // leaving only when the whole request came in its first 512-byte read; an upgraded
      // socket is read by the WebSocket itself, which sees the end of input or a reset.
      const { port } = server;
      const pad = `X-Padding: ${"p".repeat(600)}\r\n`;
      const upgradeHead = (extra: string) =>
        encoder.encode(
          `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
            `Sec-WebSocket-Version: 13\r\n${extra}\r\n`,
        );
      const long = (n: number) => wsFrame(encoder.encode(`ping ${"x".repeat(n)}`));
      const sends: Record<string, () => Uint8Array> = {
        "a 600-byte head, no message": () => new Uint8Array(0),
        "a 1 KB message": () => long(1000),
        "a 10 KB message": () => long(10_000),
        "half of a 10 KB message": () => long(10_000).subarray(0, 5_000),
      };
      for (const [what, message] of Object.entries(sends)) {
        for (const leave of ["close", "half-close", "reset"] as const) {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          await conn.write(upgradeHead(pad));
          // Up to the end of the 101's head, a byte at a time (nothing after it is taken).
          const byte = new Uint8Array(1);
          let head = "";
          while (!head.endsWith("\r\n\r\n")) {
            assert.equal(await conn.read(byte), 1, `the 101 (${head})`);
            head += String.fromCharCode(byte[0]!);
          }
          assert.match(head, /^HTTP\/1\.1 101 /);
          await waitFor(() => server.webSockets === 1, "the socket to open");
          if (leave === "reset") {
            // An answer of which one byte is read: with the rest unread, the close is a reset.
            await conn.write(wsFrame(encoder.encode("ping unread")));
            assert.equal(await conn.read(byte), 1);
          }
          await conn.write(message());
          if (leave === "reset") {
            conn.close();
          } else if (leave === "half-close") {
            await conn.closeWrite();
            // Still readable: what it sent before is answered, then the socket is closed.
            const buffer = new Uint8Array(65_536);
            let got = "";
            for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
              got += new TextDecoder().decode(buffer.subarray(0, n));
            }
            if (message().length && !what.startsWith("half")) {
              assert.ok(got.includes("pong xxx"), `${what}, half-closed: answered`);
            }
            conn.close();
          } else {
            conn.close();
          }
          await waitFor(
            () => server.webSockets === 0,
            `the server to let go of a client that sent ${what} and left by ${leave}`,
          );
        }
      }
      // One slot per address: a socket still held would make this 429.
      assert.equal(await wsStatus(port), 101, "the address's one slot is free");
      await waitFor(() => server.webSockets === 0, "the last raw socket to be let go");
    }, { maxWebSocketsPerClient: 1 }),
});

Deno.test({
  name: "server: what a refused client offered goes into the log cut to 200 characters",
  ...options,
  fn: () =>
    withLogRecords(["duet", "ping"], "info", (records) =>
      withServer(async (server) => {
        const protocols = Array.from({ length: 1000 }, (_, i) => `protocol-${i}`);
        await assert.rejects(
          connectWebTransport(server.url, { ...pinned(server), protocols }),
          (error) => error instanceof WebTransportRejectedError && error.status === 400,
        );
        const refused = records.find((r) => String(r.message).includes("Refused a session"));
        assert.ok(refused, "the refusal is logged");
        const why = String(refused.properties["why"]);
        assert.ok(why.length < 260, `${why.length} characters`);
        assert.match(why, /^offers protocol-0, protocol-1, .*… \(\d+ more characters\)$/);
      })),
});
