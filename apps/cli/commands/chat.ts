/**
 * `duet chat-server` (the end-to-end encrypted messenger's server) and `duet chat` (its
 * client; so far the line mode).
 *
 * @module
 */
import { explainError } from "@duet/core/explain-error";
import { Command, Option } from "commander";
import { BITS_PER_WORD, generateCode } from "@duet/pake";
import { getLogger } from "@logtape/logtape";
import { delay } from "@duet/core/delay";
import {
  ChatClient,
  ChatStore,
  type ClientEvent,
  connectPostgres,
  defaultKeyStorePath,
  DEFAULTS,
  duetDataDir,
  HEARTBEAT_MS,
  isUnavailable,
  KeyStore,
  NAME,
  openPglite,
  ROOM,
  runLineMode,
  startChatServer,
} from "@duet/chat";
import { type CliIo, ExitStatus, UsageError } from "../io.ts";
import { logText } from "../logging.ts";
import {
  codeOption,
  explainListenError,
  hostPort,
  integer,
  pattern,
  probeTcpPort,
  showHostPort,
  untilAborted,
  url,
  userPath,
} from "./_options.ts";

interface ChatServerCliOptions {
  host: string;
  port: number;
  databaseUrl?: string;
  dataDir?: string;
  messagesPerSecond: number;
  maxConnectionsPerAddress: number;
  idleTimeoutMs: number;
  maxConnections: number;
  roomsPerMinute: number;
  codeAttemptsPerHour: number;
  roomExpiryDays: number;
}

/** Where the embedded database lives by default: the XDG data directory. */
export function defaultDataDir(): string {
  return `${duetDataDir()}/chat`;
}

const log = getLogger(["duet", "chat"]);

/** Opens the store the options name: PostgreSQL, or PGlite in a data directory. */
export async function openStore(databaseUrl?: string, dataDir?: string): Promise<{
  store: ChatStore;
  description: string;
}> {
  if (databaseUrl) {
    const store = new ChatStore(await connectPostgres(databaseUrl));
    const shown = new URL(databaseUrl);
    shown.password = shown.password ? "***" : "";
    return { store, description: `PostgreSQL at ${shown.href}` };
  }
  const dir = dataDir ?? defaultDataDir();
  log.info("Opening the embedded database in {dir} (the first time takes a few seconds)", { dir });
  return { store: new ChatStore(await openPglite(dir)), description: `PGlite in ${dir}` };
}

/** The help after `duet chat-server`'s options. */
const CHAT_SERVER_HELP = `
The protocol is in docs/chat-protocol.md; the server never holds a key or a plaintext.
Limits (what each protects, and what happens past it): apps/chat/README.md, "Limits".

Examples:
  duet chat-server                                  # 127.0.0.1:7070, PGlite in the data dir
  duet chat-server --database-url postgres://chat@db:5432/chat --host 0.0.0.0
  duet chat-server --data-dir ./chat-data --quiet

A database that is not reachable yet (starting, restarting) is waited for, with a log line
saying so; a database that refuses us (no such database, bad password) ends the command.
Stops on SIGINT/SIGTERM: says bye to every client, closes the database.`;

/** The `chat-server` command. */
export function chatServerCommand(io: CliIo): Command {
  return new Command("chat-server")
    .option("--host <host>", "interface to listen on", DEFAULTS.hostname)
    .option("--port <port>", "TCP port (0 picks a free one)", integer(0, 65535), DEFAULTS.port)
    .addOption(
      new Option("--database-url <url>", "a PostgreSQL server (else embedded PGlite)")
        .argParser(url("postgres:", "postgresql:"))
        .env("DUET_CHAT_DATABASE_URL")
        .conflicts("dataDir"),
    )
    .option(
      "--data-dir <dir>",
      `the embedded database's directory (default: ${defaultDataDir()})`,
      userPath,
    )
    .option(
      "--messages-per-second <n>",
      "frames handled per connection per second (bursts of twice that): sends, history " +
        "reads and heartbeats count 1, a key offer or code frame 10; a faster client is read more slowly",
      integer(1, 10_000),
      DEFAULTS.messagesPerSecond,
    )
    .option(
      "--max-connections-per-address <n>",
      "connections one client address may hold at once; 0 for no cap (behind a load " +
        "balancer that rewrites client addresses)",
      integer(0, 100_000),
      DEFAULTS.maxConnectionsPerAddress,
    )
    .option(
      "--idle-timeout-ms <ms>",
      `close connections silent for this long (clients send a heartbeat every ` +
        `${HEARTBEAT_MS / 1000} s, so at least twice that)`,
      integer(2 * HEARTBEAT_MS, 3_600_000),
      DEFAULTS.idleTimeoutMs,
    )
    .option(
      "--max-connections <n>",
      "connections held at once from every address; past it a new one is refused " +
        "(too_many_connections); 0 for no cap. The default is the open-file limit less a reserve",
      integer(0, 10_000_000),
      DEFAULTS.maxConnections,
    )
    .option(
      "--rooms-per-minute <n>",
      "new rooms one client address (IPv6: its /64) may create per minute, in bursts of " +
        "twice that; past it a hello for a new room is refused (too_many_rooms). 0: no limit",
      integer(0, 1_000_000),
      DEFAULTS.roomsPerMinute,
    )
    .option(
      "--code-attempts-per-hour <n>",
      "code attempts (duet chat --code) a room may make per hour: a new CPace message while " +
        "the other party's is there to answer it is one (1 or 2 for an honest pair); past it the " +
        "room's new code messages are refused (too_many_code_attempts) until the hour is over",
      integer(1, 1_000_000),
      DEFAULTS.codeAttemptsPerHour,
    )
    .option(
      "--room-expiry-days <days>",
      "delete a room, its parties and messages after this many days without a message, a " +
        "join or a connected party. 0: rooms never expire",
      integer(0, 36_500),
      DEFAULTS.roomIdleMs / 86_400_000,
    )
    .addHelpText("after", CHAT_SERVER_HELP)
    .action((options: ChatServerCliOptions) => runChatServer(options, io));
}

