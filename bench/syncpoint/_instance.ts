/**
 * A `duet syncpoint` process for the memory measurements (memory.ts, redis_memory.ts): started
 * on a free port, warmed up, filled with parties that wait, its RSS read from /proc.
 *
 * @module
 */
import { freePort, waitFor } from "@duet/testkit";

const root = new URL("../../", import.meta.url).pathname;

/** A running instance: its process, port and URL, and how many parties it says wait. */
export interface Instance {
  child: Deno.ChildProcess;
  port: number;
  url: string;
  /** The `waiting` count of /healthz; -1 while it does not answer. */
  waiting(): Promise<number>;
  /** SIGTERM, then waits for the process to end. */
  stop(): Promise<void>;
}

/**
 * Starts `duet syncpoint --port P --quiet ...args` and waits until it answers with nobody
 * waiting, then warms it up (JIT, pools) with 300 pairs.
 */
export async function startInstance(args: string[] = []): Promise<Instance> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${root}apps/cli/main.ts`, "syncpoint", "--port", String(port), "--quiet"]
      .concat(args),
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const url = `http://127.0.0.1:${port}`;
  const waiting = async () => {
    const response = await fetch(`${url}/healthz`).catch(() => undefined);
    return response?.ok ? (await response.json()).waiting as number : -1;
  };
  const stop = async () => {
    child.kill("SIGTERM");
    await child.status;
  };
  try {
    await waitFor(async () => (await waiting()) === 0, "the service", 30_000);
    for (let i = 0; i < 300; i++) {
      const first = fetch(`${url}/wait-for-second-party/warm-${i}`, { method: "POST", body: "w" });
      await waitFor(async () => (await waiting()) === 1, "a warm-up party");
      await (await fetch(`${url}/wait-for-second-party/warm-${i}`, { method: "POST" })).text();
      await (await first).text();
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { child, port, url, waiting, stop };
}

/** Sends a first party's request for `id` with `body` on a new connection, and keeps it open. */
export async function holdParty(
  port: number,
  id: string,
  body: Uint8Array,
  timeoutMs: number,
): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const head = `POST /wait-for-second-party/${id}?timeout_ms=${timeoutMs} HTTP/1.1\r\n` +
    `Host: m\r\nContent-Length: ${body.byteLength}\r\n\r\n`;
  await conn.write(new TextEncoder().encode(head));
  if (body.byteLength) await conn.write(body);
  return conn;
}

/** A process's resident memory (VmRSS) or its peak (VmHWM), in KiB. */
export async function rssKiB(pid: number, field: "VmRSS" | "VmHWM" = "VmRSS"): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(status.match(new RegExp(`${field}:\\s+(\\d+)`))?.[1]);
}
