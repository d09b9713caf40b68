/**
 * `duet ping` (the client, like the classic ping) and `duet ping serve` (the server).
 *
 * @module
 */
import { explainError } from "@duet/core/explain-error";
import { Command, InvalidArgumentError, Option } from "commander";
import { getLogger } from "@logtape/logtape";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  CLIENT_DEFAULTS,
  DEFAULTS,
  describeTransportChange,
  discoverServer,
  parseCertHash,
  type PingEvent,
  type PingMode,
  type PingSummary,
  precheckAnnouncement,
  resolveTrust,
  runPing,
  startAnnouncer,
  startPingServer,
  validatePingOptions,
} from "@duet/ping";
import { jsonLine } from "@duet/core/json-line";
import { printable } from "@duet/core/printable";
import { type CliIo, ExitStatus, UsageError } from "../io.ts";
import { editDistance } from "../suggest.ts";
import { explainListenError, hostPort, integer, untilAborted, url, userPath } from "./_options.ts";

interface ServeCliOptions {
  host: string;
  port: number;
  cert?: string;
  key?: string;
  certName?: string[];
  token?: string;
  allowOrigin?: string[];
  maxSessionsPerClient: number;
  maxWsPerClient: number;
  wsMessageRate: number;
  maxStreams: number;
  idleTimeoutMs: number;
  publicUrl?: string;
  announce?: string | true;
}

interface PingCliOptions {
  /** Every --url, in the order given. */
  url?: string[];
  count: number;
  interval: number;
  size: number;
  datagram?: boolean;
  newStream?: boolean;
  timeoutMs: number;
  json?: boolean;
  certHash?: string[];
  ca?: string;
  token?: string;
  domain?: string;
  nameserver?: string;
  giveUpAfterMs: number;
  discoveryTimeoutMs: number;
  mdns: boolean;
  /** False with --no-fallback: WebTransport only. */
  fallback: boolean;
  probeIntervalMs: number;
}

/** A repeatable option's parser: every value given, in order (no default: none given is []). */
const collect = (value: string, previous: string[] = []) => [...previous, value];
const log = getLogger(["duet", "ping"]);

async function readFileOrExplain(path: string, what: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw new UsageError(`cannot read the ${what} ${path}: ${explainError(error)}`, {
      cause: error,
    });
  }
}

/** The help after `duet ping`'s options. */
const CLIENT_HELP = `
Failover: with several --url, or several SRV targets (in RFC 2782 order: priority,
then weighted random), a server that cannot be reached or is lost is left for the
next at once ("switching to URL: reason"); after a whole round has failed the client
backs off, then goes round again, until --give-up-after-ms.

UDP blocked: when a server's QUIC handshake gets no answer in time (max of
--timeout-ms and 2 s) but its WebSocket opens, pings go over that WebSocket, on the
TCP side of the same host and port: wss://HOST:PORT/ws, or ws://HOST:PORT/ws on
loopback only. One line says so and why, replies read "pong from HOST via
WebSocket", WebTransport is tried again every --probe-interval-ms, and one line
says when pings are back on it. A wss: WebSocket is verified with the system's CAs
and --ca; a pinned --cert-hash cannot be checked on it. --no-fallback turns this off.

Trust, never skipped: --cert-hash, --ca, or the hashes the server publishes at
/.well-known/duet-ping.json, fetched over HTTPS or over plain HTTP on loopback only.

What stops at once, with one line saying what to do: a refusal (token, origin, path),
a certificate or trust document that cannot be trusted, a --size a datagram cannot
carry. What is retried until --give-up-after-ms: a server that does not answer (down,
restarting, unreachable), said once per outage. The outage is counted from when the
connection was lost (or the first attempt began).

Examples:
  duet ping serve --port 4433
  duet ping 127.0.0.1:4433 --count 5        # the same as --url https://127.0.0.1:4433/ping
  duet ping --url https://127.0.0.1:4433/ping --count 5
  duet ping --url https://a.test:4433/ping --url https://b.test:4433/ping  # a, then b
  duet ping --url https://127.0.0.1:4433/ping --datagram --interval 200 --json
  duet ping --url https://127.0.0.1:4433/ping --no-fallback  # WebTransport or nothing
  duet ping --count 3                       # discover the server on the local network
  duet ping --domain example.com --ca ca.pem  # discover through _duet-ping._udp.example.com

Output: like ping's, the whole transcript is on stdout, the failures that stop the run
("stopping: ...", "giving up: ...") and the retries included; stderr carries logs and
usage errors.

Exit status: 0 if any reply came back, 1 if none did or the outage budget ran out,
2 for usage errors. With --json, stdout ends with one JSON object whenever the command
ran: the summary ({"type":"summary",...}), or {"type":"error","message","exitCode"} when
an error stops it; a command line the parser refuses (exit 2, one line on stderr) prints
no JSON, as with duet syncpoint wait.`;

