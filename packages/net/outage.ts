/**
 * The story of an accept outage, told once, for every accept loop in duet
 * (packages/net/serve.ts, packages/net/http1.ts, apps/chat/server_accept.ts): the first failure of
 * an outage is logged at error level, later ones at debug, its end once at info level with
 * how long it lasted and how many failures it saw; the wait before each new attempt comes
 * from backoff.ts. Listening again on a port another process has taken meanwhile (it can
 * bind the port while ours is closed) is logged at error level, once per outage, since it
 * will not pass by itself.
 *
 * @module
 */

/**
 * Where the lines go: the three levels of a LogTape `Logger` this module writes at, each
 * with a message template and its properties (`getLogger(...)` from @logtape/logtape fits).
 * Declared here rather than as LogTape's `Logger`, which `deno doc` on Deno 2.9.6 cannot
 * document from another package (denoland/deno#27364), and so a test can pass a recorder.
 */
export interface OutageLog {
  /** An outage starts, or the port is taken. */
  error(message: string, properties: Record<string, unknown>): void;
  /** An outage ends. */
  info(message: string, properties: Record<string, unknown>): void;
  /** Failures within an outage. */
  debug(message: string, properties: Record<string, unknown>): void;
}
import { acceptBackoffMs } from "./backoff.ts";

/** Options of {@link AcceptOutage}. */
export interface AcceptOutageOptions {
  /** Where the lines go. */
  log: OutageLog;
  /** The port accepted on, for the lines (read when a line is written). */
  port: () => number;
  /** What the loop does while out, ending the first line; the listeners' wording by default. */
  meanwhile?: string;
  /** The clock, in ms (`Date.now` by default). */
  now?: () => number;
}

/** Tracks accept outages; see the module documentation. */
export class AcceptOutage {
  readonly #log: OutageLog;
  readonly #port: () => number;
  readonly #meanwhile: string;
  readonly #now: () => number;
  #current: { since: number; failures: number; attempts: number; portTaken: boolean } | undefined;
  #total = 0;

  /**
   * Starts with no outage.
   *
   * @param options Where the lines go, the port, the wording, the clock.
   *
   * @example
   * ```ts
   * import { getLogger } from "@logtape/logtape";
   * import { AcceptOutage } from "./outage.ts";
   * const outage = new AcceptOutage({ log: getLogger(["duet", "net"]), port: () => 8080 });
   * outage.failed("EMFILE"); // one error line
   * const waitMs = outage.nextAttemptMs(); // 5, then 10, 20, ... up to 1,000
   * outage.recovered(); // one info line
   * ```
   */
  constructor(options: AcceptOutageOptions) {
    this.#log = options.log;
    this.#port = options.port;
    this.#meanwhile = options.meanwhile ??
      "serving the connections held, listening again when it can";
    this.#now = options.now ?? Date.now;
  }

  /** True from a failure until {@link AcceptOutage.recovered}. */
  get active(): boolean {
    return this.#current !== undefined;
  }

  /** Accept failures since the start, every outage included. */
  get failures(): number {
    return this.#total;
  }

  /** An accept failure (`reason`: the error's code or message). */
  failed(reason: string): void {
    this.#total++;
    if (this.#current) {
      this.#current.failures++;
      this.#log.debug("Accepting failed again: {reason}", { reason });
      return;
    }
    this.#current = { since: this.#now(), failures: 1, attempts: 0, portTaken: false };
    this.#log.error("Stopped accepting connections on port {port}: {reason}; {meanwhile}", {
      port: this.#port(),
      reason,
      meanwhile: this.#meanwhile,
    });
  }

  /** Milliseconds to wait before the next attempt of this outage (5 ms doubling to 1 s). */
  nextAttemptMs(): number {
    return acceptBackoffMs(this.#current ? ++this.#current.attempts : 1);
  }

  /**
   * Listening again failed. Counted as one more failure; a port in use (another process
   * bound it while ours was closed) is an error line once per outage, the rest debug.
   */
  relistenFailed(error: unknown): void {
    const code = (error as { code?: string }).code;
    const taken = code === "EADDRINUSE" || error instanceof Deno.errors.AddrInUse;
    const starts = !this.#current;
    if (starts) this.failed(code ?? String(error));
    else {
      this.#total++;
      this.#current!.failures++;
    }
    const current = this.#current!;
    if (taken && !current.portTaken) {
      current.portTaken = true;
      this.#log.error(
        "Cannot listen again on port {port}: another process has taken it; this server " +
          "accepts nothing new until the port is free",
        { port: this.#port() },
      );
    } else if (!starts) {
      this.#log.debug("Listening again failed: {error}", { error: String(error) });
    }
  }

  /** Accepting works again: ends the outage with one info line (nothing if none). */
  recovered(): void {
    const current = this.#current;
    if (!current) return;
    this.#current = undefined;
    this.#log.info(
      "Accepting connections again on port {port}, after {seconds} s and {failures} accept " +
        "failures",
      {
        port: this.#port(),
        seconds: Math.round((this.#now() - current.since) / 100) / 10,
        failures: current.failures,
      },
    );
  }
}
