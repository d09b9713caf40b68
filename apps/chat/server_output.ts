/**
 * One chat connection's way out: frames written to its socket with the bytes unwritten
 * counted, the watermark past which its frames are read no further, the budget past which
 * it is cut off, and its close. Also {@link Changes}, what the connection's loops wait on.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { encodeFrame, type ServerMessage } from "./protocol.ts";
import { admitOutput, mayRead, type OutputLimits } from "./limits.ts";

const log = getLogger(["duet", "chat"]);

/** How long a closing connection's last frames may take to be written. */
const CLOSE_GRACE_MS = 5_000;

/** Counters of the whole server that its connections add to. */
export interface ServerCounters {
  /** Connections refused with `too_many_connections`. */
  refusedConnections: number;
  /** Connections closed because their unwritten output went over the budget. */
  cutOffConnections: number;
  /** Bytes handed to sockets and not yet written, all connections together. */
  unwrittenBytes: number;
}

/**
 * Who waits for a connection to change: its output to fall to the watermark, a history
 * read to end, input to arrive or end, the close. Each re-checks what it waits for.
 */
export class Changes {
  #waiters: (() => void)[] = [];

  /** Wakes every waiter. */
  notify(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Resolves at the next {@link Changes.notify}, or after `ms` when given. */
  changed(ms?: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = ms === undefined ? undefined : setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== wake);
        resolve();
      }, ms);
      this.#waiters.push(wake);
    });
  }
}

/** What a {@link ConnectionOutput} writes to and tells. */
export interface OutputOptions {
  conn: Deno.TcpConn;
  /** The client's address, for the log. */
  address: string;
  limits: OutputLimits;
  counters: ServerCounters;
  changes: Changes;
  /** Called once, when the connection closes (either way). */
  onClose: () => void;
}

/** A connection's socket, written through its writer, until it is closed. */
export class ConnectionOutput {
  readonly #options: OutputOptions;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  #closed = false;
  /** Bytes handed to the socket's writer and not yet written by it. */
  #unwritten = 0;

  constructor(options: OutputOptions) {
    this.#options = options;
    this.#writer = options.conn.writable.getWriter();
  }

  /** True once closed (gracefully or cut off): nothing more is written. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Whether the client reads what it is sent: its unwritten output is at most the watermark. */
  get mayRead(): boolean {
    return mayRead(this.#unwritten, this.#options.limits);
  }

  /** Resolves once the output is at most the watermark, or the connection is closed. */
  async drained(): Promise<void> {
    while (!this.#closed && !this.mayRead) await this.#options.changes.changed();
  }

  /**
   * Queued frames (a last error or bye) go out before the socket closes; a client that
   * does not read them gets {@link CLOSE_GRACE_MS}, not a socket held open for ever.
   */
  close(): void {
    if (this.#closed) return;
    this.#markClosed();
    const { conn } = this.#options;
    const hangUp = () => {
      clearTimeout(deadline);
      try {
        conn.close();
      } catch { /* closed */ }
    };
    const deadline = setTimeout(hangUp, CLOSE_GRACE_MS);
    this.#writer.close().catch(() => {}).finally(hangUp);
  }

  /** Writes one message, unless closed; a client over its budget is cut off instead. */
  write(message: ServerMessage): void {
    if (this.#closed) return;
    let frame: Uint8Array;
    try {
      frame = encodeFrame(message);
    } catch (error) {
      // Replies fit a frame by construction (server_core.ts); this is a bug.
      log.error("A reply could not be encoded: {error}", { error: String(error) });
      frame = encodeFrame({
        type: "error",
        code: "internal",
        message: "the server failed; reconnect",
        retryable: true,
      });
      this.#writer.write(frame).catch(() => {});
      this.close();
      return;
    }
    // A client that does not read what it is sent is cut off, not buffered for: above
    // the watermark its frames are not read (it cannot ask for more), and what it is sent
    // regardless (pushes, answers in flight) may not go over the budget.
    if (admitOutput(this.#unwritten, frame.length, this.#options.limits) === "cut_off") {
      this.#cutOff(frame.length);
      return;
    }
    this.#send(frame);
  }

  #send(frame: Uint8Array): void {
    const { counters, changes } = this.#options;
    this.#unwritten += frame.length;
    counters.unwrittenBytes += frame.length;
    const settled = () => {
      this.#unwritten -= frame.length;
      counters.unwrittenBytes -= frame.length;
    };
    this.#writer.write(frame).then(() => {
      settled();
      if (this.mayRead) changes.notify();
    }, () => {
      settled();
      this.close();
    });
  }

  /** Closes at once, dropping what is queued: `bytes` more would go over the budget. */
  #cutOff(bytes: number): void {
    const { conn, address, counters } = this.#options;
    counters.cutOffConnections++;
    log.warn(
      "Closed a connection from {address} that does not read what it is sent " +
        "({bytes} bytes unwritten)",
      { address, bytes: this.#unwritten + bytes },
    );
    this.#markClosed();
    try {
      conn.close();
    } catch { /* closed */ }
  }

  #markClosed(): void {
    this.#closed = true;
    this.#options.changes.notify();
    this.#options.onClose();
  }
}
