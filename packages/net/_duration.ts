/**
 * Checks the durations a caller can give this package's servers, so that a wrong one fails
 * at the start with a `RangeError` naming the option instead of misbehaving later.
 * Durations past `setTimeout`'s 2^31 − 1 ms are allowed: every timer that waits on one
 * goes through `@duet/core/long-timeout`, which waits them in steps.
 *
 * @module
 */
import { checkDuration } from "@duet/core/duration";

/**
 * `value` (milliseconds) or, when undefined, `fallback`.
 *
 * @param name The option's name, for the message.
 * @param value What the caller gave.
 * @param fallback The default.
 * @param positive True when 0 is not allowed either (a period or a timeout that 0 would
 *   turn into a busy loop or "no timeout").
 * @throws {RangeError} from `checkDuration` unless `value` is a finite number ≥ 0 (> 0 when
 *   `positive`).
 */
export function durationOption(
  name: string,
  value: number | undefined,
  fallback: number,
  positive = false,
): number {
  if (value === undefined) return fallback;
  return checkDuration(name, value, { zero: !positive, infinite: false });
}
