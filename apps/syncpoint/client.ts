/**
 * A typed client for the syncpoint API. Web APIs only (fetch, timers, AbortSignal), so it
 * runs on Deno, Node, Bun and in browsers.
 *
 * @module
 */
import { abortable } from "@duet/core/abortable";
import { isPermanentNetworkError } from "@duet/core/explain-error";
import { backoffMs } from "@duet/core/backoff";
import { checkDuration } from "@duet/core/duration";
import { z } from "zod";
import { delay } from "@duet/core/delay";
import { setLongTimeout } from "@duet/core/long-timeout";
import { BodyTooLargeError, readTextCapped } from "@duet/core/read-capped";

/** A completed rendezvous, as one party sees it. */
export interface PairResult {
  /** "first" if this party waited, "second" if it found the other waiting. */
  role: "first" | "second";
  /** How long this party waited, in ms (0 for the second), on the attempt that paired. */
  waitedMs: number;
  /** What the other party sent, or null if it sent nothing. */
  peerPayload: string | null;
}

/**
 * How {@link waitForSecondParty} retries; every field is optional. Retries always stay
 * inside the one deadline of {@link WaitOptions.timeoutMs}.
 */
export interface RetryPolicy {
  /**
   * The first backoff delay, in ms (100); it doubles per attempt, with jitter. A finite
   * number ≥ 0, else {@link waitForSecondParty} rejects with a `RangeError` naming it.
   */
  initialDelayMs?: number;
  /**
   * The largest backoff delay, in ms (2,000). `Retry-After` may ask for longer. A number ≥ 0
   * (`Infinity` allowed: the deadline caps every delay, and delays past `setTimeout`'s
   * 24.8 days are waited in full), else a `RangeError` naming it.
   */
  maxDelayMs?: number;
  /** Most attempts in all, the first included, ≥ 1 (no limit: the deadline bounds them). */
  maxAttempts?: number;
  /**
   * Called once per retry, before its delay: to report it (the CLI prints a line). An
   * exception thrown here rejects the wait with it.
   */
  onRetry?: (event: RetryEvent) => void;
}

/** A retry about to happen, as {@link RetryPolicy.onRetry} sees it. */
export interface RetryEvent {
  /** The attempt that failed: 1 for the first request. */
  attempt: number;
  /** Why: a {@link SyncpointError} (an answer), or what fetch threw (a lost connection). */
  error: Error;
  /** How long it waits before the next attempt, in ms. */
  delayMs: number;
  /** Time left before the deadline when it decided, in ms (the delay included). */
  remainingMs: number;
}

/** Options of {@link waitForSecondParty}. */
export interface WaitOptions {
  /** Text to hand to the other party (UTF-8, at most 64 KiB by default). */
  payload?: string;
  /**
   * How long to wait for the other party, in ms: one deadline for all attempts. The first
   * request asks the server for all of it (the server caps it, 60 s by default), each
   * retry for what remains. Without it the first request asks nothing (the server's
   * default applies, 10 s by default) and retries stay within {@link DEFAULT_DEADLINE_MS}
   * of the start. A finite number ≥ 0, any size (a delay past `setTimeout`'s 24.8 days is
   * waited in full); else the wait rejects with a `RangeError` naming `timeoutMs`. An
   * attempt that asked for a time gets no longer than that and {@link ANSWER_GRACE_MS}, one
   * that asked none {@link UNASKED_WAIT_CAP_MS} and the grace: a service that accepted the
   * connection and never answers fails it then, not never.
   */
  timeoutMs?: number;
  /**
   * How long a request that asks for no time (no `timeoutMs`) waits for its answer, in ms,
   * before it takes the service for one that will never answer: {@link UNASKED_WAIT_CAP_MS}
   * by default. A finite number ≥ 0.
   */
  unaskedWaitCapMs?: number;
  /**
   * Gives up at once, whenever it aborts: before the call, right after it, during the
   * request, while the answer's body is read, or during a retry's delay; the promise
   * rejects with `signal.reason` (even with a custom {@link WaitOptions.fetch} that ignores
   * it).
   */
  signal?: AbortSignal;
  /** The fetch to use (for tests or custom agents). */
  fetch?: typeof fetch;
  /**
   * Retries of failures a later attempt can cure (see {@link waitForSecondParty}); on by
   * default. `false`: one request, its outcome as is.
   */
  retry?: false | RetryPolicy;
}

