/**
 * `duet syncpoint` (the rendezvous service) and `duet syncpoint wait ID` (its client).
 *
 * @module
 */
import { explainError } from "@duet/core/explain-error";
import { Command, Option } from "commander";
import { getLogger } from "@logtape/logtape";
import { logText } from "../logging.ts";
import {
  ANSWER_GRACE_MS,
  CodeExchangeError,
  DEFAULTS,
  ID_PATTERN,
  ID_RULE,
  MAX_CODE_ID_LENGTH,
  maxCodePayloadBytes,
  type RetryEvent,
  startSyncpoint,
  SyncpointError,
  waitForSecondParty,
  waitWithCode,
} from "@duet/syncpoint";
import { generateCode } from "@duet/pake";
import { jsonLine } from "@duet/core/json-line";
import { printable } from "@duet/core/printable";
import { type CliIo, ExitStatus, UsageError } from "../io.ts";
import { codeOption, explainListenError, integer, untilAborted, url } from "./_options.ts";

interface ServeOptions {
  host: string;
  port: number;
  timeoutMs: number;
  maxTimeoutMs: number;
  maxWaiting: number;
  maxWaitingBytes: number;
  maxWaitingPerAddress: number;
  arrivalsPerSecond: number;
  arrivalBurst: number;
  limitLoopback?: boolean;
  redisUrl?: string;
  redisPrefix?: string;
  drainMs: number;
}

interface WaitCliOptions {
  url: string;
  payload?: string;
  code?: string;
  timeoutMs?: number;
  json?: boolean;
  retry: boolean;
}

/** What a retry line says about the failure: "service unavailable (shutting_down)". */
function retryReason(error: Error): string {
  if (!(error instanceof SyncpointError)) return `connection failed: ${explainError(error)}`;
  const what: Record<number, string> = {
    409: "pair in progress",
    429: "too many requests",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
  };
  return `${what[error.status] ?? `HTTP ${error.status}`} (${error.code})`;
}

/** How the errors of `duet syncpoint wait` begin, however the command line was written. */
const WAIT_PREFIX = "duet syncpoint wait";

/**
 * A usage error of `wait`, printed here (exit 2): the CLI's own handler would name the
 * command after the words before it, "duet" when a global option such as -q comes first.
 */
function waitUsage(io: CliIo, message: string): never {
  io.err(`${WAIT_PREFIX}: ${message} (see --help)\n`);
  throw new ExitStatus(2);
}

const BASE_URL_HINT =
  `--url is the service's base URL, e.g. http://127.0.0.1:${DEFAULTS.port} (the id is the argument)`;

/**
 * A 408 this long before the --timeout-ms asked means the service granted less: without a
 * cap the last attempt asks for all that remains, and the answer comes no earlier.
 */
const CAP_MARGIN_MS = 50;

/** `ms` as "12.41 s". */
function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

/** The help after `duet syncpoint`'s options. */
const SERVICE_HELP = `
Examples:
  duet syncpoint --port 8080
  curl -X POST localhost:8080/wait-for-second-party/demo -d 'hello'   # terminal 1
  curl -X POST localhost:8080/wait-for-second-party/demo -d 'hi'      # terminal 2
  duet syncpoint --redis-url redis://127.0.0.1:6379                   # scaled out

Per-address limits (--max-waiting-per-address, --arrivals-per-second) count by the
client's TCP address. Behind a proxy or load balancer that hides client addresses, every
client shares one address: set them to 0 there, or limit in the proxy. Loopback clients
are exempt unless --limit-loopback. Limits in full: apps/syncpoint/README.md#limits.

Out of file descriptors: new connections are refused while the held ones are served,
the listener restarts by itself, /healthz answers 503 meanwhile.

Stops on SIGINT/SIGTERM: /healthz answers 503 at once, parties are served for --drain-ms
more, then it stops accepting and answers waiting parties 503 (clients retry elsewhere).
A second signal exits at once, without answering them.`;

/** Where `duet syncpoint wait` looks for the service by default. */
const DEFAULT_WAIT_URL = `http://127.0.0.1:${DEFAULTS.port}`;
/** How long a wait with --code waits by default (ms): time to read the code out. */
const CODE_WAIT_MS = DEFAULTS.maxTimeoutMs;

