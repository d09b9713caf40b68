/** Every command of the `duet` program, for tests that check a rule across all of them. */
import type { Command } from "commander";
import { buildProgram } from "../cli.ts";

/**
 * Every command with every app loaded, each with its words (`["ping", "serve"]`), the program
 * itself first (with no words). Nothing is run: output goes nowhere.
 */
export async function everyCommand(): Promise<[string[], Command][]> {
  const program = await buildProgram({
    out: () => {},
    err: () => {},
    readStdin: () => Promise.resolve(""),
    shutdownSignal: new AbortController().signal,
  }, "all");
  const walk = (command: Command, path: string[]): [string[], Command][] => [
    [path, command],
    ...command.commands.flatMap((sub) => walk(sub, [...path, sub.name()])),
  ];
  return walk(program, []);
}
