/**
 * The chat server's resource limits as pure functions, so that each rule can be tested
 * without sockets or clocks (the token buckets that pace frames and limit room creation
 * are packages/net/rate.ts): what a frame costs, the output budget of a connection, the default connection cap from the open-file limit, and the key an
 * address is counted under. The shell that applies them is server.ts; the table of limits
 * is in apps/chat/README.md ("Limits").
 *
 * @module
 */

/**
 * What one frame costs against its connection's rate, in tokens. Every frame costs: none
 * is free to send in a loop. A `key_offer` costs {@link KEY_OFFER_COST} (the server checks
 * its proofs, a few milliseconds of CPU, and writes the database), and so does a `code`
 * (a database transaction that locks the room); anything else, a
 * frame that is not even an object included, costs 1.
 */
export function frameCost(payload: unknown): number {
  const type = (payload as { type?: unknown } | null)?.type;
  return type === "key_offer" || type === "code" ? KEY_OFFER_COST : 1;
}

/** The tokens a `key_offer` frame costs (see {@link frameCost}). */
export const KEY_OFFER_COST = 10;

/**
 * A connection's output limits, in bytes of frames handed to the socket and not yet
 * written by it: above `watermarkBytes` the server reads no further frames from the
 * connection (so it cannot ask for more); a frame that would take it above `budgetBytes`
 * closes the connection instead of being queued. `watermarkBytes` < `budgetBytes`.
 */
export interface OutputLimits {
  watermarkBytes: number;
  budgetBytes: number;
}

/**
 * Whether a frame of `frameBytes` may be queued behind `unwrittenBytes`: `queue`, or
 * `cut_off` when that would exceed the budget (the client is not reading what it gets).
 */
export function admitOutput(
  unwrittenBytes: number,
  frameBytes: number,
  limits: OutputLimits,
): "queue" | "cut_off" {
  return unwrittenBytes + frameBytes > limits.budgetBytes ? "cut_off" : "queue";
}

/** Whether the server may read the connection's next frame with this much unwritten. */
export function mayRead(unwrittenBytes: number, limits: OutputLimits): boolean {
  return unwrittenBytes <= limits.watermarkBytes;
}

/**
 * The soft "Max open files" limit in the text of Linux's `/proc/self/limits`; undefined
 * when the line is missing or says `unlimited`.
 */
export function parseOpenFileLimit(limitsText: string): number | undefined {
  const match = limitsText.match(/^Max open files\s+(\S+)\s+(\S+)/m);
  if (!match || match[1] === "unlimited") return undefined;
  const soft = Number(match[1]);
  return Number.isSafeInteger(soft) && soft > 0 ? soft : undefined;
}

/**
 * Descriptors kept back from connections: the database (PGlite's files, PostgreSQL's
 * pool), the listener, standard streams, Deno's own; at least
 * {@link RESERVED_DESCRIPTORS}, and a tenth of large limits.
 */
export const RESERVED_DESCRIPTORS = 128;

/** The connection cap where the open-file limit is unknown (not Linux, or unreadable). */
export const FALLBACK_MAX_CONNECTIONS = 1_000;

/**
 * The default total connection cap for an open-file limit (undefined: unknown): the limit
 * less max(128, a tenth of it), at least 1. Examples: 1,024 -> 896; 20,000 -> 18,000;
 * 200 -> 72; unknown -> 1,000.
 */
export function defaultMaxConnections(openFileLimit: number | undefined): number {
  if (openFileLimit === undefined) return FALLBACK_MAX_CONNECTIONS;
  const reserve = Math.max(RESERVED_DESCRIPTORS, Math.ceil(openFileLimit / 10));
  return Math.max(1, openFileLimit - reserve);
}

/**
 * This process's soft open-file limit on Linux: from `/proc/self/limits` when the process
 * may read it (Deno asks for --allow-all there), else from the shell's `ulimit -n` when it
 * may run `sh` (`deno task duet` may); undefined elsewhere or when neither is allowed.
 */
