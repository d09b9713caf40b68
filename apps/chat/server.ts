/**
 * The chat server's shell: TCP, timers, the store and its channel around the pure
 * per-connection protocol of server_core.ts. Delivery goes through the store's channel
 * (LISTEN/NOTIFY) for every instance alike, this one included, so two servers on one
 * database deliver each other's messages; when the listener comes back after a gap,
 * every connection catches up on what it missed. Presence is shared the same way, through
 * the database (server_rooms.ts, server_presence.ts).
 *
 * @module
 */
import { withDefaults } from "@duet/core/defaults";
import { checkDuration } from "@duet/core/duration";
import type { RunningService } from "@duet/core/service";
import { MAX_TIMEOUT_MS } from "@duet/core/long-timeout";
import { getLogger } from "@logtape/logtape";
import { KeyedBuckets } from "@duet/net/rate";
import { AddressCounter, hostPort } from "@duet/net/address";
import type { ChatStore } from "./store.ts";
import { DEFAULT_CODE_ATTEMPTS, defaultMaxConnections, readOpenFileLimit } from "./limits.ts";
import { AcceptLoop } from "./server_accept.ts";
import { type ConnectionContext, serveConnection } from "./server_connection.ts";
import type { ServerCounters } from "./server_output.ts";
import { RoomRegistry, RoomSweeper } from "./server_rooms.ts";

/** Server settings; all but the store have defaults in {@link DEFAULTS}. */
export interface ChatServerConfig {
  /** The address to listen on (default 127.0.0.1; `0.0.0.0` or `::` for all). */
  hostname: string;
  /** The TCP port (default 7070; 0: any free one, see {@link RunningChatServer.addr}). */
  port: number;
  /** The database: migrated at the start, owned by the server (shutdown closes it). */
  store: ChatStore;
  /**
   * Frames per second per connection, on average (bursts of twice this): every frame
   * counts 1, a `key_offer` 10 (limits.ts, frameCost). Faster senders are paced (the server
   * reads their frames more slowly), never refused.
   */
  messagesPerSecond: number;
  /**
   * Connections one client address may hold at once; 0 for no cap (behind a load
   * balancer that hides client addresses, where every client shares one address).
   */
  maxConnectionsPerAddress: number;
  /**
   * A connection that sends no whole frame for this long is closed (clients send
   * heartbeats); bytes that do not complete a frame do not count.
   */
  idleTimeoutMs: number;
  /**
   * A connection that has not proved its name's key (hello, welcome, key offer accepted)
   * this long after it was accepted is closed: a slot is not held for long by a client
   * that proves nothing.
   */
  handshakeTimeoutMs: number;
  /**
   * Connections the server holds at once, from every address; past it a new connection
   * gets `too_many_connections` and is closed. 0 for no cap. The default is the process's
   * open-file limit less a reserve (limits.ts, `defaultMaxConnections`).
   */
  maxConnections: number;
  /**
   * Rooms one client address (an IPv6 one by its /64) may create per minute, on average,
   * in bursts of twice this; a hello that would create one more is refused with
   * `too_many_rooms` (retryable) and closed. Joining an existing room is never limited by
   * it. 0: no limit.
   */
  roomsPerMinute: number;
  /**
   * Code attempts a room may make per hour: a party's new CPace message while the other
   * party's is stored is one (an honest pair makes 1, or 2 starting at one moment; a party waiting alone makes none,
   * however often it restarts). Past it a `code` frame
   * is refused with `too_many_code_attempts` until the hour that began with the first is
   * over. It bounds the guesses anyone holding a place in the room can make at a code.
   */
  codeAttemptsPerHour: number;
  /**
   * A room with no message, no join and no connected party for this long is deleted with
   * its parties and messages (ms; 0: rooms never expire).
   */
  roomIdleMs: number;
  /** How often the expiry sweep runs (ms); the first runs a minute after the start (or sooner). */
  roomSweepIntervalMs: number;
  /**
   * How often presence is checked (ms): this instance's database session (its presence rows
   * are written again if it was lost), and the rows of instances on the database whose
   * session is gone (dead: their parties are then told to have left). A peer on an instance
   * that died is seen leaving within about this long.
   */
  presenceCheckMs: number;
  /**
   * Bytes of replies and pushes a connection may have unwritten (handed to its socket, not
   * taken by it) before the server stops reading its frames: it cannot ask for more while
   * it does not read what it got.
   */
  outputWatermarkBytes: number;
  /**
   * Unwritten bytes past which the connection is closed at once, its queued frames
   * dropped: a client that does not read is cut off, not buffered for.
   */
  outputBudgetBytes: number;
}