/** `duet chat-server`: opens the database, waits for it, serves until a stop signal. */
async function runChatServer(options: ChatServerCliOptions, io: CliIo): Promise<void> {
  if (options.databaseUrl && options.dataDir) {
    throw new UsageError("choose one of --database-url and --data-dir");
  }
  probeTcpPort(options.host, options.port);
  const { store, description } = await openStore(options.databaseUrl, options.dataDir)
    .catch((error) => {
      throw new Error(`cannot open the database: ${explainError(error)}`, { cause: error });
    });
  // Here rather than inside startChatServer (which migrates too, finding nothing to do)
  // so that an unreachable database is reported as such, naming it, and waited for.
  const ready = await waitForDatabase(store, description, io.shutdownSignal).catch(
    async (error) => {
      await store.close().catch(() => {});
      throw new Error(`cannot use the database (${description}): ${explainError(error)}`, {
        cause: error,
      });
    },
  );
  if (!ready) {
    await store.close().catch(() => {});
    return;
  }
  const server = await startChatServer({
    store,
    hostname: options.host,
    port: options.port,
    messagesPerSecond: options.messagesPerSecond,
    maxConnectionsPerAddress: options.maxConnectionsPerAddress,
    idleTimeoutMs: options.idleTimeoutMs,
    maxConnections: options.maxConnections,
    roomsPerMinute: options.roomsPerMinute,
    codeAttemptsPerHour: options.codeAttemptsPerHour,
    roomIdleMs: options.roomExpiryDays * 86_400_000,
  }).catch(async (error) => {
    await store.close().catch(() => {});
    return explainListenError(error, options.host, options.port);
  });
  io.out(
    `chat  ${showHostPort(server.addr.hostname, server.addr.port)}   (${description})\n`,
  );
  await untilAborted(io.shutdownSignal);
  await server.shutdown();
}

/** How long the server waits between attempts to reach a database that is not there yet. */
const DATABASE_RETRY_MS = 1_000;

/**
 * Migrates, waiting for a database that cannot be reached yet (a log line says so, once
 * per reason) until it can or `signal` aborts (false). A database that answers with a
 * refusal (authentication, no such database) is thrown at once: waiting would not mend it.
 */
export async function waitForDatabase(
  store: ChatStore,
  description: string,
  signal: AbortSignal,
): Promise<boolean> {
  let told: string | undefined;
  for (;;) {
    if (signal.aborted) return false;
    try {
      await store.migrate();
      if (told) log.info("The database is reachable now ({description})", { description });
      return true;
    } catch (error) {
      if (!isUnavailable(error)) throw error;
      const reason = (error as Error).message;
      if (reason !== told) {
        log.warn("Waiting for the database ({description}): {reason}", { description, reason });
        told = reason;
      }
    }
    await delay(DATABASE_RETRY_MS, { signal }).catch(() => {}); // aborted: checked above
  }
}

interface ChatCliOptions {
  server: string;
  name: string;
  room: string;
  keyStore: string;
  line?: boolean;
  lingerMs: number;
  resetKey?: boolean;
  code?: string;
}

/**
 * Resolves `--code new` to a fresh code, and says what the other person needs: the code, to
 * be read out, with the options that take them to the same room. Nothing is said when a code
 * confirmed the peer's key before (no new code is needed: the client says so). Undefined
 * without --code.
 */
