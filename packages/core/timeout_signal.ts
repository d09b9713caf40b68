/**
 * `AbortSignal.timeout` for any duration.
 *
 * @module
 */
import { setLongTimeout } from "./long_timeout.ts";

/**
 * An `AbortSignal` that aborts after `ms` milliseconds with a `TimeoutError`
 * `DOMException`, as `AbortSignal.timeout(ms)` does, but right for every `ms` ≥ 0:
 * `AbortSignal.timeout` fires almost at once past 2^31 − 1 ms. `Infinity` never aborts.
 * Like `AbortSignal.timeout`, its timer does not keep the process alive.
 *
 * @param ms Milliseconds, ≥ 0.
 * @throws {RangeError} when `ms` is negative or NaN.
 *
 * @example
 * ```ts
 * const signal = timeoutSignal(30 * 24 * 3600_000); // a month, not 19 ms
 * ```
 */
export function timeoutSignal(ms: number): AbortSignal {
  const controller = new AbortController();
  setLongTimeout(
    () => controller.abort(new DOMException(`Timed out after ${ms} ms`, "TimeoutError")),
    ms,
    { unref: true },
  );
  return controller.signal;
}
