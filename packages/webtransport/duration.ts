/**
 * Duration options and bounded waits. `setTimeout` fires almost at once past 2^31 − 1 ms,
 * so every duration this package accepts is checked here and every wait on one goes
 * through `@duet/core/long-timeout`.
 *
 * @module
 */
import { setLongTimeout } from "@duet/core/long-timeout";

/** Bounds of {@link checkDuration}. */
export interface DurationBounds {
  /** Whether 0 is allowed (default true). */
  zero?: boolean;
  /** Whether `Infinity` (never) is allowed (default true). */
  infinite?: boolean;
  /** Whether only whole milliseconds are allowed (default false). */
  integer?: boolean;
  /** The largest finite value allowed (default: any). */
  max?: number;
}

/**
 * Checks the duration option `name`: a number of milliseconds ≥ 0 (or > 0 without
 * `zero`), within `bounds`. Durations past `setTimeout`'s range are allowed: the waits on
 * them use `setLongTimeout`.
 *
 * @returns `ms`, unchanged.
 * @throws {RangeError} naming the option, when `ms` is not such a number.
 */
export function checkDuration(name: string, ms: number, bounds: DurationBounds = {}): number {
  const { zero = true, infinite = true, integer = false, max = Infinity } = bounds;
  const ok = typeof ms === "number" && (zero ? ms >= 0 : ms > 0) &&
    (Number.isFinite(ms) ? ms <= max && (!integer || Number.isInteger(ms)) : infinite);
  if (!ok) {
    const what = [
      integer ? "a whole number of milliseconds" : "a number of milliseconds",
      zero ? "≥ 0" : "> 0",
      Number.isFinite(max) ? `and ≤ ${max}` : "",
      infinite ? "(or Infinity)" : "",
    ].filter(Boolean).join(" ");
    throw new RangeError(`${name} must be ${what}, got ${String(ms)}`);
  }
  return ms;
}

/**
 * Waits for `promise` to settle or `ms` milliseconds to pass, whichever comes first, for
 * any `ms` ≥ 0 (`Infinity`: for the promise only). Never rejects; the timer is cancelled
 * as soon as the promise settles.
 *
 * @returns true when the promise settled first, false when the time ran out.
 */
export async function settledWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let cancel = () => {};
  const timeUp = new Promise<false>((
    resolve,
  ) => (cancel = setLongTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true, () => true), timeUp]);
  } finally {
    cancel();
  }
}

/** The largest idle timeout or keep-alive interval QUIC carries (a 62-bit varint of ms). */
const MAX_QUIC_DURATION_MS = Number.MAX_SAFE_INTEGER;

/**
 * Checks the durations of QUIC transport options (`maxIdleTimeout`, `keepAliveInterval`):
 * whole milliseconds ≥ 0. They are QUIC's timers, not `setTimeout`'s, and hold any such
 * value (30 days included), but a negative, fractional or NaN one makes Deno fail or hang.
 *
 * @returns `transport`, unchanged.
 * @throws {RangeError} naming the option.
 */
export function checkTransport<T extends Deno.QuicTransportOptions | undefined>(
  transport: T,
): T {
  for (const key of ["maxIdleTimeout", "keepAliveInterval"] as const) {
    const ms = transport?.[key];
    if (ms !== undefined) {
      checkDuration(`transport.${key}`, ms, {
        integer: true,
        infinite: false,
        max: MAX_QUIC_DURATION_MS,
      });
    }
  }
  return transport;
}
