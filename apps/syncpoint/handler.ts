/**
 * The syncpoint HTTP API as a pure `Request -> Response` handler (Hono): routing, input
 * checks, and the one place where outcomes and errors become responses.
 *
 * @module
 */
import { Hono } from "hono";
import type { Context } from "hono";
import { getLogger } from "@logtape/logtape";
import type { Outcome, Presence, Refusal, Rendezvous } from "./rendezvous.ts";
import type { SyncpointMetrics } from "./metrics.ts";
import { KeyedBuckets, type Rate } from "@duet/net/rate";
import { isLoopback } from "./limits.ts";
import { concatBytes } from "@noble/hashes/utils.js";

/**
 * The id of a rendezvous: 1-128 characters of [A-Za-z0-9._~-] (URL-safe, unreserved), other
 * than `.` and `..`, which clients remove from a URL's path (RFC 3986 section 5.2.4) and so
 * could never send.
 */
export const ID_PATTERN: RegExp = /^(?!\.\.?$)[A-Za-z0-9._~-]{1,128}$/;

/** {@link ID_PATTERN} in words, for error messages and help. */
export const ID_RULE = "1-128 characters of [A-Za-z0-9._~-], other than . and ..";

/** Limits and defaults of the API. */
export interface HandlerOptions {
  /** Where parties meet. */
  rendezvous: Rendezvous;
  /** Metrics to count into and render at /metrics. */
  metrics: SyncpointMetrics;
  /** How long a first party waits unless it asks otherwise (10,000 ms). */
  defaultTimeoutMs: number;
  /** The most a party may ask for with `?timeout_ms=`; larger asks are capped. */
  maxTimeoutMs: number;
  /** Largest payload a party may send, in bytes (64 KiB). */
  maxPayloadBytes: number;
  /**
   * Arrivals (`POST /wait-for-second-party/:id`) per second per client address, as a token
   * bucket (`perSecond` refill, `burst` size); past it 429 `rate_limited` with `Retry-After`. Undefined: no limit. Behind a
   * proxy or load balancer that hides client addresses, every client shares one address
   * (turn it off there, or put the limit in the proxy).
   */
  arrivalRate?: Rate;
  /**
   * Whether the per-address limits (this rate, and the rendezvous's waiting parties per
   * address) apply to loopback clients too. False by default: on loopback the client is
   * this machine (a proxy on the same host, local tools, benchmarks).
   */
  limitLoopback?: boolean;
  /**
   * The listener's state: /healthz answers 503 during an accept outage, and while the
   * instance drains (before it refuses anything).
   */
  listener?: { readonly outage: boolean; readonly draining?: boolean };
}

/**
 * What the server passes beside the request (Hono's `c.env`): the client's address, and
 * its presence when the listener can probe it (packages/net/http1.ts).
 */
interface HandlerInfo {
  remoteAddr?: Deno.Addr;
  presence?: Presence;
}

/** The client's address, from the handler info. */
function clientAddress(env: unknown): string | undefined {
  const remote = (env as HandlerInfo | undefined)?.remoteAddr;
  return remote && "hostname" in remote ? remote.hostname : undefined;
}

/** A read of the request body failed: the client hung up, reset, or sent a broken body. */
class BodyReadFailed extends Error {
  override name = "BodyReadFailed";
}

/**
 * An error answer: the status and a stable machine-readable code. Thrown inside the handler,
 * it becomes `{"status": "error", "code", "message"}` with its status and headers.
 */