/** The help after `duet ping serve`'s options. */
const SERVE_HELP = `
Examples:
  duet ping serve                                # 127.0.0.1:4433, generated certificate
  duet ping serve --announce                     # found by mDNS on this host (127.0.0.1)
  duet ping serve --host 0.0.0.0 --cert lan.pem --key lan-key.pem --announce
  duet ping serve --cert cert.pem --key key.pem  # HTTPS on the TCP side too

--announce names only addresses the server listens on (--host) and its certificate
names (a generated one: 127.0.0.1); asked for another, it refuses (exit 2).

Stops on SIGINT/SIGTERM: GOAWAY to every session, two seconds of grace, then closes.`;

/** Prints one JSON line (with --json). */
type Print = (value: unknown) => void;

/** The `ping` command and its `serve` subcommand. */
export function pingCommand(io: CliIo): Command {
  const command = new Command("ping").enablePositionalOptions();
  return clientOptions(command)
    .argument(
      "[server...]",
      "the server, https://HOST:PORT/ping or HOST:PORT for short (as --url; several: " +
        "fail over between them in order)",
    )
    .addHelpText("after", CLIENT_HELP)
    .action((servers: string[], options: PingCliOptions) => runClient(options, io, servers))
    .addCommand(serveCommand(io));
}

/** The client's options, on `command`. */
function clientOptions(command: Command): Command {
  return command
    .addOption(
      new Option(
        "--url <url>",
        "the server, https://HOST:PORT/ping (repeatable: servers to fail over between, " +
          "tried in the order given)",
      ).argParser((value: string, previous: string[] | undefined) => [
        ...(previous ?? []),
        url("https:")(value),
      ]),
    )
    .option("-c, --count <n>", "stop after n pings (0: until Ctrl-C)", integer(0), 0)
    .option(
      "-i, --interval <ms>",
      "milliseconds between pings",
      integer(1, 3_600_000),
      CLIENT_DEFAULTS.intervalMs,
    )
    .option(
      "-s, --size <bytes>",
      "bytes of padding in each ping",
      integer(0, 16_000),
      CLIENT_DEFAULTS.payloadBytes,
    )
    .option("--datagram", "ping over datagrams instead of a stream")
    .option("--new-stream", "open a new stream for each ping")
    .option(
      "--timeout-ms <ms>",
      "a ping without a reply after this long is lost",
      integer(1, 600_000),
      CLIENT_DEFAULTS.timeoutMs,
    )
    .option("--json", "print JSON lines (one per event, then the summary) instead of text")
    .option(
      "--cert-hash <hex>",
      "trust the server certificate with this SHA-256 (repeatable)",
      (value: string, previous: string[] = []) => {
        try {
          parseCertHash(value);
        } catch (error) {
          throw new InvalidArgumentError((error as Error).message);
        }
        return [...previous, value];
      },
    )
    .option("--ca <file>", "trust server certificates issued by this CA (PEM)", userPath)
    .addOption(
      new Option("--token <token>", "bearer token the server asks for").env("DUET_PING_TOKEN"),
    )
    .option("--domain <domain>", "discovery: look up the SRV record _duet-ping._udp.DOMAIN")
    .option("--nameserver <host:port>", "discovery: ask this DNS server for SRV", hostPort)
    .option("--no-mdns", "discovery: do not browse mDNS (no multicast leaves this host)")
    .option(
      "--discovery-timeout-ms <ms>",
      "how long mDNS discovery listens for answers",
      integer(1, 60_000),
      1500,
    )
    .option(
      "--give-up-after-ms <ms>",
      "stop when an outage lasts this long (the circuit breaker)",
      integer(1, 86_400_000),
      CLIENT_DEFAULTS.giveUpAfterMs,
    )
    .option(
      "--no-fallback",
      "WebTransport only: never ping over the server's WebSocket when QUIC gets no answer",
    )
    .option(
      "--probe-interval-ms <ms>",
      "while on the WebSocket, try WebTransport again this often",
      integer(100, 3_600_000),
      CLIENT_DEFAULTS.probeIntervalMs,
    );
}