/** The defaults of `duet chat-server`. */
export const DEFAULTS: Omit<ChatServerConfig, "store"> = {
  hostname: "127.0.0.1",
  port: 7070,
  messagesPerSecond: 20,
  maxConnectionsPerAddress: 16,
  idleTimeoutMs: 60_000,
  handshakeTimeoutMs: 10_000,
  maxConnections: defaultMaxConnections(readOpenFileLimit()),
  roomsPerMinute: 10,
  codeAttemptsPerHour: DEFAULT_CODE_ATTEMPTS.perWindow,
  roomIdleMs: 30 * 24 * 60 * 60 * 1000,
  roomSweepIntervalMs: 60 * 60 * 1000,
  presenceCheckMs: 2_000,
  outputWatermarkBytes: 256 * 1024,
  outputBudgetBytes: 1024 * 1024,
};

/** What limits rooms, as the connections' effects apply it (server_effects.ts). */
function roomLimits(config: ChatServerConfig) {
  return {
    // Room creation per client address key (limits.ts, addressKey); full buckets are dropped.
    roomBuckets: config.roomsPerMinute
      ? new KeyedBuckets({
        perSecond: config.roomsPerMinute / 60,
        burst: config.roomsPerMinute * 2,
      })
      : undefined,
    roomsPerMinute: config.roomsPerMinute,
    codeAttempts: {
      perWindow: config.codeAttemptsPerHour,
      windowMs: DEFAULT_CODE_ATTEMPTS.windowMs,
    },
  };
}

/** A started server: {@link RunningService} plus the chat's own counters. */
export interface RunningChatServer extends RunningService {
  /** Where it listens (TCP). */
  readonly addr: Deno.NetAddr;
  /** Connections open now. */
  readonly connections: number;
  /**
   * False while accepting fails (out of file descriptors, say): new connections are
   * refused or wait in the kernel's queue, the open ones are served, and accepting is
   * retried with a backoff of 5 ms doubling to 1 s. Logged once per outage.
   */
  readonly accepting: boolean;
  /** Accept calls that failed since the start. */
  readonly acceptFailures: number;
  /**
   * Connections refused with `too_many_connections` since the start: over the total cap,
   * over the per-address cap, or while out of file descriptors.
   */
  readonly refusedConnections: number;
  /** Connections closed because their unwritten output went over the budget. */
  readonly cutOffConnections: number;
  /**
   * Bytes handed to connections' sockets and not yet written, all connections together:
   * at most about `outputBudgetBytes` per connection.
   */
  readonly unwrittenBytes: number;
  /**
   * Runs the room expiry sweep now (it also runs every `roomSweepIntervalMs`): rooms
   * connected here count as active; resolves with the number of rooms deleted.
   *
   * @throws {StoreUnavailable} when the database is away (the periodic sweep logs it).
   */
  sweepRooms(): Promise<number>;
  /** Says bye to everyone, stops listening, closes the store. Idempotent. */
  shutdown(): Promise<void>;
}

/**
 * The settings that become timers must fit one: `setTimeout` and `setInterval` fire almost
 * at once past 2^31 − 1 ms (about 24.8 days). `roomIdleMs` is compared in SQL, not timed.
 *
 * @throws {RangeError} naming the setting, when one is not a number in (0, MAX_TIMEOUT_MS].
 */
export function checkTimerDurations(
  config:
    & Pick<
      ChatServerConfig,
      "idleTimeoutMs" | "handshakeTimeoutMs" | "roomSweepIntervalMs" | "roomIdleMs"
    >
    & Partial<Pick<ChatServerConfig, "presenceCheckMs">>,
): void {
  for (const name of ["idleTimeoutMs", "handshakeTimeoutMs", "roomSweepIntervalMs"] as const) {
    checkDuration(name, config[name], { zero: false, max: MAX_TIMEOUT_MS });
  }
  if (config.presenceCheckMs !== undefined) {
    checkDuration("presenceCheckMs", config.presenceCheckMs, { zero: false, max: MAX_TIMEOUT_MS });
  }
  // Compared in SQL, not timed: any finite span, 0 for never.
  checkDuration("roomIdleMs", config.roomIdleMs, { infinite: false });
}