export class ApiError extends Error {
  /** "ApiError". */
  override name = "ApiError";
  /** The HTTP status of the answer. */
  readonly status: number;
  /** The stable error code, e.g. `invalid_id`. */
  readonly code: string;
  /** Headers of the answer (lower-case names), e.g. `retry-after`. */
  readonly headers: Record<string, string>;
  /**
   * An error answer to throw.
   *
   * @param status The HTTP status.
   * @param code The stable error code.
   * @param message The sentence for people, the answer's `message`.
   * @param headers Headers of the answer.
   */
  constructor(status: number, code: string, message: string, headers = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

const refusals: Record<Refusal, (waitedMs: number, timeoutMs: number) => ApiError> = {
  timeout: (_, timeoutMs) =>
    new ApiError(408, "timeout", `No second party arrived within ${timeoutMs} ms`),
  conflict: () => new ApiError(409, "conflict", "A pair on this id is being completed; try again"),
  capacity: () =>
    new ApiError(503, "capacity", "Too many parties are waiting; try again later", {
      "retry-after": "1",
    }),
  too_many_waiting: () =>
    new ApiError(
      429,
      "too_many_waiting",
      "Too many parties from your address are waiting; try again later",
      { "retry-after": "1" },
    ),
  shutting_down: () =>
    new ApiError(503, "shutting_down", "The service is shutting down", { "retry-after": "1" }),
  backend_unavailable: () =>
    new ApiError(503, "backend_unavailable", "The rendezvous store is unreachable", {
      "retry-after": "1",
    }),
};

const log = getLogger(["duet", "syncpoint"]);
/** The path of the wait endpoint, before `/:id`. */
export const WAIT_PATH = "/wait-for-second-party";

/** Parses `?timeout_ms=`: a whole number of milliseconds, at least 1, capped. */
function timeoutOf(query: string | undefined, options: HandlerOptions): number {
  if (query === undefined) return options.defaultTimeoutMs;
  // Any number of digits: a large ask is capped like any other (Number() of a long digit
  // string is a large finite number or Infinity, both above the cap).
  if (!/^[0-9]+$/.test(query) || Number(query) < 1) {
    throw new ApiError(400, "invalid_timeout", "timeout_ms must be a whole number of ms >= 1");
  }
  return Math.min(Number(query), options.maxTimeoutMs);
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A payload: its text (null when empty) and its size as received, in bytes. */
interface Payload {
  text: string | null;
  bytes: number;
}

const NO_PAYLOAD: Payload = { text: null, bytes: 0 };

/**
 * Reads a body whole: its bytes, or "too_large" once more than `max` bytes came (the rest is
 * left unread). Rejects when the body cannot be read (the client left, a broken body).
 */
export type BodyReader = (max: number) => Promise<Uint8Array | "too_large">;

/**
 * Reads the body as the payload: at most `max` bytes of UTF-8; empty means none. Throws
 * ApiError (413, 400), or BodyReadFailed when the body cannot be read.
 */
async function payloadOf(
  declared: string | null,
  read: BodyReader,
  max: number,
): Promise<Payload> {
  const tooLarge = () => new ApiError(413, "payload_too_large", `The payload exceeds ${max} bytes`);
  if (declared !== null && Number(declared) > max) throw tooLarge();
  let bytes: Uint8Array | "too_large";
  try {
    bytes = await read(max);
  } catch (error) {
    throw new BodyReadFailed(String(error), { cause: error });
  }
  if (bytes === "too_large") throw tooLarge();
  if (bytes.byteLength === 0) return NO_PAYLOAD;
  try {
    return { text: utf8.decode(bytes), bytes: bytes.byteLength };
  } catch {
    throw new ApiError(400, "invalid_payload", "The payload must be UTF-8 text");
  }
}

/** {@link BodyReader} of a Web `Request`. */
function requestBody(request: Request): BodyReader {
  return async (max) => {
    if (request.headers.get("content-length") !== null) {
      // Length known and within bounds: one read through the runtime's whole-body path. The
      // chunked path below costs ~14% of throughput in stream machinery (docs/benchmarks.md).
      return await request.bytes();
    }
    if (!request.body) return new Uint8Array(0);
    const chunks: Uint8Array[] = [];
    let size = 0;
    const reader = request.body.getReader();
    try {
      for (;;) {
        const read = await reader.read();
        if (read.done) break;
        size += read.value.byteLength;
        if (size > max) {
          reader.cancel().catch(() => {});
          return "too_large";
        }
        chunks.push(read.value);
      }
    } finally {
      reader.releaseLock();
    }
    return chunks.length === 1 ? chunks[0]! : concatBytes(...chunks);
  };
}

function pairedBody(id: string, outcome: Extract<Outcome, { kind: "paired" }>) {
  return {
    status: "paired",
    id,
    role: outcome.role,
    waited_ms: Math.round(outcome.waitedMs),
    peer_payload: outcome.peerPayload,
  };
}

/** One arrival as the HTTP layer hands it over (`POST /wait-for-second-party/:id`). */
export interface ArrivalRequest {
  /** The id from the path, percent-decoded, not yet validated. */
  id: string;
  /** `?timeout_ms=`, as sent. */
  timeoutQuery: string | undefined;
  /** The Content-Length header, as sent. */
  contentLength: string | null;
  /** Reads the body. */
  body: BodyReader;
  /** The client's address. */
  address: string | undefined;
  /** Aborts when the client leaves. */
  signal: AbortSignal;
  /** The client's presence, when the listener can probe it. */
  presence: Presence | undefined;
}

/** An answer: status, headers and a JSON body (null: no body). */
export interface Answer {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/**
 * The wait endpoint as one function from an arrival to its answer, every error mapped by
 * {@link errorAnswer}: what the Hono route and a listener's direct path (server.ts) both call.
 */
export function createArrivals(
  options: HandlerOptions,
): (arrival: ArrivalRequest) => Promise<Answer> {
  const { rendezvous, metrics } = options;
  const limiter = options.arrivalRate && new KeyedBuckets(options.arrivalRate);
  const arrive = async (request: ArrivalRequest): Promise<Answer> => {
    let address = request.address;
    if (address !== undefined && !options.limitLoopback && isLoopback(address)) {
      address = undefined; // exempt from per-address limits
    }
    if (limiter && address !== undefined) {
      const take = limiter.tryTake(address, performance.now());
      if (!take.ok) throw rateLimited(take.retryAfterMs);
    }
    const { id } = request;
    if (!ID_PATTERN.test(id)) throw invalidId();
    const timeoutMs = timeoutOf(request.timeoutQuery, options);
    let payload: Payload;
    try {
      payload = await payloadOf(request.contentLength, request.body, options.maxPayloadBytes);
    } catch (error) {
      if (!(error instanceof BodyReadFailed)) throw error;
      // An expected client event (hang-up, reset, broken body), not a fault of ours.
      log.debug("A party left while sending its body: {reason}", { reason: error.message });
      metrics.events.departed?.();
      return DEPARTED;
    }
    const outcome = await rendezvous.arrive({
      id,
      payload: payload.text,
      payloadBytes: payload.bytes,
      address,
      timeoutMs,
      // Read at once, for every party. Measured on Deno 2.9.6 with no-legacy-abort:
      // touching request.signal only later, for the parties that wait, cost ~25% more
      // server CPU per pair and raised p99 by half (docs/benchmarks.md).
      signal: request.signal,
      ...(request.presence ? { presence: request.presence } : {}),
    });
    switch (outcome.kind) {
      case "paired":
        return { status: 200, headers: {}, body: pairedBody(id, outcome) };
      case "departed":
        return DEPARTED; // nobody is listening; the connection is already gone
      case "refused":
        throw refusals[outcome.reason](outcome.waitedMs, timeoutMs);
    }
  };
  return (request) => arrive(request).catch((error) => errorAnswer(error, metrics));
}

/** What a departed party is "answered": 499, to nobody. */
const DEPARTED: Answer = { status: 499, headers: {}, body: null };

/** The API as a handler (a Hono app, seen through the two methods it is used by). */
export interface SyncpointApp {
  /**
   * A server's handler: `env.remoteAddr` gives the client address the per-address limits
   * count by, `env.presence` the client's presence (packages/net/http1.ts).
   */
  fetch(request: Request, env?: unknown): Response | Promise<Response>;
  /**
   * Answers a request without a server (for tests); `env` as for
   * {@link SyncpointApp.fetch} (without it nothing is limited per address).
   */
  request(
    input: string | URL | Request,
    init?: RequestInit,
    env?: unknown,
  ): Response | Promise<Response>;
}

/**
 * Builds the API: the Hono app whose `fetch(request, info)` is a server's handler
 * (`info.remoteAddr` gives the client address the per-address limits count by; without it,
 * as in `app.request()`, nothing is limited per address).
 *
 * @example
 * ```ts ignore
 * const app = createApp({ rendezvous, metrics, defaultTimeoutMs: 10_000, maxTimeoutMs: 60_000, maxPayloadBytes: 65_536 });
 * const response = await app.request("/healthz"); // 200 {"status":"ok","waiting":0}
 * ```
 */
export function createApp(options: HandlerOptions): SyncpointApp {
  const { rendezvous, metrics } = options;
  const arrivals = createArrivals(options);
  const app = new Hono();

  app.post(`${WAIT_PATH}/:id`, async (c) => {
    const answer = await arrivals({
      id: c.req.param("id"),
      timeoutQuery: c.req.query("timeout_ms"),
      contentLength: c.req.header("content-length") ?? null,
      body: requestBody(c.req.raw),
      address: clientAddress(c.env),
      signal: c.req.raw.signal,
      presence: (c.env as HandlerInfo | undefined)?.presence,
    });
    return answer.body === null
      ? c.body(null, answer.status as never, answer.headers)
      : c.json(answer.body, answer.status as 200, answer.headers);
  });
  app.all(`${WAIT_PATH}/:id`, () => {
    throw new ApiError(405, "method_not_allowed", "Use POST", { allow: "POST" });
  });
  app.all(`${WAIT_PATH}/*`, () => {
    throw invalidId();
  });
  app.all(WAIT_PATH, () => {
    throw invalidId();
  });

  // Liveness and readiness: 503 while arrivals cannot be served (store unreachable, out of
  // file descriptors, or shutting down), so a load balancer stops sending parties here.
  app.get("/healthz", (c) => {
    const draining = options.listener?.draining ?? false;
    const healthy = rendezvous.healthy && !options.listener?.outage && !draining;
    const status = healthy ? "ok" : draining ? "draining" : "unavailable";
    return c.json({ status, waiting: rendezvous.waiting }, healthy ? 200 : 503);
  });
  app.get("/metrics", async (c) => {
    return c.body(await metrics.render(), 200, { "content-type": metrics.contentType });
  });
  for (const path of ["/healthz", "/metrics"]) {
    app.all(path, () => {
      throw new ApiError(405, "method_not_allowed", "Use GET", { allow: "GET, HEAD" });
    });
  }

  app.notFound(() => {
    throw new ApiError(404, "not_found", "No such endpoint; see POST /wait-for-second-party/:id");
  });
  app.onError((error, c) => errorResponse(error, c, metrics));
  return app;
}

function rateLimited(retryAfterMs: number): ApiError {
  const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new ApiError(
    429,
    "rate_limited",
    "Too many arrivals from your address; slow down",
    { "retry-after": String(seconds) },
  );
}

function invalidId(): ApiError {
  return new ApiError(400, "invalid_id", `The id must be ${ID_RULE}`);
}

/** The error code of each status the listener answers itself (packages/net/http1.ts). */
const LISTENER_CODES: Record<number, string> = {
  400: "bad_request",
  405: "method_not_allowed",
  408: "request_timeout",
  417: "expectation_failed",
  431: "headers_too_large",
  501: "not_implemented",
  505: "http_version_not_supported",
};

/**
 * The answer to a request the listener could not take, counted like every error answer:
 * 400 `bad_request` (an invalid or missing Host, a target that is not a path, a request
 * that cannot be parsed or ended before its body), 405 `method_not_allowed` (CONNECT), 408
 * `request_timeout` (not whole in time), 417 `expectation_failed`, 431 `headers_too_large`,
 * 501 `not_implemented` (a transfer coding other than chunked), 505
 * `http_version_not_supported` (not HTTP/1.x).
 */
export function badRequestAnswer(
  status: number,
  reason: string,
  metrics: SyncpointMetrics,
): Answer {
  const code = LISTENER_CODES[status] ?? "bad_request";
  const sentence = reason.charAt(0).toUpperCase() + reason.slice(1);
  return errorAnswer(new ApiError(status, code, sentence), metrics);
}

/** The one mapping of errors to answers (ApiError as itself, anything else 500 internal). */
function errorAnswer(error: unknown, metrics: SyncpointMetrics): Answer {
  const apiError = error instanceof ApiError ? error : internal(error as Error);
  metrics.rejected(apiError.code);
  return {
    status: apiError.status,
    headers: apiError.headers,
    body: { status: "error", code: apiError.code, message: apiError.message },
  };
}

function errorResponse(error: Error, c: Context, metrics: SyncpointMetrics): Response {
  const answer = errorAnswer(error, metrics);
  return c.json(answer.body, answer.status as 400, answer.headers);
}

function internal(error: Error): ApiError {
  log.error("Unexpected error: {error}", { error });
  return new ApiError(500, "internal", "Internal error");
}