/**
 * `duet ping`: finds the servers, pings, prints each event and the summary. With `--json`
 * every outcome ends stdout with one JSON object: the summary, or, when an error stops the
 * command before or outside the run, `{"type":"error","message","exitCode"}` (the error
 * still goes to stderr as one line, and the exit status is the same).
 */
async function runClient(options: PingCliOptions, io: CliIo, servers: string[]): Promise<void> {
  // Times are in milliseconds to the microsecond: the clock's noise beyond that
  // (1.7923270000000002) says nothing and makes the lines hard to read.
  const micros = (_key: string, value: unknown) =>
    typeof value === "number" && !Number.isInteger(value) ? Math.round(value * 1000) / 1000 : value;
  const print: Print | null = options.json
    ? (value: unknown) => io.out(jsonLine(value, micros) + "\n")
    : null;
  try {
    const url = [...options.url ?? [], ...servers.map(serverOperand)];
    await pingAndReport({ ...options, ...(url.length ? { url } : {}) }, io, print);
  } catch (error) {
    if (print && !(error instanceof ExitStatus)) {
      const exitCode = error instanceof UsageError ? 2 : 1;
      print({ type: "error", message: (error as Error)?.message ?? String(error), exitCode });
    }
    throw error;
  }
}

/**
 * A server given as an operand: a URL as --url takes, or HOST:PORT for
 * https://HOST:PORT/ping (an IPv6 address in brackets). A bare word is refused rather than
 * taken for a host name: it is more often a misspelt subcommand ("serv") than a server.
 *
 * @throws UsageError saying what is expected.
 */
export function serverOperand(text: string): string {
  if (text.includes("://")) {
    try {
      return url("https:")(text);
    } catch (error) {
      throw new UsageError(`server ${printable(text)}: ${(error as Error).message}`);
    }
  }
  const [, host, port] = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(text) ?? [];
  if (host === undefined || !(Number(port) >= 1 && Number(port) <= 65535)) {
    const subcommand = text.length > 1 && editDistance(text, "serve") <= 2
      ? "; to start a server, duet ping serve"
      : "";
    throw new UsageError(
      `${printable(text)} is not a server: give HOST:PORT (a port from 1 to 65535) or ` +
        `https://HOST:PORT/ping${subcommand}`,
    );
  }
  return `https://${host}:${Number(port)}/ping`;
}

/** The mode --datagram and --new-stream choose. */
function pingMode(options: PingCliOptions): PingMode {
  if (options.datagram && options.newStream) {
    throw new UsageError("choose one of --datagram and --new-stream");
  }
  return options.datagram ? "datagram" : options.newStream ? "new-stream" : "stream";
}