/** The help after `duet syncpoint wait`'s options. */
const WAIT_HELP = `
Output: stdout carries only the other party's payload, on one line (a newline shows as ␊),
and nothing at all if it sent none; "paired as the first party after 1.23 s" goes to
stderr, unless --quiet. The time counts from the command's start, retries included.
With --json, stdout carries one object whatever the outcome:
  {"status":"paired","id":ID,"role":"first"|"second","waited_ms":N,"peer_payload":TEXT|null}
  {"status":"error","id":ID,"code":"timeout"|...|"unreachable","message":TEXT}
waited_ms counts from the command's start too. Errors go to stderr as well.
Exit status: 0 paired, 1 not (timeout, refusal, unreachable, code_mismatch), 2 a usage
error (no JSON), 130 interrupted.

With --code, both parties prove the same code to each other (CPace, through the service,
which learns nothing) before either payload is handed over, sealed; --json adds
"code_verified":true. Another code fails both sides with code_mismatch, revealing nothing.
Both parties must use --code; the wait is 60 s by default, time to read the code out.
  duet syncpoint wait room-7 --code new --payload "10.0.0.7:4433"   # prints the code
  duet syncpoint wait room-7 --code 7-guitar-orbit-lazy --payload "10.0.0.9:4433"

Retries, within the one --timeout-ms: 503 (an instance draining in a rolling update,
capacity, Redis away) and 429 after their Retry-After; 409 and lost connections after a
backoff (0.1 s doubling to 2 s); said on stderr once per cause (a JSON log record under
--log-format json), unless --quiet. Not 408
(nobody came in the time granted), nor 400, 404, 405, 413. A connection lost just after
the server paired this party cannot be made whole: the partner got the payload, and the
retry waits anew (see apps/syncpoint/README.md#library).`;

/** The `syncpoint` command (the service) with its `wait` subcommand (the client). */
export function syncpointCommand(io: CliIo): Command {
  const command = new Command("syncpoint")
    // `wait` has options of the same names (--timeout-ms): each command parses its own.
    .enablePositionalOptions();
  return serviceOptions(command)
    .addHelpText("after", SERVICE_HELP)
    .action((options: ServeOptions, command: Command) => runService(options, command, io))
    .addCommand(waitCommand(io));
}

/** The service's options, on `command`. */
function serviceOptions(command: Command): Command {
  return command
    .option("--host <host>", "interface to listen on", DEFAULTS.hostname)
    .option("--port <port>", "TCP port (0 picks a free one)", integer(0, 65535), DEFAULTS.port)
    .option(
      "--timeout-ms <ms>",
      "how long a first party waits by default",
      integer(1, 3_600_000),
      DEFAULTS.defaultTimeoutMs,
    )
    .option(
      "--max-timeout-ms <ms>",
      "cap on a party's own ?timeout_ms=",
      integer(1, 3_600_000),
      DEFAULTS.maxTimeoutMs,
    )
    .option(
      "--max-waiting <n>",
      "most first parties waiting at once (each holds a connection)",
      integer(1),
      DEFAULTS.maxWaiting,
    )
    .option(
      "--max-waiting-bytes <bytes>",
      "most payload bytes held by waiting parties, summed; past it new first parties get " +
        `503 capacity (0: no limit; else at least ${DEFAULTS.maxPayloadBytes})`,
      integer(0),
      DEFAULTS.maxWaitingBytes,
    )
    .option(
      "--max-waiting-per-address <n>",
      "most first parties waiting at once per client address; past it 429 " +
        "too_many_waiting (0: no limit)",
      integer(0),
      DEFAULTS.maxWaitingPerAddress,
    )
    .option(
      "--arrivals-per-second <n>",
      "arrivals per second per client address, a token bucket; past it 429 rate_limited " +
        "(0: no limit)",
      integer(0),
      DEFAULTS.arrivalsPerSecond,
    )
    .option(
      "--arrival-burst <n>",
      "arrivals one client address may make at once (the token bucket's size)",
      integer(1),
      DEFAULTS.arrivalBurst,
    )
    .option(
      "--limit-loopback",
      "apply the per-address limits to loopback clients too (exempt by default)",
    )
    .addOption(
      new Option("--redis-url <url>", "share the rendezvous with other instances through Redis")
        .argParser(url("redis:", "rediss:"))
        .env("SYNCPOINT_REDIS_URL"),
    )
    .option("--redis-prefix <prefix>", "prefix of Redis keys and channels", "duet:syncpoint")
    .option(
      "--drain-ms <ms>",
      "on SIGTERM, answer /healthz 503 and keep serving this long before waiting parties " +
        "are answered 503 (a load balancer's time to stop sending parties here)",
      integer(0, 600_000),
      DEFAULTS.drainMs,
    );
}