/** The deadline of a wait that sets no `timeoutMs`: the service's default wait, in ms. */
export const DEFAULT_DEADLINE_MS = 10_000;

/** The defaults of {@link RetryPolicy}. */
export const DEFAULT_RETRY: Readonly<Required<Omit<RetryPolicy, "onRetry">>> = {
  initialDelayMs: 100,
  maxDelayMs: 2_000,
  maxAttempts: Infinity,
};

/**
 * The least time a retry keeps for itself, in ms: a delay is shortened so that this much
 * remains after it, and with less than this left there is no retry. Enough to be paired
 * as the second party of someone already waiting.
 */
export const LAST_ATTEMPT_MS = 50;

/**
 * The service answered with an error. `code` is stable: `timeout`, `conflict`,
 * `capacity`, `shutting_down`, `backend_unavailable`, `too_many_waiting`, `rate_limited`,
 * `invalid_id`, `invalid_timeout`, `invalid_payload`, `payload_too_large`,
 * `method_not_allowed`, `not_found`, `internal`; and from the client itself
 * `bad_response` (the answer was not the service's: a proxy's error page) or `unknown`
 * (JSON without a code).
 */
export class SyncpointError extends Error {
  /** "SyncpointError". */
  override name = "SyncpointError";
  /** The HTTP status. */
  readonly status: number;
  /** The stable error code. */
  readonly code: string;
  /** The answer's `Retry-After`, in ms, if it had a valid one. */
  readonly retryAfterMs: number | undefined;
  /**
   * An error answer of the service, or the client's verdict on an answer.
   *
   * @param status The HTTP status.
   * @param code The stable error code.
   * @param message The service's sentence for people (or the client's own).
   * @param retryAfterMs The answer's `Retry-After`, in ms.
   */
  constructor(status: number, code: string, message: string, retryAfterMs?: number) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

/** What went wrong with one attempt, as {@link retryDecision} needs it. */
export type AttemptFailure =
  /** The service (or a proxy) answered with this status. */
  | { kind: "answer"; status: number; code: string; retryAfterMs?: number | undefined }
  /**
   * No answer: connection refused, reset or lost, DNS, a broken body (fetch's TypeError).
   * `permanent` when no later attempt can get one: fetch refuses the port by its own rules
   * (the Fetch standard's bad ports) or the server's certificate is not trusted.
   */
  | { kind: "network"; permanent?: boolean };

/** What to do after a failed attempt. */
export type RetryDecision =
  | { retry: true; delayMs: number }
  | {
    retry: false;
    /** `permanent`: another attempt would get the same; `deadline`, `attempts`: no more. */
    reason: "permanent" | "deadline" | "attempts";
  };

/**
 * Whether a later attempt can cure this failure: 503 (`capacity`, `shutting_down`,
 * `backend_unavailable`, or a proxy's), 429 (`too_many_waiting`, `rate_limited`), 409
 * `conflict`, a proxy's 502 and 504, and lost connections. Not 400, 404, 405, 413 (the
 * same request gets the same answer), 500 (a bug), nor 408 (see
 * {@link waitForSecondParty}).
 */
export function isRetryable(failure: AttemptFailure): boolean {
  if (failure.kind === "network") return !failure.permanent;
  return [409, 429, 502, 503, 504].includes(failure.status);
}

/**
 * The retry policy as a pure function: after attempt number `attempt` (1 for the first)
 * failed with `failure`, with `remainingMs` left before the deadline, retry after how
 * long, or stop. `random` in [0, 1) is the jitter.
 *
 * The delay is the answer's `Retry-After` when it has one (never earlier; spread by up to
 * `initialDelayMs` so that parties refused together do not return together), else an
 * exponential backoff: `initialDelayMs` doubling per attempt up to `maxDelayMs`, of which
 * a random half is taken off ("equal jitter"). Either way it is capped so that at least
 * {@link LAST_ATTEMPT_MS} remains for the next attempt: the delay never reaches the deadline.
 */
export function retryDecision(
  failure: AttemptFailure,
  attempt: number,
  remainingMs: number,
  random: number,
  policy: RetryPolicy = {},
): RetryDecision {
  const initial = policy.initialDelayMs ?? DEFAULT_RETRY.initialDelayMs;
  const max = policy.maxDelayMs ?? DEFAULT_RETRY.maxDelayMs;
  if (!isRetryable(failure)) return { retry: false, reason: "permanent" };
  if (attempt >= (policy.maxAttempts ?? DEFAULT_RETRY.maxAttempts)) {
    return { retry: false, reason: "attempts" };
  }
  const room = remainingMs - LAST_ATTEMPT_MS;
  if (!(room >= 0)) return { retry: false, reason: "deadline" };
  const retryAfter = failure.kind === "answer" ? failure.retryAfterMs : undefined;
  let wanted: number;
  if (retryAfter !== undefined) {
    wanted = retryAfter + random * initial;
  } else {
    wanted = backoffMs({ initialMs: initial, maxMs: max, jitter: "equal" }, attempt, random);
  }
  return { retry: true, delayMs: Math.max(0, Math.min(Math.round(wanted), Math.floor(room))) };
}

/**
 * Parses a `Retry-After` value (delta-seconds or an HTTP date) into ms from `nowMs`;
 * undefined when absent or malformed.
 */
export function parseRetryAfter(
  value: string | null,
  nowMs: number = Date.now(),
): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^[0-9]{1,9}$/.test(text)) return Number(text) * 1000;
  // An HTTP date names its day and month ("Wed, 21 Oct 2015 07:28:00 GMT").
  const date = /^[A-Za-z]{3}, /.test(text) ? Date.parse(text) : NaN;
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs);
}