/** The run's settings but the servers and trust, checked before anything is connected. */
function runSettings(options: PingCliOptions, io: CliIo) {
  const settings = {
    ...CLIENT_DEFAULTS,
    ...(options.token ? { token: options.token } : {}),
    count: options.count,
    intervalMs: options.interval,
    payloadBytes: options.size,
    mode: pingMode(options),
    timeoutMs: options.timeoutMs,
    giveUpAfterMs: options.giveUpAfterMs,
    fallback: options.fallback,
    probeIntervalMs: options.probeIntervalMs,
    signal: io.shutdownSignal,
  };
  try {
    validatePingOptions({ ...settings, url: [], trust: {} });
  } catch (error) {
    const cause = (error as Error).cause as { option?: string; largest?: number } | undefined;
    if (error instanceof RangeError && cause?.option === "payloadBytes") {
      throw new UsageError(
        `--size ${options.size} does not fit in a datagram: --datagram carries at most ` +
          `${cause.largest} bytes of padding${
            options.count ? ` with --count ${options.count}` : ""
          } (QUIC promises 1200-byte packets on every path); use a smaller --size, or a ` +
          "stream (no --datagram)",
      );
    }
    throw error;
  }
  return settings;
}

/** Everything `duet ping` does once its output is chosen. */
async function pingAndReport(options: PingCliOptions, io: CliIo, print: Print | null) {
  const settings = runSettings(options, io);
  const targets = await findTargets(options, print, io);
  const choice = {
    certHashes: options.certHash ?? [],
    ...(options.ca ? { caPem: await readFileOrExplain(options.ca, "CA file") } : {}),
  };
  if (choice.caPem !== undefined && !/-----BEGIN CERTIFICATE-----/.test(choice.caPem)) {
    throw new UsageError(
      `--ca ${options.ca}: not a PEM certificate (no -----BEGIN CERTIFICATE----- line)`,
    );
  }
  // Hashes fetched from the server are fetched again before each attempt, so a restarted
  // server with a new certificate is trusted again the same way; a server that does not
  // answer is retried like any outage, and a trust document reached but not usable ends
  // the run at once. The user's own (--cert-hash, --ca) are one value: a certificate they
  // do not match ends the run at once.
  const pinned = choice.certHashes.length > 0 || choice.caPem !== undefined;
  const trust = pinned
    ? await resolveTrust(targets[0]!, choice)
    : (target: URL) => resolveTrust(target, choice);
  if (!print) {
    const [first, ...rest] = targets.map((target) => target.href);
    const { mode } = settings;
    io.out(
      `PING ${first}${rest.length ? ` (then ${rest.join(", ")})` : ""} over ${
        mode === "stream" ? "one stream" : mode === "new-stream" ? "a stream per ping" : "datagrams"
      }, ${options.size} bytes of padding\n`,
    );
  }
  let current = targets[0]!;
  const summary = await runPing({
    ...settings,
    url: targets,
    trust,
    ...(choice.caPem ? { webSocketCaCerts: [choice.caPem] } : {}),
  }, (event) => {
    // Replies are shown as from the server in use.
    if (event.type === "connected") current = new URL(event.url);
    if (event.type === "untrusted" && event.detail) {
      log.debug("The runtime's words for the refused certificate: {detail}", {
        detail: event.detail,
      });
    }
    if (print) print(event);
    else io.out(describeEvent(event, current));
  });
  if (print) print({ type: "summary", ...summary });
  else io.out(describeSummary(summary));
  if (
    summary.received === 0 || summary.gaveUp || summary.refusedStatus || summary.untrusted ||
    summary.tooLarge
  ) {
    throw new ExitStatus(1);
  }
}

/** The servers to ping: every --url, else those discovery finds (and says so). */
async function findTargets(
  options: PingCliOptions,
  print: Print | null,
  io: CliIo,
): Promise<URL[]> {
  if (options.url?.length) return options.url.map((text) => new URL(text));
  if (!options.mdns && !options.domain) {
    throw new UsageError(
      "no server to ping: give --url, or let duet find one (--domain for DNS SRV, or mDNS " +
        "without --no-mdns)",
    );
  }
  const found = await discoverServer({
    ...(options.domain ? { domain: options.domain } : {}),
    ...(options.nameserver ? { nameserver: options.nameserver } : {}),
    timeoutMs: options.discoveryTimeoutMs,
    mdns: options.mdns,
  });
  const targets = found.urls ?? [found.url];
  const hrefs = targets.map((target) => target.href);
  if (print) print({ type: "discovered", url: hrefs[0], urls: hrefs, via: found.via });
  else io.out(`found ${hrefs.join(", ")} by ${found.via}\n`);
  return targets;
}

