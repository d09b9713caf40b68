/**
 * How the ping client comes to trust a server: pinned hashes given by the user, a CA
 * file, or the hashes the server publishes at `/.well-known/duet-ping.json`, fetched
 * over a channel that is itself trusted (HTTPS verified by the system roots or the CA,
 * or plain HTTP to a loopback address, which never leaves the machine). Nothing else:
 * there is no way to skip verification.
 *
 * @module
 */
import { checkDuration } from "@duet/core/duration";
import type { CertificateHash } from "@duet/webtransport";
import type { PingServerInfo } from "./policy.ts";
import type { PingTrust } from "./client.ts";
import { hexToBytes } from "@noble/hashes/utils.js";
import { z } from "zod";
import { timeoutSignal } from "@duet/core/timeout-signal";
import { isLoopback } from "./loopback.ts";
import { closedBeforeAnswer, tlsFailure } from "@duet/core/tls-failure";
import { explainError } from "@duet/core/explain-error";
import { BodyTooLargeError, readTextCapped } from "@duet/core/read-capped";

/** The largest trust document read, in bytes: a real one is a few hundred. */
export const MAX_INFO_BYTES = 64 * 1024;

/** Parses a SHA-256 given as 64 hex digits (colons and case are ignored). */
export function parseCertHash(text: string): CertificateHash {
  const digits = text.replaceAll(":", "").toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(digits)) {
    throw new TypeError(`a certificate hash is 64 hex digits (SHA-256), got "${text}"`);
  }
  return {
    algorithm: "sha-256",
    value: hexToBytes(digits),
  };
}

export { isLoopback };

/**
 * Trust could not be settled. `permanent`: the server's trust document was reached and is
 * not usable (not over a trusted channel, not what duet ping serves, no hashes, a refusal
 * such as 404), which asking again does not change, and the message ends with what to
 * pass instead. Otherwise nothing answered (refused, no answer in time, a name not
 * found, a 5xx): the server may be back on a later try, and the message says nothing of
 * certificates.
 */
export class TrustError extends Error {
  /** Whether asking again cannot help (see the class). */
  readonly permanent: boolean;
  /**
   * @param message For people: what failed, and for a permanent failure what to do.
   * @param permanent See the class.
   */
  constructor(message: string, permanent: boolean) {
    super(message);
    this.name = "TrustError";
    this.permanent = permanent;
  }
}

/** The server's published info and the channel it came over. */
export interface FetchedInfo {
  /** The document, checked. */
  info: PingServerInfo;
  /** The URL it was fetched from. */
  from: string;
}

/**
 * Fetches `/.well-known/duet-ping.json` from the TCP side of `host:port`: HTTPS first
 * (verified with the system roots and `caCerts`), then plain HTTP only for loopback, each
 * given `timeoutMs` (any length: past 2^31 - 1 ms too).
 *
 * @throws RangeError naming `timeoutMs` when it is not a number ≥ 0; {@link TrustError}
 *   naming each URL tried and why it failed: "cannot reach the server (...)" when nothing
 *   answered (not permanent), "cannot learn the server's certificate over a trusted
 *   channel (...); ... pass --cert-hash or --ca" when something did (permanent).
 */
