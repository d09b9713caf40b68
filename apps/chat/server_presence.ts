/**
 * Presence across the server instances that share one database, decided without I/O: which
 * connections here are told their peer is present or not, which of this instance's presence
 * rows the store must write, and which rooms it must read back. The shell (server_rooms.ts)
 * feeds it what happens (a connection proved its key or ended, the store announced a change
 * of another instance's rows, a write or read ended) and performs the effects it returns.
 *
 * The model: each instance keeps one row per (room, name) it has a present connection of
 * (store.ts, `chat_presence`), and announces every change on the store's channel. A peer is
 * present when it has a connection here (known at once) or a row of another live instance
 * (as last read from the store: the store counts only rows of instances whose database
 * session is alive, so the rows of an instance that died stop counting by themselves, and the
 * periodic reap announces it). What a connection is told is always what was true at some
 * moment; while the rows of other instances may have changed unseen (an announced change not
 * read back yet, a read that failed, the channel's listener back after a gap), nothing new is
 * said about them. Once every announcement is delivered and read, each connection has been
 * told the truth.
 *
 * Deterministic, no sockets, timers or database: tested alone (server_presence_test.ts),
 * with a property over generated interleavings of two instances.
 *
 * @module
 */

/** One of this instance's presence rows, as the store is to hold it. */
export interface PresenceRow {
  room: string;
  /** The party's name. */
  name: string;
  /** True: the row is to exist (a connection of the name here proved its key); false: not. */
  present: boolean;
}

/** What the shell does for the presence book; `C` is its connection type. */
export type PresenceEffect<C> =
  /**
   * Tell `connection` its peer's presence (`name` null: no peer known here; the connection's
   * core knows the name from its join, if any).
   */
  | { type: "tell"; connection: C; name: string | null; present: boolean }
  /**
   * Make this instance's rows match `rows` in one transaction, announcing the rooms whose
   * rows changed, and with `announce` every room of a present row, changed or not (after
   * the session was lost, others may have read the rows as a dead instance's meanwhile);
   * then {@link PresenceBook.written} or {@link PresenceBook.writeFailed}.
   */
  | { type: "write"; rows: PresenceRow[]; announce: boolean }
  /**
   * Read the names present in `room` on other live instances; then
   * {@link PresenceBook.read} or {@link PresenceBook.readFailed} with `token`.
   */
  | { type: "read"; room: string; token: number };

/** What a connection was last told: its peer's name (null: unnamed) and presence. */
export interface Told {
  name: string | null;
  present: boolean;
}

interface Here {
  room: string;
  name: string;
  told?: Told;
}

interface RoomBook<C> {
  /** The connections here that proved their key. */
  connections: Set<C>;
  /** The names present on other instances, as last read. */
  remote: ReadonlySet<string>;
  /** Whether {@link RoomBook.remote} is current: read, with no change announced since. */
  known: boolean;
  /** The token of the read in flight. */
  reading?: number;
  /** A change was announced while that read ran: its answer may predate it. */
  again: boolean;
}

/**
 * The presence state of one server instance, over connections of type `C` (any value
 * usable as a Map key). Every method returns the effects to perform, in order.
 */
export class PresenceBook<C> {
  readonly #here = new Map<C, Here>();
  readonly #rooms = new Map<string, RoomBook<C>>();
  /** Present connections here per row key (rowKey). */
  readonly #counts = new Map<string, number>();
  /** Own rows as the store holds them, per row key: undefined when not known (a failure). */
  readonly #stored = new Map<string, boolean | undefined>();
  /** The write in flight. */
  #writing: PresenceRow[] | undefined;
  /** Own rows may have been removed by others while the write in flight ran. */
  #resyncAfterWrite = false;
  /** A write failed: the next is at the next tick, not at once. */
  #writeFailed = false;
  /** The next write announces every room of a present row (see the `write` effect). */
  #announce = false;
  #nextToken = 1;

