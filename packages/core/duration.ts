/**
 * The one check of a duration a caller gives (an option, a setting, a command-line value):
 * a number of milliseconds within bounds, or a `RangeError` that names it. Past
 * `setTimeout`'s 2^31 − 1 ms a duration is either refused here (`max: MAX_TIMEOUT_MS`) or
 * waited with `setLongTimeout`; each caller says which.
 *
 * @module
 */
import { MAX_TIMEOUT_MS } from "./long_timeout.ts";

/** Bounds of {@link checkDuration}. */
export interface DurationBounds {
  /** Whether 0 is allowed (default true). */
  zero?: boolean;
  /**
   * Whether `Infinity` (never) is allowed: by default only without a finite `max` (a
   * bound on a duration is also a bound on "never").
   */
  infinite?: boolean;
  /** Whether only whole milliseconds are allowed (default false). */
  integer?: boolean;
  /** The largest finite value allowed (default: any). */
  max?: number;
}

/**
 * Checks the duration `name`: a number of milliseconds ≥ 0 (or > 0 without `zero`),
 * within `bounds`.
 *
 * @param name How the caller spelled it ("graceMs", "retry.maxDelayMs"), for the message.
 * @param ms The value given.
 *
 * @returns `ms`, unchanged.
 * @throws {RangeError} naming it, when `ms` is not such a number.
 *
 * @example
 * ```ts
 * import { MAX_TIMEOUT_MS } from "@duet/core/long-timeout";
 * checkDuration("idleTimeoutMs", 60_000, { zero: false, max: MAX_TIMEOUT_MS }); // 60000
 * try {
 *   checkDuration("drainMs", -1);
 * } catch (error) {
 *   // RangeError: drainMs must be a number of milliseconds ≥ 0 (or Infinity), got -1
 * }
 * ```
 */
export function checkDuration(name: string, ms: number, bounds: DurationBounds = {}): number {
  const { zero = true, integer = false, max = Infinity } = bounds;
  const infinite = bounds.infinite ?? max === Infinity;
  const ok = typeof ms === "number" && (zero ? ms >= 0 : ms > 0) &&
    (Number.isFinite(ms) ? ms <= max && (!integer || Number.isInteger(ms)) : infinite);
  if (!ok) {
    const what = [
      integer ? "a whole number of milliseconds" : "a number of milliseconds",
      zero ? "≥ 0" : "> 0",
      Number.isFinite(max)
        ? `and ≤ ${max}${max === MAX_TIMEOUT_MS ? " (about 24.8 days)" : ""}`
        : "",
      infinite ? "(or Infinity)" : "",
    ].filter(Boolean).join(" ");
    throw new RangeError(`${name} must be ${what}, got ${String(ms)}`);
  }
  return ms;
}
