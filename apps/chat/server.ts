/**
 * The chat server's shell: TCP, timers, the store and its channel around the pure
 * per-connection protocol of server_core.ts. Delivery goes through the store's channel
 * (LISTEN/NOTIFY) for every instance alike, this one included, so two servers on one
 * database deliver each other's messages; when the listener comes back after a gap,
 * every connection catches up on what it missed.
 *
 * @module
 */
import type { RunningService } from "@duet/core/service";
import { MAX_TIMEOUT_MS } from "@duet/core/long-timeout";
import { getLogger } from "@logtape/logtape";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  encodeFrame,
  errorMessage,
  FrameDecoder,
  type ProtocolError,
  type ServerMessage,
} from "./protocol.ts";
import type { ChatStore, MessageRow, StoreEvent } from "./store.ts";
import {
  addressKey,
  admitOutput,
  defaultMaxConnections,
  mayRead,
  readOpenFileLimit,
} from "./limits.ts";
import { KeyedBuckets } from "@duet/net/rate";
import { AcceptOutage } from "@duet/net/outage";
import { AddressCounter } from "@duet/net/address";
import {
  type Effect,
  type Event,
  initialState,
  refuse,
  type State,
  type Step,
  step,
} from "./server_core.ts";

/** Server settings; all but the store have defaults in {@link DEFAULTS}. */
export interface ChatServerConfig {
  hostname: string;
  port: number;
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
   * A room with no message, no join and no connected party for this long is deleted with
   * its parties and messages (ms; 0: rooms never expire).
   */
  roomIdleMs: number;
  /** How often the expiry sweep runs (ms); the first runs a minute after the start (or sooner). */
  roomSweepIntervalMs: number;
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
  roomIdleMs: 30 * 24 * 60 * 60 * 1000,
  roomSweepIntervalMs: 60 * 60 * 1000,
  outputWatermarkBytes: 256 * 1024,
  outputBudgetBytes: 1024 * 1024,
};

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

const log = getLogger(["duet", "chat"]);

/** History reads one connection may have running at once; it is not read further meanwhile. */
const MAX_HISTORY_READS = 2;

/**
 * Bytes of a connection's frames read ahead of their handling, past which its socket is read
 * no further until they are handled (the pump in `handle`).
 */
const READ_AHEAD_BYTES = 64 * 1024;

/** How long a closing connection's last frames may take to be written. */
const CLOSE_GRACE_MS = 5_000;

/** How long a refusal sent while out of file descriptors may take to be written. */
const SHED_WRITE_MS = 100;

/** One TCP connection: the core's state and what runs its effects. */
interface Connection {
  dispatch(event: Event): void;
  /** Set by the join effect: the room whose pushes this connection takes. */
  room?: string;
  name?: string;
  state: State;
}

/**
 * The settings that become timers must fit one: `setTimeout` and `setInterval` fire almost
 * at once past 2^31 − 1 ms (about 24.8 days). `roomIdleMs` is compared in SQL, not timed.
 *
 * @throws {RangeError} naming the setting, when one is not a number in [1, MAX_TIMEOUT_MS].
 */
export function checkTimerDurations(
  config: Pick<ChatServerConfig, "idleTimeoutMs" | "handshakeTimeoutMs" | "roomSweepIntervalMs">,
): void {
  for (const name of ["idleTimeoutMs", "handshakeTimeoutMs", "roomSweepIntervalMs"] as const) {
    const ms = config[name];
    if (!(ms >= 1 && ms <= MAX_TIMEOUT_MS)) {
      throw new RangeError(
        `${name} must be from 1 to ${MAX_TIMEOUT_MS} ms (about 24.8 days), got ${ms}`,
      );
    }
  }
}

/**
 * Starts the server; resolves once it listens and its listener is subscribed.
 *
 * @throws {RangeError} from {@link checkTimerDurations}; what listening throws
 *   (`Deno.errors.AddrInUse`, ...); what migrating the store throws.
 */
