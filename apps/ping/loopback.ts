/**
 * Whether a host name or address is this machine's own: pure and dependency-free, so the
 * browser page shares it with the client and the server.
 *
 * @module
 */

/** True for addresses whose traffic never leaves this machine (an IPv6 one with or without brackets). */
export function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, "");
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}
