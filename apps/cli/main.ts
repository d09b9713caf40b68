/**
 * Entry of the `duet` command: `deno task duet <command> [options]`.
 *
 * @module
 */
import { runCli } from "./cli.ts";
import { processIo } from "./io.ts";

if (import.meta.main) {
  Deno.exit(await runCli(Deno.args, processIo()));
}