/**
 * Waits at `baseUrl` for the other party of `id`. Resolves when both are there; rejects
 * with {@link SyncpointError} when the service refuses (no partner before the deadline:
 * code `timeout`), with what fetch threw (a `TypeError`) when the service could not be
 * reached, or with the signal's reason when `signal` aborts.
 *
 * **Retries** (on unless `retry: false`), all inside one deadline (`timeoutMs`):
 * - 503 (`shutting_down` from an instance that drains in a rolling update, `capacity`,
 *   `backend_unavailable` while Redis is away) and 429 (`too_many_waiting`,
 *   `rate_limited`): after their `Retry-After`, shortened if less time remains;
 * - 409 `conflict`, lost connections and network errors (fetch's TypeError: refused,
 *   reset, closed mid-answer), and a proxy's 502 or 504: after an exponential backoff
 *   with jitter (100 ms doubling to 2 s by default).
 *
 * Each retry asks the server only for the time that remains (`?timeout_ms=`). A party
 * that was waiting when it lost its answer was never paired (the service pairs nobody
 * with a party that left), so it can take its place again. When no time is left, the
 * last error is the answer.
 *
 * **Not retried**: 400, 404, 405, 413 (the same request gets the same answer), 500 (a
 * bug), and 408 `timeout`: the server held this party for all the time it granted (what
 * remained, or the operator's cap if smaller) and nobody came; asking again would only
 * overrule that cap, and with the time spent there is nothing left to ask for.
 *
 * **What a retry cannot make whole**: a connection lost after the server paired this
 * party (the answer was on its way). The partner got this party's payload and went
 * away; the retry waits as a new party of the same id and ends in `timeout`, or pairs
 * with a later arrival of that id. Use each id for one rendezvous, and let the payloads
 * say enough that a party can tell a stranger from its partner.
 *
 * @example
 * ```ts ignore
 * const { role, peerPayload } = await waitForSecondParty("http://127.0.0.1:8080", "job-7", {
 *   payload: "my address is 10.0.0.7",
 *   timeoutMs: 30_000,
 *   retry: { onRetry: ({ error, delayMs }) => console.warn(`${error.message}; in ${delayMs} ms`) },
 * });
 * ```
 */
