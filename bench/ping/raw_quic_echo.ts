/**
 * The floor under the ping benchmark: a bare QUIC echo on Deno's QUIC API (no HTTP/3, no
 * WebTransport, no line protocol), run as its own process like the ping server. Prints
 * `PORT HASH` when it listens, then echoes until it is killed. bench/ping/run.ts starts it.
 *
 *   deno run -A bench/ping/raw_quic_echo.ts
 *
 * @module
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import { generateCertificate } from "@duet/webtransport";
import { scriptOptions } from "../../tools/_options.ts";

scriptOptions(import.meta.url, {}); // --help; no options
const certificate = await generateCertificate();
const endpoint = new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 });
const listener = endpoint.listen({
  cert: certificate.certPem,
  key: certificate.keyPem,
  alpnProtocols: ["h3"],
});
const hex = bytesToHex(certificate.sha256);
await Deno.stdout.write(new TextEncoder().encode(`${endpoint.addr.port} ${hex}\n`));
for await (const incoming of listener) {
  (async () => {
    const conn = await incoming.accept();
    for await (const stream of conn.incomingBidirectionalStreams) {
      (async () => {
        const writer = stream.writable.getWriter();
        for await (const chunk of stream.readable) await writer.write(chunk);
        await writer.close();
      })().catch(() => {});
    }
  })().catch(() => {});
}
