/**
 * A promise that settles after a delay or when a signal aborts, whichever comes first.
 *
 * @module
 */
import { setLongTimeout } from "./long_timeout.ts";

/**
 * Resolves after `ms` milliseconds, any `ms` ≥ 0 including past `setTimeout`'s 24.8-day
 * range (`Infinity` waits for the signal only).
 *
 * @param ms Delay in milliseconds, ≥ 0.
 * @param options.signal Aborting it rejects the promise with `signal.reason` and cancels the
 *   timer, whenever it fires: before the call (rejects at once) or during the wait.
 * @throws {RangeError} (synchronously) when `ms` is negative or NaN.
 *
 * @example
 * ```ts
 * await delay(100, { signal: AbortSignal.timeout(1_000) });
 * ```
 */
export function delay(ms: number, options: { signal?: AbortSignal } = {}): Promise<void> {
  const { signal } = options;
  if (typeof ms !== "number" || !(ms >= 0)) {
    throw new RangeError(`A delay must be a number of milliseconds ≥ 0, got ${String(ms)}`);
  }
  let cancel = () => {};
  const waited = new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      cancel();
      reject(signal!.reason);
    };
    cancel = setLongTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
  return waited;
}
