/**
 * Streams and datagrams that arrive for a session before it exists, kept until it does
 * (draft-ietf-webtrans-http3, "Buffering Incoming Streams and Datagrams"). A client may
 * open streams and send datagrams right behind its CONNECT request, and a server may send
 * them right behind its 200; each can overtake the request or response, since they travel
 * on other QUIC streams or as datagrams. What is kept is bounded by count (streams,
 * datagrams) and by datagram bytes, per connection; past a bound the newest arrival is
 * refused (a stream) or dropped (a datagram), which the draft leaves to the implementation.
 *
 * Pure bookkeeping: the connection decides what "refused" does to a real stream.
 *
 * @module
 */

/** Bounds of what one connection keeps for sessions not there yet. */
export interface EarlyLimits {
  /** Streams, both kinds together. */
  streams: number;
  /** Datagrams. */
  datagrams: number;
  /** Bytes of datagram payload. */
  datagramBytes: number;
}

/** The bounds used unless a connection is given others. */
export const EARLY_LIMITS: EarlyLimits = { streams: 32, datagrams: 64, datagramBytes: 64 * 1024 };

/** What is kept for one session, in arrival order per kind. */
export interface Early<S> {
  streams: S[];
  datagrams: Uint8Array[];
}

/** Early streams and datagrams of one connection, by session id. */
export class EarlyData<S> {
  readonly #limits: EarlyLimits;
  readonly #bySession = new Map<number, Early<S>>();
  #streams = 0;
  #datagrams = 0;
  #datagramBytes = 0;

  constructor(limits: EarlyLimits = EARLY_LIMITS) {
    this.#limits = limits;
  }

  #entry(sessionId: number): Early<S> {
    let entry = this.#bySession.get(sessionId);
    if (!entry) this.#bySession.set(sessionId, entry = { streams: [], datagrams: [] });
    return entry;
  }

  /** Keeps a stream; false when the bound is reached (the caller refuses it). */
  addStream(sessionId: number, stream: S): boolean {
    if (this.#streams >= this.#limits.streams) return false;
    this.#entry(sessionId).streams.push(stream);
    this.#streams++;
    return true;
  }

  /** Keeps a datagram; false when a bound is reached (the caller drops it). */
  addDatagram(sessionId: number, payload: Uint8Array): boolean {
    if (
      this.#datagrams >= this.#limits.datagrams ||
      this.#datagramBytes + payload.length > this.#limits.datagramBytes
    ) return false;
    this.#entry(sessionId).datagrams.push(payload);
    this.#datagrams++;
    this.#datagramBytes += payload.length;
    return true;
  }

  /** Takes everything kept for a session (now established, or gone) and forgets it. */
  take(sessionId: number): Early<S> {
    const entry = this.#bySession.get(sessionId);
    if (!entry) return { streams: [], datagrams: [] };
    this.#bySession.delete(sessionId);
    this.#streams -= entry.streams.length;
    this.#datagrams -= entry.datagrams.length;
    for (const datagram of entry.datagrams) this.#datagramBytes -= datagram.length;
    return entry;
  }

  /** Takes everything kept for every session (the connection is closing). */
  takeAll(): Early<S> {
    const all: Early<S> = { streams: [], datagrams: [] };
    for (const id of [...this.#bySession.keys()]) {
      const entry = this.take(id);
      all.streams.push(...entry.streams);
      all.datagrams.push(...entry.datagrams);
    }
    return all;
  }

  /** What is kept now, for tests and metrics. */
  get size(): { streams: number; datagrams: number; datagramBytes: number } {
    return {
      streams: this.#streams,
      datagrams: this.#datagrams,
      datagramBytes: this.#datagramBytes,
    };
  }
}
