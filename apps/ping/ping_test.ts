// The ping server and client over real QUIC and TCP on loopback: the three ways of
// pinging, the protocol's error answers, the server's admission rules, its TCP side, and
// trust taken from the published hashes.
import assert from "node:assert/strict";
import {
  connectWebTransport,
  generateCertificateAuthority,
  WebTransportRejectedError,
  type WebTransportSession,
} from "@duet/webtransport";
import { wsPing } from "@duet/wsping";
import { waitFor } from "@duet/testkit";
import {
  CLIENT_DEFAULTS,
  MAX_LINE_BYTES,
  type PingEvent,
  type PingMode,
  resolveTrust,
  type RunningPingServer,
  runPing,
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
      const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
      assert.deepEqual(info, {
        url: server.url.href,
        certificateHashes: server.certificateHashes().map((h) => ({
          algorithm: "sha-256",
          value: hex(h),
        })),
      });
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
        backoff: { baseMs: 10, maxMs: 50 },
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
