/**
 * The browser page the ping server serves on its TCP side: `page/index.html` and the
 * wsping library's plain ES module, which the page uses to ping `/ws`.
 *
 * @module
 */

const files: Record<string, { url: URL; type: string }> = {
  "/": { url: new URL("./page/index.html", import.meta.url), type: "text/html; charset=utf-8" },
  "/wsping.mjs": {
    url: new URL("../../packages/wsping/dist/wsping.mjs", import.meta.url),
    type: "text/javascript; charset=utf-8",
  },
};

// Read once at start-up: a missing file is a broken install, better found at once.
const bodies = new Map(
  Object.entries(files).map(([path, file]) => [path, Deno.readFileSync(file.url)]),
);

/** The response for a page path, or undefined when the path is not the page's. */
export function pageResponse(path: string): Response | undefined {
  if (path === "/favicon.ico") return new Response(null, { status: 204 });
  const body = bodies.get(path === "/index.html" ? "/" : path);
  if (!body) return undefined;
  return new Response(body, {
    headers: {
      "content-type": files[path === "/index.html" ? "/" : path]!.type,
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
      // The page talks to its own origin (fetch, WebSocket), to WebTransport, and to the
      // servers named by ?url= (their /.well-known over HTTPS, or plain HTTP on loopback
      // only, and their /ws); wsping is WebAssembly, which needs 'wasm-unsafe-eval' (not
      // 'unsafe-eval').
      "content-security-policy":
        "default-src 'self'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; " +
        "style-src 'unsafe-inline'; " +
        "connect-src 'self' https: wss: ws: http://127.0.0.1:* http://localhost:*",
    },
  });
}
