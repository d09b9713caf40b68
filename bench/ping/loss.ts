// deno-lint-ignore-file no-console -- a benchmark script: its report is for the terminal
/**
 * WebTransport beside WebSocket where WebTransport exists to win: round trips through the
 * ping server under packet loss. For each loss rate, a fresh network namespace gets its own
 * loopback, an nftables rule drops P% of the packets arriving on it at random (every packet
 * crosses that loopback once, so both directions lose P%, UDP and TCP alike), and the server
 * and this client run inside it. (`tc netem` is the usual tool; this kernel has no netem
 * module, and nftables' `numgen random` does the same for plain loss.)
 *   datagram     WebTransport datagram ping/pong; a reply missing after 1 s is lost
 *   one stream   WebTransport, ping/pong lines on one long-lived stream (QUIC retransmits)
 *   WebSocket    the same line over one WebSocket to /ws on the same server (TCP retransmits)
 * p50 and p99 are over the round trips that completed; losses are counted beside them.
 * Needs root, iproute2 and nftables; touches no real interface.
 *
 *   deno run -A bench/ping/loss.ts [--n 2000] [--loss 0,1,5]
 */
import { scriptOptions } from "../../tools/_options.ts";
import { connectWebTransport } from "@duet/webtransport";
import { startPingServer } from "@duet/ping";

const values = scriptOptions(import.meta.url, {
  n: { type: "count", default: 2000 },
  // Loss rates in percent; nftables takes them in hundredths (0.01% steps).
  loss: { type: "numbers", default: [0, 1, 5], min: 0, max: 100, decimals: 2 },
  inner: { type: "boolean", internal: true }, // this script, run again in a namespace
});
const N = values.n;
const LOST_AFTER_MS = 1000;

interface Row {
  what: string;
  done: number;
  lost: number;
  p50: number;
  p99: number;
}

const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.ceil(p * xs.length) - 1)]!;
function row(what: string, samples: number[], lost: number): Row {
  samples.sort((a, b) => a - b);
  return {
    what,
    done: samples.length,
    lost,
    p50: samples.length ? q(samples, 0.5) : NaN,
    p99: samples.length ? q(samples, 0.99) : NaN,
  };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Resolves true when `promise` settles first, false after `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const result = await Promise.race([
    promise.then(() => true),
    new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
  ]);
  clearTimeout(timer);
  return result;
}

/** Runs inside the namespace: the server and the three measurements. */
async function inner(): Promise<Row[]> {
  const server = await startPingServer({ hostname: "127.0.0.1", port: 0 });
  const rows: Row[] = [];
  try {
    const session = await connectWebTransport(server.url, {
      serverCertificateHashes: server.certificateHashes().map((value) => ({
        algorithm: "sha-256" as const,
        value,
      })),
    });
    // Datagrams: replies are matched by sequence number as they come, so a late reply is
    // neither mistaken for the next one nor left in the way.
    const waiting = new Map<number, () => void>();
    (async () => {
      for await (const datagram of session.datagrams.readable) {
        const seq = Number(decoder.decode(datagram).slice("pong ".length));
        waiting.get(seq)?.();
      }
    })().catch(() => {});
    const writer = session.datagrams.writable.getWriter();
    let samples: number[] = [];
    let lost = 0;
    for (let i = 0; i < N; i++) {
      const reply = new Promise<void>((resolve) => waiting.set(i, resolve));
      const t0 = performance.now();
      await writer.write(encoder.encode(`ping ${i}`));
      if (await within(reply, LOST_AFTER_MS)) samples.push(performance.now() - t0);
      else lost++;
      waiting.delete(i);
    }
    rows.push(row("WebTransport datagram", samples, lost));

    samples = [];
    const stream = await session.createBidirectionalStream();
    const lines = stream.writable.getWriter();
    const replies = stream.readable.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      await lines.write(encoder.encode(`ping ${i}\n`));
      while (!buffered.includes("\n")) buffered += (await replies.read()).value ?? "";
      buffered = buffered.slice(buffered.indexOf("\n") + 1);
      samples.push(performance.now() - t0);
    }
    rows.push(row("WebTransport, one stream", samples, 0));
    await session.close();

    samples = [];
    const socket = new WebSocket(new URL("/ws", server.httpUrl).href.replace(/^http/, "ws"));
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = reject;
    });
    for (let i = 0; i < N; i++) {
      const t0 = performance.now();
      const reply = new Promise((resolve) => (socket.onmessage = resolve));
      socket.send(`ping ${i}`);
      await reply;
      samples.push(performance.now() - t0);
    }
    rows.push(row("WebSocket /ws", samples, 0));
    socket.close();
  } finally {
    await server.shutdown(0);
  }
  return rows;
}

async function sh(...args: string[]): Promise<void> {
  const { code, stderr } = await new Deno.Command(args[0]!, {
    args: args.slice(1),
    stderr: "piped",
  })
    .output();
  if (code !== 0) throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(stderr).trim()}`);
}

if (values.inner) {
  console.log(JSON.stringify(await inner()));
  Deno.exit(0);
}

const fmt = (ms: number) =>
  Number.isNaN(ms) ? "-" : ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(2)} ms`;
console.log(`${N} round trips each; a datagram reply missing after ${LOST_AFTER_MS} ms is lost\n`);
console.log("| loss | transport | done | lost | p50 | p99 |");
console.log("| ---: | --------- | ---: | ---: | --: | --: |");
for (const loss of values.loss) {
  const ns = `duet-loss-${Deno.pid}-${loss}`;
  await sh("ip", "netns", "add", ns);
  try {
    await sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up");
    if (loss > 0) {
      const nft = (...args: string[]) => sh("ip", "netns", "exec", ns, "nft", ...args);
      await nft("add", "table", "inet", "loss");
      await nft("add", "chain", "inet", "loss", "in", "{ type filter hook input priority 0; }");
      // P% of packets, to a hundredth of a percent.
      const below = String(Math.round(loss * 100));
      await nft(
        "add",
        "rule",
        "inet",
        "loss",
        "in",
        "numgen",
        "random",
        "mod",
        "10000",
        "<",
        below,
        "drop",
      );
    }
    const { code, stdout } = await new Deno.Command("ip", {
      args: [
        "netns",
        "exec",
        ns,
        Deno.execPath(),
        "run",
        "-A",
        import.meta.filename!,
        "--inner",
        "--n",
        String(N),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (code !== 0) throw new Error(`the run at ${loss}% loss failed`);
    const rows: Row[] = JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").at(-1)!);
    for (const r of rows) {
      console.log(
        `| ${loss}% | ${r.what} | ${r.done} | ${r.lost} | ${fmt(r.p50)} | ${fmt(r.p99)} |`,
      );
    }
  } finally {
    await sh("ip", "netns", "delete", ns);
  }
}
