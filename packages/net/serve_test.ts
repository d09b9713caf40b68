// serveResilient over real sockets: in this process, and in a child process whose open-file
// limit is lowered (ulimit -n) so that the test can exhaust its descriptors with loopback
// connections, then release them.
import { waitFor } from "@duet/testkit";
import assert from "node:assert/strict";
import { serveResilient } from "./serve.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** One HTTP/1.1 request on an open connection; the answer must carry Content-Length. */
async function exchange(
  conn: Deno.TcpConn,
  method: string,
  path: string,
): Promise<{ status: number; body: string }> {
  await conn.write(encoder.encode(`${method} ${path} HTTP/1.1\r\nHost: test\r\n\r\n`));
  let text = "";
  const buffer = new Uint8Array(16 * 1024);
  for (;;) {
    const end = text.indexOf("\r\n\r\n");
    if (end >= 0) {
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1]);
      assert.ok(Number.isInteger(length), `no Content-Length in ${text.slice(0, end)}`);
      if (encoder.encode(text.slice(end + 4)).byteLength >= length) {
        return { status: Number(text.slice(9, 12)), body: text.slice(end + 4) };
      }
    }
    const read = await conn.read(buffer);
    if (read === null) throw new Error(`connection closed after ${JSON.stringify(text)}`);
    text += decoder.decode(buffer.subarray(0, read));
  }
}

Deno.test("serveResilient: serves, keeps the port it picked, reports its state, shuts down", async () => {
  const server = await serveResilient({ hostname: "127.0.0.1", port: 0 }, () => new Response("hi"));
  try {
    assert.notEqual(server.addr.port, 0);
    assert.deepEqual([server.listening, server.outage, server.acceptFailures], [true, false, 0]);
    const response = await fetch(`http://127.0.0.1:${server.addr.port}/`);
    assert.equal(await response.text(), "hi");
    await assert.rejects(
      serveResilient({ hostname: "127.0.0.1", port: server.addr.port }, () => new Response()),
      Deno.errors.AddrInUse,
      "the first start's errors reach the caller",
    );
  } finally {
    await server.shutdown();
  }
  assert.equal(server.listening, false);
  await assert.rejects(fetch(`http://127.0.0.1:${server.addr.port}/`), TypeError);
});

// The child: serveResilient with JSON log lines on stderr. GET /hold answers once GET
// /release came; GET /state tells the server's state. SIGTERM shuts it down and exits 0.
const child = (serveUrl: string, recoveredAfterMs: number) => `
import { configureSync } from "@logtape/logtape";
import { serveResilient } from ${JSON.stringify(serveUrl)};
configureSync({
  sinks: { stderr: (r) => console.error(JSON.stringify({ level: r.level, message: r.message.join("") })) },
  loggers: [
    { category: ["duet"], lowestLevel: "debug", sinks: ["stderr"] },
    { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
  ],
});
const held = Promise.withResolvers();
const server = await serveResilient({ hostname: "127.0.0.1", port: 0, recoveredAfterMs: ${recoveredAfterMs} }, async (request) => {
  const path = new URL(request.url).pathname;
  if (path === "/hold") return new Response(await held.promise);
  if (path === "/release") return (held.resolve("released"), new Response("ok"));
  if (path === "/state") {
    const { listening, outage, acceptFailures, addr } = server;
    return Response.json({ listening, outage, acceptFailures, port: addr.port });
  }
  return new Response("hello");
});
console.log(JSON.stringify({ port: server.addr.port }));
Deno.addSignalListener("SIGTERM", async () => {
  held.resolve("stopping");
  await server.shutdown();
  Deno.exit(0);
});
`;

interface LogLine {
  level: string;
  message: string;
}

/**
 * The child under `ulimit -n 64`, its stdout lines, its JSON log lines, and how to exhaust
 * its descriptors (loopback connections until outage number `n` is logged).
 */