/** `duet ping serve`. */
function serveCommand(io: CliIo): Command {
  const command = new Command("serve")
    .description(
      "answer pings over WebTransport on UDP PORT; serve the browser page, /healthz, " +
        "/.well-known/duet-ping.json and the WebSocket echo /ws on TCP PORT",
    );
  return serveOptions(command)
    .addHelpText("after", SERVE_HELP)
    .action((options: ServeCliOptions) => runServer(options, io));
}

/** The server's options, on `command`. */
function serveOptions(command: Command): Command {
  return command
    .option("--host <host>", "interface to listen on", DEFAULTS.hostname)
    .option(
      "--port <port>",
      "UDP and TCP port (0 picks a free one)",
      integer(0, 65535),
      DEFAULTS.port,
    )
    .option(
      "--cert <file>",
      "certificate (PEM); without it one is generated and rotated",
      userPath,
    )
    .option("--key <file>", "the certificate's private key (PEM)", userPath)
    .option(
      "--cert-name <name>",
      "a DNS name for the generated certificate (repeatable)",
      collect,
    )
    .addOption(
      new Option("--token <token>", "require this bearer token of clients").env("DUET_PING_TOKEN"),
    )
    .option(
      "--allow-origin <origin>",
      "let pages from this origin connect (repeatable; * for any)",
      collect,
    )
    .option(
      "--max-sessions-per-client <n>",
      "sessions one client address may hold at once; 0 for no cap (behind a load balancer " +
        "that rewrites client addresses)",
      integer(0, 100_000),
      DEFAULTS.maxSessionsPerClient,
    )
    .option(
      "--max-ws-per-client <n>",
      "WebSockets (/ws) one client address may hold at once; 0 for no cap",
      integer(0, 100_000),
      DEFAULTS.maxWebSocketsPerClient,
    )
    .option(
      "--ws-message-rate <n>",
      "messages per second one WebSocket may send (bursts of twice that); past it messages " +
        "are dropped unanswered; 0 for no limit",
      integer(0, 1_000_000),
      DEFAULTS.wsMessageRate,
    )
    .option(
      "--max-streams <n>",
      "streams one connection may have open at once",
      integer(1, 100_000),
      DEFAULTS.maxStreamsPerConnection,
    )
    .option(
      "--idle-timeout-ms <ms>",
      "close connections silent for this long (WebSockets: no answer to a ping)",
      integer(1000, 3_600_000),
      DEFAULTS.idleTimeoutMs,
    )
    .addOption(
      new Option(
        "--public-url <url>",
        "the URL to publish at /.well-known/duet-ping.json when clients come through a " +
          "load balancer or another name (default: none; clients use the host they reached, " +
          "this port)",
      ).argParser(url("https:")),
    )
    .option(
      "--announce [interfaces]",
      "announce the server over mDNS (_duet-ping._udp), on the comma-separated interface " +
        "addresses given, or on every address it listens on that its certificate names; " +
        "off by default",
    );
}

