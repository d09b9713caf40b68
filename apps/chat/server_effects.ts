/**
 * Runs the effects one chat connection's core (server_core.ts) asks for: the store calls,
 * room membership, history reads (at most {@link MAX_HISTORY_READS} at the database per
 * connection), pacing and the close. Each store call's outcome goes back to the core as an
 * event, or as `failed` with what it threw.
 *
 * @module
 */
import { bytesToHex } from "@noble/hashes/utils.js";
import type { KeyedBuckets } from "@duet/net/rate";
import { addressKey, type CodeAttemptRule } from "./limits.ts";
import type { ChatStore, Join } from "./store.ts";
import type { Effect, Event, Step } from "./server_core.ts";
import type { RoomConnection, RoomRegistry } from "./server_rooms.ts";
import type { Changes, ConnectionOutput } from "./server_output.ts";

/** History reads one connection may have running at once; it is not read further meanwhile. */
export const MAX_HISTORY_READS = 2;

/** The connection whose effects a runner runs, as the runner sees it. */
export interface EffectHost extends RoomConnection {
  /** The client's address (room creation is limited per address). */
  readonly address: string;
  readonly output: ConnectionOutput;
  readonly changes: Changes;
  /** Takes a step's state, writes its replies and runs its effects. */
  apply(result: Step): void;
  /** Reads no further frame before `until` (`performance.now()` time). */
  pauseUntil(until: number): void;
  /** Closes the connection once what is queued is written. */
  close(): void;
}

/** What the effects run against, shared by the server's connections. */
export interface EffectContext {
  store: ChatStore;
  /** The store's service id, announced in the welcome. */
  service: string;
  rooms: RoomRegistry;
  /** Room creation per client address key (limits.ts, addressKey); undefined: no limit. */
  roomBuckets: KeyedBuckets | undefined;
  /** Rooms an address may create per minute (for the refusal's words). */
  roomsPerMinute: number;
  /** How many code attempts a room may make (limits.ts, takeCodeAttempt). */
  codeAttempts: CodeAttemptRule;
}

/** The effect runner of one connection, with the counts its read loop waits on. */
export class EffectRunner {
  /** History reads the client asked for and has not been answered yet. */
  reads = 0;
  /**
   * Effects (join, key binding, store, history read) whose outcome the core has not had yet:
   * a client that ended its input is kept until they are answered.
   */
  inFlight = 0;
  readonly #host: EffectHost;
  readonly #context: EffectContext;
  /** History reads at the database now. */
  #readsRunning = 0;
  /** Those waiting for one of them to end. */
  readonly #readSlots: (() => void)[] = [];

  constructor(host: EffectHost, context: EffectContext) {
    this.#host = host;
    this.#context = context;
  }

