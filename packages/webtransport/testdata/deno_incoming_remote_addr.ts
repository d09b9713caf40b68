// A Deno bug, kept as a minimal reproduction (Deno 2.9.6): reading `remoteAddr` of a
// Deno.QuicIncoming drops it, and accept() then fails with "BadResource: Invalid
// QuicIncoming resource"; the client sees "the server refused to accept a new connection".
// So a server cannot refuse connections by address before the handshake; server.ts counts
// them after it. Run: deno run -A --config deno.json packages/webtransport/testdata/deno_incoming_remote_addr.ts
// Prints "without remoteAddr: accepted" then "with remoteAddr: BadResource: ...".
import { generateCertificate } from "../cert.ts";

const certificate = await generateCertificate();
for (const readAddress of [false, true]) {
  const endpoint = new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 });
  const listener = endpoint.listen({
    cert: certificate.certPem,
    key: certificate.keyPem,
    alpnProtocols: ["h3"],
  });
  const outcome = (async () => {
    for await (const incoming of listener) {
      if (readAddress) void incoming.remoteAddr.hostname;
      return await Promise.resolve(incoming.accept()).then(() => "accepted", (e) => String(e));
    }
    return "no connection came";
  })();
  const client = Deno.connectQuic({
    hostname: "127.0.0.1",
    port: endpoint.addr.port,
    alpnProtocols: ["h3"],
    serverCertificateHashes: [{ algorithm: "sha-256", value: certificate.sha256 }],
  } as Deno.ConnectQuicOptions<false>).catch(() => undefined);
  // deno-lint-ignore no-console -- a reproduction: its output is the point
  console.log(`${readAddress ? "with" : "without"} remoteAddr: ${await outcome}`);
  (await client)?.close();
  endpoint.close();
}
