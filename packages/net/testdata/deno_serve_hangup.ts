// deno-lint-ignore-file no-console -- a reproduction: its report is for the terminal
/**
 * Minimal reproduction of why packages/net/http1.ts exists: on Deno 2.9.6, `Deno.serve`
 * does not notice a client that hangs up (or half-closes) while its handler is still
 * working, once the request was larger than the server's first read of 512 bytes.
 *
 *   deno run --allow-net packages/net/testdata/deno_serve_hangup.ts
 *
 * Each line: how the client left, the body's framing and size, and whether the handler's
 * `request.signal` aborted within 1.5 s. Measured: "aborted" up to a body of 440 bytes,
 * "not noticed" from 460 bytes on (request head ~60 bytes), for both framings and both
 * ways of leaving. In Deno's source (ext/http/http_next.rs, `wait_raw_response_ready`) the
 * peer is polled only when the body was pre-buffered with the head.
 */
const sizes = [0, 400, 440, 460, 1_000, 65_000];
let report: (result: string) => void = () => {};
const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
  await request.bytes();
  const result = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve("not noticed"), 1_500);
    request.signal.addEventListener("abort", () => (clearTimeout(timer), resolve("aborted")));
  });
  report(result);
  return new Response("late");
});
for (const leave of ["close", "half-close"]) {
  for (const chunked of [false, true]) {
    for (const size of sizes) {
      const result = new Promise<string>((resolve) => (report = resolve));
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      const body = "x".repeat(size);
      const request = chunked
        ? "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
          (size ? `${size.toString(16)}\r\n${body}\r\n` : "") + "0\r\n\r\n"
        : `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\n\r\n${body}`;
      const bytes = new TextEncoder().encode(request);
      for (let sent = 0; sent < bytes.length;) sent += await conn.write(bytes.subarray(sent));
      await new Promise((resolve) => setTimeout(resolve, 100));
      if (leave === "close") conn.close();
      else await conn.closeWrite();
      console.log(leave, chunked ? "chunked" : "length ", String(size).padStart(6), await result);
      if (leave === "half-close") conn.close();
    }
  }
}
await server.shutdown();