export async function waitForSecondParty(
  baseUrl: string | URL,
  id: string,
  options: WaitOptions = {},
): Promise<PairResult> {
  const url = new URL(`wait-for-second-party/${encodeURIComponent(id)}`, withSlash(baseUrl));
  const { signal } = options;
  checkDurations(options);
  signal?.throwIfAborted();
  const policy = options.retry === false ? undefined : options.retry ?? {};
  const started = performance.now();
  const deadline = started + (options.timeoutMs ?? DEFAULT_DEADLINE_MS);
  for (let attempt = 1;; attempt++) {
    // The first request asks for the whole wait, each retry for what remains of it.
    const timeoutMs = attempt === 1 ? options.timeoutMs : deadline - performance.now();
    try {
      return await attemptOnce(url, timeoutMs, options);
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (!policy) throw error;
      if (attempt > 1 && error instanceof SyncpointError && error.code === "timeout") {
        // The server's words name only the last request's time: say the whole wait's.
        throw new SyncpointError(
          error.status,
          "timeout",
          `No second party arrived within ${
            Math.round(performance.now() - started)
          } ms (${attempt} requests)`,
          error.retryAfterMs,
        );
      }
      const remainingMs = deadline - performance.now();
      const decision = retryDecision(
        failureOf(error),
        attempt,
        remainingMs,
        Math.random(),
        policy,
      );
      if (!decision.retry) throw error;
      policy.onRetry?.({
        attempt,
        error: error instanceof Error ? error : new Error(String(error)),
        delayMs: decision.delayMs,
        remainingMs,
      });
      // Any length (a Retry-After of days within a deadline of months), and at once when
      // the signal aborted meanwhile (in onRetry, say).
      await delay(decision.delayMs, signal ? { signal } : {});
    }
  }
}

/**
 * The durations of `options`, checked before anything is sent: each a number of ms ≥ 0
 * (`timeoutMs` and `initialDelayMs` finite too), `maxAttempts` ≥ 1.
 *
 * @throws {RangeError} naming the option.
 */
function checkDurations(options: WaitOptions): void {
  const { timeoutMs } = options;
  if (timeoutMs !== undefined) checkDuration("timeoutMs", timeoutMs, { infinite: false });
  if (options.unaskedWaitCapMs !== undefined) {
    checkDuration("unaskedWaitCapMs", options.unaskedWaitCapMs, { infinite: false });
  }
  if (!options.retry) return;
  const { initialDelayMs, maxDelayMs, maxAttempts } = options.retry;
  if (initialDelayMs !== undefined) {
    checkDuration("retry.initialDelayMs", initialDelayMs, { infinite: false });
  }
  if (maxDelayMs !== undefined) checkDuration("retry.maxDelayMs", maxDelayMs);
  if (maxAttempts !== undefined && !(maxAttempts >= 1)) {
    throw new RangeError(`retry.maxAttempts must be at least 1, got ${maxAttempts}`);
  }
}

/** A paired answer (200) of the service; other fields are ignored. */
const PairedAnswer = z.object({
  role: z.enum(["first", "second"]),
  waited_ms: z.number().nonnegative(),
  peer_payload: z.string().nullable(),
});

/**
 * An error answer of the service: `code` and `message` when they are strings (a proxy's
 * JSON may have neither, or other types: the client then says `unknown` and the status).
 */
const ErrorAnswer = z.object({
  code: z.string().optional().catch(undefined),
  message: z.string().optional().catch(undefined),
});

/** One request: the pair, or a SyncpointError, or what fetch (or reading the body) threw. */
async function attemptOnce(
  base: URL,
  timeoutMs: number | undefined,
  options: WaitOptions,
): Promise<PairResult> {
  const url = new URL(base);
  // A service that accepted the connection but never answers (or answers slowly) must not
  // hold the wait past its deadline: the attempt gives it the time asked and ANSWER_GRACE_MS
  // for its 408 to arrive, then gives up on its own.
  // Never more than asked (the deadline), never less than the server's 1 ms; in digits
  // (a huge deadline would otherwise be written as 1e+21, which the server refuses).
  const ask = timeoutMs === undefined
    ? undefined
    : Math.min(Number.MAX_SAFE_INTEGER, Math.max(1, Math.floor(timeoutMs)));
  if (ask !== undefined) url.searchParams.set("timeout_ms", String(ask));
  const controller = new AbortController();
  const cancelLate = setLongTimeout(
    () => controller.abort(new DOMException("no answer in time", "TimeoutError")),
    (ask ?? options.unaskedWaitCapMs ?? UNASKED_WAIT_CAP_MS) + ANSWER_GRACE_MS,
  );
  const late = controller.signal;
  const signal = options.signal ? AbortSignal.any([options.signal, late]) : late;
  try {
    return await answerOf(url, options, signal);
  } catch (error) {
    if (late.aborted && !options.signal?.aborted) {
      throw new Error(
        `the service did not answer within ${
          ask ?? options.unaskedWaitCapMs ?? UNASKED_WAIT_CAP_MS
        } ms ` +
          `(and ${ANSWER_GRACE_MS} ms for its answer to arrive)` +
          (ask === undefined ? "; pass a timeout to wait longer" : ""),
        { cause: error },
      );
    }
    throw error;
  } finally {
    cancelLate();
  }
}