export async function fetchServerInfo(
  host: string,
  port: number,
  caCerts?: string[],
  timeoutMs = 3000,
): Promise<FetchedInfo> {
  checkDuration("fetchServerInfo: timeoutMs", timeoutMs);
  const shown = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  const tried: Try[] = [];
  const schemes = isLoopback(host) ? ["https", "http"] : ["https"];
  for (const scheme of schemes) {
    const url = `${scheme}://${shown}:${port}/.well-known/duet-ping.json`;
    const client = caCerts?.length ? Deno.createHttpClient({ caCerts }) : undefined;
    try {
      const response = await fetch(url, {
        // Any timeoutMs: AbortSignal.timeout fires almost at once past 2^31 - 1 ms.
        signal: timeoutSignal(timeoutMs),
        ...(client ? { client } : {}),
      });
      if (!response.ok) {
        await response.body?.cancel();
        // A server error or an overloaded proxy may pass; a 404 is not a ping server.
        const passing = response.status >= 500 || [408, 429].includes(response.status);
        tried.push({
          url,
          why: `HTTP ${response.status}`,
          answered: !passing,
          ...(response.status === 404 ? { notPing: true as const } : {}),
        });
        continue;
      }
      // Reached, and not usable: asking again gives the same document.
      const unusable = (why: string) =>
        new TrustError(
          `the server's /.well-known/duet-ping.json is not what duet ping serves (${why}); ` +
            "pass --cert-hash or --ca",
          true,
        );
      let text: string;
      try {
        text = await readTextCapped(response, MAX_INFO_BYTES);
      } catch (error) {
        if (error instanceof BodyTooLargeError) throw unusable(error.message);
        throw error;
      }
      let document: unknown;
      try {
        document = JSON.parse(text);
      } catch {
        throw unusable("not JSON");
      }
      try {
        return { info: validateInfo(document), from: url };
      } catch (error) {
        throw new TrustError(`${(error as Error).message}; pass --cert-hash or --ca`, true);
      }
    } catch (error) {
      if (error instanceof TrustError) throw error;
      tried.push(whyFetchFailed(error, url));
    } finally {
      client?.close();
    }
  }
  throw trustFailure(host, tried);
}

/** One try at the trust document: where, why it failed, whether anything answered. */
interface Try {
  url: string;
  why: string;
  answered: boolean;
  /** What answered is not a duet ping server's TLS or HTTP side (or has no such document). */
  notPing?: true;
}

/** Failures that mean nothing answered: the server is down, not there yet, or hung up. */
const UNREACHABLE =
  /connection refused|no answer in time|timed out|unreachable|no route to host|was reset|does not resolve|failed to lookup|dns error|name or service not known|temporary failure in name resolution/i;

/** The error for a trust document that could not be had over any scheme tried. */
function trustFailure(host: string, tried: Try[]): TrustError {
  // One reason for every scheme (nothing listening, say) is said once.
  const detail = tried.every(({ why }) => why === tried[0]!.why)
    ? `${tried.map(({ url }) => url).join(" and ")}: ${tried[0]!.why}`
    : tried.map(({ url, why }) => `${url}: ${why}`).join("; ");
  if (!tried.some(({ answered }) => answered)) {
    return new TrustError(`cannot reach the server (${detail})`, false);
  }
  const advice = tried.some(({ notPing }) => notPing)
    ? "check that the URL's port is a duet ping server's, or pass --cert-hash or --ca"
    : "pass --cert-hash or --ca";
  return new TrustError(
    `cannot learn the server's certificate over a trusted channel (${detail}); ` +
      (isLoopback(host) ? "" : "plain HTTP is trusted only on loopback; ") + advice,
    true,
  );
}

/**
 * Why a fetch of the trust document failed, in duet's words. Deno's fetch says only "fetch
 * failed"; the reason (refused, no such name, a certificate not trusted, a peer that speaks
 * neither TLS nor HTTP) is in its cause, at the end of a chain of "client error (Connect): ...".
 */
function whyFetchFailed(error: unknown, url: string): Try {
  if (!(error instanceof Error)) return { url, why: String(error), answered: true };
  if (error.name === "TimeoutError") return { url, why: "no answer in time", answered: false };
  const detail = error.cause instanceof Error ? error.cause.message : error.message;
  if (/connection refused/i.test(detail)) {
    return { url, why: "connection refused (is the server running?)", answered: false };
  }
  if (closedBeforeAnswer(detail)) {
    // Accepted, then closed with no answer: starting, stopping or overloaded, perhaps.
    return { url, why: "the connection closed before any answer", answered: false };
  }
  const tls = tlsFailure(detail);
  if (tls !== undefined) {
    return { url, why: tls, answered: true, ...(/speak/.test(tls) ? { notPing: true } : {}) };
  }
  // duet's sentence where there is one ("the host name does not resolve (...)"), else the
  // innermost reason without the runtime's prefix and error number.
  const said = explainError(error);
  const reason = detail.match(/client error \([^)]*\): (.*)$/)?.[1] ?? detail;
  const why = said !== error.message ? said : reason.replace(/ \(os error \d+\)$/, "");
  return { url, why, answered: !UNREACHABLE.test(why) };
}

