/**
 * The rendezvous contract shared by the in-memory and Redis implementations, and the
 * in-memory one. Pure: no sockets, no HTTP; a waiting party is a promise.
 *
 * @module
 */
import { type HoldLimits, WaitingLedger } from "./limits.ts";
import { setLongTimeout } from "@duet/core/long-timeout";

/** Why a party is not paired: each kind becomes one HTTP status and error code. */
export type Refusal =
  | "timeout" // nobody came in time (408)
  | "conflict" // a pair on this id is still being completed (409)
  | "capacity" // too many parties (or payload bytes) waiting already (503)
  | "too_many_waiting" // too many parties of this client address waiting already (429)
  | "shutting_down" // the service is stopping (503)
  | "backend_unavailable"; // the shared store cannot be reached (503)

/** What a party's arrival comes to. */
export type Outcome =
  | { kind: "paired"; role: "first" | "second"; waitedMs: number; peerPayload: string | null }
  | { kind: "refused"; reason: Refusal; waitedMs: number }
  /** The party hung up (while waiting, or before it arrived); nobody is left to answer. */
  | { kind: "departed"; waitedMs: number };

/** One party's arrival. */
export interface Arrival {
  /** The rendezvous id, already validated. */
  id: string;
  /** What this party hands to the other one, or null. */
  payload: string | null;
  /**
   * The payload's size as received, in bytes (UTF-8), charged against the waiting-bytes
   * budget while the party is held; `payload.length` when absent.
   */
  payloadBytes?: number;
  /** The client's address, for the per-address limit; undefined: not limited per address. */
  address?: string;
  /**
   * How long a first party waits for the second, in ms: any number ≥ 0, also past
   * `setTimeout`'s 2^31 − 1 ms (waited in full); `Infinity` waits until a pair, a hang-up
   * or close().
   */
  timeoutMs: number;
  /**
   * Aborts when the party hangs up. Already aborted on arrival: the party is departed (it is
   * neither held nor paired); a party on hold listens to it.
   */
  readonly signal?: AbortSignal;
  /**
   * Whether the party can still be answered, for connections where hang-ups are not seen
   * as they happen. Absent: the signal alone tells.
   */
  readonly presence?: Presence;
}

/**
 * A held party's connection, when the signal alone cannot tell that it left. A client that
 * half-closes (shuts down its sending side after its request) can still read its answer,
 * so it is kept; but a client that closed completely looks the same until something is
 * written to it. Such a connection is *in doubt* until a probe settles it.
 */
export interface Presence {
  /**
   * True while the party's connection is half-closed or closed (a queued pipelined request
   * may not have been told yet): {@link Presence.confirm} before pairing it.
   */
  readonly inDoubt: boolean;
  /**
   * Probes the connection (interim responses a departed client answers with a reset);
   * resolves false if the party has left (its signal has then aborted too), true if its
   * answer can still be delivered. Never rejects.
   */
  confirm(): Promise<boolean>;
}

/** Counts a rendezvous reports (for /metrics). */
export interface RendezvousEvents {
  /** A pair completed; the first party waited this long. */
  paired?(waitedMs: number): void;
  /** A first party waited in vain. */
  timedOut?(): void;
  /** A party hung up before its answer (while held, or already when it arrived). */
  departed?(): void;
}

/** A place where two parties meet. */
export interface Rendezvous {
  /** Meets the other party of `arrival.id`, or says why not. Never rejects. */
  arrive(arrival: Arrival): Promise<Outcome>;
  /** Parties waiting on this instance now. */
  readonly waiting: number;
  /** Payload bytes (as received) of the parties waiting on this instance now. */
  readonly waitingBytes: number;
  /** Whether arrivals can be served now (false while a shared store is unreachable). */
  readonly healthy: boolean;
  /** Refuses new arrivals and answers every waiting party with "shutting_down". */
  close(): Promise<void>;
}

/** A first party on hold. */
interface WaitingParty {
  id: string;
  payload: string | null;
  since: number;
  presence: Presence | undefined;
  /** A second party is confirming this one's presence: a third one is told `conflict`. */
  claimed: boolean;
  settle(outcome: Outcome): void;
  /** Settles it as departed (counted), if it is still on hold. */
  depart(): void;
}

/**
 * Limits on held parties, as the rendezvous implementations take them: `maxWaiting` is
 * required, the others default to 0 (no limit). A party over a limit is refused with
 * `capacity` (count, bytes) or `too_many_waiting` (its address); a second party is never
 * refused by them, as it is not held.
 */
export type RendezvousLimits = Pick<HoldLimits, "maxWaiting"> & Partial<HoldLimits>;