/** `duet syncpoint`: runs the service until a stop signal. */
async function runService(options: ServeOptions, command: Command, io: CliIo): Promise<void> {
  if (options.maxTimeoutMs < options.timeoutMs) {
    throw new UsageError(
      `--max-timeout-ms ${options.maxTimeoutMs} is below --timeout-ms ${options.timeoutMs}` +
        `${command.getOptionValueSource("timeoutMs") === "default" ? " (its default)" : ""}; ` +
        "the longest wait a party may ask for must be at least the default wait",
    );
  }
  if (options.maxWaitingBytes !== 0 && options.maxWaitingBytes < DEFAULTS.maxPayloadBytes) {
    throw new UsageError(
      `--max-waiting-bytes must be 0 (no limit) or at least ${DEFAULTS.maxPayloadBytes}, ` +
        "the largest payload",
    );
  }
  const server = await startSyncpoint({
    hostname: options.host,
    port: options.port,
    defaultTimeoutMs: options.timeoutMs,
    maxTimeoutMs: options.maxTimeoutMs,
    maxWaiting: options.maxWaiting,
    maxWaitingBytes: options.maxWaitingBytes,
    maxWaitingPerAddress: options.maxWaitingPerAddress,
    arrivalsPerSecond: options.arrivalsPerSecond,
    arrivalBurst: options.arrivalBurst,
    limitLoopback: options.limitLoopback ?? false,
    ...(options.redisUrl ? { redisUrl: options.redisUrl } : {}),
    ...(options.redisPrefix ? { redisPrefix: options.redisPrefix } : {}),
    drainMs: options.drainMs,
  }).catch((error) => explainListenError(error, options.host, options.port));
  // On stdout, quiet or not: with --port 0 it is the only way to learn the port.
  const waitUrl = new URL("/wait-for-second-party/", server.url);
  io.out(`syncpoint  ${waitUrl}ID   (POST; GET /healthz, /metrics)\n`);
  await untilAborted(io.shutdownSignal);
  await server.shutdown();
}

/** `duet syncpoint wait ID`. */
function waitCommand(io: CliIo): Command {
  return new Command("wait")
    .description(
      "wait at a syncpoint for the other party of ID; prints what it sent, and nothing else, " +
        "on stdout",
    )
    .argument("<id>", `the rendezvous id, ${ID_RULE}`)
    .option(
      "--url <url>",
      "the service's base URL, without a path",
      url("http:", "https:"),
      DEFAULT_WAIT_URL,
    )
    .option(
      "--payload <text>",
      `text to hand to the other party (at most ${DEFAULTS.maxPayloadBytes} bytes of UTF-8, 64 KiB)`,
    )
    .option(
      "--code <code>",
      'a code both parties know (NUMBER-word-word-word; "new" makes one and prints it): ' +
        "the payloads go only to a party that proves the same code, encrypted under a key " +
        `the service cannot learn (CPace); the payload is then at most ${
          maxCodePayloadBytes(DEFAULTS.maxPayloadBytes)
        } bytes, and the wait ${CODE_WAIT_MS / 1000} s unless --timeout-ms says otherwise`,
      codeOption,
    )
    .option(
      "--timeout-ms <ms>",
      `how long to wait in all, retries included, and at most ${
        ANSWER_GRACE_MS / 1000
      } s more for the service's last answer to arrive` +
        " (the server caps each request; default: the server's own wait, " +
        "and retries within 10 s; a service silent for 60 s is given up on)",
      integer(1, 3_600_000),
    )
    .option(
      "--no-retry",
      "one request: do not retry 503, 429, 409 or a lost connection",
    )
    .option(
      "--json",
      "print the outcome as one JSON object on stdout, also when the wait fails (the " +
        "payload exactly; without --json its control characters are shown as stand-ins such " +
        "as ␛)",
    )
    .addHelpText("after", WAIT_HELP)
    .action((id: string, options: WaitCliOptions, command: Command) =>
      runWait(id, options, voiceOf(command), io)
    );
}

