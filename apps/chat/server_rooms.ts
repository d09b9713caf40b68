/**
 * The chat server's rooms on this instance: which connections are in which room, and the
 * fan-out of the store's channel (LISTEN/NOTIFY) to them. Every instance on one database
 * delivers through the channel alike, this one included; when the listener comes back after
 * a gap, every connection is told to catch up on what it missed. Also the room expiry sweep,
 * which counts the rooms connected here as active.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { ChatStore, MessageRow, StoreEvent } from "./store.ts";
import type { Event } from "./server_core.ts";

const log = getLogger(["duet", "chat"]);

/** A connection as the rooms see it: what it is told, and where it is. */
export interface RoomConnection {
  /** Hands the connection an event of its core (server_core.ts). */
  dispatch(event: Event): void;
  /** Set by the join effect: the room whose pushes this connection takes. */
  room?: string;
  /** Set with {@link RoomConnection.room}: the name it joined as. */
  name?: string;
}

/** The connections of this instance, by room, and the delivery of the store's events. */
export class RoomRegistry {
  readonly #store: ChatStore;
  readonly #rooms = new Map<string, Set<RoomConnection>>();
  /** Every connection accepted and not yet ended, in a room or not. */
  readonly #connections = new Set<RoomConnection>();
  /**
   * Channel events, one at a time in the order announced: a message too large for its
   * notification is read back before any later event is dispatched, so pushes keep the
   * channel's (commit) order.
   */
  #channel: Promise<void> = Promise.resolve();
  /** Times the store's listener has been subscribed: each after the first is a gap. */
  #listened = 0;

  constructor(store: ChatStore) {
    this.#store = store;
  }

  /** Subscribes to the store's channel; resolves once the listener is subscribed. */
  async listen(): Promise<void> {
    await this.#store.listen((event) => this.#onStoreEvent(event), () => this.#onListening());
  }

  /** Counts a connection in (it is told of listener gaps and of the shutdown). */
  add(connection: RoomConnection): void {
    this.#connections.add(connection);
  }

  /** Takes a connection out of its room (the room goes when it is empty) and out of all. */
  remove(connection: RoomConnection): void {
    if (connection.room) {
      const members = this.#rooms.get(connection.room);
      members?.delete(connection);
      if (members && !members.size) this.#rooms.delete(connection.room);
    }
    this.#connections.delete(connection);
  }

  /** Puts a connection in `room`: it takes the room's pushes from now on. */
  enter(connection: RoomConnection, room: string): void {
    const members = this.#rooms.get(room) ?? new Set();
    this.#rooms.set(room, members.add(connection));
  }

  /** The connections in `room` now (a copy). */
  inRoom(room: string): RoomConnection[] {
    return [...(this.#rooms.get(room) ?? [])];
  }

  /** The rooms with a connection here. */
  roomIds(): string[] {
    return [...this.#rooms.keys()];
  }

  /** Tells every connection the server is shutting down. */
  shutdown(): void {
    for (const connection of this.#connections) connection.dispatch({ type: "shutdown" });
  }

  /** Resolves once the channel events received so far are delivered (or failed). */
  async delivered(): Promise<void> {
    await this.#channel.catch(() => {});
  }

  #onListening(): void {
    if (this.#listened++ === 0) return;
    log.info("The database listener is back; catching clients up");
    for (const connection of this.#connections) connection.dispatch({ type: "listener_back" });
  }

  #onStoreEvent(event: StoreEvent): void {
    this.#channel = this.#channel.then(() => this.#deliver(event)).catch((error) => {
      log.warn("Delivery failed: {error}; the room's connections catch up", {
        error: String(error),
      });
      for (const connection of this.inRoom(event.room)) {
        connection.dispatch({ type: "listener_back" });
      }
    });
  }

  async #deliver(event: StoreEvent): Promise<void> {
    const members = this.inRoom(event.room);
    if (!members.length) return;
    if (event.kind === "key") {
      const offers = await this.#store.keyOffers(event.room);
      const offer = offers.find((o) => o.party === event.party);
      if (offer) {
        for (const connection of members) connection.dispatch({ type: "peer_key", offer });
      }
      return;
    }
    const row: MessageRow | undefined = event.message ?? await this.#store.message(event.id);
    if (!row) return;
    for (const connection of this.inRoom(event.room)) connection.dispatch({ type: "push", row });
  }
}

/** The room expiry sweep: now, and on a timer. */
export class RoomSweeper {
  readonly #store: ChatStore;
  readonly #rooms: RoomRegistry;
  /** A room idle this long is deleted (ms); 0: never. */
  readonly #idleMs: number;
  #sweeping: Promise<number> | undefined;
  readonly #first: ReturnType<typeof setTimeout> | undefined;
  readonly #every: ReturnType<typeof setInterval> | undefined;

  /**
   * Starts the timers (when `idleMs` is not 0): the first sweep a minute from now (or after
   * `intervalMs`, when sooner), then one every `intervalMs`.
   */
  constructor(store: ChatStore, rooms: RoomRegistry, idleMs: number, intervalMs: number) {
    this.#store = store;
    this.#rooms = rooms;
    this.#idleMs = idleMs;
    const sweepNow = () =>
      this.sweep().catch((error) =>
        log.warn("The room expiry sweep failed: {error}; it runs again later", {
          error: String(error),
        })
      );
    this.#first = idleMs ? setTimeout(sweepNow, Math.min(60_000, intervalMs)) : undefined;
    this.#every = idleMs ? setInterval(sweepNow, intervalMs) : undefined;
  }

  /**
   * Runs the sweep (one at a time: a call while one runs gets that one): rooms with a
   * connection here are touched first (active). Resolves with the number deleted.
   */
  sweep(): Promise<number> {
    return this.#sweeping ??= (async () => {
      try {
        await Promise.resolve(); // `#sweeping` is set before the `finally` below clears it
        if (!this.#idleMs) return 0;
        await this.#store.touchRooms(this.#rooms.roomIds());
        const deleted = await this.#store.expireRooms(this.#idleMs);
        if (deleted) {
          log.info("Deleted {deleted} rooms idle for {days} days", {
            deleted,
            days: this.#idleMs / 86_400_000,
          });
        }
        return deleted;
      } finally {
        this.#sweeping = undefined;
      }
    })();
  }

  /** Stops the timers; a sweep running goes on. */
  stopTimers(): void {
    clearTimeout(this.#first);
    clearInterval(this.#every);
  }

  /** Resolves once a sweep running now has ended (failed or not). */
  async settled(): Promise<void> {
    await this.#sweeping?.catch(() => {});
  }
}
