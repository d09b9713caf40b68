/**
 * A bare protocol client for the server tests: real TCP, frames in and out, and waiting
 * for the next frame of a given type. It does no crypto of its own.
 */
import {
  type ClientMessage,
  encodeFrame,
  FrameDecoder,
  parseServerMessage,
  type ServerMessage,
} from "../protocol.ts";

export class TestClient {
  readonly received: ServerMessage[] = [];
  readonly closed: Promise<void>;
  #conn: Deno.TcpConn;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #waiters: (() => void)[] = [];

  private constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    this.#writer = conn.writable.getWriter();
    const frames = new FrameDecoder();
    this.closed = (async () => {
      try {
        for await (const chunk of conn.readable) {
          for (const payload of frames.push(chunk)) this.received.push(parseServerMessage(payload));
          this.#wake();
        }
      } catch {
        // reset: closed either way
      }
      this.#wake();
    })();
  }

  static async connect(port: number): Promise<TestClient> {
    return new TestClient(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Connects and says hello; resolves with the welcome (or the error). */
  static async join(port: number, name: string, room: string): Promise<[TestClient, ServerMessage]> {
    const client = await TestClient.connect(port);
    await client.send({ type: "hello", version: 2, name, room });
    return [client, await client.next((m) => m.type === "welcome" || m.type === "error")];
  }

  async send(message: ClientMessage): Promise<void> {
    await this.#writer.write(encodeFrame(message));
  }

  async sendRaw(bytes: Uint8Array): Promise<void> {
    await this.#writer.write(bytes);
  }

  #wake() {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  /**
   * The first received frame matching `match` not taken before (it is removed), waiting up
   * to `timeoutMs`.
   */
  async next(match: (m: ServerMessage) => boolean, timeoutMs = 5000): Promise<ServerMessage> {
    const deadline = Date.now() + timeoutMs;
    let ended = false;
    this.closed.then(() => (ended = true));
    for (;;) {
      const index = this.received.findIndex(match);
      if (index >= 0) return this.received.splice(index, 1)[0]!;
      if (ended) throw new Error(`connection closed; got ${JSON.stringify(this.received)}`);
      if (Date.now() > deadline) throw new Error(`timed out; got ${JSON.stringify(this.received)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Frames of one type received so far (not removed). */
  all<T extends ServerMessage["type"]>(type: T): Extract<ServerMessage, { type: T }>[] {
    return this.received.filter((m) => m.type === type) as Extract<ServerMessage, { type: T }>[];
  }

  close(): void {
    try {
      this.#conn.close();
    } catch { /* closed */ }
  }
}

/** A send frame with a 32-byte stand-in ciphertext (the server never looks inside). */
export function sendFrame(clientMsgId: string, seq: number, fill = 1): ClientMessage {
  return {
    type: "send",
    client_msg_id: clientMsgId,
    seq,
    nonce: btoa(String.fromCharCode(...new Uint8Array(12).fill(fill))),
    ciphertext: btoa(String.fromCharCode(...new Uint8Array(32).fill(fill))),
  };
}
