// The published document as a reader checks it (zod): the error names the first problem.
import assert from "node:assert/strict";
import { validateInfo } from "./trust.ts";

Deno.test("validateInfo: a document that is not what duet ping serves is refused with where and what is wrong", () => {
  const hashes = [{ algorithm: "sha-256", value: "ab" }];
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