  /** Wakes every history read waiting for a slot (the connection closed). */
  wakeAll(): void {
    for (const wake of this.#readSlots.splice(0)) wake();
  }

  /** Runs one effect; what it resolves with reaches the core later, as an event. */
  run(effect: Effect): void {
    const host = this.#host;
    switch (effect.type) {
      case "join":
        return this.#join(effect);
      case "enter":
        for (const other of this.#context.rooms.inRoom(effect.room)) {
          if (other !== host && other.name === effect.name) other.dispatch({ type: "replaced" });
        }
        return this.#context.rooms.arrive(host);
      case "bind_key":
        return this.#settle(
          effect,
          this.#context.store.bindKey(
            effect.room,
            effect.party,
            effect.publicKey,
            effect.proof,
            effect.change,
          ).then((outcome) => ({ type: "key_bound", outcome })),
        );
      case "store":
        return this.#store(effect);
      case "put_code":
        return this.#settle(
          effect,
          this.#context.store.putCode(
            effect.room,
            effect.party,
            effect.frame,
            this.#context.codeAttempts,
          ).then((outcome) => ({ type: "code_stored", outcome })),
        );
      case "read_history":
        return this.#settle(effect, this.#readHistory(effect));
      case "pause":
        // `ms` is how long until the bucket is back at zero: a deadline, not an addition.
        return host.pauseUntil(performance.now() + effect.ms);
      case "close":
        return host.close();
    }
  }

  /** Counts `work` in flight until its outcome is dispatched. */
  #settle(effect: Effect, work: Promise<Event>): void {
    this.inFlight++;
    work.then(
      (event) => this.#host.dispatch(event),
      (error) => this.#host.dispatch({ type: "failed", effect, error }),
    ).finally(() => {
      // After the dispatch: effects it started are counted before this one is not.
      this.inFlight--;
      this.#host.changes.notify();
    });
  }

  #join(effect: Extract<Effect, { type: "join" }>): void {
    const host = this.#host;
    const { store, service, rooms } = this.#context;
    // Pushes for the room are taken from now on (held until the welcome), so none
    // committed after the join's read is missed.
    host.room = effect.room;
    host.name = effect.name;
    rooms.enter(host, effect.room);
    this.#settle(
      effect,
      (async (): Promise<Event> => {
        const join = await this.#joinRoom(effect.room, effect.name);
        // Refused and closed already: the core ignores what a closed connection gets.
        if (!join) throw new Error("the hello was refused");
        const offers = join.ok ? await store.keyOffers(effect.room) : [];
        const codes = join.ok ? await store.codeOffers(effect.room) : [];
        // The connection's challenge: its key offer proves possession over it.
        const challenge = bytesToHex(crypto.getRandomValues(new Uint8Array(32)));
        return { type: "joined", join, service, offers, codes, challenge };
      })(),
    );
  }

  /**
   * store.join, creating the room only while the address's room bucket allows. Resolves
   * with the join, or undefined when the hello was refused (`too_many_rooms`, closed).
   */
  async #joinRoom(room: string, name: string): Promise<Join | undefined> {
    const { store, roomBuckets, roomsPerMinute } = this.#context;
    if (!roomBuckets) return await store.join(room, name);
    const key = addressKey(this.#host.address);
    const taken = roomBuckets.tryTake(key, performance.now());
    const join = await store.join(room, name, { create: taken.ok });
    // A token taken for a room that was there already goes back.
    if (taken.ok && !(join.ok && join.created)) roomBuckets.refund(key, performance.now());
    if (join.ok || join.reason !== "no_room") return join;
    const seconds = Math.max(1, Math.ceil(taken.retryAfterMs / 1000));
    this.#host.apply({
      state: { phase: "closed" },
      replies: [{
        type: "error",
        code: "too_many_rooms",
        message: `too many new rooms from your address (${roomsPerMinute} a minute); ` +
          `joining an existing room works, a new one in ${seconds} s`,
        retryable: true,
        in_reply_to: "hello",
      }],
      effects: [{ type: "close" }],
    });
    return undefined;
  }

  #store(effect: Extract<Effect, { type: "store" }>): void {
    this.#settle(
      effect,
      this.#context.store.insertMessage(
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
  }

  /** A history read, in its turn among the connection's reads. */
  async #readHistory(effect: Extract<Effect, { type: "read_history" }>): Promise<Event> {
    const asked = effect.purpose === "request";
    if (asked) this.reads++;
    let running = false;
    const output = this.#host.output;
    try {
      if (effect.delayMs) await new Promise((r) => setTimeout(r, effect.delayMs));
      // At most MAX_HISTORY_READS at the database per connection, however many the
      // core asks for at once (frames sent before the welcome are handled together).
      if (asked) {
        while (this.#readsRunning >= MAX_HISTORY_READS && !output.closed) {
          await new Promise<void>((resolve) => this.#readSlots.push(resolve));
        }
        this.#readsRunning++;
        running = true;
      }
      // No page is read while the client leaves what it was sent unread (a
      // catch-up reads page after page by itself).
      await output.drained();
      if (output.closed) throw new Error("closed"); // ignored: nobody to answer
      const page = await this.#context.store.history(effect.room, effect.query);
      return {
        type: "history_rows",
        purpose: effect.purpose,
        query: effect.query,
        rows: page.messages,
        hasMore: page.hasMore,
      };
    } finally {
      if (running) {
        this.#readsRunning--;
        this.#readSlots.shift()?.();
      }
      if (asked) {
        this.reads--;
        this.#host.changes.notify();
      }
    }
  }
}