function resolveCode(
  options: ChatCliOptions,
  keyStore: KeyStore,
): { code?: string; said?: string } {
  if (options.code === undefined) return {};
  if (options.code !== "new") return { code: options.code };
  const made = generateCode();
  const at = { service: keyStore.serviceKey(options.server), room: options.room };
  const confirmed = keyStore.peerKeys({ ...at, name: options.name }).at(-1)?.verified;
  if (confirmed) return { code: made.text };
  return {
    code: made.text,
    said:
      `Your code is ${made.text} (${made.words.length} words, ${
        made.words.length * BITS_PER_WORD
      } bits). Read it to your peer, who starts with: duet chat --server ${options.server} ` +
      `--room ${options.room} --code ${made.text}`,
  };
}

/** The help after `duet chat`'s options. */
const CHAT_HELP = `
Commands (typed as a line): /key shows the key's SHA-256 (both of you must see the same
value; if not, someone is in the middle), /accept-key [FINGERPRINT] trusts a changed peer
key (messages under a key you have not accepted are held back, never shown as the peer's),
/help, /quit.

Your name in a room belongs to the key you first used there (kept in --key-store): another
key cannot take it, unless it is started with --reset-key, which your peer is told of.

Meeting by a code: both start with --code and the same code (or one with --code new, which
makes one and prints it to read out). The clients confirm each other's keys by it through
the server, which cannot learn it: the conversation is verified with no fingerprint to
compare. Nothing is sent until the code confirms the keys; another code (or someone in the
middle) stops both clients, nothing sent. A third party gets one guess per attempt, and
the server allows a room few attempts an hour. The code: NUMBER-word-word-word, 33 bits.

Line mode's exit status: 0 when every line went out; 1 when the server was never reached,
the room refused you, or a line is unsent or was refused.

Examples:
  duet chat --server 127.0.0.1:7070 --name alice --room tea --line
  printf 'hello\\n/key\\n' | duet chat --server 127.0.0.1:7070 --name bob --room tea --line
  duet chat --server 127.0.0.1:7070 --name alice --room tea --code new
  duet chat --server 127.0.0.1:7070 --name bob --room tea --code 7-guitar-orbit-lazy`;

/** The `chat` command (the client). */
export function chatCommand(io: CliIo): Command {
  return new Command("chat")
    .requiredOption("--server <host:port>", "the chat server", hostPort)
    .requiredOption(
      "--name <name>",
      "your name in the room (1-32 of A-Z a-z 0-9 . _ -)",
      pattern(NAME, "1-32 of A-Z a-z 0-9 . _ -"),
    )
    .requiredOption(
      "--room <room>",
      "the room (1-64 of A-Z a-z 0-9 . _ ~ -)",
      pattern(ROOM, "1-64 of A-Z a-z 0-9 . _ ~ -"),
    )
    .option(
      "--key-store <path>",
      "the local key store (SQLite, mode 0600)",
      userPath,
      defaultKeyStorePath(),
    )
    .option("--line", "line mode for scripts: stdin lines are sent, messages print as NAME: TEXT")
    .option(
      "--reset-key",
      "take your name in the room back with this key store's key after losing the one it " +
        "was bound to; your peer is told and must accept the new key",
    )
    .option(
      "--code <code>",
      'confirm your keys by a code you both know (NUMBER-word-word-word; "new" makes one ' +
        "and prints it): verified with no fingerprint to compare, nothing sent before",
      codeOption,
    )
    .option(
      "--linger-ms <ms>",
      "line mode: at the end of stdin, wait this long to get into the room if not in yet " +
        "(never in: exit 1), then for unsent messages to be stored, giving up after this " +
        "long without progress; /key waits this long for a key",
      integer(0, 600_000),
      10_000,
    )
    .addHelpText("after", CHAT_HELP)
    .action(async (options: ChatCliOptions, command: Command) => {
      if (command.getOptionValueSource("keyStore") !== "default") {
        await checkKeyStoreDirectory(options.keyStore);
      }
      const keyStore = await KeyStore.open(options.keyStore).catch((error) => {
        throw new Error(
          `cannot open the key store ${options.keyStore}: ${explainError(error)}`,
          { cause: error },
        );
      });
      const json = command.optsWithGlobals()["logFormat"] === "json";
      if (options.line) await runLine(options, keyStore, json ? jsonErr(io) : io);
      else await runScreen(options, keyStore, io);
    });
}

/**
 * The directory of a --key-store the user gave must exist: the key store makes only its
 * default directory, so that a mistyped path is said, not made.
 *
 * @throws {UsageError} when it does not exist or is not a directory.
 */
