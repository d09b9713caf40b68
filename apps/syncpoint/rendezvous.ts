/**
 * The rendezvous contract shared by the in-memory and Redis implementations, and the
 * in-memory one. Pure: no sockets, no HTTP; a waiting party is a promise.
 *
 * @module
 */

/** Why a party is not paired: each kind becomes one HTTP status and error code. */
export type Refusal =
  | "timeout" // nobody came in time (408)
  | "conflict" // a pair on this id is still being completed (409)
  | "capacity" // too many parties waiting already (503)
  | "shutting_down" // the service is stopping (503)
  | "backend_unavailable"; // the shared store cannot be reached (503)

/** What a party's arrival comes to. */
export type Outcome =
  | { kind: "paired"; role: "first" | "second"; waitedMs: number; peerPayload: string | null }
  | { kind: "refused"; reason: Refusal; waitedMs: number }
  /** The party hung up while waiting; nobody is left to answer. */
  | { kind: "departed"; waitedMs: number };

/** One party's arrival. */
export interface Arrival {
  /** The rendezvous id, already validated. */
  id: string;
  /** What this party hands to the other one, or null. */
  payload: string | null;
  /** How long a first party waits for the second. */
  timeoutMs: number;
  /** Aborts when the party hangs up; only a party put on hold listens to it. */
  readonly signal?: AbortSignal;
}

/** Counts a rendezvous reports (for /metrics). */
export interface RendezvousEvents {
  /** A pair completed; the first party waited this long. */
  paired?(waitedMs: number): void;
  /** A first party waited in vain. */
  timedOut?(): void;
  /** A waiting party hung up. */
  departed?(): void;
}

/** A place where two parties meet. */
export interface Rendezvous {
  /** Meets the other party of `arrival.id`, or says why not. Never rejects. */
  arrive(arrival: Arrival): Promise<Outcome>;
  /** Parties waiting on this instance now. */
  readonly waiting: number;
  /** Whether arrivals can be served now (false while a shared store is unreachable). */
  readonly healthy: boolean;
  /** Refuses new arrivals and answers every waiting party with "shutting_down". */
  close(): Promise<void>;
}

/** A first party on hold. */
interface WaitingParty {
  payload: string | null;
  since: number;
  settle(outcome: Outcome): void;
}

/** Options of the in-memory rendezvous. */
export interface LocalRendezvousOptions {
  /** Most parties waiting at once; the next one is refused with "capacity". */
  maxWaiting: number;
  /** Event hooks for metrics. */
  events?: RendezvousEvents;
  /** Milliseconds since some origin (tests may inject one). */
  now?: () => number;
}

/**
 * Pairs parties inside one process. Pairing is atomic (the second arrival answers both
 * parties at once and frees the id), so a third concurrent party is never refused here: it
 * simply starts the next rendezvous.
 *
 * @example
 * ```ts
 * import { LocalRendezvous } from "./rendezvous.ts";
 * const rendezvous = new LocalRendezvous({ maxWaiting: 10 });
 * const first = rendezvous.arrive({ id: "a", payload: "hi", timeoutMs: 1000 });
 * const second = await rendezvous.arrive({ id: "a", payload: null, timeoutMs: 1000 });
 * if (second.kind !== "paired" || second.peerPayload !== "hi") throw new Error();
 * if ((await first).kind !== "paired") throw new Error();
 * ```
 */
export class LocalRendezvous implements Rendezvous {
  readonly #waiting = new Map<string, WaitingParty>();
  readonly #maxWaiting: number;
  readonly #events: RendezvousEvents;
  readonly #now: () => number;
  #closing = false;

  constructor(options: LocalRendezvousOptions) {
    this.#maxWaiting = options.maxWaiting;
    this.#events = options.events ?? {};
    this.#now = options.now ?? (() => performance.now());
  }

  get waiting(): number {
    return this.#waiting.size;
  }

  get healthy(): boolean {
    return !this.#closing;
  }

  arrive(arrival: Arrival): Promise<Outcome> {
    const { id, payload } = arrival;
    if (this.#closing) return refused("shutting_down");
    const first = this.#waiting.get(id);
    if (first) {
      this.#waiting.delete(id);
      const waitedMs = this.#now() - first.since;
      first.settle({ kind: "paired", role: "first", waitedMs, peerPayload: payload });
      this.#events.paired?.(waitedMs);
      return Promise.resolve({
        kind: "paired",
        role: "second",
        waitedMs: 0,
        peerPayload: first.payload,
      });
    }
    if (this.#waiting.size >= this.#maxWaiting) return refused("capacity");
    return this.#hold(arrival);
  }

  #hold({ id, payload, timeoutMs, signal }: Arrival): Promise<Outcome> {
    const since = this.#now();
    if (signal?.aborted) return Promise.resolve({ kind: "departed", waitedMs: 0 });
    return new Promise<Outcome>((resolve) => {
      const onAbort = () => {
        // The signal may fire after this party was answered (Deno's legacy abort fires
        // after every response): only a party still on hold departs.
        if (this.#waiting.get(id) !== party) return;
        this.#waiting.delete(id);
        this.#events.departed?.();
        party.settle({ kind: "departed", waitedMs: this.#now() - since });
      };
      const timer = setTimeout(() => {
        if (this.#waiting.get(id) !== party) return;
        this.#waiting.delete(id);
        this.#events.timedOut?.();
        party.settle({ kind: "refused", reason: "timeout", waitedMs: this.#now() - since });
      }, timeoutMs);
      const party: WaitingParty = {
        payload,
        since,
        settle: (outcome) => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", onAbort);
          resolve(outcome);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiting.set(id, party);
    });
  }

  close(): Promise<void> {
    this.#closing = true;
    for (const party of this.#waiting.values()) {
      party.settle({
        kind: "refused",
        reason: "shutting_down",
        waitedMs: this.#now() - party.since,
      });
    }
    this.#waiting.clear();
    return Promise.resolve();
  }
}

function refused(reason: Refusal): Promise<Outcome> {
  return Promise.resolve({ kind: "refused", reason, waitedMs: 0 });
}
