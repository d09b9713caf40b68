/**
 * The ping server's admission and rate rules, as pure functions and small classes with no
 * I/O: who may open a WebTransport session or a WebSocket (token, origin, sessions per
 * address), how many messages a WebSocket may send, how big one may be, and what the
 * published `/.well-known/duet-ping.json` says. The server applies them; the tests call
 * them directly.
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { MAX_LINE_BYTES, PING_PROTOCOL } from "./protocol.ts";

/** Who may connect: the same rules for WebTransport sessions and `/ws`. */
export interface AccessPolicy {
  /** The bearer token clients must present; none required when absent. */
  token?: string;
  /** Origins allowed besides the server's own page; "*" allows every origin. */
  allowedOrigins: string[];
}

/** Request headers by lower-case name: a `Headers` or a `Map` (WebTransport's). */
export interface HeaderLookup {
  /** The header's value, or null/undefined when absent. */
  get(name: string): string | null | undefined;
}

/** What a refusal says: the HTTP status and a reason for the log (never sent). */
export interface Refusal {
  /**
   * 400 no application protocol in common, 401 token, 403 origin, 404 path, 429 too many
   * from one address.
   */
  status: 400 | 401 | 403 | 404 | 429;
  /** Why, for the server's log. */
  reason: string;
}

/**
 * The token a request presents: `Authorization: Bearer TOKEN` first, else `?token=`
 * (browsers can set headers on neither WebTransport nor WebSocket). Undefined if none.
 */
export function presentedToken(headers: HeaderLookup, url: URL): string | undefined {
  const header = headers.get("authorization");
  if (header?.startsWith("Bearer ")) return header.slice(7);
  return url.searchParams.get("token") ?? undefined;
}

/**
 * Compares a presented token with the expected one in time independent of where they
 * differ: both are hashed (SHA-256) to one length first. False when none was presented.
 */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  if (presented === undefined) return false;
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(presented), digest(expected));
}

/**
 * True for no Origin (not a browser: any other client could forge the header anyway), the
 * server's own page (an http or https origin with the host and port of `url`, the URL the
 * request was made to), or a listed origin ("*" lists all).
 */
export function originAllowed(origin: string | null, url: URL, allowed: string[]): boolean {
  if (origin === null) return true;
  if (allowed.includes("*") || allowed.includes(origin)) return true;
  try {
    const parsed = new URL(origin);
    return parsed.host === url.host &&
      (parsed.protocol === "http:" || parsed.protocol === "https:");
  } catch {
    return false;
  }
}

/**
 * The token and origin checks, in that order, for a request to `url` (its path already
 * checked): null when admitted, else the refusal (401 missing or wrong token, 403 origin).
 */
export function checkAccess(
  request: { url: URL; headers: HeaderLookup; origin: string | null },
  policy: AccessPolicy,
): Refusal | null {
  if (
    policy.token !== undefined &&
    !tokenMatches(presentedToken(request.headers, request.url), policy.token)
  ) {
    return { status: 401, reason: "missing or wrong token" };
  }
  if (!originAllowed(request.origin, request.url, policy.allowedOrigins)) {
    return { status: 403, reason: `origin ${request.origin} not allowed` };
  }
  return null;
}

/** The longest text from a client that goes into a log line, in characters. */
export const LOGGED_TEXT_MAX = 200;

/**
 * Text a client chose (a path, an offered protocol list, an error quoting them) as it goes
 * into a log: at most {@link LOGGED_TEXT_MAX} characters, the rest counted, so that one
 * request cannot write without limit into the server's log.
 */
export function forLog(text: string): string {
  if (text.length <= LOGGED_TEXT_MAX) return text;
  return `${text.slice(0, LOGGED_TEXT_MAX)}… (${text.length - LOGGED_TEXT_MAX} more characters)`;
}

/**
 * The application protocol to answer a WebTransport session request with: ours when the
 * client offers it, none when the client offers none (older clients, tools that do not
 * negotiate), a 400 refusal when it offers only others.
 */
export function choosePingProtocol(offered: readonly string[]): { protocol?: string } | Refusal {
  if (offered.length === 0) return {};
  if (offered.includes(PING_PROTOCOL)) return { protocol: PING_PROTOCOL };
  return { status: 400, reason: `offers ${offered.join(", ")}, not ${PING_PROTOCOL}` };
}

/** How many seconds' worth of messages a WebSocket may send at once: burst = 2 x rate. */
export const WS_BURST_SECONDS = 2;

const encoder = new TextEncoder();

/**
 * Whether a WebSocket message is longer than `maxBytes` (default: the protocol's line
 * limit, {@link MAX_LINE_BYTES}). Text is measured in UTF-8 bytes, as it travelled;
 * binary by its length. Short strings are decided without encoding them.
 */
export function messageTooLong(
  data: string | ArrayBuffer | ArrayBufferView,
  maxBytes: number = MAX_LINE_BYTES,
): boolean {
  if (typeof data !== "string") return data.byteLength > maxBytes;
  // UTF-8 takes 1 to 3 bytes per UTF-16 code unit.
  if (data.length > maxBytes) return true;
  if (data.length * 3 <= maxBytes) return false;
  return encoder.encode(data).byteLength > maxBytes;
}

/** What `/.well-known/duet-ping.json` holds. */
export interface PingServerInfo {
  /**
   * The WebTransport URL to use, only when the operator configured one (`--public-url`):
   * never taken from a request, so a forged Host header cannot put a name in it.
   */
  url?: string;
  /** The port of the WebTransport service (UDP), on the host the client itself used. */
  port: number;
  /** The WebTransport path, e.g. "/ping". */
  path: string;
  /** SHA-256 of the certificates a client may pin (hex): current, then next. */
  certificateHashes: { algorithm: "sha-256"; value: string }[];
}

/**
 * The published document: built from configuration only (the public URL if any, the
 * port, the path and the hashes), never from anything a request says.
 */
export function publishedInfo(
  config: { publicUrl?: string; port: number; path: string },
  hashesHex: string[],
): PingServerInfo {
  return {
    ...(config.publicUrl ? { url: config.publicUrl } : {}),
    port: config.port,
    path: config.path,
    certificateHashes: hashesHex.map((value) => ({ algorithm: "sha-256", value })),
  };
}

/**
 * The WebTransport URL a client should use: the published `url` when there is one, else
 * `https://HOST:PORT/PATH` with HOST the name or address the client itself used to reach
 * the server (an IPv6 address with or without brackets) and PORT and PATH published.
 *
 * @throws TypeError if the result is not a valid URL (a malformed published `url`).
 */
export function serviceUrl(info: Pick<PingServerInfo, "url" | "port" | "path">, host: string): URL {
  if (info.url) return new URL(info.url);
  const shown = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  return new URL(`https://${shown}:${info.port}${info.path}`);
}
