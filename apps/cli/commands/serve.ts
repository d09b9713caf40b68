/**
 * `duet serve`: every duet service at once, with embedded defaults.
 *
 * @module
 */
import { Command } from "commander";
import { bytesToHex } from "@noble/hashes/utils.js";
import { DEFAULTS as SYNCPOINT, startSyncpoint } from "@duet/syncpoint";
import { DEFAULTS as PING, startPingServer } from "@duet/ping";
import { DEFAULTS as CHAT, startChatServer } from "@duet/chat";
import { defaultDataDir, openStore } from "./chat.ts";
import type { CliIo } from "../io.ts";
import { explainListenError, integer, probeTcpPort, showHostPort, userPath } from "./_options.ts";
import { startServices, superviseServices } from "@duet/core/service";

interface ServeOptions {
  host: string;
  syncpointPort: number;
  pingPort: number;
  chatPort: number;
  chatDataDir?: string;
}

/** The help after `duet serve`'s options. */
const SERVE_HELP = `
Starts syncpoint, the ping server (with its page) and the chat server (on PGlite in
--chat-data-dir), then prints where each is. Each service has its own command for its
other options: duet syncpoint, duet ping serve, duet chat-server.

Examples:
  duet serve                                   # 127.0.0.1, ports 8080, 4433 and 7070
  duet serve --syncpoint-port 0 --ping-port 0 --chat-port 0   # any free ports
  duet serve --host 0.0.0.0 --chat-data-dir ./chat-data

A port that is taken stops the start: the services already started are stopped again.
Stops on SIGINT/SIGTERM (Ctrl-C), or when one service fails: every service is shut down.`;

/** The `serve` command. */
export function serveCommand(io: CliIo): Command {
  return new Command("serve")
    .option("--host <host>", "interface every service listens on", "127.0.0.1")
    .option("--syncpoint-port <port>", "syncpoint's TCP port", integer(0, 65535), SYNCPOINT.port)
    .option(
      "--ping-port <port>",
      "ping's port (UDP for WebTransport, TCP for its page)",
      integer(0, 65535),
      PING.port,
    )
    .option("--chat-port <port>", "the chat server's TCP port", integer(0, 65535), CHAT.port)
    .option(
      "--chat-data-dir <dir>",
      `the chat server's embedded database (default: ${defaultDataDir()})`,
      userPath,
    )
    .addHelpText("after", SERVE_HELP)
    .action(async (options: ServeOptions) => {
      const { host } = options;
      // Said once every service is up: a URL printed before a later service fails to start
      // would name a service that is already stopped again.
      const lines: string[] = [];
      const services = await startServices(
        [
          {
            name: "syncpoint",
            start: async () => {
              const syncpoint = await startSyncpoint({
                hostname: host,
                port: options.syncpointPort,
              })
                .catch((error) =>
                  explainListenError(error, host, options.syncpointPort, "--syncpoint-port")
                );
              const waitUrl = new URL("/wait-for-second-party/", syncpoint.url);
              lines.push(`syncpoint  ${waitUrl}ID   (POST; GET /healthz, /metrics)\n`);
              return syncpoint;
            },
          },
          {
            name: "ping",
            start: async () => {
              const ping = await startPingServer({ hostname: host, port: options.pingPort })
                .catch((error) => explainListenError(error, host, options.pingPort, "--ping-port"));
              lines.push(
                `ping       ${ping.url.href}   (WebTransport; duet ping --url ${ping.url.href})\n`,
                `ping page  ${ping.httpUrl.href}   (open in a browser)\n`,
                // What a client on another machine pins (on this one it is fetched).
                `ping cert  sha-256 ${bytesToHex(ping.certificateHashes()[0]!)}   ` +
                  "(duet ping --cert-hash HASH)\n",
              );
              return ping;
            },
          },
          {
            name: "chat",
            start: async () => {
              probeTcpPort(host, options.chatPort, "--chat-port");
              const { store, description } = await openStore(undefined, options.chatDataDir);
              const chat = await startChatServer({ store, hostname: host, port: options.chatPort })
                .catch(async (error) => {
                  await store.close();
                  return explainListenError(error, host, options.chatPort, "--chat-port");
                });
              const chatAt = showHostPort(chat.addr.hostname, chat.addr.port);
              lines.push(
                `chat       ${chatAt}   (${description}; ` +
                  `duet chat --server ${chatAt} --name NAME --room ROOM)\n`,
              );
              return chat;
            },
          },
        ],
        undefined,
        io.shutdownSignal,
      );
      if (!services.length) return; // stopped during start-up, everything undone
      io.out(`${lines.join("")}duet is running; Ctrl-C stops it.\n`);
      await superviseServices(services, io.shutdownSignal);
    });
}
