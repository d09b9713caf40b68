/**
 * Waiting on a promise that cannot itself be cancelled (a caller's `fetch`, a trust lookup)
 * only until a signal aborts.
 *
 * @module
 */

/**
 * `promise`, or a rejection with `signal.reason` as soon as `signal` aborts (at once if it
 * already has), whichever comes first. What `promise` does afterwards is nobody's concern:
 * its later rejection is caught, not reported as unhandled. It is not cancelled: pass the
 * signal to whatever made it too, when that takes one.
 *
 * @param promise What to wait for.
 * @param signal Stops the wait; without one, `promise` itself is returned.
 * @returns What `promise` settles to, if it settles first.
 * @throws `signal.reason` when the signal aborts first.
 *
 * @example
 * ```ts
 * import { abortable } from "@duet/core/abortable";
 * const controller = new AbortController();
 * const never = new Promise<string>(() => {});
 * const waited = abortable(never, controller.signal);
 * controller.abort(new Error("stop"));
 * await waited.catch((error) => console.assert(error.message === "stop"));
 * ```
 */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => {}); // settled later, and nobody waits for it any more
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}
