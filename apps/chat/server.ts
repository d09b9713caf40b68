/**
 * The chat server's shell: TCP, timers, the store and its channel around the pure
 * per-connection protocol of server_core.ts. Delivery goes through the store's channel
 * (LISTEN/NOTIFY) for every instance alike, this one included, so two servers on one
 * database deliver each other's messages; when the listener comes back after a gap,
 * every connection catches up on what it missed.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { encodeFrame, FrameDecoder, type ProtocolError, type ServerMessage } from "./protocol.ts";
import type { ChatStore, MessageRow, StoreEvent } from "./store.ts";
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
   * Sends per second per connection, on average (bursts of twice this). Faster senders
   * are paced (the server reads their frames more slowly), never refused.
   */
  messagesPerSecond: number;
  /**
   * Connections one client address may hold at once; 0 for no cap (behind a load
   * balancer that hides client addresses, where every client shares one address).
   */
  maxConnectionsPerAddress: number;
  /** A connection that sends nothing for this long is closed (clients send heartbeats). */
  idleTimeoutMs: number;
}

/** The defaults of `duet chat-server`. */
export const DEFAULTS: Omit<ChatServerConfig, "store"> = {
  hostname: "127.0.0.1",
  port: 7070,
  messagesPerSecond: 20,
  maxConnectionsPerAddress: 16,
  idleTimeoutMs: 60_000,
};

/** A started server. */
export interface RunningChatServer {
  addr: Deno.NetAddr;
  /** Connections open now. */
  readonly connections: number;
  /** Says bye to everyone, stops listening, closes the store. */
  shutdown(): Promise<void>;
}

const log = getLogger(["duet", "chat"]);

/** History reads one connection may have running at once; it is not read further meanwhile. */
const MAX_HISTORY_READS = 2;

/** How long a closing connection's last frames may take to be written. */
const CLOSE_GRACE_MS = 5_000;

/** Reply bytes a connection may have waiting to be written before it is closed. */
const MAX_QUEUED_BYTES = 8 * 1024 * 1024;

/** One TCP connection: the core's state and what runs its effects. */
interface Connection {
  dispatch(event: Event): void;
  /** Set by the join effect: the room whose pushes this connection takes. */
  room?: string;
  name?: string;
  state: State;
}

/** Starts the server; resolves once it listens and its listener is subscribed. */
export async function startChatServer(
  overrides: Partial<ChatServerConfig> & { store: ChatStore },
): Promise<RunningChatServer> {
  const config: ChatServerConfig = { ...DEFAULTS, ...overrides };
  const { store } = config;
  await store.migrate();
  const service = store.serviceId;
  const rooms = new Map<string, Set<Connection>>();
  const perAddress = new Map<string, number>();
  const open = new Set<Deno.TcpConn>();
  const connections = new Set<Connection>();
  let stopping = false;

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
  const serving = (async () => {
    for await (const conn of listener) {
      handle(conn).catch((error) =>
        log.warn("Connection failed: {error}", { error: String(error) })
      );
    }
  })().catch(() => {});
  const addr = listener.addr as Deno.NetAddr;
  log.info("Chat server listening on {host}:{port}", { host: addr.hostname, port: addr.port });

  async function handle(conn: Deno.TcpConn): Promise<void> {
    const address = (conn.remoteAddr as Deno.NetAddr).hostname;
    open.add(conn);
    const writer = conn.writable.getWriter();
    let closed = false;
    let pauseUntil = 0;
    let queued = 0;
    /** History reads a client asked for and has not been answered yet. */
    let reads = 0;
    let readDone: (() => void) | undefined;
    const close = () => {
      if (closed) return;
      closed = true;
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
      // A client that does not read its replies would make this queue grow without bound.
      queued += frame.length;
      if (queued > MAX_QUEUED_BYTES) {
        log.warn("Closed a connection that does not read its replies ({bytes} bytes queued)", {
          bytes: queued,
        });
        try {
          conn.close();
        } catch { /* closed */ }
        closed = true;
        return;
      }
      writer.write(frame).then(() => (queued -= frame.length), () => close());
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
      work.then(
        (event) => connection.dispatch(event),
        (error) => connection.dispatch({ type: "failed", effect, error }),
      );
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
              const join = await store.join(effect.room, effect.name);
              const offers = join.ok ? await store.keyOffers(effect.room) : [];
              return { type: "joined", join, service, offers };
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
        case "save_key":
          return settle(
            effect,
            store.saveKeyOffer(effect.room, effect.party, effect.publicKey, effect.proof)
              .then(() => ({ type: "key_saved" })),
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
            try {
              if (effect.delayMs) await new Promise((r) => setTimeout(r, effect.delayMs));
              const page = await store.history(effect.room, effect.query);
              return {
                type: "history_rows",
                purpose: effect.purpose,
                query: effect.query,
                rows: page.messages,
                hasMore: page.hasMore,
              };
            } finally {
              if (asked) {
                reads--;
                readDone?.();
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

    const held = perAddress.get(address) ?? 0;
    perAddress.set(address, held + 1);
    connections.add(connection);
    let idle: ReturnType<typeof setTimeout> | undefined;
    try {
      if (stopping) return apply(refuse("shutting_down", "the server is shutting down"));
      if (config.maxConnectionsPerAddress && held >= config.maxConnectionsPerAddress) {
        return apply(
          refuse(
            "too_many_connections",
            `already ${held} connection${held === 1 ? "" : "s"} from your address`,
          ),
        );
      }
      const frames = new FrameDecoder();
      const reader = conn.readable.getReader();
      const armIdle = () => {
        clearTimeout(idle);
        idle = setTimeout(() => connection.dispatch({ type: "idle" }), config.idleTimeoutMs);
      };
      armIdle();
      // Frames are handled one at a time, each after the pause the one before asked for:
      // a burst that arrived in one chunk is paced like one that arrived frame by frame.
      const paced = async () => {
        const wait = pauseUntil - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        // A client may have a few history reads running, not thousands queued at the
        // database (measured: 2,000 pipelined requests stalled every room for 90 s).
        while (reads >= MAX_HISTORY_READS && !closed) {
          await new Promise<void>((resolve) => (readDone = resolve));
        }
      };
      while (!closed) {
        await paced();
        const { value, done } = await reader.read().catch(() => ({
          value: undefined,
          done: true,
        }));
        if (done || closed) break;
        let payloads: unknown[];
        try {
          payloads = frames.push(value!);
        } catch (error) {
          connection.dispatch({ type: "frame_error", error: error as ProtocolError });
          break;
        }
        // Only whole frames count as activity: a byte now and then does not hold a
        // connection open.
        if (payloads.length) armIdle();
        for (const payload of payloads) {
          await paced();
          if (closed) break;
          connection.dispatch({ type: "frame", payload, now: performance.now() });
        }
      }
    } finally {
      clearTimeout(idle);
      if (connection.room) {
        const members = rooms.get(connection.room);
        members?.delete(connection);
        if (members && !members.size) rooms.delete(connection.room);
      }
      connections.delete(connection);
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left) perAddress.set(address, left);
      else perAddress.delete(address);
      open.delete(conn);
      close();
    }
  }

  return {
    addr,
    get connections() {
      return open.size;
    },
    async shutdown() {
      stopping = true;
      listener.close();
      await serving;
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
    },
  };
}
