/**
 * The `duet` command line: one entry, one parser (commander), one place where errors
 * become exit statuses. Exit 0 success, 1 failure or negative verdict, 2 usage error.
 *
 * @module
 */
import { editDistance } from "./suggest.ts";
import { Command, CommanderError, Help, InvalidArgumentError, Option } from "commander";
import { explainError } from "@duet/core/explain-error";
import { type CliIo, ExitStatus, UsageError } from "./io.ts";
import type { LoggingOptions } from "./logging.ts";

/**
 * The commands, each loaded only when it runs: `duet --help` and `duet dlog prove` do not
 * load the chat's database, the ping server or React. A command's summary lives here, the
 * one place both the top-level help (which lists every command without loading it) and the
 * loaded command read it from.
 */
const COMMANDS: readonly {
  name: string;
  /** How the top-level help lists it, subcommands shown (before " [options]"). */
  term?: string;
  summary: string;
  /**
   * False for a command that writes no log record (dlog): logging is then set up only if
   * it fails unexpectedly, which spares it loading LogTape.
   */
  logs?: false;
  load(): Promise<(io: CliIo) => Command>;
}[] = [
  {
    name: "dlog",
    term: "dlog prove|verify",
    summary: "prove and verify knowledge of a discrete log (Schnorr, secp256k1)",
    logs: false,
    load: async () => (await loadCommand<typeof import("./commands/dlog.ts")>("dlog")).dlogCommand,
  },
  {
    name: "syncpoint",
    term: "syncpoint [wait ID]",
    summary: "run the rendezvous service: POST /wait-for-second-party/:id holds the first " +
      "party until the second arrives (both get 200) or the timeout passes (408)",
    load: async () =>
      (await loadCommand<typeof import("./commands/syncpoint.ts")>("syncpoint")).syncpointCommand,
  },
  {
    name: "ping",
    term: "ping [serve]",
    summary: "ping a duet ping server over WebTransport (like ping: per-reply lines, then a " +
      "summary), over its WebSocket while UDP is blocked, failing over to the next " +
      "server given or found when one fails; without --url, find the server by mDNS, " +
      "then DNS SRV",
    load: async () => (await loadCommand<typeof import("./commands/ping.ts")>("ping")).pingCommand,
  },
  {
    name: "chat-server",
    summary: "run the chat server: pairs two parties per room for their key exchange, stores " +
      "only ciphertext (PostgreSQL, or embedded PGlite), pushes messages in real time",
    load: async () =>
      (await loadCommand<typeof import("./commands/chat.ts")>("chat")).chatServerCommand,
  },
  {
    name: "chat",
    summary: "talk end to end encrypted with one other party in a room: the key is agreed " +
      "through the server, which sees only ciphertext",
    load: async () => (await loadCommand<typeof import("./commands/chat.ts")>("chat")).chatCommand,
  },
  {
    name: "serve",
    summary: "start every duet service with embedded defaults, printing each URL",
    load: async () =>
      (await loadCommand<typeof import("./commands/serve.ts")>("serve")).serveCommand,
  },
];

/**
 * Imports `apps/cli/commands/NAME.ts`. The specifier is computed on purpose: Deno loads the
 * whole graph of every import it can read before the program starts, dynamic ones
 * included, so with literal specifiers `duet --help` still loaded (parsed and resolved)
 * every app: measured 45-50 ms of its 158 ms. The type is still checked: `T` names the module.
 */
function loadCommand<T>(name: string): Promise<T> {
  return import(new URL(`./commands/${name}.ts`, import.meta.url).href);
}

/** Program options that take a value: what `commandNameIn` skips over. */
const VALUE_OPTIONS = new Set(["--log-level", "--log-format"]);

/** The command `argv` names (its first word that is not a program option), if any. */
export function commandNameIn(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") return argv[i + 1];
    if (VALUE_OPTIONS.has(word)) i++;
    else if (!word.startsWith("-")) return word;
  }
  return undefined;
}

