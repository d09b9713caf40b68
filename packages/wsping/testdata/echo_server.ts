// deno-lint-ignore-file no-console -- run as a process, it prints its URL for the harness
/**
 * The WebSocket server wsping's tests (on every runtime) and its demo page talk to.
 *
 *   /echo     echoes each message (text as text, binary as binary)
 *   /twice    answers each message twice ("first: M", then "second: M")
 *   /binary   answers each message with a binary frame
 *   /close    closes (1000) as soon as the socket opens, before any message
 *   /silent   accepts and never answers
 *   /reject   refuses the upgrade with HTTP 403
 *   /delay?ms=N  echoes after N ms
 *   /hold?ms=N   answers the upgrade only after N ms (a slow connect), then echoes
 *   GET /stats       {"open": sockets open now, "total": sockets accepted}
 *   GET /, /page     the demo page; /dist/..., /tests/... static files for browsers
 *
 * Run alone: `deno run -A packages/wsping/testdata/echo_server.ts [port]` prints
 * {"ws": "ws://127.0.0.1:PORT", "http": "http://127.0.0.1:PORT"} on stdout.
 */

export interface EchoServer {
  /** ws://127.0.0.1:PORT */
  ws: string;
  /** http://127.0.0.1:PORT */
  http: string;
  /** Sockets open now and accepted so far. */
  stats(): { open: number; total: number };
  /** Stops the server and closes every socket. */
  close(): Promise<void>;
}

const here = new URL("../", import.meta.url);
const staticFiles: Record<string, [string, string]> = {
  "/": ["page/index.html", "text/html; charset=utf-8"],
  "/page": ["page/index.html", "text/html; charset=utf-8"],
  "/dist/wsping.mjs": ["dist/wsping.mjs", "text/javascript; charset=utf-8"],
};

/** Starts the server on 127.0.0.1 (port 0: any free port). */
export async function startEchoServer(port = 0, extraFiles: Record<string, [URL, string]> = {}): Promise<EchoServer> {
  const sockets = new Set<WebSocket>();
  let total = 0;
  const listening = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port,
    onListen: (addr) => listening.resolve(addr as Deno.NetAddr),
  }, async (request) => {
    const url = new URL(request.url);
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      if (url.pathname === "/stats") return Response.json({ open: sockets.size, total });
      const extra = extraFiles[url.pathname];
      const file = staticFiles[url.pathname];
      if (extra) return new Response(await Deno.readFile(extra[0]), { headers: { "content-type": extra[1] } });
      if (file) {
        return new Response(await Deno.readFile(new URL(file[0], here)), { headers: { "content-type": file[1] } });
      }
      return new Response("not found", { status: 404 });
    }
    if (url.pathname === "/reject") return new Response("no", { status: 403 });
    if (url.pathname === "/hold") {
      // Hold the handshake; a client that leaves meanwhile ends the wait (no timer left over).
      const held = Promise.withResolvers<void>();
      const timer = setTimeout(held.resolve, Number(url.searchParams.get("ms") ?? 0));
      request.signal.addEventListener("abort", () => (clearTimeout(timer), held.resolve()));
      await held.promise;
      if (request.signal.aborted) return new Response("gone", { status: 499 });
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    total++;
    sockets.add(socket);
    socket.addEventListener("close", () => sockets.delete(socket));
    socket.addEventListener("error", () => sockets.delete(socket));
    const delay = url.pathname === "/delay" ? Number(url.searchParams.get("ms") ?? 0) : 0;
    switch (url.pathname) {
      case "/close":
        socket.addEventListener("open", () => socket.close(1000, "bye"));
        break;
      case "/silent":
        break;
      case "/binary":
        socket.addEventListener("message", () => socket.send(new Uint8Array([1, 2, 3])));
        break;
      case "/twice":
        socket.addEventListener("message", (event) => {
          socket.send(`first: ${event.data}`);
          socket.send(`second: ${event.data}`);
        });
        break;
      default: // /echo, /delay
        socket.addEventListener("message", (event) => {
          const reply = () => {
            if (socket.readyState === WebSocket.OPEN) socket.send(event.data);
          };
          if (delay > 0) setTimeout(reply, delay);
          else reply();
        });
    }
    return response;
  });
  const addr = await listening.promise;
  return {
    ws: `ws://127.0.0.1:${addr.port}`,
    http: `http://127.0.0.1:${addr.port}`,
    stats: () => ({ open: sockets.size, total }),
    close: async () => {
      for (const socket of sockets) socket.close();
      await server.shutdown();
    },
  };
}

if (import.meta.main) {
  const server = await startEchoServer(Number(Deno.args[0] ?? 0));
  console.log(JSON.stringify({ ws: server.ws, http: server.http }));
  Deno.addSignalListener("SIGTERM", () => server.close().then(() => Deno.exit(0)));
  Deno.addSignalListener("SIGINT", () => server.close().then(() => Deno.exit(0)));
}