/** `duet ping serve`: serves until a stop signal, announcing over mDNS if asked. */
async function runServer(options: ServeCliOptions, io: CliIo): Promise<void> {
  if (Boolean(options.cert) !== Boolean(options.key)) {
    throw new UsageError("--cert and --key go together");
  }
  precheckAnnounce(options);
  const cert = options.cert && options.key
    ? {
      certPem: await readFileOrExplain(options.cert, "certificate"),
      keyPem: await readFileOrExplain(options.key, "key"),
    }
    : undefined;
  if (cert && !/-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/.test(cert.keyPem)) {
    throw new UsageError(
      `--key ${options.key}: not a PEM private key (no -----BEGIN PRIVATE KEY----- line)`,
    );
  }
  const server = await startPingServer({
    hostname: options.host,
    port: options.port,
    ...(cert ? { cert } : {}),
    certificateNames: options.certName ?? [],
    ...(options.token ? { token: options.token } : {}),
    allowedOrigins: options.allowOrigin ?? [],
    maxSessionsPerClient: options.maxSessionsPerClient,
    maxWebSocketsPerClient: options.maxWsPerClient,
    wsMessageRate: options.wsMessageRate,
    maxStreamsPerConnection: options.maxStreams,
    idleTimeoutMs: options.idleTimeoutMs,
    ...(options.publicUrl ? { publicUrl: options.publicUrl } : {}),
  }).catch((error) => {
    // The certificate and key are the user's files: say which one is wrong.
    if (error instanceof TypeError && /PEM X\.509 certificate/.test(error.message)) {
      throw new UsageError(`--cert ${options.cert}: ${error.message}`);
    }
    // The runtime's TLS refusing the pair ("No keys found in key data", a key that is not
    // the certificate's): ours first, its words after.
    if (
      cert && /key/i.test(String((error as Error)?.message)) &&
      !(error instanceof Deno.errors.AddrInUse)
    ) {
      throw new UsageError(
        `--cert ${options.cert} and --key ${options.key} cannot be used together ` +
          `(${(error as Error).message})`,
      );
    }
    return explainListenError(error, options.host, options.port);
  });
  const announcer = await announce(options, server);
  const hashes = server.certificateHashes().map(bytesToHex);
  io.out(`ping  ${server.url.href}   (WebTransport, UDP ${server.port})\n`);
  io.out(`page  ${server.httpUrl.href}   (/healthz, /.well-known/duet-ping.json, /ws)\n`);
  for (const [i, hash] of hashes.entries()) {
    io.out(`certificate sha-256 (${i === 0 ? "current" : "next"}): ${hash}\n`);
  }
  await untilAborted(io.shutdownSignal);
  await announcer?.stop();
  await server.shutdown();
}

/** The interfaces `--announce a,b` names. */
function announced(value: string): string[] {
  return value.split(",").map((s) => s.trim()).filter(Boolean);
}

/**
 * What --announce asks for that no certificate could make possible (an interface this host
 * does not have, an address the server will not listen on), refused before the server
 * starts. A --host that is a name is resolved by the server: checked after it starts.
 *
 * @throws {UsageError} saying why.
 */
function precheckAnnounce(options: ServeCliOptions): void {
  if (typeof options.announce === "string" && announced(options.announce).length === 0) {
    throw new UsageError(
      `--announce ${JSON.stringify(options.announce)} names no interface: give names or ` +
        "addresses (--announce eth0,192.0.2.7), or --announce alone for every address",
    );
  }
  if (!options.announce || !/^[\d.]+$|:/.test(options.host)) return;
  try {
    precheckAnnouncement(
      typeof options.announce === "string" ? announced(options.announce) : undefined,
      options.host,
    );
  } catch (error) {
    if (error instanceof RangeError) throw new UsageError(`--announce: ${error.message}`);
    throw error;
  }
}

/**
 * Starts the mDNS announcer when --announce asks for it: only addresses the server listens
 * on and its certificate names. One it cannot serve is a usage error (the server is shut
 * down first, nothing is announced).
 */
async function announce(
  options: ServeCliOptions,
  server: Awaited<ReturnType<typeof startPingServer>>,
): Promise<Awaited<ReturnType<typeof startAnnouncer>> | undefined> {
  if (!options.announce) return undefined;
  try {
    return await startAnnouncer({
      port: server.port,
      listening: server.addr.hostname,
      certificateAddresses: server.certificateAddresses(),
      ...(typeof options.announce === "string" ? { interfaces: announced(options.announce) } : {}),
    });
  } catch (error) {
    await server.shutdown(0);
    if (error instanceof RangeError) throw new UsageError(`--announce: ${error.message}`);
    throw error;
  }
}

const ms = (value: number) => value < 10 ? value.toFixed(3) : value.toFixed(1);

