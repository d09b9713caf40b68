/**
 * `Deno.serve` that survives running out of file descriptors.
 *
 * Measured on Deno 2.9.6: when `accept()` fails (EMFILE, "Too many open files"),
 * `Deno.serve` stops listening for good and its `finished` promise rejects; left alone, the
 * rejection ends the process. Connections it already holds keep being served. This module
 * watches `finished` and listens again on the same port, after a pause that doubles from
 * 5 ms to 1 s while listening keeps failing, so that new connections are refused while
 * the old ones are served, and the server comes back by itself once descriptors are free.
 * One outage is logged once (error when it starts, info when it is over), not per attempt.
 * No library does this for `Deno.serve` (node:http on Deno stops accepting silently under
 * the same fault), hence the hand-written supervisor.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { setLongTimeout } from "@duet/core/long-timeout";
import { durationOption } from "./_duration.ts";
import { AcceptOutage } from "./outage.ts";

/** Options of {@link serveResilient}: those of `Deno.serve` over TCP, and one of its own. */
export type ResilientServeOptions =
  & Omit<Deno.ServeTcpOptions, "onListen" | "signal">
  & Partial<Deno.TlsCertifiedKeyPem>
  & {
    /**
     * An outage (which starts at an accept failure) ends once listening has lasted this many
     * milliseconds without another failure; {@link RECOVERED_AFTER_MS} by default. Any
     * finite number ≥ 0, also past `setTimeout`'s 2^31 − 1 ms (about 24.8 days).
     */
    recoveredAfterMs?: number;
  };

/** A server started by {@link serveResilient}. */
export interface ResilientServer {
  /** Where it listens (the port chosen at the first start, kept across restarts). */
  readonly addr: Deno.NetAddr;
  /** False while it is not listening (after an accept failure, until it listens again). */
  readonly listening: boolean;
  /**
   * True from an accept failure until listening has lasted `recoveredAfterMs` without
   * another one: new connections are (or may be, as the next accept fails again) refused.
   * What a readiness probe should report.
   */
  readonly outage: boolean;
  /** Accept failures (each stops a listener) and failed attempts to listen again. */
  readonly acceptFailures: number;
  /** Stops listening, waits for in-flight responses (of every listener it ran) to end. */
  shutdown(): Promise<void>;
}

const log = getLogger(["duet", "net"]);

/** Default of {@link ResilientServeOptions.recoveredAfterMs}: 5,000 ms. */
export const RECOVERED_AFTER_MS = 5_000;

/**
 * Starts `Deno.serve` and keeps it listening: resolves once it listens.
 *
 * An outage (accepting fails, usually EMFILE) is logged once at error level when it starts
 * and once at info level when it is over; the attempts in between are logged at debug.
 *
 * @param options `Deno.serve`'s TCP options (hostname, port, cert/key, onError), and
 *   `recoveredAfterMs`.
 * @param handler The request handler.
 * @returns The running server, once it listens.
 * @throws {RangeError} (as a rejection) when `recoveredAfterMs` is not a finite number ≥ 0.
 * @throws what `Deno.serve` throws at the first start (address in use, permission).
 *
 * @example
 * ```ts ignore
 * import { serveResilient } from "@duet/net/serve";
 * const server = await serveResilient({ hostname: "127.0.0.1", port: 0 }, () => new Response("hi"));
 * console.log(`listening on ${server.addr.port}; outage: ${server.outage}`);
 * await server.shutdown();
 * ```
 */
export async function serveResilient(
  options: ResilientServeOptions,
  handler: Deno.ServeHandler<Deno.NetAddr>,
): Promise<ResilientServer> {
  const { recoveredAfterMs: givenRecoveredAfterMs, ...serveOptions } = options;
  const recoveredAfterMs = durationOption(
    "recoveredAfterMs",
    givenRecoveredAfterMs,
    RECOVERED_AFTER_MS,
  );
  // Listeners that failed stay here: they still serve the connections they hold, and
  // shutdown() waits for those.
  const servers = new Set<Deno.HttpServer<Deno.NetAddr>>();
  let stopped = false;
  let listening = false;
  // Port 0 picks a free port at the first start; restarts must reuse that one.
  let port = options.port ?? 0;
  // Attempts to listen again in one outage each wait backoff.ts's time (a listener that
  // starts and fails again at the next accept counts as one).
  const outage = new AcceptOutage({ log, port: () => port });
  /** Cancels the pending end of the outage (a no-op when none is pending). */
  let cancelRecovery = () => {};
  let wake: (() => void) | undefined;

  const start = (): Promise<Deno.NetAddr> => {
    const ready = Promise.withResolvers<Deno.NetAddr>();
    const onListen = (addr: Deno.NetAddr) => {
      port = addr.port;
      ready.resolve(addr);
    };
    const server = Deno.serve({ ...serveOptions, port, onListen }, handler);
    servers.add(server);
    listening = true;
    if (outage.active) {
      cancelRecovery = setLongTimeout(() => stopped || outage.recovered(), recoveredAfterMs);
    }
    server.finished.then(() => servers.delete(server), (error) => failed(error));
    return ready.promise;
  };

  const failed = (error: unknown) => {
    listening = false;
    if (stopped) return;
    cancelRecovery();
    outage.failed(String(error));
    supervise();
  };

  const supervise = async () => {
    while (!stopped) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, outage.nextAttemptMs());
        wake = () => (clearTimeout(timer), resolve());
      });
      if (stopped) return;
      try {
        await start();
        log.debug("Listening again on port {port}", { port });
        return;
      } catch (error) {
        outage.relistenFailed(error);
      }
    }
  };

  const addr = await start();
  return {
    addr,
    get listening() {
      return listening;
    },
    get outage() {
      return outage.active;
    },
    get acceptFailures() {
      return outage.failures;
    },
    async shutdown() {
      stopped = true;
      listening = false; // Deno's shutdown() closes the listeners at once
      wake?.();
      cancelRecovery();
      await Promise.all([...servers].map((server) => server.shutdown().catch(() => {})));
    },
  };
}