export async function startChatServer(
  overrides: Partial<ChatServerConfig> & { store: ChatStore },
): Promise<RunningChatServer> {
  const config: ChatServerConfig = { ...DEFAULTS, ...overrides };
  checkTimerDurations(config);
  const { store } = config;
  await store.migrate();
  const service = store.serviceId;
  const rooms = new Map<string, Set<Connection>>();
  const perAddress = new AddressCounter(config.maxConnectionsPerAddress);
  const open = new Set<Deno.TcpConn>();
  const connections = new Set<Connection>();
  let stopping = false;
  const outage = new AcceptOutage({
    log,
    port: () => (listener.addr as Deno.NetAddr).port,
    meanwhile: "new ones are refused while the open ones are served, and accepting is retried",
  });
  let refusedConnections = 0;
  let cutOffConnections = 0;
  let unwrittenTotal = 0;
  /** Room creation per client address key (limits.ts, addressKey); full buckets are dropped. */
  const roomBuckets = config.roomsPerMinute
    ? new KeyedBuckets({ perSecond: config.roomsPerMinute / 60, burst: config.roomsPerMinute * 2 })
    : undefined;

  const inRoom = (room: string) => [...(rooms.get(room) ?? [])];

  /**
   * Channel events, one at a time in the order announced: a message too large for its
   * notification is read back before any later event is dispatched, so pushes keep the
   * channel's (commit) order.
   */
  let channel = Promise.resolve();
  const onStoreEvent = (event: StoreEvent) => {
    channel = channel.then(() => deliver(event)).catch((error) => {
      log.warn("Delivery failed: {error}; the room's connections catch up", {
        error: String(error),
      });
      for (const connection of inRoom(event.room)) connection.dispatch({ type: "listener_back" });
    });
  };

  async function deliver(event: StoreEvent): Promise<void> {
    const members = inRoom(event.room);
    if (!members.length) return;
    if (event.kind === "key") {
      const offer = (await store.keyOffers(event.room)).find((o) => o.party === event.party);
      if (offer) {
        for (const connection of members) connection.dispatch({ type: "peer_key", offer });
      }
      return;
    }
    const row: MessageRow | undefined = event.message ?? await store.message(event.id);
    if (!row) return;
    for (const connection of inRoom(event.room)) connection.dispatch({ type: "push", row });
  }

  let listened = 0;
  await store.listen(onStoreEvent, () => {
    if (listened++ === 0) return;
    log.info("The database listener is back; catching clients up");
    for (const connection of connections) connection.dispatch({ type: "listener_back" });
  });

  const listener = Deno.listen({ hostname: config.hostname, port: config.port });
  /**
   * A descriptor held back for refusing connections while accepting fails for want of
   * descriptors: it is closed to accept one, which is told `too_many_connections` and
   * closed (unless the reserve can be opened again: then there are descriptors, and the
   * connection is served). Without it, queued connections would wait unanswered.
   */
  let reserve = openReserve();
  const serve = (conn: Deno.TcpConn) =>
    handle(conn).catch((error) => log.warn("Connection failed: {error}", { error: String(error) }));
  /**
   * Accepts one queued connection with the reserve descriptor (see {@link reserve}).
   * Resolves with the connection if descriptors are free again (it is to be served), else
   * undefined (it was refused, or none could be accepted).
   */
  const shed = async (): Promise<Deno.TcpConn | undefined> => {
    reserve?.close();
    reserve = undefined;
    let conn: Deno.TcpConn;
    try {
      conn = await listener.accept();
    } catch {
      reserve = openReserve();
      return undefined;
    }
    reserve = openReserve();
    if (reserve) return conn;
    refusedConnections++;
    await refuseRaw(conn, "the server is out of file descriptors; try again shortly");
    reserve = openReserve();
    return undefined;
  };
  // Accept errors (out of file descriptors, say) neither end the loop nor the process: the
  // open connections are served, new ones refused (or left queued), and accepting is tried
  // again after 5 ms, doubling to 1 s while it keeps failing. Logged once per outage.
  const serving = (async () => {
    while (!stopping) {
      let conn: Deno.TcpConn | undefined;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (stopping) break;
        outage.failed(String(error));
        if (outOfDescriptors(error) && reserve) conn = await shed();
        if (!conn) {
          await new Promise((resolve) => setTimeout(resolve, outage.nextAttemptMs()));
          continue;
        }
      }
      outage.recovered();
      reserve ??= openReserve();
      serve(conn);
    }
  })();
  let stopped: Promise<void> | undefined;
  const finished = new Promise<void>((resolve, reject) => {
    // The accept loop ends only when stopping; should it fail otherwise, the server is done.
    serving.then(
      () => stopped?.then(resolve, reject),
      (error) => {
        log.error("The chat server stopped accepting: {error}", { error: String(error) });
        reject(error);
      },
    );
  });
  const addr = listener.addr as Deno.NetAddr;
  log.info("Chat server listening on {host}:{port} (at most {max} connections)", {
    host: addr.hostname,
    port: addr.port,
    max: config.maxConnections || "unlimited",
  });

  /** Runs the expiry sweep: rooms with a connection here are touched first (active). */
  let sweeping: Promise<number> | undefined;
  const sweepRooms = () =>
    sweeping ??= (async () => {
      try {
        await Promise.resolve(); // `sweeping` is set before the `finally` below clears it
        if (!config.roomIdleMs) return 0;
        await store.touchRooms([...rooms.keys()]);
        const deleted = await store.expireRooms(config.roomIdleMs);
        if (deleted) {
          log.info("Deleted {deleted} rooms idle for {days} days", {
            deleted,
            days: config.roomIdleMs / 86_400_000,
          });
        }
        return deleted;
      } finally {
        sweeping = undefined;
      }
    })();
  const sweepNow = () =>
    sweepRooms().catch((error) =>
      log.warn("The room expiry sweep failed: {error}; it runs again later", {
        error: String(error),
      })
    );
  const firstSweep = config.roomIdleMs
    ? setTimeout(sweepNow, Math.min(60_000, config.roomSweepIntervalMs))
    : undefined;
  const sweeps = config.roomIdleMs ? setInterval(sweepNow, config.roomSweepIntervalMs) : undefined;

  async function handle(conn: Deno.TcpConn): Promise<void> {
    const address = (conn.remoteAddr as Deno.NetAddr).hostname;
    open.add(conn);
    const writer = conn.writable.getWriter();
    let closed = false;
    let pauseUntil = 0;
    /** Bytes handed to the socket's writer and not yet written by it. */
    let unwritten = 0;
    /**
     * Who waits for the connection to change: its output to fall to the watermark, a history
     * read to end, input to arrive or end, the close. Each re-checks what it waits for.
     */
    let waiters: (() => void)[] = [];
    const notify = () => {
      for (const wake of waiters.splice(0)) wake();
    };
    /** Resolves at the next {@link notify}, or after `ms` when given. */
    const changed = (ms?: number) =>
      new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          resolve();
        };
        const timer = ms === undefined ? undefined : setTimeout(() => {
          waiters = waiters.filter((w) => w !== wake);
          resolve();
        }, ms);
        waiters.push(wake);
      });
    const output = {
      watermarkBytes: config.outputWatermarkBytes,
      budgetBytes: config.outputBudgetBytes,
    };
    /** Resolves once the connection's output is at most the watermark, or it is closed. */
    const drained = async () => {
      while (!closed && !mayRead(unwritten, output)) await changed();
    };
    /** History reads a client asked for and has not been answered yet. */
    let reads = 0;
    /**
     * Effects (join, key binding, store, history read) whose outcome the core has not had yet:
     * a client that ended its input is kept until they are answered.
     */
    let inFlight = 0;
    /** History reads at the database now, and those waiting for one of them to end. */
    let readsRunning = 0;
    const readSlots: (() => void)[] = [];
    const close = () => {
      if (closed) return;
      closed = true;
      notify();
      for (const wake of readSlots.splice(0)) wake();
      // Queued frames (a last error or bye) go out before the socket closes; a client that
      // does not read them gets a few seconds, not a socket held open for ever.
      const hangUp = () => {
        clearTimeout(deadline);
        try {
          conn.close();
        } catch { /* closed */ }
      };
      const deadline = setTimeout(hangUp, CLOSE_GRACE_MS);
      writer.close().catch(() => {}).finally(hangUp);
    };
    const write = (message: ServerMessage) => {
      if (closed) return;
      let frame: Uint8Array;
      try {
        frame = encodeFrame(message);
      } catch (error) {
        // Replies fit a frame by construction (server_core.ts); this is a bug.
        log.error("A reply could not be encoded: {error}", { error: String(error) });
        frame = encodeFrame({
          type: "error",
          code: "internal",
          message: "the server failed; reconnect",
          retryable: true,
        });
        writer.write(frame).catch(() => {});
        close();
        return;
      }
      // A client that does not read what it is sent is cut off, not buffered for: above
      // the watermark its frames are not read (it cannot ask for more), and what it is sent
      // regardless (pushes, answers in flight) may not go over the budget.
      if (admitOutput(unwritten, frame.length, output) === "cut_off") {
        cutOffConnections++;
        log.warn(
          "Closed a connection from {address} that does not read what it is sent " +
            "({bytes} bytes unwritten)",
          { address, bytes: unwritten + frame.length },
        );
        closed = true;
        notify();
        for (const wake of readSlots.splice(0)) wake();
        try {
          conn.close();
        } catch { /* closed */ }
        return;
      }
      unwritten += frame.length;
      unwrittenTotal += frame.length;
      const settled = () => {
        unwritten -= frame.length;
        unwrittenTotal -= frame.length;
      };
      writer.write(frame).then(() => {
        settled();
        if (mayRead(unwritten, output)) notify();
      }, () => {
        settled();
        close();
      });
    };

    const connection: Connection = {
      state: initialState({ messagesPerSecond: config.messagesPerSecond }),
      dispatch(event) {
        apply(step(connection.state, event));
      },
    };
    const apply = (result: Step) => {
      connection.state = result.state;
      for (const reply of result.replies) write(reply);
      for (const effect of result.effects) run(effect);
    };
    const settle = (effect: Effect, work: Promise<Event>) => {
      inFlight++;
      work.then(
        (event) => connection.dispatch(event),
        (error) => connection.dispatch({ type: "failed", effect, error }),
      ).finally(() => {
        // After the dispatch: effects it started are counted before this one is not.
        inFlight--;
        notify();
      });
    };
    const run = (effect: Effect) => {
      switch (effect.type) {
        case "join": {
          // Pushes for the room are taken from now on (held until the welcome), so none
          // committed after the join's read is missed.
          connection.room = effect.room;
          connection.name = effect.name;
          const members = rooms.get(effect.room) ?? new Set();
          rooms.set(effect.room, members.add(connection));
          return settle(
            effect,
            (async (): Promise<Event> => {
              const join = await joinRoom(effect.room, effect.name);
              // Refused and closed already: the core ignores what a closed connection gets.
              if (!join) throw new Error("the hello was refused");
              const offers = join.ok ? await store.keyOffers(effect.room) : [];
              // The connection's challenge: its key offer proves possession over it.
              const challenge = bytesToHex(crypto.getRandomValues(new Uint8Array(32)));
              return { type: "joined", join, service, offers, challenge };
            })(),
          );
        }
        case "enter":
          for (const other of inRoom(effect.room)) {
            if (other !== connection && other.name === effect.name) {
              other.dispatch({ type: "replaced" });
            }
          }
          return;
        case "bind_key":
          return settle(
            effect,
            store.bindKey(effect.room, effect.party, effect.publicKey, effect.proof, effect.change)
              .then((outcome) => ({ type: "key_bound", outcome })),
          );
        case "store":
          return settle(
            effect,
            store.insertMessage(
              effect.room,
              effect.sender,
              effect.clientMsgId,
              effect.seq,
              effect.nonce,
              effect.ciphertext,
            ).then((outcome) => ({
              type: "store_outcome",
              clientMsgId: effect.clientMsgId,
              slot: effect.slot,
              outcome,
            })),
          );
        case "read_history": {
          const asked = effect.purpose === "request";
          if (asked) reads++;
          const read = async (): Promise<Event> => {
            let running = false;
            try {
              if (effect.delayMs) await new Promise((r) => setTimeout(r, effect.delayMs));
              // At most MAX_HISTORY_READS at the database per connection, however many the
              // core asks for at once (frames sent before the welcome are handled together).
              if (asked) {
                while (readsRunning >= MAX_HISTORY_READS && !closed) {
                  await new Promise<void>((resolve) => readSlots.push(resolve));
                }
                readsRunning++;
                running = true;
              }
              // No page is read while the client leaves what it was sent unread (a
              // catch-up reads page after page by itself).
              await drained();
              if (closed) throw new Error("closed"); // ignored: nobody to answer
              const page = await store.history(effect.room, effect.query);
              return {
                type: "history_rows",
                purpose: effect.purpose,
                query: effect.query,
                rows: page.messages,
                hasMore: page.hasMore,
              };
            } finally {
              if (running) {
                readsRunning--;
                readSlots.shift()?.();
              }
              if (asked) {
                reads--;
                notify();
              }
            }
          };
          return settle(effect, read());
        }
        case "pause":
          // `ms` is how long until the bucket is back at zero: a deadline, not an addition.
          pauseUntil = Math.max(pauseUntil, performance.now() + effect.ms);
          return;
        case "close":
          return close();
      }
    };

    /**
     * store.join, creating the room only while the address's room bucket allows. Resolves
     * with the join, or undefined when the hello was refused (`too_many_rooms`, closed).
     */
    const joinRoom = async (room: string, name: string) => {
      if (!roomBuckets) return await store.join(room, name);
      const key = addressKey(address);
      const taken = roomBuckets.tryTake(key, performance.now());
      const join = await store.join(room, name, { create: taken.ok });
      // A token taken for a room that was there already goes back.
      if (taken.ok && !(join.ok && join.created)) roomBuckets.refund(key, performance.now());
      if (join.ok || join.reason !== "no_room") return join;
      const seconds = Math.max(1, Math.ceil(taken.retryAfterMs / 1000));
      apply({
        state: { phase: "closed" },
        replies: [{
          type: "error",
          code: "too_many_rooms",
          message: `too many new rooms from your address (${config.roomsPerMinute} a minute); ` +
            `joining an existing room works, a new one in ${seconds} s`,
          retryable: true,
          in_reply_to: "hello",
        }],
        effects: [{ type: "close" }],
      });
      return undefined;
    };

    const admitted = perAddress.tryAcquire(address);
    connections.add(connection);
    let idle: ReturnType<typeof setTimeout> | undefined;
    let handshake: ReturnType<typeof setTimeout> | undefined;
    try {
      if (stopping) return apply(refuse("shutting_down", "the server is shutting down"));
      if (config.maxConnections && open.size > config.maxConnections) {
        refusedConnections++;
        return apply(
          refuse(
            "too_many_connections",
            `the server holds its maximum of ${config.maxConnections} connections; try again ` +
              "shortly",
          ),
        );
      }
      if (!admitted) {
        const held = perAddress.held(address);
        refusedConnections++;
        return apply(
          refuse(
            "too_many_connections",
            `already ${held} connection${held === 1 ? "" : "s"} from your address`,
          ),
        );
      }
      const frames = new FrameDecoder();
      // conn.read, not conn.readable: measured on Deno 2.9.6, the readable stream closes the
      // whole socket when it reads the end of input, and a half-closed client could not be
      // sent its answers (writes fail with BadResource).
      const readBuffer = new Uint8Array(READ_AHEAD_BYTES);
      const armIdle = () => {
        clearTimeout(idle);
        idle = setTimeout(() => connection.dispatch({ type: "idle" }), config.idleTimeoutMs);
      };
      armIdle();
      handshake = setTimeout(() => {
        if (connection.state.phase !== "open") connection.dispatch({ type: "idle" });
      }, config.handshakeTimeoutMs);
      // The socket is read apart from the handling of its frames, a bounded distance
      // ahead (READ_AHEAD_BYTES), so that the client's end of the connection is seen while
      // its frames are held back (paced, over the output watermark, behind history reads,
      // not yet proved). Measured before: a server paced to read nothing for ~100 s kept
      // the slot of a client that closed, half-closed or reset for those ~100 s
      // (server_leave_test.ts).
      const inbox: { items: ({ payload: unknown } | { error: ProtocolError })[]; bytes: number }[] =
        [];
      let inboxBytes = 0;
      /**
       * How the client's side of the connection is: "open"; "ended" (a FIN: it closed, or
       * only shut down its sending side and may still read); "reset" (it is gone).
       */
      const peer: { input: "open" | "ended" | "reset" } = { input: "open" };
      const pump = async () => {
        while (!closed) {
          if (inboxBytes >= READ_AHEAD_BYTES) {
            await changed();
            continue;
          }
          let read: number | null;
          try {
            read = await conn.read(readBuffer);
          } catch {
            peer.input = "reset";
            break;
          }
          if (read === null) {
            peer.input = "ended";
            break;
          }
          const chunk = readBuffer.subarray(0, read);
          let payloads: unknown[];
          try {
            payloads = frames.push(chunk);
          } catch (error) {
            // Handled in its turn; nothing after a broken frame is read.
            inbox.push({ items: [{ error: error as ProtocolError }], bytes: 0 });
            break;
          }
          // Only whole frames count as activity: a byte now and then does not hold a
          // connection open.
          if (!payloads.length) continue;
          armIdle();
          inbox.push({ items: payloads.map((payload) => ({ payload })), bytes: read });
          inboxBytes += read;
          notify();
        }
        notify();
      };
      /**
       * Waits until the next frame may be handled: after the pause the one before asked for
       * (a burst that arrived in one chunk is paced like one that arrived frame by frame),
       * while the client reads what it was sent (the watermark), with at most
       * MAX_HISTORY_READS history reads running (measured: 2,000 pipelined requests stalled
       * every room for 90 s). False when it is not to be handled: the connection closed, or
       * the client's input ended while the frame was held back.
       *
       * A client that ended its input (a FIN) may have closed or only half-closed: nothing
       * tells them apart until a write to it fails. Frames it sent that the server takes in at
       * once are handled and answered (a half-closed client can still read its answers, as
       * RFC 9112 lets an HTTP client half-close and read its response); frames held back by
       * its pace, the watermark or its history reads are dropped, as unread bytes are when a
       * connection closes: handling them would hold its slot for as long as the limits say,
       * for a client that is most likely gone, and let a client escape its pace by ending its
       * input. A client's outbox sends again what was not answered.
       */
      const mayHandle = async (): Promise<boolean> => {
        for (;;) {
          if (closed || peer.input === "reset") return false;
          const wait = pauseUntil - performance.now();
          if (wait <= 0 && mayRead(unwritten, output) && reads < MAX_HISTORY_READS) return true;
          if (peer.input !== "open") return false;
          await changed(wait > 0 ? wait : undefined);
        }
      };
      const pumping = pump();
      handling: while (!closed && peer.input !== "reset") {
        const batch = inbox[0];
        if (!batch) {
          if (peer.input !== "open") break;
          await changed();
          continue;
        }
        while (batch.items.length) {
          if (!(await mayHandle())) break handling;
          const item = batch.items.shift()!;
          if ("error" in item) {
            connection.dispatch({ type: "frame_error", error: item.error });
            break handling;
          }
          connection.dispatch({ type: "frame", payload: item.payload, now: performance.now() });
        }
        inbox.shift();
        inboxBytes -= batch.bytes;
        notify();
      }
      // A client that ended its input gets the answers to what was handled, then the close;
      // one that reset gets nothing (it is gone). The idle timer bounds the wait.
      while (peer.input === "ended" && !closed && inFlight > 0) await changed();
      // The pump ends with the socket, closed below.
      pumping.catch(() => {});
    } finally {
      clearTimeout(idle);
      clearTimeout(handshake);
      if (connection.room) {
        const members = rooms.get(connection.room);
        members?.delete(connection);
        if (members && !members.size) rooms.delete(connection.room);
      }
      connections.delete(connection);
      if (admitted) perAddress.release(address);
      open.delete(conn);
      close();
    }
  }

  return {
    addr,
    get connections() {
      return open.size;
    },
    get accepting() {
      return !outage.active;
    },
    get acceptFailures() {
      return outage.failures;
    },
    get refusedConnections() {
      return refusedConnections;
    },
    get cutOffConnections() {
      return cutOffConnections;
    },
    get unwrittenBytes() {
      return unwrittenTotal;
    },
    sweepRooms,
    finished,
    shutdown: () => stopped ??= stop(),
  };

  /** The body of `shutdown()`, run once. */
  async function stop(): Promise<void> {
    stopping = true;
    clearTimeout(firstSweep);
    clearInterval(sweeps);
    listener.close();
    await serving;
    reserve?.close();
    reserve = undefined;
    await sweeping?.catch(() => {});
    for (const connection of connections) connection.dispatch({ type: "shutdown" });
    // Give the byes a moment to be written before the sockets go.
    await new Promise((resolve) => setTimeout(resolve, 20));
    for (const conn of open) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
    await channel.catch(() => {});
    await store.close();
    log.info("Chat server stopped");
  }
}

/** Whether an accept failed for want of file descriptors (EMFILE, ENFILE). */
function outOfDescriptors(error: unknown): boolean {
  return /too many open files|os error 2[34]\b/i.test(String(error));
}

/**
 * Opens the descriptor held back for refusing connections while out of descriptors
 * (`/dev/null`, read); undefined when it cannot be (no read permission: it is not asked
 * for; not a Unix; no descriptor left).
 */
function openReserve(): Deno.FsFile | undefined {
  if (Deno.build.os === "windows") return undefined;
  try {
    if (Deno.permissions.querySync({ name: "read", path: "/dev/null" }).state !== "granted") {
      return undefined;
    }
    return Deno.openSync("/dev/null");
  } catch {
    return undefined;
  }
}

/**
 * Tells a connection `too_many_connections` (`detail` says why) and closes it, giving the
 * frame {@link SHED_WRITE_MS} to be written.
 */
async function refuseRaw(conn: Deno.TcpConn, detail: string): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const frame = encodeFrame(errorMessage("too_many_connections", detail));
    await Promise.race([
      conn.write(frame),
      new Promise((resolve) => (timer = setTimeout(resolve, SHED_WRITE_MS))),
    ]);
  } catch {
    // gone already
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed */ }
  }
}
