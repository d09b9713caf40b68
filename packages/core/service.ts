/**
 * The one shape of every duet server (syncpoint, ping, chat), so that `duet serve` and
 * embedders compose them without knowing which is which, and the composition itself:
 * start in order, unwind on a failed start, stop all when one ends or a signal fires.
 * The shape follows `Deno.HttpServer` (`addr`, `finished`, `shutdown()`).
 *
 * @module
 */

/** A started server. */
export interface RunningService {
  /** Where it listens (ping: the same port on UDP and TCP). */
  readonly addr: Deno.NetAddr;
  /**
   * Stops the server: no new work, the work in hand ended as the service documents
   * (drained, answered, said goodbye to), resources released. Idempotent; resolves when
   * all is done.
   */
  shutdown(): Promise<void>;
  /**
   * Settles once the server has stopped: resolves after `shutdown()`, rejects if it
   * stopped by itself on a failure it cannot recover from.
   */
  readonly finished: Promise<void>;
}

/** One service to start: its name (for messages) and how to start it. */
export interface ServiceStarter<T extends RunningService = RunningService> {
  /** What it is called in messages ("syncpoint", "chat"). */
  name: string;
  /** Starts it; resolves once it listens. */
  start(): Promise<T>;
}

/**
 * Starts services one after the other. When one fails to start, those already started are
 * shut down (last started first) and its error is rethrown: nothing is left running (a
 * failure while unwinding is not reported over the start's own).
 *
 * @param onStarted Called after each start, in order (to print its address, say).
 * @param signal Aborting it (a Ctrl-C during start-up) stops the starting: no service starts
 *   after it, those started are shut down, and the result is empty.
 * @returns The services, in the order of `starters`; none when `signal` aborted.
 * @throws whatever the failing `start()` threw, after the unwinding.
 */
export async function startServices(
  starters: readonly ServiceStarter[],
  onStarted: (name: string, service: RunningService) => void = () => {},
  signal?: AbortSignal,
): Promise<RunningService[]> {
  const started: RunningService[] = [];
  for (const starter of starters) {
    if (signal?.aborted) break;
    let service: RunningService;
    try {
      service = await starter.start();
    } catch (error) {
      // The start's failure is the one to report; one of unwinding would only hide it.
      await shutdownAll(started).catch(() => {});
      throw error;
    }
    started.push(service);
    onStarted(starter.name, service);
  }
  if (signal?.aborted) {
    await shutdownAll(started);
    return [];
  }
  return started;
}

/**
 * Runs started services until `signal` aborts or one of them finishes by itself, then
 * shuts every one down.
 *
 * @returns once all have shut down.
 * @throws the failure of a service that stopped by itself (the others are shut down first).
 */
export async function superviseServices(
  services: readonly RunningService[],
  signal: AbortSignal,
): Promise<void> {
  let onAbort = () => {};
  const aborted = new Promise<void>((resolve) => {
    onAbort = resolve;
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  let failure: { error: unknown } | undefined;
  await Promise.race([
    aborted,
    ...services.map((service) =>
      service.finished.catch((error) => {
        failure ??= { error };
      })
    ),
  ]);
  signal.removeEventListener("abort", onAbort);
  await shutdownAll(services);
  if (failure) throw failure.error;
}

/** Shuts services down, last first; a failing shutdown does not stop the others. */
async function shutdownAll(services: readonly RunningService[]): Promise<void> {
  const errors: unknown[] = [];
  for (const service of [...services].reverse()) {
    await service.shutdown().catch((error) => errors.push(error));
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, "Several services failed to shut down");
}
