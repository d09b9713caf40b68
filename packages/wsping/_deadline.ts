/**
 * A one-shot timer for any delay, on every runtime wsping supports.
 *
 * Why it is here: `setTimeout` keeps its delay in a signed 32-bit integer, so a delay above
 * 2^31 − 1 ms (about 24.8 days) fires almost at once: measured on Deno 2.9.6, a
 * `timeoutMs` of 30 days made a ping time out after 29 ms; Node fires after 1 ms (with a
 * `TimeoutOverflowWarning`), and browsers clamp alike. The repository's
 * `@duet/core/long-timeout` does the same job, but wsping is published on its own with no
 * dependencies and runs in browsers, so it carries these few lines instead of importing a
 * workspace package.
 *
 * Internal: not exported from mod.ts.
 *
 * @module
 */

/** The longest delay `setTimeout` honours, in milliseconds: 2^31 − 1 (about 24.8 days). */
export const MAX_TIMER_MS: number = 2 ** 31 - 1;

/**
 * Calls `callback` once, `ms` milliseconds from now (any finite `ms` ≥ 0). A delay
 * longer than `maxStepMs` is waited in steps of at most `maxStepMs`, each measured against
 * one deadline on the monotonic clock (`performance.now()`), so the steps do not drift.
 *
 * @param callback Called once, with no arguments, unless cancelled first.
 * @param ms The delay in milliseconds, finite and ≥ 0 (the caller validates it).
 * @param maxStepMs The longest single `setTimeout`; {@link MAX_TIMER_MS} except in tests.
 * @returns A function that cancels the timer; harmless to call again or after it fired.
 */
export function setDeadline(
  callback: () => void,
  ms: number,
  maxStepMs: number = MAX_TIMER_MS,
): () => void {
  const deadline = performance.now() + ms;
  let handle: ReturnType<typeof setTimeout> | undefined;
  const arm = () => {
    const left = deadline - performance.now();
    handle = left > maxStepMs
      ? setTimeout(arm, maxStepMs)
      : setTimeout(callback, Math.max(0, left));
  };
  arm();
  return () => clearTimeout(handle);
}
