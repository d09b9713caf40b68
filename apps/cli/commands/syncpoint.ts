/**
 * `duet syncpoint` (the rendezvous service) and `duet syncpoint wait ID` (its client).
 *
 * @module
 */
import { Command, Option } from "commander";
import {
  DEFAULTS,
  ID_PATTERN,
  startSyncpoint,
  SyncpointError,
  waitForSecondParty,
} from "@duet/syncpoint";
import { jsonLine, printable } from "@duet/chat/display";
import { type CliIo, ExitStatus, UsageError } from "../io.ts";
import { explainListenError, integer, untilAborted, url } from "./_options.ts";

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
}

interface WaitCliOptions {
  url: string;
  payload?: string;
  timeoutMs?: number;
  json?: boolean;
}

/** The `syncpoint` command. */
export function syncpointCommand(io: CliIo): Command {
  const command = new Command("syncpoint")
    .description(
      "run the rendezvous service: POST /wait-for-second-party/:id holds the first party " +
        "until the second arrives (both get 200) or the timeout passes (408)",
    )
    // `wait` has options of the same names (--timeout-ms): each command parses its own.
    .enablePositionalOptions()
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
    .addHelpText(
      "after",
      `
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

Stops on SIGINT/SIGTERM: stops accepting, answers waiting parties with 503.`,
    )
    .action(async (options: ServeOptions) => {
      if (options.maxTimeoutMs < options.timeoutMs) {
        throw new UsageError("--max-timeout-ms must be at least --timeout-ms");
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
      }).catch((error) => explainListenError(error, options.host, options.port));
      await untilAborted(io.shutdownSignal);
      await server.shutdown();
    });

  command
    .command("wait")
    .description("wait at a syncpoint for the other party of ID; prints what it sent")
    .argument("<id>", "the rendezvous id, 1-128 characters of [A-Za-z0-9._~-]")
    .option(
      "--url <url>",
      "the service's base URL",
      url("http:", "https:"),
      `http://127.0.0.1:${DEFAULTS.port}`,
    )
    .option("--payload <text>", "text to hand to the other party (at most 64 KiB)")
    .option("--timeout-ms <ms>", "how long to wait (the server caps it)", integer(1, 3_600_000))
    .option(
      "--json",
      "print the answer as JSON (the payload exactly; without --json its control characters " +
        "are shown as stand-ins such as ␛)",
    )
    .action(async (id: string, options: WaitCliOptions) => {
      if (!ID_PATTERN.test(id)) {
        throw new UsageError(`Invalid id "${id}": use 1-128 characters of [A-Za-z0-9._~-]`);
      }
      try {
        const result = await waitForSecondParty(options.url, id, {
          ...(options.payload === undefined ? {} : { payload: options.payload }),
          ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
          signal: io.shutdownSignal,
        });
        if (options.json) {
          io.out(
            jsonLine({
              role: result.role,
              waited_ms: result.waitedMs,
              peer_payload: result.peerPayload,
            }) + "\n",
          );
        } else {
          const waited = result.role === "first"
            ? ` after ${(result.waitedMs / 1000).toFixed(2)} s`
            : "";
          io.out(`paired as the ${result.role} party${waited}\n`);
          io.out(
            result.peerPayload === null
              ? "the other party sent nothing\n"
              // The other party's text, shown, not obeyed: control characters as
              // stand-ins (--json gives it exactly).
              : `${printable(result.peerPayload)}\n`,
          );
        }
      } catch (error) {
        if (error instanceof SyncpointError) {
          io.err(`duet syncpoint wait: ${error.message} (${error.code})\n`);
          throw new ExitStatus(1);
        }
        if (io.shutdownSignal.aborted) throw new ExitStatus(130);
        throw new Error(
          `cannot reach the syncpoint at ${options.url}: ${(error as Error).message}`,
        );
      }
    });
  return command;
}
