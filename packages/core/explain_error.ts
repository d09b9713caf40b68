/**
 * Runtime errors in duet's words. Deno's own texts ("Requires all access to "/proc/x", run
 * again with the --allow-all flag", "error sending request for url (...): client error
 * (Connect): tcp connect error: Connection refused (os error 111)") name the runtime's
 * internals and, in the first case, advise a flag that duet's run command does not take. The
 * commands print {@link explainError}'s sentence instead and keep the original for
 * `--log-level debug`.
 *
 * @module
 */

import { tlsFailure } from "./tls_failure.ts";

/** The innermost message of an error and its causes: where fetch keeps the news. */
function innermost(error: unknown): string {
  let message = error instanceof Error ? error.message : String(error);
  for (let cause = (error as Error)?.cause; cause instanceof Error; cause = cause.cause) {
    message = cause.message;
  }
  return message;
}

/** A system call's error without the runtime's "(os error N)": "No such file or directory: open 'x'". */
function withoutOsError(message: string): string {
  return message.replace(/ \(os error \d+\)/, "");
}

/** Network failures fetch and Deno.connect report, by the words of their innermost cause. */
const NETWORK: [RegExp, (match: RegExpMatchArray) => string][] = [
  [
    /Requests to port (\d+) are blocked/,
    ([, port]) =>
      `port ${port} is on the Fetch standard's list of "bad ports", which fetch never ` +
      "connects to; run the service on another port",
  ],
  [/Connection refused/i, () => "connection refused (is the server running, and on this port?)"],
  [
    /failed to lookup address|Name or service not known|No address associated|dns error/i,
    () => "the host name does not resolve (check its spelling, or use an IP address)",
  ],
  [
    /invalid peer certificate/,
    ({ input }) =>
      `${tlsFailure(input!)}; use http:// for a service without TLS, or give the CA to Deno ` +
      "with DENO_CERT=FILE",
  ],
  [
    /corrupt message|InvalidContentType|invalid HTTP/i,
    ({ input }) => `${tlsFailure(input!)}; check the URL's scheme (http:// or https://) and port`,
  ],
  [
    /connection closed before message completed|tls handshake eof/i,
    () => "the server closed the connection before it answered",
  ],
  [/Connection reset/i, () => "the connection was reset by the other side"],
  [/timed out/i, () => "the connection timed out"],
  [/Network is unreachable/i, () => "the network is unreachable from here"],
];

/**
 * What went wrong, in one sentence of duet's, for an error the runtime raised: a permission
 * Deno's sandbox withholds, a file system refusal, a network failure. Any other error's own
 * message is returned as it is (duet's errors are already worded for the user).
 */
export function explainError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof Deno.errors.NotCapable) {
    const [, kind, what] = message.match(/Requires (\w+) access to "?([^",]*)"?/) ?? [];
    return what
      ? `duet may not have ${kind} access to ${what}: Deno keeps system paths such as /proc, ` +
        "/dev and /sys for --allow-all, which duet's run command does not grant; choose another path"
      : `duet's permissions do not allow this (${message.replace(/, run again.*$/, "")})`;
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return `the system refused it (${withoutOsError(message)}); choose a path you may use`;
  }
  const made = message.match(/^File exists[^:]*: mkdir '(.*)'$/);
  if (error instanceof Deno.errors.AlreadyExists && made) {
    const path = made[1];
    return `${path} is a file, not a directory; choose a directory (or a path not there yet)`;
  }
  const notFile = message.match(/^Is a directory[^:]*: \w+ '(.*)'$/);
  if (error instanceof Deno.errors.IsADirectory || notFile) {
    const path = notFile?.[1];
    return `${
      path ?? "it"
    } is a directory, not a file; give the path of a file (or of one not there yet)`;
  }
  const inner = innermost(error);
  if (
    error instanceof TypeError || error instanceof Deno.errors.ConnectionRefused ||
    error instanceof Deno.errors.ConnectionReset || error instanceof Deno.errors.InvalidData ||
    error instanceof Deno.errors.UnexpectedEof || inner !== message
  ) {
    for (const [pattern, say] of NETWORK) {
      const match = inner.match(pattern);
      if (match) return say(match);
    }
  }
  if (/ \(os error \d+\)/.test(message)) {
    // A system call's refusal: the runtime's words minus its error number ("File name too
    // long: mkdir '...'", "Is a directory: open '...'").
    return withoutOsError(message);
  }
  return message;
}

/**
 * Whether trying again cannot help: fetch refused the request by its own rules (a bad port),
 * the server's certificate is untrusted, or what answered speaks neither TLS nor HTTP.
 * Connection refused, resets, time-outs and connections closed early are not permanent: a
 * server may come back.
 */
export function isPermanentNetworkError(error: unknown): boolean {
  return /Requests to port \d+ are blocked|invalid peer certificate|corrupt message|InvalidContentType|invalid HTTP/i
    .test(innermost(error));
}
