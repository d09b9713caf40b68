// deno-lint-ignore-file no-console -- a benchmark script: its report is for the terminal
/**
 * The ping server (its own process, as deployed) measured from our client, in one run:
 *   one stream     ping/pong round trips back to back on one long-lived stream
 *   new stream     a new stream per ping (write, FIN, read to FIN)
 *   datagram       datagram round trips back to back
 *   WebSocket      the same line over one WebSocket to /ws on the same server
 *   paced          runPing (the duet ping client) at a 10 ms interval, stream and datagram
 *   100 streams    100 concurrent streams pinging back to back for 3 s: pings per second
 *   Chromium       10,000 new-stream pings from a headless Chromium page: p50/p99, stalls
 *   floor          a bare QUIC echo process on Deno's QUIC API, one stream: what any
 *                  WebTransport on Deno pays before HTTP/3 and the protocol
 * Every operation has a 2 s deadline: a stall is counted, not waited out.
 *
 *   deno run -A bench/ping/run.ts [--n 2000] [--chromium-streams 10000]
 *
 * Needs Chromium (Debian's `chromium`, or DUET_CHROMIUM) for the Chromium row; without it, that row is skipped.
 */
import { hexToBytes } from "@noble/hashes/utils.js";
import { scriptOptions } from "../../tools/_options.ts";
import { connectWebTransport, type WebTransportSession } from "@duet/webtransport";
import { CLIENT_DEFAULTS, runPing } from "@duet/ping";
import { findChromium, freePort, waitFor, withChromiumPage } from "@duet/testkit";
import { spawnDuet } from "../../apps/cli/testdata/spawn.ts";

const values = scriptOptions(import.meta.url, {
  n: { type: "count", default: 2000 },
  "chromium-streams": { type: "count", default: 10000 },
});
const N = values.n;
const CHROMIUM_STREAMS = values["chromium-streams"];

function deadline<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) =>
      timer = setTimeout(() => reject(new Error(`stalled: ${what}`)), 2000)
    ),
  ]);
}

const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.ceil(p * xs.length) - 1)]!;
const fmt = (ms: number) => ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`;
const rows: string[] = [];
function report(what: string, samples: number[], note = "") {
  samples.sort((a, b) => a - b);
  rows.push(
    `| ${what} | ${samples.length} | ${samples.length ? fmt(q(samples, 0.5)) : "-"} | ${
      samples.length ? fmt(q(samples, 0.99)) : "-"
    } | ${note} |`,
  );
  return samples.length ? q(samples, 0.5) : NaN;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Reads until `expected` bytes of reply have come. */
async function readReply(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  expected: number,
  what: string,
) {
  let got = 0;
  while (got < expected) {
    const { value, done } = await deadline(reader.read(), what);
    if (done) throw new Error(`${what}: stream ended`);
    got += value.length;
  }
}

async function oneStream(session: WebTransportSession): Promise<number> {
  const samples: number[] = [];
  let note = "";
  const stream = await session.createBidirectionalStream();
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  try {
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      await writer.write(encoder.encode(`ping ${i}\n`));
      await readReply(reader, `pong ${i}\n`.length, `ping ${i}`);
      samples.push(performance.now() - t0);
    }
  } catch (error) {
    note = (error as Error).message;
  }
  await writer.close().catch(() => {});
  return report("WebTransport, one stream", samples, note);
}

async function newStream(session: WebTransportSession): Promise<number> {
  const samples: number[] = [];
  let note = "";
  try {
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      const stream = await deadline(session.createBidirectionalStream(), `stream ${i} open`);
      const writer = stream.writable.getWriter();
      writer.write(encoder.encode(`ping ${i}\n`)).catch(() => {});
      writer.close().catch(() => {});
      const reader = stream.readable.getReader();
      for (;;) if ((await deadline(reader.read(), `stream ${i} reply`)).done) break;
      samples.push(performance.now() - t0);
    }
  } catch (error) {
    note = (error as Error).message;
  }
  return report("WebTransport, new stream per ping", samples, note);
}

async function datagrams(session: WebTransportSession): Promise<number> {
  const samples: number[] = [];
  let lost = 0;
  const writer = session.datagrams.writable.getWriter();
  const reader = session.datagrams.readable.getReader();
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    await writer.write(encoder.encode(`ping ${i}`));
    try {
      for (;;) {
        const { value } = await deadline(reader.read(), `datagram ${i}`);
        if (decoder.decode(value) === `pong ${i}`) break; // a late one from before: skip
      }
      samples.push(performance.now() - t0);
    } catch {
      lost++;
    }
  }
  return report("WebTransport, datagram", samples, lost ? `${lost} lost` : "");
}

async function webSocket(port: number): Promise<number> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  const samples: number[] = [];
  for (let i = 0; i < N; i++) {
    const t0 = performance.now();
    const reply = new Promise<string>((resolve) => (socket.onmessage = (e) => resolve(e.data)));
    socket.send(`ping ${i}`);
    if ((await deadline(reply, `ws ${i}`)) !== `pong ${i}`) throw new Error("bad ws reply");
    samples.push(performance.now() - t0);
  }
  socket.close();
  return report("WebSocket /ws, one connection", samples);
}

async function paced(url: URL, trust: Parameters<typeof runPing>[0]["trust"]) {
  for (const mode of ["stream", "datagram"] as const) {
    const summary = await runPing({
      ...CLIENT_DEFAULTS,
      url,
      trust,
      count: 300,
      intervalMs: 10,
      mode,
    });
    rows.push(
      `| duet ping client, ${mode}, 10 ms interval | ${summary.received} | ${
        fmt(summary.rtt!.p50)
      } | ${fmt(summary.rtt!.p99)} | ${summary.transmitted - summary.received} lost |`,
    );
  }
}

async function hundredStreams(session: WebTransportSession) {
  let pings = 0;
  let note = "";
  const stop = performance.now() + 3000;
  const t0 = performance.now();
  try {
    await Promise.all(Array.from({ length: 100 }, async (_, k) => {
      const stream = await deadline(session.createBidirectionalStream(), `stream ${k} open`);
      const writer = stream.writable.getWriter();
      const reader = stream.readable.getReader();
      for (let i = 0; performance.now() < stop; i++) {
        await writer.write(encoder.encode(`ping ${k}-${i}\n`));
        await readReply(reader, `pong ${k}-${i}\n`.length, `stream ${k}`);
        pings++;
      }
      await writer.close();
    }));
  } catch (error) {
    note = (error as Error).message;
  }
  const rate = pings / ((performance.now() - t0) / 1000);
  rows.push(
    `| 100 concurrent streams, 3 s | ${pings} | ${
      Math.round(rate).toLocaleString("en")
    } pings/s | | ${note} |`,
  );
}

/** The bare QUIC echo (bench/ping/raw_quic_echo.ts) in its own process, one stream. */
async function quicFloor(): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", new URL("./raw_quic_echo.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const [port, hex] = (await reader.read()).value!.trim().split(" ");
  const samples: number[] = [];
  try {
    const conn = await Deno.connectQuic({
      hostname: "127.0.0.1",
      port: Number(port),
      alpnProtocols: ["h3"],
      serverCertificateHashes: [{
        algorithm: "sha-256",
        value: hexToBytes(hex!),
      }],
    } as Deno.ConnectQuicOptions<false>);
    const stream = await conn.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    const replies = stream.readable.getReader();
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      const line = encoder.encode(`ping ${i}\n`);
      await writer.write(line);
      await readReply(replies, line.length, `echo ${i}`);
      samples.push(performance.now() - t0);
    }
    conn.close();
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
  return report("floor: bare QUIC echo process (Deno), one stream", samples);
}

async function chromiumNewStreams(port: number, hash: number[]) {
  await withChromiumPage(async (page) => {
    const result = await page.evaluate(async ({ port, hash, count }) => {
      const wt = new WebTransport(`https://127.0.0.1:${port}/ping`, {
        serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
      });
      await wt.ready;
      const times: number[] = [];
      let stalls = 0;
      const enc = new TextEncoder();
      for (let i = 0; i < count; i++) {
        const t0 = performance.now();
        const attempt = (async () => {
          const s = await wt.createBidirectionalStream();
          const w = s.writable.getWriter();
          w.write(enc.encode(`ping ${i}\n`));
          w.close().catch(() => {});
          const r = s.readable.getReader();
          while (!(await r.read()).done);
        })();
        const ok = await Promise.race([
          attempt.then(() => true),
          new Promise((r) => setTimeout(() => r(false), 2000)),
        ]);
        if (ok) times.push(performance.now() - t0);
        else stalls++;
      }
      wt.close();
      return { times, stalls };
    }, { port, hash, count: CHROMIUM_STREAMS });
    report(
      `Chromium, new stream per ping`,
      result.times,
      `${result.stalls} stalled (2 s deadline)`,
    );
  }, { crossOriginIsolated: true });
}