/**
 * `duet help [COMMAND...]` as `duet [COMMAND...] --help`, the form every command knows
 * (commander's own help command cannot list commands that are not loaded): the new
 * arguments, and the command words asked about (checked once the program is built, by
 * {@link unknownCommandIn}); undefined when `argv` asks for no help this way. `duet help
 * help` is `duet --help`.
 */
export function helpAsOption(
  argv: readonly string[],
): { argv: string[]; words: string[] } | undefined {
  if (commandNameIn(argv) !== "help") return undefined;
  const at = argv.indexOf("help");
  const before = argv.slice(0, at);
  let words = argv.slice(at + 1);
  while (words[0] === "help") words = words.slice(1);
  const commands: string[] = [];
  for (let i = 0; i < words.length; i++) {
    if (VALUE_OPTIONS.has(words[i]!)) i++; // and its value
    else if (!words[i]!.startsWith("-")) commands.push(words[i]!);
  }
  return { argv: [...before, ...words, "--help"], words: commands };
}

/**
 * The first of `words` that is not a subcommand of the one before it (from the program
 * down), with the command it was looked for under; undefined when all are.
 */
export function unknownCommandIn(
  program: Command,
  words: readonly string[],
): { under: Command; word: string } | undefined {
  let command = program;
  for (const word of words) {
    const sub = command.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!sub) return { under: command, word };
    command = sub;
  }
  return undefined;
}

/** The version printed by `duet --version`. */
export const VERSION = "0.1.0";

/**
 * Applies duet's conventions to a command and all its subcommands: output through `io`,
 * one-line errors, `-h/--help`, and the logging options on every command. Options are
 * positional (each command parses only its own, so `syncpoint --timeout-ms` and
 * `syncpoint wait --timeout-ms` cannot steal each other's), which is why the logging
 * options are defined on every command rather than once on the program.
 */
function conventions(command: Command, io: CliIo): Command {
  command
    .helpOption("-h, --help", "show help")
    .helpCommand(false)
    .exitOverride()
    .enablePositionalOptions()
    .configureOutput({
      writeOut: io.out,
      writeErr: io.err,
      // commander says "error: ..."; one line naming the command reads better in scripts.
      outputError: (text) => {
        // Its "(Did you mean --count?)" comes on a line of its own: joined into the one line.
        // Its "argument 'x' is invalid. expected ..." reads as two sentences, the second
        // without a capital: one sentence, the reason after a colon; no full stop before
        // "(see --help)".
        let said = text.trim().replace(/^error: /, "").replace(/\s*\n\s*/g, " ")
          .replace(/ is invalid\. /, " is invalid: ").replace(/\.$/, "");
        // A command that runs by itself and has subcommands (`duet syncpoint`, `wait`) takes
        // a misspelt subcommand for an argument too many: say what it is.
        const extra = said.match(
          /^too many arguments for '[^']*'\. Expected 0 arguments but got \d+: ([^,]+)/,
        )?.[1];
        if (extra !== undefined && command.commands.length) {
          said = unknownCommandText(command, extra);
        }
        io.err(`${prefixFor(command)}: ${said} (see --help)\n`);
      },
    })
    .addOption(
      new Option("--log-level <level>", "lowest log level written to stderr")
        .choices(["trace", "debug", "info", "warning", "error", "fatal"]),
    )
    .option("-q, --quiet", "log nothing but errors")
    .addOption(
      new Option("--log-format <format>", "log line format (default: pretty)")
        .choices(["pretty", "json"]),
    );
  requireAfterParsing(command);
  checkValues(command);
  for (const sub of command.commands) conventions(sub, io);
  return command;
}

/**
 * What the runtime makes of a command-line word that is not UTF-8: each bad byte becomes
 * U+FFFD, so different words arrive as one (`--sid $'\xff'` and `--sid $'\xfe'` were the
 * same session id, and a proof for one verified for the other).
 */
