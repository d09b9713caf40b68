/**
 * One chat connection's way in: its socket is read apart from the handling of its frames, a
 * bounded distance ahead ({@link READ_AHEAD_BYTES}), so that the client's end of the
 * connection is seen while its frames are held back (paced, over the output watermark,
 * behind history reads, not yet proved). Measured before: a server paced to read nothing
 * for ~100 s kept the slot of a client that closed, half-closed or reset for those ~100 s
 * (server_leave_test.ts).
 *
 * @module
 */
import { FrameDecoder, type ProtocolError } from "./protocol.ts";
import type { Changes } from "./server_output.ts";

/**
 * Bytes of a connection's frames read ahead of their handling, past which its socket is read
 * no further until they are handled.
 */
export const READ_AHEAD_BYTES = 64 * 1024;
/** The read buffer of a quiet connection (a large one is taken while reads come back full). */
const IDLE_READ_BYTES = 2_048;

/** A frame read: its payload, or why the bytes broke the framing rules. */
export type InboxItem = { payload: unknown } | { error: ProtocolError };

/** The frames of one read, and the bytes they came in. */
export interface InboxBatch {
  items: InboxItem[];
  bytes: number;
}

/**
 * How the client's side of the connection is: "open"; "ended" (a FIN: it closed, or only
 * shut down its sending side and may still read); "reset" (it is gone).
 */
export type PeerInput = "open" | "ended" | "reset";

/** The frames read and not yet handled, and the reader that fills them. */
export class Inbox {
  /** The client's side of the connection, as last read. */
  input: PeerInput = "open";
  readonly #conn: Deno.TcpConn;
  readonly #changes: Changes;
  readonly #closed: () => boolean;
  readonly #onFrames: () => void;
  readonly #batches: InboxBatch[] = [];
  #bytes = 0;

  /**
   * @param closed Whether the connection is closed: reading stops then.
   * @param onFrames Called when a read completed at least one whole frame (activity).
   */
  constructor(
    conn: Deno.TcpConn,
    changes: Changes,
    closed: () => boolean,
    onFrames: () => void,
  ) {
    this.#conn = conn;
    this.#changes = changes;
    this.#closed = closed;
    this.#onFrames = onFrames;
  }

  /** The oldest batch not yet handled, if any (its items are taken off as handled). */
  get first(): InboxBatch | undefined {
    return this.#batches[0];
  }

  /** Drops the oldest batch, handled or given up: its bytes may be read ahead again. */
  shift(): void {
    const batch = this.#batches.shift();
    if (batch) this.#bytes -= batch.bytes;
    this.#changes.notify();
  }

  /**
   * Reads the socket until it ends or breaks, or the connection closes. `conn.read`, not
   * `conn.readable`: measured on Deno 2.9.6, the readable stream closes the whole socket when
   * it reads the end of input, and a half-closed client could not be sent its answers
   * (writes fail with BadResource).
   */
  async pump(): Promise<void> {
    const frames = new FrameDecoder();
    // A pending read holds its buffer for as long as the client is quiet, which for a chat
    // connection is most of its life: a small one then, a large one (taken for one read
    // at a time) while reads come back full. The decoder copies what it keeps.
    const small = new Uint8Array(IDLE_READ_BYTES);
    let buffer = small;
    while (!this.#closed()) {
      if (this.#bytes >= READ_AHEAD_BYTES) {
        await this.#changes.changed();
        continue;
      }
      let read: number | null;
      try {
        read = await this.#conn.read(buffer);
      } catch {
        this.input = "reset";
        break;
      }
      if (read === null) {
        this.input = "ended";
        break;
      }
      const chunk = buffer.subarray(0, read);
      buffer = read === buffer.length ? new Uint8Array(READ_AHEAD_BYTES) : small;
      let payloads: unknown[];
      try {
        payloads = frames.push(chunk);
      } catch (error) {
        // Handled in its turn; nothing after a broken frame is read.
        this.#batches.push({ items: [{ error: error as ProtocolError }], bytes: 0 });
        break;
      }
      // Only whole frames count as activity: a byte now and then does not hold a
      // connection open.
      if (!payloads.length) continue;
      this.#onFrames();
      this.#batches.push({ items: payloads.map((payload) => ({ payload })), bytes: read });
      this.#bytes += read;
      this.#changes.notify();
    }
    this.#changes.notify();
  }
}