const port = freePort();
// The Chromium page comes from another origin (the test page server): allow it.
const server = spawnDuet(
  ["ping", "serve", "--port", String(port), "--allow-origin", "*", "--quiet"],
  { direct: true },
);
await waitFor(() => server.lines.stdout.some((l) => l.startsWith("page ")), "the server", 20_000);
const hashes = server.lines.stdout.filter((l) => l.startsWith("certificate sha-256"))
  .map((l) => l.split(": ")[1]!);
const trust = {
  serverCertificateHashes: hashes.map((h) => ({
    algorithm: "sha-256" as const,
    value: hexToBytes(h),
  })),
};
const url = new URL(`https://127.0.0.1:${port}/ping`);
try {
  const session = await connectWebTransport(url, trust);
  const stream = await oneStream(session);
  const fresh = await newStream(session);
  const datagram = await datagrams(session);
  const ws = await webSocket(port);
  await hundredStreams(session);
  await session.close();
  const floor = await quicFloor();
  await paced(url, trust);
  if ((await findChromium()).missing === undefined) {
    await chromiumNewStreams(port, [...trust.serverCertificateHashes[0]!.value]);
  } else rows.push("| Chromium | - | - | - | not found |");

  const cpu = (await Deno.readTextFile("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1];
  console.log(`# duet ping, ${new Date().toISOString()}`);
  console.log(
    `${cpu}, ${navigator.hardwareConcurrency} cores; Deno ${Deno.version.deno}; n = ${N}\n`,
  );
  console.log("| measure | n | p50 | p99 | note |");
  console.log("| --- | --- | --- | --- | --- |");
  for (const row of rows) console.log(row);
  console.log(
    `\nWebTransport one stream / WebSocket p50: ${
      (stream / ws).toFixed(2)
    }x; datagram / WebSocket: ${(datagram / ws).toFixed(2)}x; new stream: ${
      fmt(fresh)
    }; bare QUIC echo / WebSocket: ${(floor / ws).toFixed(2)}x`,
  );
} finally {
  server.child.kill("SIGTERM");
  await server.child.status;
}
Deno.exit(0);
