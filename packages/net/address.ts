/**
 * Counting what each client address holds at once (connections, sessions, sockets), with a
 * cap per address. Pure bookkeeping, no I/O; addresses holding nothing are forgotten, so
 * memory follows the clients connected now.
 *
 * @module
 */

/**
 * Counts what each client address holds at once (sessions, sockets) against a cap; a cap
 * of 0 means no cap. Addresses holding nothing are forgotten, so the map stays as small
 * as the set of clients connected now.
 */
export class AddressCounter {
  readonly #held = new Map<string, number>();
  readonly #cap: number;

  /**
   * A counter with its cap.
   *
   * @param cap The most one address may hold at once; 0 for no cap.
   *
   * @example At most 2 sessions per address
   * ```ts
   * import { AddressCounter } from "./address.ts";
   * const sessions = new AddressCounter(2);
   * sessions.tryAcquire("198.51.100.4"); // true
   * sessions.tryAcquire("198.51.100.4"); // true
   * if (sessions.tryAcquire("198.51.100.4")) throw new Error("a third is refused");
   * sessions.release("198.51.100.4");
   * ```
   */
  constructor(cap: number) {
    this.#cap = cap;
  }

  /** Takes a slot for `address`: true if it had room (then call {@link release} once). */
  tryAcquire(address: string): boolean {
    const held = this.#held.get(address) ?? 0;
    if (this.#cap && held >= this.#cap) return false;
    this.#held.set(address, held + 1);
    return true;
  }

  /** Gives back a slot taken by {@link tryAcquire}. */
  release(address: string): void {
    const left = (this.#held.get(address) ?? 1) - 1;
    if (left > 0) this.#held.set(address, left);
    else this.#held.delete(address);
  }

  /** Slots `address` holds now. */
  held(address: string): number {
    return this.#held.get(address) ?? 0;
  }

  /** Slots held by every address together. */
  get total(): number {
    let sum = 0;
    for (const n of this.#held.values()) sum += n;
    return sum;
  }
}

/**
 * An address as people and URLs write it: `127.0.0.1:7070`, or `[::1]:7070` for IPv6 (RFC
 * 3986's brackets), so that a log or an error shows one value, never a host and a port apart.
 */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