/** The ledger for `limits` (missing limits off). */
export function ledgerFor(limits: RendezvousLimits): WaitingLedger {
  return new WaitingLedger({
    maxWaiting: limits.maxWaiting,
    maxWaitingBytes: limits.maxWaitingBytes ?? 0,
    maxWaitingPerAddress: limits.maxWaitingPerAddress ?? 0,
  });
}

/** What an arrival's payload costs in the waiting-bytes budget. */
export function payloadCost(arrival: Arrival): number {
  return arrival.payloadBytes ?? arrival.payload?.length ?? 0;
}

/** Options of the in-memory rendezvous. */
export interface LocalRendezvousOptions extends RendezvousLimits {
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
  readonly #ledger: WaitingLedger;
  readonly #events: RendezvousEvents;
  readonly #now: () => number;
  #closing = false;

  /** Throws RangeError on invalid limits (see {@link WaitingLedger}). */
  constructor(options: LocalRendezvousOptions) {
    this.#ledger = ledgerFor(options);
    this.#events = options.events ?? {};
    this.#now = options.now ?? (() => performance.now());
  }

  get waiting(): number {
    return this.#waiting.size;
  }

  get waitingBytes(): number {
    return this.#ledger.bytes;
  }

  get healthy(): boolean {
    return !this.#closing;
  }

  arrive(arrival: Arrival): Promise<Outcome> {
    const { id, payload } = arrival;
    if (this.#closing) return refused("shutting_down");
    if (arrival.signal?.aborted) {
      // Gone before it arrived (hung up after its body): neither held nor paired, so a
      // waiting first party is never paired with someone who left.
      this.#events.departed?.();
      return Promise.resolve({ kind: "departed", waitedMs: 0 });
    }
    const first = this.#waiting.get(id);
    if (first) {
      if (first.claimed) return refused("conflict");
      if (first.presence?.inDoubt) return this.#claimInDoubt(arrival, first);
      return Promise.resolve(this.#pair(first, payload));
    }
    const bytes = payloadCost(arrival);
    const refusal = this.#ledger.admit(arrival.address, bytes);
    if (refusal) return refused(refusal);
    return this.#hold(arrival, bytes);
  }

  /** Answers the held `first` and returns the second party's outcome (synchronous). */
  #pair(first: WaitingParty, payload: string | null): Outcome {
    if (this.#waiting.get(first.id) === first) this.#waiting.delete(first.id);
    const waitedMs = this.#now() - first.since;
    first.settle({ kind: "paired", role: "first", waitedMs, peerPayload: payload });
    this.#events.paired?.(waitedMs);
    return { kind: "paired", role: "second", waitedMs: 0, peerPayload: first.payload };
  }

  /**
   * The first party's connection is in doubt (half-closed): confirm it is there before
   * pairing; if it left, it departs and this arrival starts over (as the first party). If
   * this arrival left meanwhile (or half-closed and a probe finds it gone), it is the one
   * that departs (starting over finds it aborted) and the first party waits on.
   */
  async #claimInDoubt(arrival: Arrival, first: WaitingParty): Promise<Outcome> {
    first.claimed = true;
    const present = await first.presence!.confirm();
    // This arrival may have closed its side meanwhile: it is probed as well before pairing.
    const here = present && arrival.presence?.inDoubt
      ? await arrival.presence.confirm()
      : !arrival.signal?.aborted;
    first.claimed = false;
    const stillHeld = this.#waiting.get(arrival.id) === first;
    if (stillHeld && present && here && !this.#closing) return this.#pair(first, arrival.payload);
    if (stillHeld && !present) first.depart();
    if (present && !here) {
      // Gone while the first was confirmed (its signal may abort only after this).
      this.#events.departed?.();
      return { kind: "departed", waitedMs: 0 };
    }
    return this.arrive(arrival);
  }

  #hold(arrival: Arrival, bytes: number): Promise<Outcome> {
    const { id, payload, timeoutMs, signal, address } = arrival;
    const since = this.#now();
    return new Promise<Outcome>((resolve) => {
      const onAbort = () => {
        // The signal may fire after this party was answered (Deno's legacy abort fires
        // after every response): only a party still on hold departs.
        if (this.#waiting.get(id) !== party) return;
        this.#waiting.delete(id);
        this.#events.departed?.();
        party.settle({ kind: "departed", waitedMs: this.#now() - since });
      };
      const cancelTimer = setLongTimeout(() => {
        if (this.#waiting.get(id) !== party) return;
        this.#waiting.delete(id);
        this.#events.timedOut?.();
        party.settle({ kind: "refused", reason: "timeout", waitedMs: this.#now() - since });
      }, timeoutMs);
      const party: WaitingParty = {
        id,
        payload,
        since,
        presence: arrival.presence,
        claimed: false,
        depart: onAbort,
        settle: (outcome) => {
          this.#ledger.release(address, bytes);
          cancelTimer();
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