const LOSSY_TEXT = "\uFFFD";

/** Why `value` cannot be taken as written, or undefined when it can. */
function lossyMessage(value: string): string | undefined {
  return value.includes(LOSSY_TEXT)
    ? "it is not UTF-8 text (the runtime reads such bytes as U+FFFD, so different values " +
      "would arrive as one)"
    : undefined;
}

/**
 * Checks every value given to `command`, options and arguments, before its action runs:
 *
 * - an option that takes a value refuses one of its command's own option names as that
 *   value. Commander takes the next word whatever it is, so `duet dlog prove --sid --pid 1`
 *   gave --sid the value "--pid" and then said "too many arguments ... got 1: 1", which
 *   points away from the mistake. `--sid=--pid` is refused too (commander hands the parser
 *   the same value); no value of ours is meant to be one of the command's option names;
 * - no value may have been decoded lossily ({@link LOSSY_TEXT}).
 */
function checkValues(command: Command): void {
  const names = new Set(["-h", "--help"]);
  for (const option of command.options) {
    if (option.long) names.add(option.long);
    if (option.short) names.add(option.short);
  }
  for (const option of command.options) {
    if (!option.required) continue; // only `<value>` options take the next word unseen
    const parse = option.parseArg;
    const flag = option.long ?? option.short;
    option.argParser((value: string, previous: unknown) => {
      if (names.has(value)) {
        throw new InvalidArgumentError(
          `${value} is an option of its own, so ${flag} has no value; give it one first`,
        );
      }
      const lossy = lossyMessage(value);
      if (lossy !== undefined) throw new InvalidArgumentError(lossy);
      return parse ? parse.call(option, value, previous) : value;
    });
  }
  command.hook("preAction", (_command, action) => {
    if (action !== command) return;
    for (const [index, word] of command.args.entries()) {
      const lossy = lossyMessage(word);
      if (lossy === undefined) continue;
      const name = command.registeredArguments[index]?.name() ?? String(index + 1);
      command.error(`argument '${name}' is invalid: ${lossy}`, {
        code: "commander.invalidArgument",
        exitCode: 2,
      });
    }
  });
}

/**
 * Makes `command`'s required options (`.requiredOption`) say "(required)" in the help and be
 * checked just before its action, after commander has checked for unknown options: commander
 * checks required ones first, so `duet dlog prove --bogus` said "required option '--sid
 * <sid>' not specified" instead of naming --bogus. The message is commander's own.
 */
function requireAfterParsing(command: Command): void {
  const required = command.options.filter((option) => option.mandatory);
  if (required.length === 0) return;
  for (const option of required) {
    option.mandatory = false;
    option.description = `${option.description} (required)`;
  }
  command.hook("preAction", (_command, action) => {
    if (action !== command) return;
    for (const option of required) {
      if (command.getOptionValue(option.attributeName()) === undefined) {
        command.error(`required option '${option.flags}' not specified`, {
          code: "commander.missingMandatoryOptionValue",
          exitCode: 2,
        });
      }
    }
  });
}

/** "unknown command 'prv' (Did you mean prove?)": `word` is no subcommand of `command`. */
function unknownCommandText(command: Command, word: string): string {
  const near = command.commands.map((sub) => sub.name())
    .find((name) => editDistance(name, word) <= 2);
  return `unknown command '${word}'${near ? ` (Did you mean ${near}?)` : ""}`;
}