function startChild(recoveredAfterMs: number) {
  const repo = new URL("../../", import.meta.url).pathname;
  const process = new Deno.Command("bash", {
    // 64 descriptors: the runtime takes ~21, so ~40 loopback connections exhaust them.
    args: [
      "-c",
      'ulimit -n 64 && exec "$0" eval "$1"',
      Deno.execPath(),
      child(new URL("./serve.ts", import.meta.url).href, recoveredAfterMs),
    ],
    cwd: repo,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const state = { exited: false };
  const status = process.status.then((s) => (state.exited = true, s));
  const out: string[] = [];
  const logs: LogLine[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>, into: (line: string) => void) => {
    let buffer = "";
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      const lines = (buffer + chunk).split("\n");
      buffer = lines.pop()!;
      lines.forEach(into);
    }
  };
  const pumped = Promise.all([
    pump(process.stdout, (line) => out.push(line)),
    // Not every stderr line is a log line: a runtime warning is kept as it is.
    pump(process.stderr, (line) => {
      try {
        logs.push(JSON.parse(line));
      } catch {
        logs.push({ level: "stderr", message: line });
      }
    }),
  ]);
  const flood: Deno.TcpConn[] = [];
  const errors = () => logs.filter((l) => l.level === "error" || l.level === "fatal");
  const port = async () => {
    await waitFor(() => out.length > 0, "the child to listen", 20_000);
    return (JSON.parse(out[0]!) as { port: number }).port;
  };
  /** Opens loopback connections until the child stops accepting (bounded). */
  const exhaust = async (outageNumber: number) => {
    const at = await port();
    for (let i = 0; i < 300 && errors().length < outageNumber; i++) {
      try {
        flood.push(await Deno.connect({ hostname: "127.0.0.1", port: at }));
      } catch {
        // Refused or reset: the child stopped listening in the meantime.
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    }
    await waitFor(() => errors().length === outageNumber, "the outage's error line");
  };
  /** Stops the child (SIGTERM) and checks it exited 0. */
  const stop = async () => {
    for (const conn of flood.splice(0)) conn.close();
    if (!state.exited) process.kill("SIGTERM");
    const { code } = await status;
    await pumped;
    assert.equal(code, 0, logs.map((l) => l.message).join("\n"));
  };
  return { state, logs, flood, errors, port, exhaust, stop };
}

Deno.test("serveResilient out of file descriptors: held connections served, new ones refused, one error line per outage, back on the same port", async () => {
  const { state: childState, logs, flood, errors, exhaust, stop, ...started } = startChild(
    300,
  );
  const control: Deno.TcpConn[] = [];
  try {
    const port = await started.port();
    const noPool = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
    /** A request on a new connection: its status, or "refused". */
    const fresh = (path: string) =>
      fetch(`http://127.0.0.1:${port}${path}`, { client: noPool }).then(
        async (r) => (await r.body?.cancel(), r.status),
        () => "refused" as const,
      );
    // Two connections accepted for sure (each answered once), and a request held on one.
    for (let i = 0; i < 3; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      assert.equal((await exchange(conn, "GET", "/state")).status, 200);
      control.push(conn);
    }
    const [state, holder, releaser] = control as [Deno.TcpConn, Deno.TcpConn, Deno.TcpConn];
    const readState = async () => JSON.parse((await exchange(state, "GET", "/state")).body);
    const heldAnswer = exchange(holder, "GET", "/hold");

    await exhaust(1);
    assert.match(errors()[0]!.message, /Stopped accepting connections.*Too many open files/);
    assert.equal(childState.exited, false, "the process survives");
    const during = await readState();
    assert.equal(during.outage, true, "a held connection is still served, and says outage");
    assert.equal(during.port, port);
    // New connections are refused; each one that reaches a relistened socket fails its
    // accept again. Several failures, still one error line.
    for (let i = 0; i < 50 && (await readState()).acceptFailures < 3; i++) {
      await waitFor(async () => (await readState()).listening, "the child to listen again");
      assert.equal(await fresh("/"), "refused", "no new connection while out of descriptors");
    }
    assert.ok((await readState()).acceptFailures >= 3);
    assert.equal(errors().length, 1, "one error line for the outage, not one per attempt");
    assert.ok(logs.some((l) => l.level === "debug" && /failed again/.test(l.message)));
    // The request held since before the outage is answered during it.
    assert.equal((await exchange(releaser, "GET", "/release")).status, 200);
    assert.deepEqual(await heldAnswer, { status: 200, body: "released" });

    for (const conn of flood.splice(0)) conn.close();
    await waitFor(async () => (await fresh("/")) === 200, "new connections to be served again");
    await waitFor(async () => !(await readState()).outage, "the outage to be over", 10_000);
    assert.ok(
      logs.some((l) => l.level === "info" && /Accepting connections again/.test(l.message)),
    );
    assert.equal((await readState()).port, port, "the same port as before");

    // A second outage is a new one: logged again, once.
    await exhaust(2);
    for (const conn of flood.splice(0)) conn.close();
    await waitFor(async () => (await fresh("/")) === 200, "new connections after the second");
    assert.equal(errors().length, 2);
    assert.equal(childState.exited, false);
    noPool.close();
  } finally {
    for (const conn of control) conn.close();
    await stop();
  }
});

Deno.test("serveResilient: recoveredAfterMs past 2^31-1 ms does not end an outage early", async () => {
  // setTimeout overflows past 2^31-1 ms and fires at once: the outage would end at once.
  const child = startChild(2 ** 31);
  const noPool = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  try {
    const port = await child.port();
    const state = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      assert.equal((await exchange(state, "GET", "/state")).status, 200);
      await child.exhaust(1);
      for (const conn of child.flood.splice(0)) conn.close();
      const fresh = () =>
        fetch(`http://127.0.0.1:${port}/`, { client: noPool }).then(
          async (r) => (await r.body?.cancel(), r.status),
          () => "refused" as const,
        );
      await waitFor(async () => (await fresh()) === 200, "new connections to be served again");
      await new Promise((resolve) => setTimeout(resolve, 500));
      const after = JSON.parse((await exchange(state, "GET", "/state")).body);
      assert.equal(after.listening, true);
      assert.equal(after.outage, true, "2^31 ms of listening have not passed");
    } finally {
      state.close();
    }
  } finally {
    noPool.close();
    await child.stop();
  }
});

Deno.test("serveResilient: recoveredAfterMs that is not a finite number >= 0 is a RangeError naming it", async () => {
  for (const recoveredAfterMs of [-1, Number.NaN, Infinity, "5" as unknown as number]) {
    await assert.rejects(
      serveResilient({ hostname: "127.0.0.1", port: 0, recoveredAfterMs }, () => new Response()),
      (error: unknown) => error instanceof RangeError && /recoveredAfterMs/.test(error.message),
      String(recoveredAfterMs),
    );
  }
});