/** How `duet syncpoint wait` speaks on stderr: --quiet, and --log-format. */
interface Voice {
  quiet: boolean;
  json: boolean;
}

function voiceOf(command: Command): Voice {
  const globals = command.optsWithGlobals();
  return { quiet: globals["quiet"] === true, json: globals["logFormat"] === "json" };
}

/**
 * A line about the wait on stderr: plain text (errors always, the rest unless --quiet), or a
 * JSON log record under --log-format json (LogTape then applies --quiet and --log-level).
 */
function say(io: CliIo, voice: Voice, level: "info" | "warning" | "error", text: string): void {
  if (voice.json) logText(["duet", "syncpoint"], level, text);
  else if (level === "error" || !voice.quiet) io.err(`${text}\n`);
}

/**
 * Reports `duet syncpoint wait`'s retries on stderr, once per cause: the same failure again is
 * the same outage (each attempt is logged at --log-level debug); a different one is news.
 */
function retryReporter(io: CliIo, voice: Voice): (event: RetryEvent) => void {
  let lastReason: string | undefined;
  return ({ error, delayMs }) => {
    const reason = retryReason(error);
    getLogger(["duet", "syncpoint"]).debug("Retrying in {delayMs} ms: {reason}", {
      delayMs,
      reason,
    });
    if (reason === lastReason) return;
    lastReason = reason;
    say(
      io,
      voice,
      "warning",
      `${WAIT_PREFIX}: ${printable(reason)}; retrying in ` +
        `${(delayMs / 1000).toFixed(1)} s, and on until the wait's deadline`,
    );
  };
}

/**
 * Checks what `duet syncpoint wait` was given before anything is sent: the id, the base URL,
 * the code (made and said for `--code new`) and the payload's size (smaller with a code).
 *
 * @returns The code's canonical text, when one is used.
 * @throws ExitStatus 2 through waitUsage, with one line naming what is wrong.
 */
function checkWaitInput(
  id: string,
  options: WaitCliOptions,
  voice: Voice,
  io: CliIo,
): string | undefined {
  if (!ID_PATTERN.test(id)) waitUsage(io, `Invalid id "${id}": use ${ID_RULE}`);
  const base = new URL(options.url); // a valid http(s) URL: the option's parser said so
  if (base.pathname !== "/" || base.search !== "" || base.hash !== "") {
    waitUsage(io, BASE_URL_HINT);
  }
  let code: string | undefined;
  if (options.code !== undefined) {
    if (options.code === "new") {
      code = generateCode().text;
      // The one thing the other person needs; said even with --quiet.
      say(
        io,
        { ...voice, quiet: false },
        "warning",
        `${WAIT_PREFIX}: the code is ${code}; the other party runs duet syncpoint wait ${id}` +
          `${options.url === DEFAULT_WAIT_URL ? "" : ` --url ${options.url}`} --code ${code}`,
      );
    } else {
      code = options.code; // canonical: codeOption read it
    }
    if (id.length > MAX_CODE_ID_LENGTH) {
      waitUsage(io, `an id used with --code is at most ${MAX_CODE_ID_LENGTH} characters`);
    }
  }
  if (options.payload !== undefined) {
    const bytes = new TextEncoder().encode(options.payload).byteLength;
    const most = code === undefined
      ? DEFAULTS.maxPayloadBytes
      : maxCodePayloadBytes(DEFAULTS.maxPayloadBytes);
    if (bytes > most) {
      waitUsage(
        io,
        `--payload is ${bytes} bytes; the service accepts at most ${most}` +
          (code === undefined ? " (64 KiB)" : " with --code (sealed, then base64)"),
      );
    }
  }
  return code;
}

