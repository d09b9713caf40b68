// deno-lint-ignore-file no-console -- a benchmark server: it prints its port
/**
 * The listener alone, for issue #14's throughput question: the same in-memory pairing
 * (first POST waits, second gets the first's body and the first the second's) behind
 * four HTTP/1.1 listeners, so that a load generator measures what each listener costs per
 * pair. Not a server to use: the `raw` one parses only what the load generator sends
 * (Content-Length bodies, no chunked, no limits, no timeouts).
 *
 *   deno run -A bench/syncpoint/listeners.ts [--listener duet] [--port 0]
 *   loadgen pairs -url http://127.0.0.1:PORT/wait-for-second-party -concurrency 100
 *
 * --listener is one of serve, node, raw and duet (below); --port 0 takes a free port. Either
 * way the port is printed, and the server runs until it is killed. loadgen is the Go load
 * generator in bench/loadgen (`cd bench/loadgen && go build`; bench/syncpoint/run.ts builds it).
 *
 * `serve` is Deno.serve (misses departures after ~460 body bytes), `node` node:http (what
 * syncpoint used from #14 to the listener of its own), `raw` a minimal parser on
 * Deno.listen, `duet` packages/net/http1.ts (what syncpoint uses: Deno.listen, the strict
 * parser, presence, timeouts) through its direct path.
 *
 * @module
 */
import http from "node:http";
import { serveHttp1 } from "@duet/net/http1";
import { scriptOptions } from "../../tools/_options.ts";
const { listener: mode, port } = scriptOptions(import.meta.url, {
  listener: { type: "choice", default: "duet", choices: ["serve", "node", "raw", "duet"] },
  port: { type: "count", default: 0, min: 0, max: 65535 }, // 0: a free port, printed
});
/** The first party of each id: what it sent, and how to answer it. */
const waiting = new Map<string, { body: string; answer: (other: string) => void }>();
/** The other party's body: at once for the second, when the second comes for the first. */
function pair(id: string, body: string): Promise<string> | string {
  const first = waiting.get(id);
  if (first) {
    waiting.delete(id);
    first.answer(body);
    return first.body;
  }
  return new Promise<string>((answer) => waiting.set(id, { body, answer }));
}
const idOf = (path: string) => path.slice("/wait-for-second-party/".length);
if (mode === "serve") {
  Deno.serve(
    { port, hostname: "127.0.0.1", onListen: ({ port }) => console.log(port) },
    async (req) => {
      const body = await req.text();
      const other = await pair(idOf(new URL(req.url).pathname), body);
      return new Response(other);
    },
  );
} else if (mode === "duet") {
  const decoder = new TextDecoder();
  const server = await serveHttp1({
    hostname: "127.0.0.1",
    port,
    direct: (exchange) => {
      exchange.body(65_536).then(async (body) => {
        const text = body === "too_large" ? "" : decoder.decode(body);
        const other = await pair(idOf(exchange.target), text);
        exchange.respond(200, { "content-type": "text/plain" }, other);
      });
      return true;
    },
  }, () => new Response("not here", { status: 404 }));
  console.log(server.addr.port);
} else if (mode === "node") {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", async () => {
      const other = await pair(idOf(req.url!), Buffer.concat(chunks).toString());
      res.statusCode = 200;
      res.setHeader("content-length", Buffer.byteLength(other));
      res.end(other);
    });
  });
  server.listen(port, "127.0.0.1", () => console.log((server.address() as { port: number }).port));
} else {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  console.log(listener.addr.port);
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  for await (const conn of listener) {
    conn.setNoDelay(true);
    (async () => {
      const buf = new Uint8Array(65536);
      let have = 0;
      for (;;) {
        const n = await conn.read(buf.subarray(have));
        if (n === null) break;
        have += n;
        for (;;) {
          // find \r\n\r\n
          let end = -1;
          for (let i = 3; i < have; i++) {
            if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) {
              end = i + 1;
              break;
            }
          }
          if (end < 0) break;
          const head = dec.decode(buf.subarray(0, end));
          const path = head.slice(head.indexOf(" ") + 1, head.indexOf(" ", head.indexOf(" ") + 1));
          const m = /\r\ncontent-length:\s*(\d+)/i.exec(head);
          const len = m ? Number(m[1]) : 0;
          if (have < end + len) break;
          const body = dec.decode(buf.subarray(end, end + len));
          buf.copyWithin(0, end + len, have);
          have -= end + len;
          const other = await pair(idOf(path), body);
          const out = enc.encode(other);
          const headBytes = enc.encode(
            `HTTP/1.1 200 OK\r\ncontent-length: ${out.length}\r\ncontent-type: text/plain\r\n\r\n`,
          );
          const whole = new Uint8Array(headBytes.length + out.length);
          whole.set(headBytes);
          whole.set(out, headBytes.length);
          for (let off = 0; off < whole.length;) off += await conn.write(whole.subarray(off));
        }
      }
      try {
        conn.close();
      } catch { /* closed */ }
    })().catch(() => {});
  }
}
