/**
 * The service's hold limits as pure accounting: the ledger of parties on hold (count,
 * payload bytes, count per address), and which addresses are exempt from per-address limits.
 * No I/O, no timers. (The arrival rate per address is a token bucket of `@duet/net/rate`.)
 *
 * @module
 */

/** Limits on the parties held (waiting) at once; 0 turns the last two off. */
export interface HoldLimits {
  /** Most parties held at once (>= 1). */
  readonly maxWaiting: number;
  /** Most payload bytes held at once, summed over the parties held; 0: no limit. */
  readonly maxWaitingBytes: number;
  /** Most parties held at once per client address; 0: no limit. */
  readonly maxWaitingPerAddress: number;
}

/** Why the ledger refuses to hold a party: the rendezvous refusal it becomes. */
export type HoldRefusal = "capacity" | "too_many_waiting";

/**
 * What the parties on hold take: how many, their payload bytes, how many per address.
 * Every {@link admit} that returns undefined must be matched by one {@link release} with
 * the same address and bytes. Addresses with nobody on hold are forgotten.
 *
 * @example
 * ```ts
 * import { WaitingLedger } from "./limits.ts";
 * const ledger = new WaitingLedger({ maxWaiting: 10, maxWaitingBytes: 100, maxWaitingPerAddress: 1 });
 * if (ledger.admit("198.51.100.7", 60) !== undefined) throw new Error();
 * if (ledger.admit("198.51.100.7", 0) !== "too_many_waiting") throw new Error();
 * if (ledger.admit("198.51.100.8", 60) !== "capacity") throw new Error(); // 120 bytes > 100
 * ledger.release("198.51.100.7", 60);
 * ```
 */
export class WaitingLedger {
  readonly #limits: HoldLimits;
  readonly #perAddress = new Map<string, number>();
  #waiting = 0;
  #bytes = 0;

  /** Throws RangeError on a negative limit or maxWaiting < 1. */
  constructor(limits: HoldLimits) {
    const { maxWaiting, maxWaitingBytes, maxWaitingPerAddress } = limits;
    if (!(maxWaiting >= 1) || !(maxWaitingBytes >= 0) || !(maxWaitingPerAddress >= 0)) {
      throw new RangeError(`Invalid hold limits ${JSON.stringify(limits)}`);
    }
    this.#limits = limits;
  }

  /**
   * Holds a party of `address` (undefined: not limited per address) with a payload of
   * `bytes`, or says why not; nothing is counted when it refuses. The address's own limit
   * is checked first, so a client that fills its share hears `too_many_waiting` (429), and
   * everyone else `capacity` (503) only when the whole instance is full.
   */
  admit(address: string | undefined, bytes: number): HoldRefusal | undefined {
    const { maxWaiting, maxWaitingBytes, maxWaitingPerAddress } = this.#limits;
    const tracked = address !== undefined && maxWaitingPerAddress > 0;
    const ofAddress = tracked ? (this.#perAddress.get(address) ?? 0) : 0;
    if (tracked && ofAddress >= maxWaitingPerAddress) return "too_many_waiting";
    if (this.#waiting >= maxWaiting) return "capacity";
    if (maxWaitingBytes > 0 && this.#bytes + bytes > maxWaitingBytes) return "capacity";
    this.#waiting++;
    this.#bytes += bytes;
    if (tracked) this.#perAddress.set(address, ofAddress + 1);
    return undefined;
  }

  /** Releases what one {@link admit} took. */
  release(address: string | undefined, bytes: number): void {
    this.#waiting--;
    this.#bytes -= bytes;
    if (address === undefined || this.#limits.maxWaitingPerAddress === 0) return;
    const ofAddress = (this.#perAddress.get(address) ?? 0) - 1;
    if (ofAddress > 0) this.#perAddress.set(address, ofAddress);
    else this.#perAddress.delete(address);
  }

  /** Parties held. */
  get waiting(): number {
    return this.#waiting;
  }

  /** Payload bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Parties held for `address`. */
  of(address: string): number {
    return this.#perAddress.get(address) ?? 0;
  }

  /** Addresses with a party held (the map's size: what the ledger's memory grows with). */
  get addresses(): number {
    return this.#perAddress.size;
  }
}

/**
 * Whether `hostname` (as `Deno.ServeHandlerInfo.remoteAddr.hostname` gives it) is a
 * loopback address: 127.0.0.0/8, ::1, or 127.x mapped into IPv6. Pure.
 */
export function isLoopback(hostname: string): boolean {
  const address = hostname.toLowerCase();
  return address.startsWith("127.") || address === "::1" || address.startsWith("::ffff:127.");
}