/** "duet dlog prove" for the prove subcommand: how errors name where they happened. */
function prefixFor(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/**
 * Builds the program with the command `load` names loaded (all of them for `"all"`), the
 * others as stubs that carry only their name and summary (enough for `duet --help`).
 * Exported for tests that inspect the command tree.
 */
export async function buildProgram(io: CliIo, load: string | "all" | undefined): Promise<Command> {
  const program: Command = new Command("duet")
    .description(
      "duet: find each other, prove things to each other and talk securely.\n" +
        "Every command has --help; duet help COMMAND says the same.",
    )
    .version(VERSION, "-V, --version", "print the version")
    .showHelpAfterError(false)
    .configureHelp({
      // Commands with subcommands show them: "dlog prove|verify [options]", not "dlog".
      subcommandTerm: (command: Command): string => {
        const term = COMMANDS.find((entry) => entry.name === command.name())?.term;
        return command.parent === program && term
          ? `${term} [options]`
          : new Help().subcommandTerm(command);
      },
    });
  program.hook("preAction", async (_root, action) => {
    const options = action.optsWithGlobals();
    loggingOptions.set(
      program,
      { level: options["logLevel"], quiet: options["quiet"], format: options["logFormat"] },
    );
    const name = topCommandOf(action).name();
    if (COMMANDS.find((entry) => entry.name === name)?.logs !== false) {
      await configureLogging(program, io);
    }
  });
  for (const entry of COMMANDS) {
    const command = load === "all" || load === entry.name
      ? (await entry.load())(io)
      : new Command(entry.name);
    program.addCommand(command.description(entry.summary));
  }
  return conventions(program, io);
}

/** The logging options each program was run with, once its command's action is about to run. */
const loggingOptions = new WeakMap<Command, LoggingOptions>();
const loggingConfigured = new WeakSet<Command>();

/** Sets up logging (LogTape, loaded now) for `program`'s run, once; nothing before parsing. */
async function configureLogging(program: Command, io: CliIo): Promise<void> {
  const options = loggingOptions.get(program);
  if (!options || loggingConfigured.has(program)) return;
  loggingConfigured.add(program);
  const { setupLogging } = await import("./logging.ts");
  setupLogging(options, io.err, Deno.stderr.isTerminal());
}

/** The command right under the program that `command` belongs to ("ping" for ping serve). */
function topCommandOf(command: Command): Command {
  let top = command;
  while (top.parent?.parent) top = top.parent;
  return top;
}

/**
 * Runs the command line and returns the exit status. Never throws: user mistakes are one
 * line on stderr; unexpected failures are one line too, with the stack at --log-level debug.
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const help = helpAsOption(argv);
  if (help) argv = help.argv;
  const program = await buildProgram(io, commandNameIn(argv));
  const unknown = help && unknownCommandIn(program, help.words);
  if (unknown) {
    io.err(
      `${prefixFor(unknown.under)}: ${unknownCommandText(unknown.under, unknown.word)} ` +
        "(see --help)\n",
    );
    return 2;
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version exit 0; parse errors were already printed by outputError.
      return error.exitCode === 0 ? 0 : 2;
    }
    if (error instanceof ExitStatus) return error.status;
    const prefix = prefixFor(findCommand(program, argv));
    if (error instanceof UsageError) {
      io.err(`${prefix}: ${error.message} (see --help)\n`);
      return 2;
    }
    // Runtime errors in our words; the original, causes included, at --log-level debug.
    await configureLogging(program, io);
    const { getLogger } = await import("@logtape/logtape");
    if (loggingOptions.get(program)?.format === "json") {
      const { logText } = await import("./logging.ts");
      logText(["duet", "cli"], "error", `${prefix}: ${explainError(error)}`);
    } else {
      io.err(`${prefix}: ${explainError(error)}\n`);
    }
    for (let e: unknown = error; e !== undefined; e = (e as Error)?.cause) {
      getLogger(["duet", "cli"]).debug("{stack}", { stack: (e as Error)?.stack ?? String(e) });
    }
    return 1;
  }
}

/** The command `argv` ran: its words, skipping options (and a program option's value). */
function findCommand(program: Command, argv: string[]): Command {
  let command = program;
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === "--") break;
    if (word.startsWith("-")) {
      if (VALUE_OPTIONS.has(word)) i++;
      continue;
    }
    const sub = command.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!sub) break;
    command = sub;
  }
  return command;
}
