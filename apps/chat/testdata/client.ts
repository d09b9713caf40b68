/**
 * A bare protocol client for the server tests: real TCP, frames in and out, and waiting
 * for the next frame of a given type. Its only crypto is claiming its name: the key offer
 * that proves its key over the welcome's challenge.
 */
import { secp256k1 } from "@noble/curves/secp256k1.js";
import { claimFor, type ClaimWire } from "../crypto.ts";
import {
  type ClientMessage,
  encodeFrame,
  FrameDecoder,
  parseServerMessage,
  PROTOCOL_VERSION,
  type ServerMessage,
} from "../protocol.ts";

/** How {@link TestClient.join} claims its name. */
export interface JoinOptions {
  /** The key to claim with; a fresh one by default. */
  secret?: Uint8Array;
  /** false: send no key offer (the connection stays outside, its frames wait). */
  claim?: boolean;
  /** A key change to claim with (signed by the previous key, or a reset). */
  change?: { previousSecret?: Uint8Array; reset?: boolean };
}

export class TestClient {
  readonly received: ServerMessage[] = [];
  /** The key this client claimed its name with, and the offer it sent (after join). */
  secret: Uint8Array = secp256k1.utils.randomSecretKey();
  offer: ClaimWire | undefined;
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

  /**
   * Connects, says hello and, once welcomed, claims its name with a key offer proved over
   * the challenge (unless `options.claim` is false); resolves with the welcome (or the
   * error). Whether the claim was accepted shows in what follows (an error, or answers).
   */
  static async join(
    port: number,
    name: string,
    room: string,
    options: JoinOptions = {},
  ): Promise<[TestClient, ServerMessage]> {
    const client = await TestClient.connect(port);
    if (options.secret) client.secret = options.secret;
    await client.send({ type: "hello", version: PROTOCOL_VERSION, name, room });
    const first = await client.next((m) => m.type === "welcome" || m.type === "error");
    if (first.type === "welcome" && options.claim !== false) {
      client.offer = claimFor(
        client.secret,
        { room, name, party: first.party, challenge: first.challenge },
        options.change,
      );
      await client.send({ type: "key_offer", ...client.offer });
    }
    return [client, first];
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
    nonce: new Uint8Array(12).fill(fill).toBase64(),
    ciphertext: new Uint8Array(32).fill(fill).toBase64(),
  };
}
export { type ChatRelay, type RelayedConnection, type RelayHooks, startRelay, substitutingRelay } from "./relay.ts";
