/**
 * A typed client for the syncpoint API. Web APIs only (fetch), so it runs on Deno, Node,
 * Bun and in browsers.
 *
 * @module
 */

/** A completed rendezvous, as one party sees it. */
export interface PairResult {
  /** "first" if this party waited, "second" if it found the other waiting. */
  role: "first" | "second";
  /** How long this party waited, in ms (0 for the second). */
  waitedMs: number;
  /** What the other party sent, or null if it sent nothing. */
  peerPayload: string | null;
}

/** Options of {@link waitForSecondParty}. */
export interface WaitOptions {
  /** Text to hand to the other party (UTF-8, at most 64 KiB by default). */
  payload?: string;
  /** How long to wait for the other party, in ms; the server caps it (60 s by default). */
  timeoutMs?: number;
  /** Gives up waiting; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
  /** The fetch to use (for tests or custom agents). */
  fetch?: typeof fetch;
}

/**
 * The service answered with an error. `code` is stable: `timeout`, `conflict`,
 * `capacity`, `shutting_down`, `backend_unavailable`, `too_many_waiting`, `rate_limited`,
 * `invalid_id`, `invalid_timeout`, `invalid_payload`, `payload_too_large`,
 * `method_not_allowed`, `not_found`, `internal`.
 */
export class SyncpointError extends Error {
  override name = "SyncpointError";
  /** The HTTP status. */
  readonly status: number;
  /** The stable error code. */
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * Waits at `baseUrl` for the other party of `id`. Resolves when both are there; rejects
 * with {@link SyncpointError} when the service refuses (after `timeoutMs`: code
 * `timeout`), or with a `TypeError` when the service cannot be reached.
 *
 * @example
 * ```ts ignore
 * const { role, peerPayload } = await waitForSecondParty("http://127.0.0.1:8080", "job-7", {
 *   payload: "my address is 10.0.0.7",
 * });
 * ```
 */
export async function waitForSecondParty(
  baseUrl: string | URL,
  id: string,
  options: WaitOptions = {},
): Promise<PairResult> {
  const url = new URL(`wait-for-second-party/${encodeURIComponent(id)}`, withSlash(baseUrl));
  if (options.timeoutMs !== undefined) {
    url.searchParams.set("timeout_ms", String(Math.max(1, Math.round(options.timeoutMs))));
  }
  const response = await (options.fetch ?? fetch)(url, {
    method: "POST",
    ...(options.payload === undefined ? {} : {
      body: options.payload,
      headers: { "content-type": "text/plain; charset=utf-8" },
    }),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const text = await response.text();
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(text);
  } catch {
    throw new SyncpointError(
      response.status,
      "bad_response",
      `Not a syncpoint answer: ${text.slice(0, 80)}`,
    );
  }
  if (response.status !== 200) {
    throw new SyncpointError(
      response.status,
      typeof body["code"] === "string" ? body["code"] : "unknown",
      typeof body["message"] === "string" ? body["message"] : `HTTP ${response.status}`,
    );
  }
  return {
    role: body["role"] === "first" ? "first" : "second",
    waitedMs: Number(body["waited_ms"] ?? 0),
    peerPayload: typeof body["peer_payload"] === "string" ? body["peer_payload"] : null,
  };
}

function withSlash(base: string | URL): URL {
  const url = new URL(base);
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}
