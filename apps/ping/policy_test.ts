// The server's admission rules alone: token, origin, the WebSocket size bound, and the
// published document (no sockets here). Caps per address and rates: packages/net.
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  checkAccess,
  choosePingProtocol,
  forLog,
  messageTooLong,
  originAllowed,
  presentedToken,
  publishedInfo,
  serviceUrl,
  tokenMatches,
} from "./policy.ts";
import { MAX_LINE_BYTES, PING_PROTOCOL } from "./protocol.ts";
import { validateInfo } from "./trust.ts";

const url = new URL("https://127.0.0.1:4433/ping");

Deno.test("presentedToken: Authorization Bearer first, then ?token=, else none", () => {
  const withQuery = new URL("https://h:1/ws?token=q");
  assert.equal(presentedToken(new Headers({ authorization: "Bearer h" }), withQuery), "h");
  assert.equal(presentedToken(new Headers(), withQuery), "q");
  assert.equal(presentedToken(new Map([["authorization", "Bearer m"]]), url), "m", "a Map too");
  assert.equal(presentedToken(new Headers(), url), undefined);
  assert.equal(
    presentedToken(new Headers({ authorization: "Basic dTpw" }), url),
    undefined,
    "only the Bearer scheme carries the token",
  );
  assert.equal(
    presentedToken(new Headers({ authorization: "Bearer " }), url),
    undefined,
    "Headers trims the value to a bare 'Bearer': no token",
  );
});

Deno.test("tokenMatches: equal strings only, whatever their lengths; nothing never matches", () => {
  assert.equal(tokenMatches("s3cret", "s3cret"), true);
  assert.equal(tokenMatches("s3cres", "s3cret"), false);
  assert.equal(tokenMatches("s3cret-and-more", "s3cret"), false);
  assert.equal(tokenMatches("", "s3cret"), false);
  assert.equal(tokenMatches(undefined, "s3cret"), false);
  fc.assert(fc.property(fc.string(), fc.string(), (a, b) => tokenMatches(a, b) === (a === b)));
});

Deno.test("originAllowed: none, the server's own page (http or https), listed or * only", () => {
  assert.equal(originAllowed(null, url, []), true, "not a browser");
  assert.equal(originAllowed("http://127.0.0.1:4433", url, []), true, "own page over http");
  assert.equal(originAllowed("https://127.0.0.1:4433", url, []), true, "own page over https");
  assert.equal(originAllowed("http://127.0.0.1:4434", url, []), false, "another port");
  assert.equal(originAllowed("http://localhost:4433", url, []), false, "another name");
  assert.equal(originAllowed("ws://127.0.0.1:4433", url, []), false, "not a page's scheme");
  assert.equal(originAllowed("https://evil.example", url, []), false);
  assert.equal(originAllowed("evil.example", url, []), false, "not a URL");
  assert.equal(originAllowed("null", url, []), false, "an opaque origin");
  assert.equal(originAllowed("https://app.test", url, ["https://app.test"]), true);
  assert.equal(originAllowed("https://app.test:8443", url, ["https://app.test"]), false);
  assert.equal(originAllowed("https://evil.example", url, ["*"]), true);
});

Deno.test("checkAccess: the token is checked before the origin; 401, 403 or admitted", () => {
  const policy = { token: "t", allowedOrigins: ["https://app.test"] };
  const request = (headers: Record<string, string>, at = url) => ({
    url: at,
    headers: new Headers(headers),
    origin: headers["origin"] ?? null,
  });
  // The case of issue #13: no token and a foreign origin.
  assert.equal(checkAccess(request({ origin: "https://evil.example" }), policy)?.status, 401);
  assert.equal(checkAccess(request({ authorization: "Bearer x" }), policy)?.status, 401);
  assert.equal(
    checkAccess(request({ authorization: "Bearer t", origin: "https://evil.example" }), policy)
      ?.status,
    403,
  );
  assert.equal(checkAccess(request({ authorization: "Bearer t" }), policy), null);
  assert.equal(
    checkAccess(request({ origin: "https://app.test" }, new URL("?token=t", url)), policy),
    null,
  );
  assert.equal(
    checkAccess(request({ origin: "https://evil.example" }), { allowedOrigins: [] })?.status,
    403,
    "no token configured: only the origin is checked",
  );
  assert.equal(checkAccess(request({}), { allowedOrigins: [] }), null);
});

