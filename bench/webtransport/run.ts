// deno-lint-ignore-file no-console -- a benchmark script: its report is for the terminal
/**
 * duet's WebTransport layer (packages/webtransport) against Deno's built-in wrapper
 * (`new WebTransport` client, `Deno.upgradeWebTransport` server), Deno to Deno on
 * loopback, in one run:
 *   setup        connect until the session is ready (new QUIC connection each time)
 *   one stream   "ping" / echo round trips on one long-lived bidirectional stream
 *   new stream   one bidirectional stream per round trip (write, FIN, read to FIN)
 *   datagram     datagram / echo round trips
 * Every operation has a 2 s deadline: a stall is reported as such, not waited out.
 *
 *   deno run -A bench/webtransport/run.ts [--n 2000]
 */
import { parseArgs } from "node:util";
import {
  connectWebTransport,
  generateCertificateAuthority,
  serveWebTransport,
} from "../../packages/webtransport/mod.ts";
import { echo, type EchoableSession } from "../../packages/webtransport/testdata/echo.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { n: { type: "string", default: "2000" } },
});
const N = Number(values.n);
const SETUPS = 50;

interface Session {
  createBidirectionalStream(): Promise<
    { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> }
  >;
  datagrams: { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> };
  close(info?: { closeCode?: number; reason?: string }): unknown;
}

function deadline<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((
      _,
      reject,
    ) => (timer = setTimeout(() => reject(new Error(`stalled: ${what}`)), 2000))),
  ]);
}

const ca = await generateCertificateAuthority();
const leaf = await ca.issue();

interface Target {
  url: string;
  connect: () => Promise<Session>;
  stop: () => void;
}

function ours(): Target {
  const server = serveWebTransport({ cert: leaf.certPem, key: leaf.keyPem });
  (async () => {
    for await (const request of server.requests) echo(await request.accept(), { chunked: true });
  })();
  const url = `https://127.0.0.1:${server.addr.port}/bench`;
  return {
    url,
    connect: () => connectWebTransport(url, { caCerts: [ca.certPem] }),
    stop: () => server.close(),
  };
}

function wrapper(): Target {
  const endpoint = new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 });
  const listener = endpoint.listen({ cert: leaf.certPem, key: leaf.keyPem, alpnProtocols: ["h3"] });
  (async () => {
    for await (const incoming of listener) {
      (async () => {
        const wt = await Deno.upgradeWebTransport(await incoming.accept());
        await wt.ready;
        echo(wt as unknown as EchoableSession, { chunked: true });
      })().catch(() => {});
    }
  })().catch(() => {});
  const url = `https://127.0.0.1:${endpoint.addr.port}/bench`;
  return {
    url,
    connect: async () => {
      const wt = new WebTransport(url, {
        serverCertificateHashes: [{ algorithm: "sha-256", value: leaf.sha256 as BufferSource }],
      });
      await wt.ready;
      return wt as unknown as Session;
    },
    stop: () => endpoint.close(),
  };
}

const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
const fmt = (ms: number) => ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`;

async function measure(name: string, setup: () => Target): Promise<string[]> {
  const target = setup();
  const rows: string[] = [];
  const report = (what: string, samples: number[], note = "") => {
    samples.sort((a, b) => a - b);
    rows.push(
      `| ${name} | ${what} | ${samples.length} | ${samples.length ? fmt(q(samples, 0.5)) : "-"} | ${
        samples.length ? fmt(q(samples, 0.99)) : "-"
      } | ${note} |`,
    );
  };
  const message = new TextEncoder().encode("ping\n");
  try {
    const setups: number[] = [];
    for (let i = 0; i < SETUPS; i++) {
      const t0 = performance.now();
      const session = await deadline(target.connect(), "setup");
      setups.push(performance.now() - t0);
      session.close();
    }
    report("connection setup", setups);

    const session = await target.connect();
    const stream = await session.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    const oneStream: number[] = [];
    let note = "";
    try {
      for (let i = 0; i < N; i++) {
        const t0 = performance.now();
        await writer.write(message);
        let got = 0;
        while (got < message.length) {
          got += (await deadline(reader.read(), `round trip ${i}`)).value!.length;
        }
        oneStream.push(performance.now() - t0);
      }
    } catch (error) {
      note = (error as Error).message;
    }
    report("one stream, round trip", oneStream, note);

    const newStream: number[] = [];
    note = "";
    try {
      for (let i = 0; i < N; i++) {
        const t0 = performance.now();
        const s = await deadline(session.createBidirectionalStream(), `stream #${i + 1} open`);
        const w = s.writable.getWriter();
        w.write(message);
        w.close().catch(() => {});
        const r = s.readable.getReader();
        for (;;) if ((await deadline(r.read(), `stream #${i + 1} reply`)).done) break;
        newStream.push(performance.now() - t0);
      }
    } catch (error) {
      note = (error as Error).message;
    }
    report("new stream per round trip", newStream, note);

    const dgrams: number[] = [];
    note = "";
    const dw = session.datagrams.writable.getWriter();
    const dr = session.datagrams.readable.getReader();
    try {
      for (let i = 0; i < N; i++) {
        const t0 = performance.now();
        await dw.write(message);
        await deadline(dr.read(), `datagram ${i}`);
        dgrams.push(performance.now() - t0);
      }
    } catch (error) {
      note = (error as Error).message;
    }
    report("datagram round trip", dgrams, note);
    session.close();
  } finally {
    target.stop();
  }
  return rows;
}

const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
console.log(`# WebTransport: duet's layer vs Deno's wrapper, ${new Date().toISOString()}`);
console.log(
  `${cpu}, ${navigator.hardwareConcurrency} cores; Deno ${Deno.version.deno}; ${N} round trips, ${SETUPS} setups\n`,
);
console.log("| implementation | measure | n | p50 | p99 | note |");
console.log("| --- | --- | --- | --- | --- | --- |");
for (
  const row of [
    ...await measure("Deno's wrapper", wrapper),
    ...await measure("duet webtransport", ours),
  ]
) console.log(row);
Deno.exit(0);
