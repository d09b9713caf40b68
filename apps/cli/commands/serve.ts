import { Command } from "commander";
import type { CliIo } from "../io.ts";

/** `duet serve`: every service at once with embedded defaults. */
export function serveCommand(io: CliIo): Command {
  return new Command("serve")
    .description("start every duet service with embedded defaults, printing each URL")
    .action(() => {
      io.err("duet serve: no services are built yet; see the README's table of parts\n");
    });
}