/** One event as a line of text. */
export function describeEvent(event: PingEvent, target: URL): string {
  switch (event.type) {
    case "connected":
      if (event.afterOutageMs === undefined) return "";
      return event.first
        ? `connected to ${printable(event.url)} after ${
          (event.afterOutageMs / 1000).toFixed(2)
        } s\n`
        : `connected again after ${(event.afterOutageMs / 1000).toFixed(2)} s\n`;
    case "switching":
      return `switching to ${printable(event.url)}: ${printable(event.reason)}\n`;
    case "reply":
      // Over WebTransport as ever; the WebSocket fallback is named on every reply.
      return `pong from ${target.host}${
        event.transport === "websocket" ? " via WebSocket" : ""
      }: seq=${event.seq} bytes=${event.bytes} time=${ms(event.rttMs)} ms\n`;
    case "transport":
      return `${printable(describeTransportChange(event))}\n`;
    case "timeout":
      return `seq=${event.seq}: no reply in time\n`;
    case "lost":
      return event.inFlight
        ? `seq=${event.seq}: no reply, ${printable(event.reason)}\n`
        : `seq=${event.seq}: not sent, ${printable(event.reason)}\n`;
    case "error-reply":
      // The server's words: shown, never obeyed (a reply may hold escape sequences).
      return `seq=${event.seq}: ${printable(event.text)}\n`;
    case "outage":
      return `connection lost: ${printable(event.reason)}; reconnecting\n`;
    case "reconnecting":
      // Said once per outage: the same failure again is not repeated.
      if (event.repeated) return "";
      return `reconnect attempt ${event.attempt} in ${event.delayMs} ms${
        event.error ? ` (${printable(event.error)})` : ""
      }\n`;
    case "gave-up":
      return `giving up: no connection for ${(event.outageMs / 1000).toFixed(1)} s\n`;
    case "refused":
      return `the server refused the session with ${event.status}: ${printable(event.reason)}\n`;
    case "untrusted":
      // A trust document's reason says what to do already.
      if (event.document) return `stopping: ${printable(event.reason)}\n`;
      return `stopping: ${printable(event.reason)}; check --cert-hash (duet serve and duet ` +
        "ping serve print the server's hashes) or --ca\n";
    case "too-large":
      return `stopping: a ping of ${event.bytes} bytes does not fit in a datagram on this ` +
        `path (${printable(event.reason)}); use a smaller --size, or a stream (no --datagram)\n`;
  }
}

/** The closing summary, like ping's. */
export function describeSummary(summary: PingSummary): string {
  const time = `time ${Math.round(summary.elapsedMs)} ms`;
  const lines = [
    `--- ${summary.urls.join(", ")} ping statistics ---`,
    // Nothing sent is no loss of 0.0 %: say so instead of a percentage of nothing.
    summary.transmitted === 0
      ? `0 transmitted: no ping could be sent (said above why), ${time}`
      : `${summary.transmitted} transmitted, ${summary.received} received, ${
        summary.lossPercent.toFixed(1)
      }% loss (${summary.timeouts} timed out, ${summary.lostNoConnection} while disconnected, ${summary.errors} errors), ${time}`,
  ];
  if (summary.receivedOverWebSocket) {
    lines.push(
      `${
        summary.received - summary.receivedOverWebSocket
      } replies over WebTransport, ${summary.receivedOverWebSocket} over WebSocket (UDP blocked)`,
    );
  }
  if (summary.outages.length) {
    lines.push(
      `${summary.outages.length} outage${summary.outages.length === 1 ? "" : "s"}, ${
        (summary.outageMs / 1000).toFixed(2)
      } s in all${summary.gaveUp ? "; gave up" : ""}`,
    );
  }
  if (summary.rtt) {
    const r = summary.rtt;
    lines.push(
      `rtt min/avg/max/p50/p99 = ${
        [r.min, r.avg, r.max, r.p50, r.p99].map((v) => v.toFixed(3)).join("/")
      } ms`,
    );
  }
  return lines.join("\n") + "\n";
}
