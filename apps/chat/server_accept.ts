/**
 * The chat server's accept loop: takes connections off the listener and hands each to be
 * served. Accept errors (out of file descriptors, say) neither end the loop nor the process:
 * the open connections are served, new ones refused (or left queued), and accepting is tried
 * again after 5 ms, doubling to 1 s while it keeps failing. Logged once per outage.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { AcceptOutage } from "@duet/net/outage";
import { isConnectionAcceptError } from "@duet/net/accept-error";
import { encodeFrame, errorMessage } from "./protocol.ts";

const log = getLogger(["duet", "chat"]);

/** How long a refusal sent while out of file descriptors may take to be written. */
const SHED_WRITE_MS = 100;

/** What the accept loop works with. */
export interface AcceptLoopOptions {
  listener: Deno.TcpListener;
  /** True once the server is stopping: the loop ends at its next turn. */
  stopping: () => boolean;
  /** Serves one accepted connection (not awaited). */
  serve: (conn: Deno.TcpConn) => void;
  /** Called for each connection refused for want of file descriptors. */
  refused: () => void;
}

/** The loop, running from its construction until the listener is closed while stopping. */
export class AcceptLoop {
  /** The outage in progress, if any, and the failures so far. */
  readonly outage: AcceptOutage;
  /** Settles when the loop ends: resolves once stopping, rejects on a failure of its own. */
  readonly serving: Promise<void>;
  readonly #options: AcceptLoopOptions;
  /**
   * A descriptor held back for refusing connections while accepting fails for want of
   * descriptors: it is closed to accept one, which is told `too_many_connections` and
   * closed (unless the reserve can be opened again: then there are descriptors, and the
   * connection is served). Without it, queued connections would wait unanswered.
   */
  #reserve: Deno.FsFile | undefined;

  constructor(options: AcceptLoopOptions) {
    this.#options = options;
    const { listener } = options;
    this.outage = new AcceptOutage({
      log,
      port: () => (listener.addr as Deno.NetAddr).port,
      meanwhile: "new ones are refused while the open ones are served, and accepting is retried",
    });
    this.#reserve = openReserve();
    this.serving = this.#loop();
  }

  /** Gives the reserve descriptor back; for after {@link AcceptLoop.serving} has settled. */
  releaseReserve(): void {
    this.#reserve?.close();
    this.#reserve = undefined;
  }

  async #loop(): Promise<void> {
    const { listener, stopping, serve } = this.#options;
    while (!stopping()) {
      let conn: Deno.TcpConn | undefined;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (stopping()) break;
        // One client's connection failed before it was taken: accept the next.
        if (isConnectionAcceptError(error)) continue;
        this.outage.failed(String(error));
        if (outOfDescriptors(error) && this.#reserve) conn = await this.#shed();
        if (!conn) {
          await new Promise((resolve) => setTimeout(resolve, this.outage.nextAttemptMs()));
          continue;
        }
      }
      this.outage.recovered();
      this.#reserve ??= openReserve();
      serve(conn);
    }
  }

  /**
   * Accepts one queued connection with the reserve descriptor (see {@link #reserve}).
   * Resolves with the connection if descriptors are free again (it is to be served), else
   * undefined (it was refused, or none could be accepted).
   */
  async #shed(): Promise<Deno.TcpConn | undefined> {
    this.releaseReserve();
    let conn: Deno.TcpConn;
    try {
      conn = await this.#options.listener.accept();
    } catch {
      this.#reserve = openReserve();
      return undefined;
    }
    this.#reserve = openReserve();
    if (this.#reserve) return conn;
    this.#options.refused();
    await refuseRaw(conn, "the server is out of file descriptors; try again shortly");
    this.#reserve = openReserve();
    return undefined;
  }
}

/** Whether an accept failed for want of file descriptors (EMFILE, ENFILE). */
function outOfDescriptors(error: unknown): boolean {
  return /too many open files|os error 2[34]\b/i.test(String(error));
}

/**
 * Opens the descriptor held back for refusing connections while out of descriptors
 * (`/dev/null`, read); undefined when it cannot be (no read permission: it is not asked
 * for; not a Unix; no descriptor left).
 */
function openReserve(): Deno.FsFile | undefined {
  if (Deno.build.os === "windows") return undefined;
  try {
    if (Deno.permissions.querySync({ name: "read", path: "/dev/null" }).state !== "granted") {
      return undefined;
    }
    return Deno.openSync("/dev/null");
  } catch {
    return undefined;
  }
}

/**
 * Tells a connection `too_many_connections` (`detail` says why) and closes it, giving the
 * frame {@link SHED_WRITE_MS} to be written.
 */
async function refuseRaw(conn: Deno.TcpConn, detail: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const frame = encodeFrame(errorMessage("too_many_connections", detail));
    await Promise.race([
      conn.write(frame),
      new Promise((resolve) => (timer = setTimeout(resolve, SHED_WRITE_MS))),
    ]);
  } catch {
    // gone already
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed */ }
  }
}
