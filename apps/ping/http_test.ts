// The TCP side's routes without sockets: Request objects in, Response objects out.
import assert from "node:assert/strict";
import { createPingApp, type PingHttpOptions } from "./http.ts";
import { loadPage, PAGE_CSP, type PageFiles, pageResponse } from "./page.ts";

const page: PageFiles = new Map([
  ["/", {
    body: new TextEncoder().encode("<title>duet ping</title>"),
    type: "text/html; charset=utf-8",
  }],
  ["/client.js", {
    body: new TextEncoder().encode("export {};"),
    type: "text/javascript; charset=utf-8",
  }],
]);

function app(overrides: Partial<PingHttpOptions> = {}) {
  const upgrades: string[] = [];
  const health = { accepting: true, sessions: 2, acceptFailures: 0 };
  const ping = createPingApp({
    page,
    info: () => ({
      port: 4433,
      path: "/ping",
      certificateHashes: [{ algorithm: "sha-256", value: "ab".repeat(32) }],
    }),
    health: () => health,
    upgradeWebSocket: (_request, client) => {
      upgrades.push(client);
      return new Response("upgraded", { status: 200 });
    },
    ...overrides,
  });
  const request = (path: string, init?: RequestInit) =>
    ping.request(path, init, { remoteAddr: { transport: "tcp", hostname: "10.0.0.9", port: 5 } });
  return { request, upgrades, health };
}

Deno.test("http: /healthz: 200 ok with the sessions; 503 not accepting, acceptFailures once there are some", async () => {
  const { request, health } = app();
  let response = await request("/healthz");
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("cache-control"), "no-store");
  assert.deepEqual(await response.json(), { status: "ok", sessions: 2 });
  health.accepting = false;
  health.acceptFailures = 3;
  response = await request("/healthz");
  assert.equal(response.status, 503);
  assert.deepEqual(await response.json(), {
    status: "not accepting",
    sessions: 2,
    acceptFailures: 3,
  });
});

Deno.test("http: /.well-known/duet-ping.json: the info, for any origin, never cached", async () => {
  const response = await app().request("/.well-known/duet-ping.json");
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("access-control-allow-origin"), "*");
  assert.equal(response.headers.get("cache-control"), "no-store");
  assert.equal((await response.json()).port, 4433);
});

Deno.test("http: the page, its script, favicon 204, 404 for the rest, 405 for other methods, HEAD like GET without a body", async () => {
  const { request } = app();
  for (const path of ["/", "/index.html"]) {
    const response = await request(path);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/html; charset=utf-8");
    assert.equal(response.headers.get("content-security-policy"), PAGE_CSP);
    assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    assert.match(await response.text(), /duet ping/);
  }
  assert.equal(
    (await request("/client.js")).headers.get("content-type"),
    "text/javascript; charset=utf-8",
  );
  assert.equal((await request("/favicon.ico")).status, 204);
  const missing = await request("/nothing");
  assert.equal(missing.status, 404);
  assert.equal(await missing.text(), "not found\n");
  assert.equal((await request("/ws")).status, 404, "/ws without an upgrade is no page");
  const post = await request("/healthz", { method: "POST" });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET");
  assert.equal(await post.text(), "method not allowed\n");
  assert.equal((await request("/", { method: "DELETE" })).status, 405);
  const head = await request("/healthz", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(await head.text(), "");
});

Deno.test("http: /ws with Upgrade: websocket (any case, any method) goes to the upgrade with the client's address", async () => {
  const { request, upgrades } = app();
  assert.equal((await request("/ws", { headers: { upgrade: "WebSocket" } })).status, 200);
  assert.equal(
    (await request("/ws", { method: "POST", headers: { upgrade: "websocket" } })).status,
    200,
  );
  assert.deepEqual(upgrades, ["10.0.0.9", "10.0.0.9"]);
  assert.equal((await request("/other", { headers: { upgrade: "websocket" } })).status, 404);
});

Deno.test("page: nothing is read at import; loadPage reads every file once, and pageResponse answers from it", async () => {
  const files = await loadPage();
  assert.equal(await loadPage(), files, "read once");
  for (const path of ["/", "/client.js", "/wsping.mjs"]) assert.ok(files.get(path)?.body.length);
  assert.equal(pageResponse(files, "/nothing"), undefined);
  assert.match(await pageResponse(files, "/index.html")!.text(), /<title>duet ping<\/title>/);
});