  /** A connection in `room` under `name` proved its key: it is present. */
  arrive(connection: C, room: string, name: string): PresenceEffect<C>[] {
    if (this.#here.has(connection)) return [];
    this.#here.set(connection, { room, name });
    let book = this.#rooms.get(room);
    const effects: PresenceEffect<C>[] = [];
    if (!book) {
      book = { connections: new Set(), remote: new Set(), known: false, again: false };
      this.#rooms.set(room, book);
      effects.push(this.#read(room, book));
    }
    book.connections.add(connection);
    const key = rowKey(room, name);
    this.#counts.set(key, (this.#counts.get(key) ?? 0) + 1);
    return [...effects, ...this.#flush(), ...this.#review(book)];
  }

  /** A connection ended (or was never present: then nothing happens). */
  leave(connection: C): PresenceEffect<C>[] {
    const here = this.#here.get(connection);
    if (!here) return [];
    this.#here.delete(connection);
    const book = this.#rooms.get(here.room)!;
    book.connections.delete(connection);
    // Nobody here to tell: what is known of the room is dropped (a read in flight is
    // ignored), and read again when someone comes.
    if (!book.connections.size) this.#rooms.delete(here.room);
    const key = rowKey(here.room, here.name);
    const count = this.#counts.get(key)! - 1;
    if (count) this.#counts.set(key, count);
    else this.#counts.delete(key);
    return [...this.#flush(), ...this.#review(book)];
  }

  /** The store announced that another instance's rows in `room` changed. */
  changed(room: string): PresenceEffect<C>[] {
    const book = this.#rooms.get(room);
    if (!book) return [];
    book.known = false;
    if (book.reading !== undefined) {
      book.again = true;
      return [];
    }
    return [this.#read(room, book)];
  }

  /** A read ended: `names` are those present in `room` on other live instances. */
  read(room: string, token: number, names: readonly string[]): PresenceEffect<C>[] {
    const book = this.#rooms.get(room);
    if (!book || book.reading !== token) return [];
    book.reading = undefined;
    // A change was announced meanwhile: this answer may be older than it.
    if (book.again) return [this.#read(room, book)];
    book.remote = new Set(names);
    book.known = true;
    return this.#review(book);
  }

  /** A read failed: the room's other instances stay unknown until the next tick. */
  readFailed(room: string, token: number): PresenceEffect<C>[] {
    const book = this.#rooms.get(room);
    if (book?.reading !== token) return [];
    book.reading = undefined;
    book.known = false;
    book.again = false;
    return [];
  }

  /** The write in flight committed. */
  written(): PresenceEffect<C>[] {
    for (const row of this.#writing ?? []) {
      this.#stored.set(rowKey(row.room, row.name), row.present);
    }
    this.#writing = undefined;
    this.#announce = false;
    if (this.#resyncAfterWrite) {
      this.#resyncAfterWrite = false;
      this.#forgetStored();
    }
    return this.#flush();
  }

  /** The write in flight failed (committed or not): its rows are unknown until rewritten. */
  writeFailed(): PresenceEffect<C>[] {
    for (const row of this.#writing ?? []) this.#stored.set(rowKey(row.room, row.name), undefined);
    this.#writing = undefined;
    this.#writeFailed = true;
    if (this.#resyncAfterWrite) {
      this.#resyncAfterWrite = false;
      this.#forgetStored();
    }
    return [];
  }

  /**
   * This instance's database session was renewed (or first opened): while it was away,
   * other instances may have taken its rows for those of a dead instance. Every row is
   * written again.
   */
  resync(): PresenceEffect<C>[] {
    if (this.#writing) {
      this.#resyncAfterWrite = true;
      return [];
    }
    this.#forgetStored();
    return this.#flush();
  }

  /**
   * The store's channel was away (its listener is back): changes may have been announced
   * unheard, so every room is read again and nothing new is said of other instances until then.
   */
  stale(): PresenceEffect<C>[] {
    const effects: PresenceEffect<C>[] = [];
    for (const [room, book] of this.#rooms) {
      book.known = false;
      if (book.reading !== undefined) book.again = true;
      else effects.push(this.#read(room, book));
    }
    return effects;
  }

  /** The periodic tick: a failed write is retried, and rooms not known are read again. */
  tick(): PresenceEffect<C>[] {
    this.#writeFailed = false;
    const effects = this.#flush();
    for (const [room, book] of this.#rooms) {
      if (!book.known && book.reading === undefined) effects.push(this.#read(room, book));
    }
    return effects;
  }

  /** What `connection` was last told, if it is present here and was told anything. */
  told(connection: C): Told | undefined {
    return this.#here.get(connection)?.told;
  }

  #read(room: string, book: RoomBook<C>): PresenceEffect<C> {
    book.again = false;
    book.reading = this.#nextToken++;
    return { type: "read", room, token: book.reading };
  }

  #forgetStored(): void {
    this.#announce = true;
    for (const key of this.#stored.keys()) this.#stored.set(key, undefined);
    for (const key of this.#counts.keys()) this.#stored.set(key, undefined);
  }

  /** The write that makes the stored rows what is wanted, when none is in flight. */
  #flush(): PresenceEffect<C>[] {
    if (this.#writing || this.#writeFailed) return [];
    const rows: PresenceRow[] = [];
    for (const key of new Set([...this.#counts.keys(), ...this.#stored.keys()])) {
      const present = this.#counts.has(key);
      const stored = this.#stored.get(key);
      if (stored === present) {
        if (!present) this.#stored.delete(key);
        continue;
      }
      rows.push({ ...splitKey(key), present });
    }
    if (!rows.length) return [];
    this.#writing = rows;
    return [{ type: "write", rows, announce: this.#announce }];
  }

  /** Tells each connection of the room what changed for it. */
  #review(book: RoomBook<C>): PresenceEffect<C>[] {
    const effects: PresenceEffect<C>[] = [];
    for (const connection of book.connections) {
      const here = this.#here.get(connection)!;
      const view = this.#view(book, here);
      if (!view || (here.told?.name === view.name && here.told.present === view.present)) continue;
      here.told = view;
      effects.push({ type: "tell", connection, ...view });
    }
    return effects;
  }

  /** The peer's presence as known for `here`, or undefined when it is not known. */
  #view(book: RoomBook<C>, here: Here): Told | undefined {
    for (const other of book.connections) {
      const name = this.#here.get(other)!.name;
      if (name !== here.name) return { name, present: true };
    }
    if (!book.known) return undefined;
    for (const name of book.remote) {
      if (name !== here.name) return { name, present: true };
    }
    return { name: here.told?.name ?? null, present: false };
  }
}

function rowKey(room: string, name: string): string {
  return JSON.stringify([room, name]);
}

function splitKey(key: string): { room: string; name: string } {
  const [room, name] = JSON.parse(key) as [string, string];
  return { room, name };
}
