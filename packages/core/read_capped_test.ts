// Bodies read from real HTTP answers on loopback: within the limit, past it with and without
// a Content-Length, and a multi-byte character split across chunks.
import assert from "node:assert/strict";
import { BodyTooLargeError, readTextCapped } from "./read_capped.ts";

async function withServer(
  handler: () => Response,
  test: (url: string) => Promise<void>,
): Promise<void> {
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, handler);
  await test(`http://127.0.0.1:${server.addr.port}/`);
}

/** A body of `chunks` streamed (no Content-Length). */
function streamed(chunks: Uint8Array[]): Response {
  return new Response(
    new ReadableStream({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(chunk);
        controller.close();
      },
    }),
  );
}

Deno.test("readTextCapped: a body within the limit is read whole, a character split across chunks intact", async () => {
  const euro = new TextEncoder().encode("€"); // 3 bytes
  await withServer(
    () => streamed([euro.subarray(0, 1), euro.subarray(1), new Uint8Array([0x21])]),
    async (url) => {
      assert.equal(await readTextCapped(await fetch(url), 4), "€!");
    },
  );
  await withServer(() => new Response(null, { status: 204 }), async (url) => {
    assert.equal(await readTextCapped(await fetch(url), 0), "");
  });
});

Deno.test("readTextCapped: past the limit is refused, by Content-Length or by counting", async () => {
  await withServer(() => new Response("x".repeat(1001)), async (url) => {
    await assert.rejects(readTextCapped(await fetch(url), 1000), BodyTooLargeError);
  });
  // No Content-Length: an endless body is cut off once the limit is passed.
  let sent = 0;
  await withServer(
    () =>
      new Response(
        new ReadableStream({
          pull(controller) {
            sent += 1024;
            controller.enqueue(new Uint8Array(1024));
          },
        }),
      ),
    async (url) => {
      await assert.rejects(
        readTextCapped(await fetch(url), 10_000),
        (error: unknown) => error instanceof BodyTooLargeError && error.maxBytes === 10_000,
      );
    },
  );
  // The body never ends: that the read ended at all is the cut-off. The server's stream is
  // pulled ahead of the reader by its buffers, never without bound.
  assert.ok(sent < 64 * 1024 * 1024, `stopped: ${sent} bytes pulled`);
});