/**
 * How long after the time a request asked for its answer may take to arrive, in ms, before
 * the client stops waiting for it: the most a wait can overrun its deadline when the service
 * never answers. A 408 sent at the deadline crosses a network in far less.
 */
export const ANSWER_GRACE_MS = 500;

/**
 * The largest answer read, in bytes: a pair's JSON holds the partner's payload (64 KiB at
 * most by default, up to six times that as JSON escapes) and little else. A larger answer
 * is no syncpoint's, and is not read into memory.
 */
export const MAX_ANSWER_BYTES = 1024 * 1024;

/**
 * How long a request that asked for no time (no `timeoutMs`: the server's own wait applies)
 * waits for its answer, in ms: a syncpoint grants at most its `maxTimeoutMs`, 60 s by
 * default, so a service silent for longer is taken for one that will never answer. Pass
 * `timeoutMs` to wait longer on a service configured so.
 */
export const UNASKED_WAIT_CAP_MS = 60_000;

/** One request and its answer, abortable by `signal`. */
async function answerOf(
  url: URL,
  options: WaitOptions,
  signal: AbortSignal | undefined,
): Promise<PairResult> {
  const response = await abortable(
    (options.fetch ?? fetch)(url, {
      method: "POST",
      ...(options.payload === undefined ? {} : {
        body: options.payload,
        headers: { "content-type": "text/plain; charset=utf-8" },
      }),
      ...(signal ? { signal } : {}),
    }),
    signal,
  );
  let text: string;
  try {
    text = await abortable(readTextCapped(response, MAX_ANSWER_BYTES), signal);
  } catch (error) {
    if (!(error instanceof BodyTooLargeError)) throw error;
    throw new SyncpointError(
      response.status,
      "bad_response",
      `Not a syncpoint answer (HTTP ${response.status}): ${error.message}`,
    );
  }
  signal?.throwIfAborted();
  return pairOf(response, text);
}

/** The pair in an answer, or the {@link SyncpointError} it says (or that it is not one). */
function pairOf(response: Response, text: string): PairResult {
  const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
  const status = response.status;
  const notOurs = (why: string) =>
    new SyncpointError(
      status,
      "bad_response",
      `Not a syncpoint answer (HTTP ${status}${why}): ${text.slice(0, 80).trim()}`,
      retryAfterMs,
    );
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw notOurs("");
  }
  if (status !== 200) {
    const body = ErrorAnswer.safeParse(json);
    if (!body.success) throw notOurs("");
    const { code, message } = body.data;
    throw new SyncpointError(status, code ?? "unknown", message ?? `HTTP ${status}`, retryAfterMs);
  }
  const body = PairedAnswer.safeParse(json);
  if (!body.success) throw notOurs(`, ${issueOf(body.error)}`);
  return {
    role: body.data.role,
    waitedMs: body.data.waited_ms,
    peerPayload: body.data.peer_payload,
  };
}

/** The first problem zod found, in a few words: "role: expected first or second". */
function issueOf(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return "malformed";
  const where = issue.path.length > 0 ? issue.path.join(".") : "the body";
  if (issue.code === "invalid_value") {
    return `${where}: expected ${issue.values.map(String).join(" or ")}`;
  }
  if (issue.code === "invalid_type") {
    return `${where}: expected ${issue.expected}`;
  }
  if (issue.code === "too_small") return `${where}: negative`;
  return `${where}: malformed`;
}

/** A SyncpointError is an answer; anything else fetch or the body read threw, no answer. */
function failureOf(error: unknown): AttemptFailure {
  return error instanceof SyncpointError
    ? { kind: "answer", status: error.status, code: error.code, retryAfterMs: error.retryAfterMs }
    : { kind: "network", permanent: isPermanentNetworkError(error) };
}

function withSlash(base: string | URL): URL {
  const url = new URL(base);
  if (!url.pathname.endsWith("/")) url.pathname += "/";
  return url;
}
