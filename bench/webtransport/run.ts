// deno-lint-ignore-file no-console -- a benchmark script: its report is for the terminal
/**
 * duet's WebTransport layer (packages/webtransport) against Deno's built-in wrapper
 * (`new WebTransport` client, `Deno.upgradeWebTransport` server), Deno to Deno on
 * loopback, in one run:
 *   setup        connect until the session is ready (new QUIC connection each time)
 *   one stream   "ping" / echo round trips on one long-lived bidirectional stream
 *   new stream   one bidirectional stream per round trip (write, FIN, read to FIN)
 *   datagram     datagram / echo round trips
 *   bursts       100, 1,000 and 5,000 datagrams written back to back: how many come back
 *   100 streams  100 concurrent streams doing round trips for 2 s: round trips per second
 * Then the same (bursts aside) from a headless Chromium page against both servers.
 * Every operation has a 2 s deadline: a stall is reported as such, not waited out.
 *
 *   deno run -A bench/webtransport/run.ts [--n 2000]
 *
 * Needs Chromium (Debian's `chromium`, or DUET_CHROMIUM) for the page rows.
 */
import { scriptOptions } from "../../tools/_options.ts";
import {
  connectWebTransport,
  generateCertificateAuthority,
  serveWebTransport,
} from "../../packages/webtransport/mod.ts";
import { echo, type EchoableSession } from "../../packages/webtransport/testdata/echo.ts";
import { findChromium, withChromiumPage } from "@duet/testkit";

const values = scriptOptions(import.meta.url, { n: { type: "count", default: 2000 } });
const N = values.n;
const SETUPS = 200;
const BURSTS = [100, 1000, 5000];
const THROUGHPUT_MS = 2000;

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
    // Pinned by hash, as the wrapper's client below is.
    connect: () =>
      connectWebTransport(url, {
        serverCertificateHashes: [{ algorithm: "sha-256", value: leaf.sha256 }],
      }),
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

    // Bursts: BURST datagrams written back to back, then count the echoes that come back
    // within a second. Loss can happen on either leg; the echo writes as it reads.
    for (const burst of BURSTS) {
      let back = 0;
      const counting = (async () => {
        for (;;) {
          await dr.read();
          if (++back === burst) return;
        }
      })();
      for (let i = 0; i < burst; i++) dw.write(message).catch(() => {});
      await Promise.race([counting, new Promise((r) => setTimeout(r, 1000))]);
      rows.push(
        `| ${name} | burst of ${burst} datagrams | ${burst} | ${back} came back (${
          (100 * back / burst).toFixed(1)
        }%) | | |`,
      );
      await new Promise((r) => setTimeout(r, 200)); // let stragglers drain before the next
      while (back < burst) {
        const more = await Promise.race([
          dr.read().then(() => true),
          new Promise((r) => setTimeout(() => r(false), 50)),
        ]);
        if (!more) break;
        back++;
      }
    }

    // 100 streams at once, each running round trips one after another for THROUGHPUT_MS.
    let trips = 0;
    note = "";
    const stop = performance.now() + THROUGHPUT_MS;
    const t0 = performance.now();
    try {
      await Promise.all(Array.from({ length: 100 }, async (_, k) => {
        const s = await deadline(session.createBidirectionalStream(), `stream ${k} of 100 open`);
        const w = s.writable.getWriter();
        const r = s.readable.getReader();
        while (performance.now() < stop) {
          await w.write(message);
          let got = 0;
          while (got < message.length) {
            got += (await deadline(r.read(), `stream ${k} of 100`)).value!.length;
          }
          trips++;
        }
        w.close().catch(() => {});
      }));
    } catch (error) {
      note = (error as Error).message;
    }
    const seconds = (performance.now() - t0) / 1000;
    rows.push(
      `| ${name} | 100 streams, round trips/s | ${trips} | ${
        note ? "-" : `${Math.round(trips / seconds).toLocaleString("en")}/s`
      } | | ${note} |`,
    );
    session.close();
  } finally {
    target.stop();
  }
  return rows;
}