export function readOpenFileLimit(): number | undefined {
  if (Deno.build.os !== "linux") return undefined;
  try {
    return parseOpenFileLimit(Deno.readTextFileSync("/proc/self/limits"));
  } catch { /* not allowed: ask the shell */ }
  try {
    if (Deno.permissions.querySync({ name: "run", command: "sh" }).state !== "granted") {
      return undefined;
    }
    const { stdout, success } = new Deno.Command("sh", { args: ["-c", "ulimit -n"] })
      .outputSync();
    const soft = Number(new TextDecoder().decode(stdout).trim());
    return success && Number.isSafeInteger(soft) && soft > 0 ? soft : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The key a client address is counted under for room creation: an IPv4 address as it is
 * (an IPv4-mapped IPv6 address as its IPv4), an IPv6 address by its /64 prefix, since one
 * host commonly holds a whole /64 and could otherwise take a fresh address per room.
 * Anything else (a hostname) as it is.
 */
export function addressKey(hostname: string): string {
  if (!hostname.includes(":")) return hostname;
  const bare = hostname.replace(/^\[|\]$/g, "").replace(/%.*$/, "").toLowerCase();
  const mapped = bare.match(/^(?:0{0,4}:){0,5}:?ffff:(\d+\.\d+\.\d+\.\d+)$/);
  if (mapped) return mapped[1]!;
  const groups = expandIPv6(bare);
  return groups ? `${groups.slice(0, 4).join(":")}::/64` : hostname;
}

/** The eight groups of an IPv6 address (no leading zeros), or undefined if it is not one. */
function expandIPv6(address: string): string[] | undefined {
  let text = address;
  // A trailing dotted quad is two groups.
  const quad = text.match(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/);
  if (quad) {
    const [a, b, c, d] = quad.slice(1).map(Number) as [number, number, number, number];
    if ([a, b, c, d].some((n) => n > 255)) return undefined;
    text = text.slice(0, quad.index) +
      `${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(":") : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(":") : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const groups = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return undefined;
  return groups.map((g) => parseInt(g, 16).toString(16));
}

/** A room's code attempts as stored: how many in the window that began at `windowStartMs`. */
export interface CodeAttempts {
  /** Attempts counted in the window. */
  count: number;
  /** When the window began (ms since the epoch, the database's clock); null: never. */
  windowStartMs: number | null;
}

/** How many code attempts a room may make: `perWindow` in each window of `windowMs`. */
export interface CodeAttemptRule {
  /** Attempts a room may make in one window (at least 1). */
  perWindow: number;
  /** The window's length, in milliseconds. */
  windowMs: number;
}

/**
 * The default: 10 attempts a room in an hour (an honest pair makes 1, or 2 if both start at
 * one moment, and one more for each restart while the other party's message is there).
 */
export const DEFAULT_CODE_ATTEMPTS: CodeAttemptRule = { perWindow: 10, windowMs: 3_600_000 };

/**
 * Whether a room may make one more code attempt at `nowMs` (a party's new CPace message that
 * the other party's can answer: the server cannot tell a failed attempt from a good one,
 * since it never has the key, so it counts every one, which bounds the failed ones). A window starts at the first attempt
 * after the last one ended; within it at most `rule.perWindow` attempts are taken.
 *
 * @returns `ok` with the attempts to store, or `retryAfterMs` until the window ends.
 */
export function takeCodeAttempt(
  attempts: CodeAttempts,
  nowMs: number,
  rule: CodeAttemptRule,
): { ok: true; attempts: CodeAttempts } | { ok: false; retryAfterMs: number } {
  const start = attempts.windowStartMs;
  if (start === null || nowMs - start >= rule.windowMs || nowMs < start) {
    return { ok: true, attempts: { count: 1, windowStartMs: nowMs } };
  }
  if (attempts.count >= rule.perWindow) {
    return { ok: false, retryAfterMs: start + rule.windowMs - nowMs };
  }
  return { ok: true, attempts: { count: attempts.count + 1, windowStartMs: start } };
}