async function checkKeyStoreDirectory(path: string): Promise<void> {
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  const info = await Deno.stat(dir).catch((error) => {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  });
  if (!info?.isDirectory) {
    throw new UsageError(
      `--key-store ${path}: ${dir} ${info ? "is not a directory" : "does not exist"} ` +
        `(create it first; without --key-store the key store is ${defaultKeyStorePath()})`,
    );
  }
}

/**
 * `duet chat` on the terminal's screen (ink). Once the screen is gone, says on stderr why
 * the client stopped for good (then exit status 1), and what is still unsent.
 */
async function runScreen(options: ChatCliOptions, keyStore: KeyStore, io: CliIo): Promise<void> {
  if (!Deno.stdin.isTerminal() || !Deno.stdout.isTerminal()) {
    keyStore.close();
    throw new UsageError(
      "the interface needs a terminal for input and output; use --line for scripts",
    );
  }
  // Events that come before the interface is drawn wait for it.
  const early: ClientEvent[] = [];
  const { code, said } = resolveCode(options, keyStore);
  if (said) early.push({ type: "notice", text: said });
  let listener: ((event: ClientEvent) => void) | undefined;
  const client = new ChatClient({
    server: options.server,
    name: options.name,
    room: options.room,
    keyStore,
    onEvent: (event) => listener ? listener(event) : early.push(event),
    resetKey: options.resetKey ?? false,
    ...(code === undefined ? {} : { code }),
  });
  await client.start();
  // The screen (ink, React) is loaded only for the screen: line mode does without.
  const { runTui } = await import("@duet/chat/tui");
  await runTui(client, options.room, options.name, (fn) => {
    listener = fn;
    for (const event of early.splice(0)) fn(event);
  });
  await client.stop();
  const unsent = client.unsent;
  keyStore.close();
  if (client.fatal !== undefined) io.err(`duet chat: ${client.fatal}\n`);
  if (unsent) io.err(`duet chat: ${unsentText(unsent, options, client.fatal !== undefined)}\n`);
  if (client.fatal !== undefined) throw new ExitStatus(1);
}

/**
 * What becomes of `n` unsent messages: they stay in the outbox, and go out on the next
 * start, or, after a refusal (`refused`), once this name is let into the room again.
 */
function unsentText(n: number, options: ChatCliOptions, refused: boolean): string {
  const one = n === 1;
  return `${plural(n, "message")} not yet stored; ${one ? "it stays" : "they stay"} in the ` +
    `outbox (${options.keyStore}) and ${one ? "goes" : "go"} out ` +
    (refused
      ? "on a later start with this --server, --name and --room, once what stopped this one " +
        "(said above) is mended"
      : "on the next start with this --server, --name and --room");
}

/**
 * `io` whose stderr lines (line mode's state, notices, warnings) are JSON log records under
 * --log-format json, so that standard error holds nothing else: "!!! WARNING" lines at
 * warning level, "duet chat: ..." (why it stopped, what is unsent) at error, the rest at info.
 */
function jsonErr(io: CliIo): CliIo {
  return {
    ...io,
    err: (text: string) => {
      for (const line of text.split("\n")) {
        if (!line) continue;
        const level = line.startsWith("!!!")
          ? "warning"
          : line.startsWith("duet chat:")
          ? "error"
          : "info";
        logText(["duet", "chat"], level, line);
      }
    },
  };
}

/** `duet chat --line`: stdin lines out, `NAME: TEXT` lines in. */
async function runLine(options: ChatCliOptions, keyStore: KeyStore, io: CliIo): Promise<void> {
  const { code, said } = resolveCode(options, keyStore);
  if (said) io.err(`${said}\n`);
  const result = await runLineMode({
    server: options.server,
    name: options.name,
    room: options.room,
    keyStore,
    input: Deno.stdin.readable,
    out: io.out,
    err: io.err,
    signal: io.shutdownSignal,
    lingerMs: options.lingerMs,
    resetKey: options.resetKey ?? false,
    ...(code === undefined ? {} : { code }),
  }).finally(() => keyStore.close());
  const unreached = !result.reached && !result.quit && result.fatal === undefined &&
    !io.shutdownSignal.aborted;
  if (unreached) {
    io.err(
      `duet chat: never got into the room: no welcome from ${options.server} within ` +
        `--linger-ms (${options.lingerMs} ms) after the end of input\n`,
    );
  }
  if (result.unsent) {
    io.err(`duet chat: ${unsentText(result.unsent, options, result.fatal !== undefined)}\n`);
  }
  if (result.refused) {
    io.err(`duet chat: ${plural(result.refused, "line")} not sent (said above)\n`);
  }
  if (result.fatal || result.unsent || result.refused || unreached) throw new ExitStatus(1);
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;