Deno.test("forLog: a client's text goes into a log line cut to 200 characters, the rest counted", () => {
  assert.equal(forLog("/ping"), "/ping");
  assert.equal(forLog("x".repeat(200)), "x".repeat(200));
  assert.equal(forLog("x".repeat(1200)), `${"x".repeat(200)}… (1000 more characters)`);
});

Deno.test("choosePingProtocol: ours when offered, none when none is offered, 400 otherwise", () => {
  assert.equal(PING_PROTOCOL, "duet-ping.v1");
  assert.deepEqual(choosePingProtocol([]), {});
  assert.deepEqual(choosePingProtocol(["duet-ping.v2", "duet-ping.v1"]), {
    protocol: "duet-ping.v1",
  });
  assert.deepEqual(choosePingProtocol(["chat.v1"]), {
    status: 400,
    reason: "offers chat.v1, not duet-ping.v1",
  });
});

Deno.test("messageTooLong: UTF-8 bytes of text, bytes of binary, against the line limit", () => {
  assert.equal(MAX_LINE_BYTES, 16_384);
  assert.equal(messageTooLong("x".repeat(MAX_LINE_BYTES)), false);
  assert.equal(messageTooLong("x".repeat(MAX_LINE_BYTES + 1)), true);
  // 5,462 code units, 16,386 bytes: short in characters, too long in bytes.
  assert.equal(messageTooLong("€".repeat(5462)), true);
  assert.equal(messageTooLong("€".repeat(5461) + "x"), false, "16,384 bytes exactly");
  assert.equal(messageTooLong("😀".repeat(4096)), false, "4 bytes per 2 code units");
  assert.equal(messageTooLong("😀".repeat(4096) + "x"), true);
  assert.equal(messageTooLong(new ArrayBuffer(MAX_LINE_BYTES)), false);
  assert.equal(messageTooLong(new ArrayBuffer(MAX_LINE_BYTES + 1)), true);
  assert.equal(messageTooLong(new Uint8Array(11), 10), true, "another limit");
  fc.assert(
    fc.property(
      fc.string({ unit: "grapheme", maxLength: 200 }),
      fc.nat(600),
      (s, max) => messageTooLong(s, max) === (new TextEncoder().encode(s).byteLength > max),
    ),
  );
});

Deno.test("publishedInfo: only configuration goes in; the url only when configured", () => {
  assert.deepEqual(publishedInfo({ port: 4433, path: "/ping" }, ["ab"]), {
    port: 4433,
    path: "/ping",
    certificateHashes: [{ algorithm: "sha-256", value: "ab" }],
  });
  assert.deepEqual(
    publishedInfo({ publicUrl: "https://ping.example.com/ping", port: 4433, path: "/ping" }, []),
    { url: "https://ping.example.com/ping", port: 4433, path: "/ping", certificateHashes: [] },
  );
});

Deno.test("serviceUrl: the published url, else the host the client used with the published port and path", () => {
  const info = { port: 4433, path: "/ping" };
  assert.equal(serviceUrl(info, "ping.example.com").href, "https://ping.example.com:4433/ping");
  assert.equal(serviceUrl(info, "127.0.0.1").href, "https://127.0.0.1:4433/ping");
  assert.equal(serviceUrl(info, "::1").href, "https://[::1]:4433/ping");
  assert.equal(serviceUrl(info, "[::1]").href, "https://[::1]:4433/ping");
  assert.equal(
    serviceUrl({ ...info, url: "https://lb.example.com/ping" }, "10.0.0.5").href,
    "https://lb.example.com/ping",
  );
});

Deno.test("validateInfo: today's document, one with a public url, an older url-only one; nothing else", () => {
  const hashes = [{ algorithm: "sha-256", value: "ab".repeat(32) }];
  const current = { port: 4433, path: "/ping", certificateHashes: hashes };
  assert.deepEqual(validateInfo(current), current);
  assert.ok(validateInfo({ ...current, url: "https://ping.example.com/ping" }));
  assert.ok(validateInfo({ url: "https://127.0.0.1:4433/ping", certificateHashes: hashes }));
  for (
    const bad of [
      null,
      "text",
      { certificateHashes: hashes },
      { port: 4433, certificateHashes: hashes },
      { ...current, port: 0 },
      { ...current, port: "4433" },
      { ...current, path: "ping" },
      { ...current, url: 7 },
      { ...current, certificateHashes: [{ algorithm: "md5", value: "ab" }] },
      { ...current, certificateHashes: [{ algorithm: "sha-256", value: "ab" }] },
      { port: 4433, path: "/ping" },
    ]
  ) {
    assert.throws(() => validateInfo(bad), /not what duet ping serves/, JSON.stringify(bad));
  }
});