/**
 * The shape of `/.well-known/duet-ping.json` as a reader accepts it: the hashes always;
 * `url` (only when the server has a public URL configured), `port` and `path` when
 * present, and either `url` or both `port` and `path` (a server before `port` and `path`
 * published only `url`, which is still accepted). Unknown fields are dropped.
 */
export const PingServerInfoSchema = z.object({
  url: z.string({ error: "expected a string" }).optional(),
  port: z.int({ error: "expected a whole number" })
    .min(1, { error: "expected a port from 1 to 65535" })
    .max(65535, { error: "expected a port from 1 to 65535" })
    .optional(),
  path: z.string({ error: "expected a string" })
    .startsWith("/", { error: 'expected a path starting with "/"' })
    .optional(),
  certificateHashes: z.array(
    z.object({
      algorithm: z.literal("sha-256", { error: 'expected "sha-256"' }),
      value: z.string({ error: "expected a string of hex digits" })
        .regex(/^[0-9a-fA-F]{64}$/, { error: "expected 64 hex digits (a SHA-256)" }),
    }, { error: "expected an object" }),
    { error: "expected an array" },
  ),
}, { error: "expected a JSON object" }).refine(
  (info) => info.url !== undefined || (info.port !== undefined && info.path !== undefined),
  { error: "expected url, or port and path" },
);

/**
 * Checks the shape of a fetched document ({@link PingServerInfoSchema}).
 *
 * @throws Error "the server's /.well-known/duet-ping.json is not what duet ping serves
 *   (WHERE: WHAT)", naming the first problem found.
 */
export function validateInfo(value: unknown): PingServerInfo {
  const parsed = PingServerInfoSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? issue.path.join(".") : "the document";
    throw new Error(
      `the server's /.well-known/duet-ping.json is not what duet ping serves (${where}: ${
        issue?.message ?? "malformed"
      })`,
    );
  }
  // The older url-only form has no port and path: readers look at url first (serviceUrl).
  return parsed.data as PingServerInfo;
}

/** What the user gave on the command line about trust. */
export interface TrustChoice {
  /** `--cert-hash`: SHA-256 hashes to pin, 64 hex digits each. */
  certHashes?: string[];
  /** `--ca`: a CA certificate (PEM) to verify the server with. */
  caPem?: string;
}

/**
 * Settles trust for `url`: the user's hashes or CA if given, else the published hashes
 * (which must not be empty: a server with a certificate that cannot be pinned publishes
 * none, and then the user must name its CA).
 *
 * @throws {TrustError} when the published hashes cannot be had (see
 *   {@link fetchServerInfo}), or (permanent) when the document lists none.
 */
export async function resolveTrust(url: URL, choice: TrustChoice): Promise<PingTrust> {
  const trust: PingTrust = {};
  if (choice.certHashes?.length) {
    trust.serverCertificateHashes = choice.certHashes.map(parseCertHash);
  }
  if (choice.caPem) trust.caCerts = [choice.caPem];
  if (trust.serverCertificateHashes || trust.caCerts) return trust;
  const { info, from } = await fetchServerInfo(
    url.hostname,
    Number(url.port || 443),
  );
  if (!info.certificateHashes.length) {
    throw new TrustError(
      `${from} lists no certificate hashes; pass --ca with the server's CA`,
      true,
    );
  }
  return { serverCertificateHashes: info.certificateHashes.map((h) => parseCertHash(h.value)) };
}