/** The same measures from a Chromium page, against either server (both pinned by hash). */
async function measureChromium(name: string, setup: () => Target): Promise<string[]> {
  const target = setup();
  try {
    let rows: string[] = [];
    await withChromiumPage(async (page) => {
      rows = await page.evaluate(async ({ name, url, hash, n, setups }) => {
        const out: string[] = [];
        const q = (xs: number[], p: number) =>
          xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
        const fmt = (ms: number) => ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`;
        const report = (what: string, xs: number[], note = "") => {
          xs.sort((a, b) => a - b);
          out.push(
            `| ${name} | ${what} | ${xs.length} | ${xs.length ? fmt(q(xs, 0.5)) : "-"} | ${
              xs.length ? fmt(q(xs, 0.99)) : "-"
            } | ${note} |`,
          );
        };
        const deadline = <T>(p: Promise<T>, what: string) =>
          Promise.race([
            p,
            new Promise<T>((_, reject) =>
              setTimeout(() => reject(new Error(`stalled: ${what}`)), 2000)
            ),
          ]);
        const options = {
          serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(hash) }],
        };
        const message = new TextEncoder().encode("ping\n");
        const times: number[] = [];
        for (let i = 0; i < setups; i++) {
          const t0 = performance.now();
          const wt = new WebTransport(url, options);
          await deadline(wt.ready, "setup");
          times.push(performance.now() - t0);
          wt.close();
        }
        report("connection setup", times);
        const wt = new WebTransport(url, options);
        await wt.ready;
        const trip = async (
          w: WritableStreamDefaultWriter,
          r: ReadableStreamDefaultReader<Uint8Array>,
          what: string,
        ) => {
          await w.write(message);
          let got = 0;
          while (got < message.length) got += (await deadline(r.read(), what)).value!.length;
        };
        const one: number[] = [];
        let note = "";
        try {
          const s = await wt.createBidirectionalStream();
          const w = s.writable.getWriter(), r = s.readable.getReader();
          for (let i = 0; i < n; i++) {
            const t0 = performance.now();
            await trip(w, r, `round trip ${i}`);
            one.push(performance.now() - t0);
          }
        } catch (e) {
          note = (e as Error).message;
        }
        report("one stream, round trip", one, note);
        const fresh: number[] = [];
        note = "";
        try {
          for (let i = 0; i < n; i++) {
            const t0 = performance.now();
            const s = await deadline(wt.createBidirectionalStream(), `stream #${i + 1} open`);
            const w = s.writable.getWriter();
            w.write(message);
            w.close().catch(() => {}); // resolves when the FIN is acknowledged: not awaited
            const r = s.readable.getReader();
            for (;;) if ((await deadline(r.read(), `stream #${i + 1} reply`)).done) break;
            fresh.push(performance.now() - t0);
          }
        } catch (e) {
          note = (e as Error).message;
        }
        report("new stream per round trip", fresh, note);
        const dg: number[] = [];
        note = "";
        const dw = wt.datagrams.writable.getWriter(), dr = wt.datagrams.readable.getReader();
        try {
          for (let i = 0; i < n; i++) {
            const t0 = performance.now();
            await dw.write(message);
            await deadline(dr.read(), `datagram ${i}`);
            dg.push(performance.now() - t0);
          }
        } catch (e) {
          note = (e as Error).message;
        }
        report("datagram round trip", dg, note);
        let trips = 0;
        note = "";
        const stop = performance.now() + 2000, t0 = performance.now();
        try {
          await Promise.all(Array.from({ length: 100 }, async (_, k) => {
            const s = await deadline(wt.createBidirectionalStream(), `stream ${k} of 100 open`);
            const w = s.writable.getWriter(), r = s.readable.getReader();
            while (performance.now() < stop) {
              await trip(w, r, `stream ${k} of 100`);
              trips++;
            }
          }));
        } catch (e) {
          note = (e as Error).message;
        }
        const seconds = (performance.now() - t0) / 1000;
        out.push(
          `| ${name} | 100 streams, round trips/s | ${trips} | ${
            note ? "-" : `${Math.round(trips / seconds).toLocaleString("en")}/s`
          } | | ${note} |`,
        );
        wt.close();
        return out;
      }, { name, url: target.url, hash: [...leaf.sha256], n: N, setups: SETUPS });
    }, { crossOriginIsolated: true });
    return rows;
  } finally {
    target.stop();
  }
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
if ((await findChromium()).missing === undefined) {
  console.log("\nChromium page as the client:\n");
  console.log("| server | measure | n | p50 | p99 | note |");
  console.log("| --- | --- | --- | --- | --- | --- |");
  for (
    const row of [
      ...await measureChromium("Deno's wrapper", wrapper),
      ...await measureChromium("duet webtransport", ours),
    ]
  ) console.log(row);
} else {
  console.log("\nChromium not found: its rows are left out.");
}
Deno.exit(0);
