/**
 * The `duet` command line: one entry, one parser (commander), one place where errors
 * become exit statuses. Exit 0 success, 1 failure or negative verdict, 2 usage error.
 *
 * @module
 */
import { Command, CommanderError, Option } from "commander";
import { getLogger } from "@logtape/logtape";
import { type CliIo, ExitStatus, UsageError } from "./io.ts";
import { setupLogging } from "./logging.ts";
import { dlogCommand } from "./commands/dlog.ts";
import { chatCommand, chatServerCommand } from "./commands/chat.ts";
import { pingCommand } from "./commands/ping.ts";
import { serveCommand } from "./commands/serve.ts";
import { syncpointCommand } from "./commands/syncpoint.ts";

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
        io.err(`${prefixFor(command)}: ${text.trim().replace(/^error: /, "")} (see --help)\n`);
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
  for (const sub of command.commands) conventions(sub, io);
  return command;
}

/** "duet dlog prove" for the prove subcommand: how errors name where they happened. */
function prefixFor(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** Builds the program; exported for tests that inspect the command tree. */
export function buildProgram(io: CliIo): Command {
  const program = new Command("duet")
    .description(
      "duet: find each other, prove things to each other and talk securely.\n" +
        "Every command has --help.",
    )
    .version(VERSION, "-V, --version", "print the version")
    .showHelpAfterError(false);
  program.hook("preAction", (_root, action) => {
    const options = action.optsWithGlobals();
    setupLogging(
      { level: options["logLevel"], quiet: options["quiet"], format: options["logFormat"] },
      io.err,
      Deno.stderr.isTerminal(),
    );
  });
  program.addCommand(dlogCommand(io));
  program.addCommand(syncpointCommand(io));
  program.addCommand(pingCommand(io));
  program.addCommand(chatServerCommand(io));
  program.addCommand(chatCommand(io));
  program.addCommand(serveCommand(io));
  return conventions(program, io);
}

/**
 * Runs the command line and returns the exit status. Never throws: user mistakes are one
 * line on stderr; unexpected failures are one line too, with the stack at --log-level debug.
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const program = buildProgram(io);
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
    io.err(`${prefix}: ${error instanceof Error ? error.message : String(error)}\n`);
    getLogger(["duet", "cli"]).debug("{stack}", { stack: (error as Error)?.stack });
    return 1;
  }
}

function findCommand(program: Command, argv: string[]): Command {
  let command = program;
  for (const word of argv) {
    const sub = command.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (!sub) break;
    command = sub;
  }
  return command;
}