/** `duet syncpoint wait ID`: one rendezvous, its outcome on stdout and stderr. */
async function runWait(
  id: string,
  options: WaitCliOptions,
  voice: Voice,
  io: CliIo,
): Promise<void> {
  const started = performance.now();
  const code = checkWaitInput(id, options, voice, io);
  const withCode = code !== undefined;
  /** A failed wait: one line on stderr, and with --json one object on stdout. */
  function fail(code: string, message: string, line = `${message} (${code})`): never {
    // The service's words, shown, not obeyed (a proxy's page could hold anything).
    say(io, voice, "error", `${WAIT_PREFIX}: ${printable(line)}`);
    if (options.json) io.out(jsonLine({ status: "error", id, code, message }) + "\n");
    throw new ExitStatus(1);
  }
  let result;
  try {
    const waitOptions = {
      ...(options.payload === undefined ? {} : { payload: options.payload }),
      // With a code, time to read it out: the service's usual cap, unless asked otherwise.
      ...(options.timeoutMs !== undefined
        ? { timeoutMs: options.timeoutMs }
        : code !== undefined
        ? { timeoutMs: CODE_WAIT_MS }
        : {}),
      signal: io.shutdownSignal,
      retry: options.retry && { onRetry: retryReporter(io, voice) },
    };
    result = code === undefined
      ? await waitForSecondParty(options.url, id, waitOptions)
      : await waitWithCode(options.url, id, code, waitOptions);
  } catch (error) {
    if (error instanceof CodeExchangeError) fail(error.code, error.message);
    if (error instanceof SyncpointError) {
      const elapsedMs = performance.now() - started;
      // A 408 well before the --timeout-ms asked: the service granted less (its cap).
      const capped = error.code === "timeout" && options.timeoutMs !== undefined &&
        elapsedMs < options.timeoutMs - CAP_MARGIN_MS;
      fail(
        error.code,
        error.message,
        `${error.message} (${error.code})` +
          (capped ? `; the service caps waits below the ${options.timeoutMs} ms asked` : "") +
          // The other party without a code waits at the id itself, not at the rounds' ids.
          (withCode && error.code === "timeout"
            ? "; with --code, the other party must use --code too (without it, it waits " +
              "elsewhere)"
            : ""),
      );
    }
    if (io.shutdownSignal.aborted) {
      if (options.json) {
        io.out(
          jsonLine({ status: "error", id, code: "interrupted", message: "Interrupted" }) +
            "\n",
        );
      }
      throw new ExitStatus(130);
    }
    const said = explainError(error);
    // Something answered, in neither HTTP nor TLS: an answer that is not the service's.
    const code = /does not speak (TLS|HTTP)/.test(said) ? "bad_response" : "unreachable";
    fail(
      code,
      `${
        code === "bad_response" ? "no syncpoint answers" : "cannot reach the syncpoint"
      } at ${options.url}: ${said}`,
    );
  }
  // From the command's start: the retries' time too, not only the attempt that paired.
  const waitedMs = Math.round(performance.now() - started);
  if (options.json) {
    io.out(
      jsonLine({
        status: "paired",
        id,
        role: result.role,
        waited_ms: waitedMs,
        peer_payload: result.peerPayload,
        ...(code === undefined ? {} : { code_verified: true }),
      }) + "\n",
    );
    return;
  }
  say(
    io,
    voice,
    "info",
    `paired as the ${result.role} party after ${seconds(waitedMs)}` +
      (code === undefined ? "" : "; the other party proved the code") +
      (result.peerPayload === null ? "; the other party sent nothing" : ""),
  );
  // The other party's text alone, shown, not obeyed: control characters as stand-ins,
  // so it is one line (--json gives it exactly). Nothing if it sent nothing.
  if (result.peerPayload !== null) io.out(`${printable(result.peerPayload)}\n`);
}
