/**
 * The browser page the ping server serves on its TCP side: `page/index.html`, its client
 * `page/client.js` (bundled from `page/client.ts` by `deno task build:ping-page` and
 * committed), and the wsping library's plain ES module, which the page uses to ping `/ws`.
 *
 * Nothing is read when this module is imported: {@link loadPage} reads the files (the
 * server calls it at start, so a broken install is found at once), and
 * {@link pageResponse} answers from what it read.
 *
 * @module
 */

/** One file of the page: its body and its content type. */
export interface PageFile {
  body: Uint8Array<ArrayBuffer>;
  type: string;
}

/** The page's files by request path ("/", "/client.js", "/wsping.mjs"). */
export type PageFiles = ReadonlyMap<string, PageFile>;

/** Where each file of the page comes from, by request path. */
export const PAGE_SOURCES: Readonly<Record<string, { url: URL; type: string }>> = {
  "/": { url: new URL("./page/index.html", import.meta.url), type: "text/html; charset=utf-8" },
  "/client.js": {
    url: new URL("./page/client.js", import.meta.url),
    type: "text/javascript; charset=utf-8",
  },
  "/wsping.mjs": {
    url: new URL("../../packages/wsping/dist/wsping.mjs", import.meta.url),
    type: "text/javascript; charset=utf-8",
  },
};

let loaded: Promise<PageFiles> | undefined;

/**
 * Reads the page's files, once per process (later calls share the first read).
 *
 * @throws whatever reading a file throws (a missing file is a broken install); a failed
 *   read is not cached, so the next call tries again.
 */
export function loadPage(): Promise<PageFiles> {
  loaded ??= (async () => {
    const entries = await Promise.all(
      Object.entries(PAGE_SOURCES).map(async ([path, source]) =>
        [path, { body: await Deno.readFile(source.url), type: source.type }] as const
      ),
    );
    return new Map(entries);
  })().catch((error) => {
    loaded = undefined;
    throw error;
  });
  return loaded;
}

/**
 * The security headers of the page. It talks to its own origin (fetch, WebSocket), to
 * WebTransport, and to the servers named by ?url= (their /.well-known over HTTPS, or plain
 * HTTP on loopback only, and their /ws); wsping is WebAssembly, which needs
 * 'wasm-unsafe-eval' (not 'unsafe-eval'). Scripts are files of its own origin only: no
 * inline script runs.
 */
export const PAGE_CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; " +
  "style-src 'unsafe-inline'; " +
  "connect-src 'self' https: wss: ws: http://127.0.0.1:* http://localhost:*";

/** The response for a page path, or undefined when the path is not the page's. */
export function pageResponse(files: PageFiles, path: string): Response | undefined {
  if (path === "/favicon.ico") return new Response(null, { status: 204 });
  const file = files.get(path === "/index.html" ? "/" : path);
  if (!file) return undefined;
  return new Response(file.body, {
    headers: {
      "content-type": file.type,
      "cache-control": "no-cache",
      "x-content-type-options": "nosniff",
      "content-security-policy": PAGE_CSP,
    },
  });
}
