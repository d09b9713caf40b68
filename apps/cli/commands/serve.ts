/**
 * `duet serve`: every duet service at once, with embedded defaults.
 *
 * @module
 */
import { Command } from "commander";
import { DEFAULTS as SYNCPOINT, startSyncpoint } from "@duet/syncpoint";
import type { CliIo } from "../io.ts";
import { explainListenError, integer, untilAborted } from "./_options.ts";

interface ServeOptions {
  host: string;
  syncpointPort: number;
}

/** The `serve` command. */
export function serveCommand(io: CliIo): Command {
  return new Command("serve")
    .description("start every duet service with embedded defaults, printing each URL")
    .option("--host <host>", "interface every service listens on", "127.0.0.1")
    .option("--syncpoint-port <port>", "syncpoint's TCP port", integer(0, 65535), SYNCPOINT.port)
    .action(async (options: ServeOptions) => {
      const syncpoint = await startSyncpoint({
        hostname: options.host,
        port: options.syncpointPort,
      })
        .catch((error) => explainListenError(error, options.host, options.syncpointPort));
      io.out(
        `syncpoint  ${new URL(
          "/wait-for-second-party/",
          syncpoint.url,
        )}ID   (POST; GET /healthz, /metrics)\n`,
      );
      io.out("duet is running; Ctrl-C stops it.\n");
      await untilAborted(io.shutdownSignal);
      await syncpoint.shutdown();
    });
}