/**
 * Starts the server; resolves once it listens, its listener is subscribed and its presence
 * session is open.
 *
 * @param overrides The store, and any setting to change from {@link DEFAULTS}. The server
 *   owns the store from now on: `shutdown()` closes it.
 * @returns The running server; `shutdown()` stops it, `finished` settles once it stopped.
 * @throws {RangeError} from {@link checkTimerDurations}; what listening throws
 *   (`Deno.errors.AddrInUse`, ...); what migrating the store throws.
 *
 * @example Serve on a free port with an in-memory database, then stop
 * ```ts ignore
 * import { ChatStore, openPglite, startChatServer } from "@duet/chat";
 *
 * const store = new ChatStore(await openPglite(await Deno.makeTempDir()));
 * const server = await startChatServer({ store, port: 0 });
 * console.log(`chat server on ${server.addr.hostname}:${server.addr.port}`);
 * await server.shutdown(); // says bye to every client, closes the store
 * ```
 */
export async function startChatServer(
  overrides: Partial<ChatServerConfig> & { store: ChatStore },
): Promise<RunningChatServer> {
  const config: ChatServerConfig = withDefaults(DEFAULTS, overrides) as ChatServerConfig;
  checkTimerDurations(config);
  const { store } = config;
  await store.migrate();
  const rooms = new RoomRegistry(store);
  await rooms.listen();
  const listener = Deno.listen({ hostname: config.hostname, port: config.port });
  try {
    await rooms.startPresence(config.presenceCheckMs);
  } catch (error) {
    listener.close();
    throw error;
  }
  let stopping = false;
  const counters: ServerCounters = {
    refusedConnections: 0,
    cutOffConnections: 0,
    unwrittenBytes: 0,
  };
  const context: ConnectionContext = {
    config,
    store,
    service: store.serviceId,
    rooms,
    counters,
    perAddress: new AddressCounter(config.maxConnectionsPerAddress),
    open: new Set(),
    stopping: () => stopping,
    ...roomLimits(config),
  };
  const accepting = new AcceptLoop({
    listener,
    stopping: () => stopping,
    serve: (conn) =>
      serveConnection(conn, context).catch((error) =>
        log.warn("Connection failed: {error}", { error: String(error) })
      ),
    refused: () => counters.refusedConnections++,
  });
  const addr = listener.addr;
  log.info("Chat server listening on {address} (at most {max} connections)", {
    address: hostPort(addr.hostname, addr.port),
    // Apart too, for whoever reads --log-format json (deploy/ health checks, tools).
    host: addr.hostname,
    port: addr.port,
    max: config.maxConnections || "unlimited",
  });
  const sweeper = new RoomSweeper(store, rooms, config.roomIdleMs, config.roomSweepIntervalMs);
  let stopped: Promise<void> | undefined;
  /** The body of `shutdown()`, run once. */
  const stop = async () => {
    stopping = true;
    sweeper.stopTimers();
    listener.close();
    await accepting.serving;
    accepting.releaseReserve();
    await sweeper.settled();
    await closeConnections(rooms, context.open);
    await rooms.stopPresence();
    await store.close();
    log.info("Chat server stopped");
  };
  return {
    addr,
    get connections() {
      return context.open.size;
    },
    get accepting() {
      return !accepting.outage.active;
    },
    get acceptFailures() {
      return accepting.outage.failures;
    },
    get refusedConnections() {
      return counters.refusedConnections;
    },
    get cutOffConnections() {
      return counters.cutOffConnections;
    },
    get unwrittenBytes() {
      return counters.unwrittenBytes;
    },
    sweepRooms: () => sweeper.sweep(),
    finished: finishedWhen(accepting.serving, () => stopped),
    shutdown: () => stopped ??= stop(),
  };
}

const log = getLogger(["duet", "chat"]);

/**
 * Settles once the server is done: after the accept loop ended and the shutdown that ended
 * it (`stopped()`) settled. The loop ends only when stopping; should it fail otherwise, the
 * server is done, with its error.
 */
function finishedWhen(
  serving: Promise<void>,
  stopped: () => Promise<void> | undefined,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    serving.then(
      () => stopped()?.then(resolve, reject),
      (error) => {
        log.error("The chat server stopped accepting: {error}", { error: String(error) });
        reject(error);
      },
    );
  });
}

/**
 * Says bye to every connection, gives the byes a moment to be written, closes the sockets
 * and waits for the channel events in hand to be delivered.
 */
async function closeConnections(rooms: RoomRegistry, open: Set<Deno.TcpConn>): Promise<void> {
  rooms.shutdown();
  await new Promise((resolve) => setTimeout(resolve, 20));
  for (const conn of open) {
    try {
      conn.close();
    } catch { /* closed */ }
  }
  await rooms.delivered();
}
