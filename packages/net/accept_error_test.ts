// Which accept failures are one connection's, and the real one a reset before accept gives.
import assert from "node:assert/strict";
import { resetConnections } from "@duet/testkit";
import { isConnectionAcceptError } from "./accept_error.ts";

Deno.test("isConnectionAcceptError: one connection's failures, not the listener's", () => {
  const withCode = (error: Error, code: string) => Object.assign(error, { code });
  assert.equal(isConnectionAcceptError(new Deno.errors.NotConnected("x")), true);
  assert.equal(isConnectionAcceptError(new Deno.errors.ConnectionAborted("x")), true);
  assert.equal(isConnectionAcceptError(withCode(new Error("x"), "EPROTO")), true);
  // Out of descriptors or memory: the listener's (an outage).
  assert.equal(
    isConnectionAcceptError(withCode(new Error("Too many open files"), "EMFILE")),
    false,
  );
  assert.equal(isConnectionAcceptError(withCode(new Error("x"), "ENFILE")), false);
  assert.equal(isConnectionAcceptError(withCode(new Error("x"), "ENOBUFS")), false);
  assert.equal(isConnectionAcceptError(new Error("anything else")), false);
  assert.equal(isConnectionAcceptError(undefined), false);
  assert.equal(isConnectionAcceptError("ENOTCONN"), false);
});

Deno.test("isConnectionAcceptError: what accept throws for clients that reset before being accepted", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    // 20 clients that reset at once, queued before anything is accepted.
    await resetConnections(listener.addr.port, 20);
    // Then one well-behaved client: everything before it is one of the 20.
    const good = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
    const errors: unknown[] = [];
    for (let i = 0; i < 21; i++) {
      try {
        const conn = await listener.accept();
        const peer = conn.remoteAddr as Deno.NetAddr;
        conn.close();
        if (peer.port === (good.localAddr as Deno.NetAddr).port) break;
      } catch (error) {
        errors.push(error);
      }
    }
    good.close();
    assert.ok(errors.length > 0, "resets reached accept as errors");
    for (const error of errors) assert.equal(isConnectionAcceptError(error), true, String(error));
  } finally {
    listener.close();
  }
});
