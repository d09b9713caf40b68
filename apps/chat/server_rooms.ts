/**
 * The chat server's rooms on this instance: which connections are in which room, and the
 * fan-out of the store's channel (LISTEN/NOTIFY) to them. Every instance on one database
 * delivers through the channel alike, this one included; when the listener comes back after
 * a gap, every connection is told to catch up on what it missed. Also the room expiry sweep,
 * which counts the rooms connected here as active. And presence across the instances on the
 * database: the decisions are server_presence.ts's; this shell performs them (tells
 * connections, writes this instance's presence rows, reads other instances' back when the
 * channel announces a change), keeps the instance's database session open and, every
 * `presenceCheckMs`, deletes the rows of instances whose session is gone (dead ones) so that
 * their parties are seen leaving.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { ChatStore, MessageRow, StoreEvent } from "./store.ts";
import type { Event } from "./server_core.ts";
import { PresenceBook, type PresenceEffect } from "./server_presence.ts";

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
  /** Presence: who is told what, which rows to write, which rooms to read. */
  readonly #presence = new PresenceBook<RoomConnection>();
  /** Presence writes and reads running (stopPresence waits for them). */
  readonly #presenceWork = new Set<Promise<void>>();
  #presenceTimer: ReturnType<typeof setInterval> | undefined;
  /** The presence check running, if one is. */
  #checking: Promise<void> | undefined;
  /** Whether the last check found the instance's session as it was (see #check). */
  #sessionSteady = false;

  constructor(store: ChatStore) {
    this.#store = store;
  }

  /** Subscribes to the store's channel; resolves once the listener is subscribed. */
  async listen(): Promise<void> {
    await this.#store.listen((event) => this.#onStoreEvent(event), () => this.#onListening());
  }

  /**
   * Opens the instance's database session (ChatStore.holdSession) and starts the presence
   * check every `intervalMs` (ms): the session is checked (reopened and the rows written
   * again when it was lost), and the rows of dead instances are deleted.
   *
   * @throws {StoreUnavailable} when the database is away.
   */
  async startPresence(intervalMs: number): Promise<void> {
    await this.#store.holdSession();
    this.#presenceTimer = setInterval(() => {
      this.#checking ??= this.#check().finally(() => (this.#checking = undefined));
    }, intervalMs);
  }

  /**
   * Stops the presence check, waits for presence work running, and deletes this instance's
   * rows (peers on other instances see its parties leave at once). Never throws: a failure
   * is logged, and the rows then go at others' next check, once the session is closed.
   */
  async stopPresence(): Promise<void> {
    clearInterval(this.#presenceTimer);
    await this.#checking;
    await Promise.all(this.#presenceWork);
    await this.#store.clearPresence().catch((error) =>
      log.warn("Could not clear this instance's presence: {error}", { error: String(error) })
    );
  }

  /** Counts a connection in (it is told of listener gaps and of the shutdown). */
  add(connection: RoomConnection): void {
    this.#connections.add(connection);
  }

  /**
   * Takes a connection out of its room (the room goes when it is empty) and out of all.
   * When it was its name's last present connection in the room, the peer is told it left.
   */
  remove(connection: RoomConnection): void {
    if (connection.room) {
      const members = this.#rooms.get(connection.room);
      members?.delete(connection);
      if (members && !members.size) this.#rooms.delete(connection.room);
    }
    this.#connections.delete(connection);
    this.#perform(this.#presence.leave(connection));
  }

  /**
   * A connection in `room` proved its key (the `enter` effect): it is present. Its peer's
   * connections are told it came (here at once, on other instances through the store); it
   * is told whether its peer is present, once that is known.
   */
  arrive(connection: RoomConnection): void {
    if (!connection.room || connection.name === undefined) return;
    this.#perform(this.#presence.arrive(connection, connection.room, connection.name));
  }

  /** Performs what the presence book decided; outcomes go back to it. */
  #perform(effects: PresenceEffect<RoomConnection>[]): void {
    for (const effect of effects) {
      switch (effect.type) {
        case "tell":
          effect.connection.dispatch({
            type: "presence",
            name: effect.name,
            present: effect.present,
          });
          break;
        case "write":
          this.#presenceTask(
            this.#store.writePresence(effect.rows, effect.announce),
            () => this.#presence.written(),
            () => this.#presence.writeFailed(),
          );
          break;
        case "read":
          this.#presenceTask(
            this.#store.presentIn(effect.room),
            (names) => this.#presence.read(effect.room, effect.token, names),
            () => this.#presence.readFailed(effect.room, effect.token),
          );
      }
    }
  }

  /** Runs a store call for the presence book and hands it the outcome. */
  #presenceTask<T>(
    work: Promise<T>,
    done: (value: T) => PresenceEffect<RoomConnection>[],
    failed: () => PresenceEffect<RoomConnection>[],
  ): void {
    const task: Promise<void> = work.then(
      (value) => this.#perform(done(value)),
      (error) => {
        log.debug("Presence: a store call failed: {error}; retried", { error: String(error) });
        this.#perform(failed());
      },
    ).finally(() => this.#presenceWork.delete(task));
    this.#presenceWork.add(task);
  }

  /**
   * The periodic presence check: the session (written again when it was lost), the reap of
   * dead instances' rows, and the book's retries. A reap needs the session to have stood
   * since the check before: after a database restart every instance reopens its session at
   * its next check, and until then looks dead.
   */
  async #check(): Promise<void> {
    try {
      const renewed = await this.#store.holdSession();
      if (renewed) this.#perform(this.#presence.resync());
      if (this.#sessionSteady && !renewed) await this.#store.reapPresence();
      this.#sessionSteady = !renewed;
    } catch (error) {
      this.#sessionSteady = false;
      log.debug("Presence check failed: {error}", { error: String(error) });
    }
    this.#perform(this.#presence.tick());
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
    // Presence changes may have been announced unheard: every room is read again.
    this.#perform(this.#presence.stale());
  }

  #onStoreEvent(event: StoreEvent): void {
    if (event.kind === "presence") {
      // This instance's own changes are known here already.
      if (event.instance !== this.#store.instance) {
        this.#perform(this.#presence.changed(event.room));
      }
      return;
    }
    this.#channel = this.#channel.then(() => this.#deliver(event)).catch((error) => {
      log.warn("Delivery failed: {error}; the room's connections catch up", {
        error: String(error),
      });
      for (const connection of this.inRoom(event.room)) {
        connection.dispatch({ type: "listener_back" });
      }
    });
  }

  async #deliver(event: Exclude<StoreEvent, { kind: "presence" }>): Promise<void> {
    const members = this.inRoom(event.room);
    if (!members.length) return;
    if (event.kind === "code") {
      const code = (await this.#store.codeOffers(event.room)).find((c) => c.party === event.party);
      if (code) {
        for (const connection of members) connection.dispatch({ type: "peer_code", code });
      }
      return;
    }
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
