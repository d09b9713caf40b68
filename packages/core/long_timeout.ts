/**
 * A timer for any delay. `setTimeout` stores its delay in a signed 32-bit integer: past
 * 2^31 − 1 ms (about 24.8 days) it fires almost at once (measured on Deno 2.9.6: a 30-day
 * `setTimeout` or `AbortSignal.timeout` fired after 19 ms). Every duration a user can give
 * duet goes through this module or is validated against {@link MAX_TIMEOUT_MS}. Written here
 * because it is a few lines that the runtimes do not offer and no small library pins down.
 *
 * @module
 */

/** The longest delay `setTimeout` honours, in milliseconds: 2^31 − 1 (about 24.8 days). */
export const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** Options of {@link setLongTimeout}. */
export interface LongTimeoutOptions {
  /**
   * When true, the pending timer does not keep the process alive (as with
   * `AbortSignal.timeout`); default false.
   */
  unref?: boolean;
}

/**
 * Calls `callback` once after `ms` milliseconds, for any `ms` from 0 up to and including
 * `Infinity` (never). Longer delays are waited in steps of at most {@link MAX_TIMEOUT_MS},
 * each measured against one deadline on the monotonic clock, so they do not drift.
 *
 * @param callback Called once, with no arguments, unless cancelled first.
 * @param ms Delay in milliseconds: a number ≥ 0, fractions allowed; `Infinity` never fires.
 * @returns A function that cancels the timer; calling it again, or after the timer
 *   fired, does nothing.
 * @throws {RangeError} when `ms` is negative or NaN.
 *
 * @example
 * ```ts
 * const cancel = setLongTimeout(() => console.log("a month later"), 30 * 24 * 3600_000);
 * cancel();
 * ```
 */
export function setLongTimeout(
  callback: () => void,
  ms: number,
  options: LongTimeoutOptions = {},
): () => void {
  if (typeof ms !== "number" || !(ms >= 0)) {
    throw new RangeError(`A delay must be a number of milliseconds ≥ 0, got ${String(ms)}`);
  }
  let handle: ReturnType<typeof setTimeout> | undefined;
  let done = false;
  if (ms === Infinity) return () => {};
  const deadline = performance.now() + ms;
  const arm = () => {
    const left = deadline - performance.now();
    handle = left > MAX_TIMEOUT_MS ? setTimeout(arm, MAX_TIMEOUT_MS) : setTimeout(() => {
      done = true;
      callback();
    }, Math.max(0, left));
    if (options.unref) unref(handle);
  };
  arm();
  return () => {
    if (done) return;
    done = true;
    clearTimeout(handle);
  };
}

/** Deno's `unrefTimer`, Node's and Bun's `Timeout.unref()`; browsers have neither. */
function unref(handle: ReturnType<typeof setTimeout>): void {
  const deno = (globalThis as { Deno?: { unrefTimer?(id: number): void } }).Deno;
  if (typeof handle === "number") deno?.unrefTimer?.(handle);
  else (handle as { unref?(): void }).unref?.();
}
