// The published document as a reader checks it (zod): the error names the first problem.
import assert from "node:assert/strict";
import { fetchServerInfo, MAX_INFO_BYTES, TrustError, validateInfo } from "./trust.ts";

Deno.test("validateInfo: a document that is not what duet ping serves is refused with where and what is wrong", () => {
  const hashes = [{ algorithm: "sha-256", value: "ab".repeat(32) }];
  const cases: [unknown, string][] = [
    [null, "the document: expected a JSON object"],
    [{ port: 4433, path: "/ping" }, "certificateHashes: expected an array"],
    [
      { port: 0, path: "/ping", certificateHashes: hashes },
      "port: expected a port from 1 to 65535",
    ],
    [{ port: 4433.5, path: "/ping", certificateHashes: hashes }, "port: expected a whole number"],
    [
      { port: 4433, path: "ping", certificateHashes: hashes },
      'path: expected a path starting with "/"',
    ],
    [{ certificateHashes: hashes }, "the document: expected url, or port and path"],
    [
      { url: "https://a.test/ping", certificateHashes: [{ algorithm: "md5", value: "ab" }] },
      'certificateHashes.0.algorithm: expected "sha-256"',
    ],
    // A hash no certificate can match is refused here, at once, not at each connection.
    [
      { url: "https://a.test/ping", certificateHashes: [{ algorithm: "sha-256", value: "zz" }] },
      "certificateHashes.0.value: expected 64 hex digits (a SHA-256)",
    ],
  ];
  for (const [bad, why] of cases) {
    assert.throws(
      () => validateInfo(bad),
      (e: Error) =>
        e.message ===
          `the server's /.well-known/duet-ping.json is not what duet ping serves (${why})`,
      JSON.stringify(bad),
    );
  }
  // Unknown fields are dropped; the rest comes back as given.
  assert.deepEqual(
    validateInfo({ port: 4433, path: "/ping", certificateHashes: hashes, extra: 1 }),
    { port: 4433, path: "/ping", certificateHashes: hashes },
  );
});

Deno.test("fetchServerInfo: a document that is not JSON, or too large, is unusable at once (permanent), not read whole", async () => {
  for (
    const [body, why] of [
      ["hello", "not JSON"],
      ["", "not JSON"],
      ["{" + " ".repeat(MAX_INFO_BYTES), `the answer is larger than ${MAX_INFO_BYTES} bytes`],
    ] as const
  ) {
    await using server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      () => new Response(body, { headers: { "content-type": "application/json" } }),
    );
    const error = await fetchServerInfo("127.0.0.1", server.addr.port, undefined, 3000).then(
      () => assert.fail("trusted?"),
      (error: unknown) => error,
    );
    assert.ok(error instanceof TrustError, String(error));
    assert.equal(error.permanent, true);
    assert.equal(
      error.message,
      `the server's /.well-known/duet-ping.json is not what duet ping serves (${why}); ` +
        "pass --cert-hash or --ca",
    );
  }
});
