/**
 * The ping server's TCP side as a pure `Request -> Response` handler (Hono): the page,
 * `/healthz`, `/.well-known/duet-ping.json`, and the door to the WebSocket echo `/ws`
 * (the upgrade itself is the caller's: see `ws_echo.ts`). No sockets: tested with
 * `app.request()`.
 *
 * @module
 */
import { Hono } from "hono";
import { type PageFiles, pageResponse } from "./page.ts";
import type { PingServerInfo } from "./policy.ts";

/** What the TCP side shows and where it gets it. */
export interface PingHttpOptions {
  /** The page's files ({@link loadPage} in `page.ts`). */
  page: PageFiles;
  /** The published document, built from configuration only (never from the request). */
  info(): PingServerInfo;
  /** The readiness figures of `/healthz`. */
  health(): { accepting: boolean; sessions: number; acceptFailures: number };
  /** Answers a WebSocket upgrade at `/ws` from `client` (its IP address). */
  upgradeWebSocket(request: Request, client: string): Response;
}

/**
 * What the server passes beside the request (Hono's `c.env`): the client's address, as
 * `Deno.serve` gives it.
 */
export interface PingHttpEnv {
  remoteAddr?: Deno.Addr;
}

const clientOf = (env: unknown): string => {
  const remote = (env as PingHttpEnv | undefined)?.remoteAddr;
  return remote && "hostname" in remote ? remote.hostname : "";
};

/**
 * The TCP side's routes:
 * - `/ws` with `Upgrade: websocket` (any method): the WebSocket echo;
 * - any other method than GET and HEAD: 405 `method not allowed`, `Allow: GET`;
 * - `GET /healthz`: 200 `{"status":"ok","sessions":N}`, or 503 `{"status":"not accepting",
 *   ...}`, with `"acceptFailures": N` once accepting has failed;
 * - `GET /.well-known/duet-ping.json`: the published info, for any origin, never cached;
 * - the page (`/`, `/index.html`, `/client.js`, `/wsping.mjs`; `/favicon.ico` 204);
 * - anything else: 404 `not found`.
 */
export function createPingApp(options: PingHttpOptions): Hono {
  const app = new Hono();
  app.all("/ws", (c, next) => {
    if (c.req.header("upgrade")?.toLowerCase() !== "websocket") return next();
    return options.upgradeWebSocket(c.req.raw, clientOf(c.env));
  });
  app.use("*", (c, next) => {
    if (c.req.method === "GET" || c.req.method === "HEAD") return next();
    return Promise.resolve(
      new Response("method not allowed\n", { status: 405, headers: { allow: "GET" } }),
    );
  });
  app.get("/healthz", () => {
    const { accepting, sessions, acceptFailures } = options.health();
    return Response.json({
      status: accepting ? "ok" : "not accepting",
      sessions,
      ...(acceptFailures ? { acceptFailures } : {}),
    }, { status: accepting ? 200 : 503, headers: { "cache-control": "no-store" } });
  });
  app.get("/.well-known/duet-ping.json", () =>
    Response.json(options.info(), {
      headers: { "cache-control": "no-store", "access-control-allow-origin": "*" },
    }));
  app.get("*", (c, next) => {
    const page = pageResponse(options.page, new URL(c.req.url).pathname);
    return page ? Promise.resolve(page) : next();
  });
  app.notFound(() => new Response("not found\n", { status: 404 }));
  return app;
}
