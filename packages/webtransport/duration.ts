/**
 * Duration options and bounded waits. `setTimeout` fires almost at once past 2^31 − 1 ms,
 * so every duration this package accepts is checked here and every wait on one goes
 * through `@duet/core/long-timeout`.
 *
 * @module
 */
import { setLongTimeout } from "@duet/core/long-timeout";
import { checkDuration } from "@duet/core/duration";

export { checkDuration, type DurationBounds } from "@duet/core/duration";

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
