// TLS and HTTP failures in duet's words: rustls' certificate names as phrases, and peers
// that speak neither TLS nor HTTP, or hang up, raised for real on loopback.
import assert from "node:assert/strict";
import { certificateProblem, closedBeforeAnswer, tlsFailure } from "./tls_failure.ts";
import { explainError, isPermanentNetworkError } from "./explain_error.ts";
import { tcpServer } from "@duet/testkit";

Deno.test("certificateProblem: each rustls CertificateError name is a phrase, unknown ones keep the name", () => {
  const cases: [string, RegExp][] = [
    ["invalid peer certificate: UnknownIssuer", /not issued by a CA trusted here/],
    ["invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))", /is a CA certificate/],
    ["invalid peer certificate: Expired", /^it has expired$/],
    ["invalid peer certificate: ExpiredContext { time: ... }", /^it has expired$/],
    ["invalid peer certificate: NotValidYet", /not valid yet \(check this machine's clock\)/],
    ["invalid peer certificate: NotValidForName", /not issued for the host name/],
    ["invalid peer certificate: NotValidForNameContext { expected: ... }", /host name/],
    ["invalid peer certificate: Revoked", /revoked/],
    ["invalid peer certificate: BadSignature", /signature does not verify/],
    ["invalid peer certificate: BadEncoding", /not a well-formed certificate/],
    ["invalid peer certificate: InvalidPurpose", /not issued for identifying a server/],
    ["invalid peer certificate: Other(Something)", /^it was refused \(Other\(Something\)\)$/],
  ];
  for (const [text, phrase] of cases) {
    assert.match(certificateProblem(text), phrase, text);
    assert.doesNotMatch(certificateProblem(text), /UnknownIssuer|CaUsedAsEndEntity/);
    assert.match(tlsFailure(text)!, /^the server's TLS certificate was refused: its? /);
  }
  assert.equal(tlsFailure("connection refused"), undefined);
  assert.equal(closedBeforeAnswer("connection refused"), false);
});

async function fetchError(url: string): Promise<unknown> {
  try {
    const response = await fetch(url);
    await response.body?.cancel();
  } catch (error) {
    return error;
  }
  throw new Error(`${url} answered`);
}

Deno.test("a peer that speaks neither TLS nor HTTP is said so, and trying again cannot help", async () => {
  // An SSH-like banner: neither a TLS record nor an HTTP status line.
  await using banner = tcpServer(async (conn) => {
    await conn.read(new Uint8Array(4096));
    await conn.write(new TextEncoder().encode("SSH-2.0-OpenSSH_9.2\r\n"));
  });
  const overTls = await fetchError(`https://127.0.0.1:${banner.port}/`);
  assert.equal(
    explainError(overTls),
    "what answered does not speak TLS; check the URL's scheme (http:// or https://) and port",
  );
  assert.equal(isPermanentNetworkError(overTls), true);
  const overHttp = await fetchError(`http://127.0.0.1:${banner.port}/`);
  assert.equal(
    explainError(overHttp),
    "what answered does not speak HTTP; check the URL's scheme (http:// or https://) and port",
  );
  assert.equal(isPermanentNetworkError(overHttp), true);
  // An HTTP server asked for TLS.
  await using plain = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () => new Response("hi"),
  );
  const plainOverTls = await fetchError(`https://127.0.0.1:${plain.addr.port}/`);
  assert.match(explainError(plainOverTls), /^what answered does not speak TLS/);
});

Deno.test("a peer that accepts and hangs up is a connection closed before any answer, not permanent", async () => {
  await using hangUp = tcpServer((conn) => Promise.resolve(conn.close()));
  for (const scheme of ["https", "http"]) {
    const error = await fetchError(`${scheme}://127.0.0.1:${hangUp.port}/`);
    const inner = (error as Error).cause instanceof Error
      ? ((error as Error).cause as Error).message
      : String(error);
    assert.equal(closedBeforeAnswer(inner), true, `${scheme}: ${inner}`);
    assert.equal(isPermanentNetworkError(error), false, scheme);
    assert.equal(
      explainError(error),
      "the server closed the connection before it answered",
      scheme,
    );
  }
});
