/**
 * One HTTP/1.1 connection of http1.ts: the socket read for as long as it is open (so a
 * client's FIN or reset is seen whatever it sent), requests parsed by `_h1_parse.ts`,
 * answered in order (pipelining), the client's presence probed after a FIN, the timeouts
 * of a request and of an idle connection, and a lingering close. See http1.ts for the
 * reasons and the public shapes.
 *
 * @module
 */
import { delay } from "@duet/core/delay";
import { setLongTimeout } from "@duet/core/long-timeout";
import { type ParseEvent, type RequestHead, RequestParser } from "./_h1_parse.ts";

/** Statuses the connection answers by itself (see http1.ts, `BadRequestStatus`). */
export type RefusalStatus = 400 | 405 | 408 | 417 | 431 | 501 | 505;

/** What the connection needs from its server. */
export interface ConnectionHost {
  /** Milliseconds between the two writes of a probe. */
  readonly probeGapMs: number;
  /** Milliseconds a request has to arrive whole, and its head alone. */
  readonly requestTimeoutMs: number;
  readonly headersTimeoutMs: number;
  /** Milliseconds an idle connection is kept. */
  readonly keepAliveMs: number;
  /** A request whose head was taken: answer it (through `exchange.answer`). */
  dispatch(exchange: Exchange): void;
  /** The bytes of a refusal's answer (status line through body), closing the connection. */
  refusal(status: RefusalStatus, reason: string): Uint8Array;
  /** A request began (counted in flight) or was answered or dropped. */
  counted(delta: 1 | -1): void;
  /** The connection closed. */
  closed(connection: Connection): void;
}

/** Milliseconds a probe may take beyond its two gaps (see http1.ts, PROBE_DEADLINE_MS). */
export const PROBE_DEADLINE_MS = 1_000;
/** Milliseconds between probes of a half-closed connection with answers pending. */
export const REPROBE_MS = 5_000;
/** How long a closing connection reads what the client still sends (lingering close). */
const LINGER_MS = 2_000;
/** Bytes of the read buffer of a connection whose reads come back short, and of a busy one. */
const SMALL_READ = 2_048;
const LARGE_READ = 65_536;
/** Requests taken ahead of their answers before the connection's bytes are parsed no more. */
const MAX_QUEUED = 32;
/**
 * Unread body bytes held for a handler, or answer bytes the client has not taken, before
 * the connection's bytes are parsed no more.
 */
const HIGH_WATER = 1 << 20;
/**
 * Bytes read while parsing waits (kept unparsed), so that the client's FIN or reset is still
 * seen; past them the connection is closed (its pending requests see their client leave).
 */
const PARKED_MAX = 65_536;
/** Milliseconds a write may make no progress (the client reads nothing) before closing. */
export const WRITE_TIMEOUT_MS = 30_000;
/**
 * Milliseconds between a probe's last write and the check that closes it: a client that
 * left before that write answers it with a reset, which arrives within a round trip.
 */
const PROBE_SETTLE_MS = 50;
const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");

/** A FIN (or a framing error) came before the request's body was complete. */
export class IncompleteRequest extends Error {
  override name = "IncompleteRequest";
}

/** The body of a request as it arrives: bytes, its end, or why it cannot be read. */
interface BodySink {
  data(bytes: Uint8Array): void;
  end(): void;
  fail(error: Error): void;
  /** Bytes handed over and not consumed yet (a stream's queue); 0 when not said. */
  backlog?(): number;
}

/** One request on a connection, from its head to its answer. */
export class Exchange {
  readonly head: RequestHead;
  /** Answered: the answer is queued on the connection (or the connection closed). */
  answered = false;
  /** The answer's bytes, once answered, until written. */
  reply: Uint8Array | undefined;
  /** Whether the connection ends with this answer. */
  closeAfter = false;
  /** The request's body has ended (all of it parsed). */
  complete = false;
  #controller: AbortController | undefined;
  #sink: BodySink | undefined;
  /** Body bytes that came before a sink was attached, and the end or failure. */
  #early: Uint8Array[] = [];
  #earlyEnd: Error | true | undefined;
  #bytes = 0;
  readonly startedAt: number;

  constructor(readonly connection: Connection, head: RequestHead, startedAt: number) {
    this.head = head;
    this.startedAt = startedAt;
    this.wantsContinue = head.expect === "100-continue" && head.body !== 0;
  }

  /** The first value of a field, by lower-case name. */
  field(name: string): string | undefined {
    const fields = this.head.fields;
    for (let i = 0; i < fields.length; i += 2) if (fields[i] === name) return fields[i + 1];
    return undefined;
  }

  /** Aborts when the connection closes before the answer is written. */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.connection.isClosed && !this.answered) this.#controller.abort();
    }
    return this.#controller.signal;
  }

  /** The connection closed. */
  dropped(): void {
    if (!this.answered) this.#controller?.abort();
    if (!this.complete) {
      this.failBody(new Error("the connection closed before the body was complete"));
    }
  }

  /** Body bytes buffered for a handler that has not read them. */
  get buffered(): number {
    return this.#bytes + (this.#sink?.backlog?.() ?? 0);
  }

  /**
   * Whether the client waits for `100 Continue` before its body (RFC 9110 section 10.1.1):
   * sent once the body is asked for, not before (an answer without the body needs none).
   */
  wantsContinue: boolean;
  /** The handler asked for the body. */
  asked = false;
  #continued = false;

  /**
   * The body is asked for: the client that waits for `100 Continue` is sent it, now if this
   * is the first pending request, else once it is.
   */
  wantBody(): void {
    this.asked = true;
    if (!this.wantsContinue || this.#continued || this.complete || this.answered) return;
    if (this.connection.sendContinue(this)) this.#continued = true;
  }

  /** Attaches the one reader of the body; what came before is handed over first. */
  read(sink: BodySink): void {
    this.#sink = sink;
    for (const bytes of this.#early) sink.data(bytes);
    this.#early = [];
    this.#bytes = 0;
    if (this.#earlyEnd !== undefined) this.#sink = undefined;
    if (this.#earlyEnd === true) sink.end();
    else if (this.#earlyEnd) sink.fail(this.#earlyEnd);
    this.connection.unblock();
  }

  /** Body bytes parsed. */
  data(bytes: Uint8Array): void {
    if (this.answered) return; // nobody reads on: dropped (the parser still frames them)
    if (this.#sink) return this.#sink.data(bytes);
    // A view of the read buffer, which the connection does not reuse.
    this.#early.push(bytes);
    this.#bytes += bytes.length;
  }

  /** The body ended. */
  end(): void {
    this.complete = true;
    // The reader is let go once it has the whole body: it may hold its chunks.
    const sink = this.#sink;
    this.#sink = undefined;
    if (sink) sink.end();
    else this.#earlyEnd = true;
  }

  /** The body can never be complete. */
  failBody(error: Error): void {
    if (this.complete || this.#earlyEnd) return;
    this.complete = true;
    const sink = this.#sink;
    this.#sink = undefined;
    if (sink) sink.fail(error);
    else this.#earlyEnd = error;
  }

  /** Queues the whole answer (status line through body); `close` ends the connection after. */
  answer(bytes: Uint8Array, close: boolean): void {
    if (this.answered) return;
    this.answered = true;
    this.reply = bytes;
    this.closeAfter = close || !this.head.keepAlive;
    this.#early = [];
    this.#bytes = 0;
    this.connection.answered(this);
  }
}

/** One accepted connection; see the module documentation. */
export class Connection {
  readonly remoteAddr: Deno.NetAddr;
  readonly #conn: Deno.TcpConn;
  readonly #host: ConnectionHost;
  readonly #parser = new RequestParser();
  /** Requests whose answers are not queued yet, in order. */
  readonly #queue: Exchange[] = [];
  /** The request whose body is being read. */
  #current: Exchange | undefined;
  #readEnded = false;
  #closed = false;
  /** The last answer is out and the connection closes (the client's bytes are drained). */
  #closing = false;
  /**
   * A request after which no other is taken (it asked to close, or its answer closes): the
   * requests pipelined behind it are not processed (RFC 9112 section 9.6).
   */
  #last = false;
  /** Writes in order; each item resolves its `done`. */
  readonly #writes: { bytes: Uint8Array; done?: (ok: boolean) => void }[] = [];
  #writing = false;
  /** Bytes queued for the socket and not written yet. */
  #unwritten = 0;
  /** When the write in progress began (for WRITE_TIMEOUT_MS). */
  #writeStart = 0;
  /** Bytes read while parsing waits, in order, and their sum. */
  #parked: Uint8Array[] = [];
  #parkedBytes = 0;
  #unparking = false;
  /** When the connection last went idle (accepted, a request whole, an answer queued). */
  #since = Date.now();
  /** When the read that began the head being read came. */
  #headStart = this.#since;
  /** Requests taken on this connection. */
  #served = 0;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  #gate: PromiseWithResolvers<void> | undefined;
  #probe: Promise<boolean> | undefined;
  #probing = false;
  #reprobe = () => {};
  readonly #closedWaiters = new Set<() => void>();
  /** When a write last made progress. */
  #lastProgress = 0;

  constructor(conn: Deno.TcpConn, host: ConnectionHost) {
    this.#conn = conn;
    this.#host = host;
    this.remoteAddr = conn.remoteAddr as Deno.NetAddr;
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  /** The client sent its FIN. */
  get readEnded(): boolean {
    return this.#readEnded;
  }

  /** No request is pending or being read: what shutdown closes at once. */
  get idle(): boolean {
    return this.#queue.length === 0 && !this.#current && this.#parser.pending === 0 &&
      this.#parkedBytes === 0 && this.#unwritten === 0;
  }

  /** Reads until the connection closes. */
  async run(): Promise<void> {
    // A pending read holds its buffer for as long as the client sends nothing, which for a
    // held party is its whole wait: a small one then (2 KiB per connection, not 64), a large
    // one, taken for one read at a time, while reads come back full.
    const small = new Uint8Array(SMALL_READ);
    let buffer = small;
    while (!this.#closed) {
      if (this.#waiting() && !this.#blocked()) {
        this.#unpark();
        continue;
      }
      let n: number | null;
      try {
        n = await this.#conn.read(buffer);
      } catch {
        return this.destroy(); // a reset: every pending request sees its client leave
      }
      if (n === null) return await this.#onFin();
      const full = n === buffer.length;
      // The parser keeps views of what it is given (a body may be held for a whole wait): the
      // small buffer is read into again, and a large one mostly empty would be held whole, so
      // those bytes are copied; a large one mostly full is handed over as it is.
      const bytes = buffer === small || n < buffer.length / 2
        ? buffer.slice(0, n)
        : buffer.subarray(0, n);
      if (this.#closing || this.#last && !this.#current) continue; // dropped, unread
      if (this.#blocked() || this.#waiting()) {
        // Parsing waits; reading goes on (a FIN or reset must still be seen), up to a bound.
        this.#parked.push(bytes);
        this.#parkedBytes += bytes.length;
        if (this.#parkedBytes + this.#parser.pending <= PARKED_MAX) continue;
        // Past the bound, with requests held: the connection is closed rather than left
        // unread, since unread, its client's departure could not be seen (the held requests
        // would be answered as if it were there). With only a body that its handler reads
        // slowly, reading waits (TCP's own backpressure).
        if (this.#queue.some((exchange) => exchange !== this.#current)) return this.destroy();
        await this.#waitUnblocked();
        continue;
      }
      this.#parse(bytes);
      buffer = this.#nextBuffer(full, small);
    }
  }

  /**
   * Feeds bytes to the parser and acts on each request as it comes: parsing stops at the end
   * of a request past which the connection is blocked (the bounds hold per request, not per
   * read), the rest waiting in the parser.
   */
  #parse(bytes: Uint8Array): void {
    // The first bytes of a head start its clock (the head and request timeouts).
    if (!this.#parser.inHead && !this.#parser.inBody) this.#headStart = Date.now();
    this.#parser.push(bytes, (event) => {
      this.#onEvent(event);
      return this.#blocked();
    });
  }

  /** Bytes wait to be parsed: in the parser (paused) or read since. */
  #waiting(): boolean {
    return this.#parser.paused || this.#parkedBytes > 0;
  }

  /** Parses the bytes that waited, as far as it may go on. */
  #unpark(): void {
    if (this.#closed || this.#closing || this.#blocked()) return;
    if (this.#parser.paused) {
      this.#parse(new Uint8Array(0));
      if (this.#parser.paused) return;
    }
    while (this.#parked.length > 0 && !this.#blocked() && !this.#parser.paused && !this.#closed) {
      const bytes = this.#parked.shift()!;
      this.#parkedBytes -= bytes.length;
      if (!this.#closing && !(this.#last && !this.#current)) this.#parse(bytes);
    }
  }

  async #waitUnblocked(): Promise<void> {
    if (!this.#blocked() || this.#closed) return;
    this.#gate = Promise.withResolvers();
    await this.#gate.promise;
  }

  /**
   * The buffer of the next read: the small one, unless the last read came back full while
   * a request is still coming in; then as large as the rest of a Content-Length body (read
   * in one piece, nothing to spare), or {@link LARGE_READ}.
   */
  #nextBuffer(full: boolean, small: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
    const parser = this.#parser;
    if (!full || (!parser.inBody && !parser.inHead)) return small;
    const left = parser.bodyLeft;
    const size = left === undefined ? LARGE_READ : Math.min(LARGE_READ, left);
    return size <= small.length ? small : new Uint8Array(size);
  }

  /**
   * Parsing waits while too many requests wait for their answers, a handler has too many
   * body bytes unread, or the client has too many answer bytes untaken.
   */
  #blocked(): boolean {
    if (this.#closing) return false;
    return this.#queue.length >= MAX_QUEUED || (this.#current?.buffered ?? 0) > HIGH_WATER ||
      this.#unwritten > HIGH_WATER;
  }

  /**
   * Parsing may go on (an answer went out, a handler read its body): parses what was parked
   * (in a microtask: never inside the parsing that called this), and wakes the reader.
   */
  unblock(): void {
    if (this.#blocked()) return;
    if (this.#gate) {
      const gate = this.#gate;
      this.#gate = undefined;
      gate.resolve();
    }
    if (this.#waiting() && !this.#unparking) {
      this.#unparking = true;
      queueMicrotask(() => {
        this.#unparking = false;
        this.#unpark();
      });
    }
  }

  #onEvent(event: ParseEvent): void {
    if (this.#closed || this.#closing) return;
    // After the last request (and its body), nothing more is taken.
    if (this.#last && !this.#current) return;
    switch (event.kind) {
      case "head":
        return this.#onHead(event.head);
      case "data":
        return this.#current?.data(event.bytes);
      case "end": {
        const current = this.#current!;
        this.#current = undefined;
        this.#since = Date.now();
        current.end();
        return;
      }
      case "error":
        return this.#onParseError(event.status, event.reason);
    }
  }

  #onHead(head: RequestHead): void {
    const exchange = new Exchange(this, head, this.#headStart);
    this.#queue.push(exchange);
    this.#host.counted(1);
    this.#served++;
    this.#current = exchange;
    if (!head.keepAlive) this.#last = true;
    this.#host.dispatch(exchange);
  }

  /** The request cannot be read on: answered if nothing is ahead of it, else closed. */
  #onParseError(status: RefusalStatus, reason: string): void {
    const current = this.#current;
    this.#current = undefined;
    current?.failBody(new IncompleteRequest(reason));
    const ahead = this.#queue.filter((exchange) => exchange !== current);
    if (ahead.length > 0 || (current && current.answered)) return this.destroy();
    if (current) current.answer(this.#host.refusal(status, reason), true);
    else this.#refuse(status, reason);
  }

  /** Answers a request the parser could not frame (no exchange holds it) and closes. */
  #refuse(status: RefusalStatus, reason: string): void {
    this.#last = true;
    this.#write(this.#host.refusal(status, reason));
    this.#close();
  }

  /** `100 Continue` for an exchange that asked for it, once it is the first pending. */
  sendContinue(exchange: Exchange): boolean {
    if (this.#queue[0] !== exchange || this.#closing) return false;
    this.#write(CONTINUE);
    return true;
  }

  /** An exchange queued its answer: answers go out in order. */
  answered(exchange: Exchange): void {
    // Nothing after an answer that ends the connection is taken.
    if (exchange.closeAfter) this.#last = true;
    while (this.#queue.length > 0 && this.#queue[0]!.answered) {
      const next = this.#queue.shift()!;
      this.#host.counted(-1);
      const reply = next.reply!;
      next.reply = undefined;
      if (this.#closed || this.#closing) continue;
      this.#write(reply);
      if (next.closeAfter) {
        // Requests after it are not answered: the connection ends with this answer.
        for (const rest of this.#queue.splice(0)) (this.#host.counted(-1), rest.dropped());
        this.#current?.failBody(new Error("the connection is closing"));
        this.#current = undefined;
        this.#close();
      }
    }
    // The next in line may have asked for its body before it was first.
    const first = this.#queue[0];
    if (first?.asked) first.wantBody();
    this.#since = Date.now();
    this.unblock();
    // After a FIN, the connection ends with its last answer, once nothing waits to be parsed.
    if (this.#readEnded && this.#queue.length === 0 && !this.#closing && !this.#waiting()) {
      this.#close();
    }
  }

  /** The client's FIN: requests still parked are parsed first, as parsing allows. */
  async #onFin(): Promise<void> {
    this.#readEnded = true;
    if (this.#closing) return this.destroy();
    while (this.#waiting() && !this.#closed && !this.#closing) {
      // Held requests are probed meanwhile: the FIN puts them in doubt.
      this.#startProbing();
      await this.#waitUnblocked();
      this.#unpark();
    }
    if (this.#closed || this.#closing) return;
    const current = this.#current;
    this.#current = undefined;
    if (current) {
      // A request that ended before its body was complete never will be: the client can
      // still read, so it is told (and the connection closes after).
      const reason = "the request ended before its body was complete";
      current.failBody(new IncompleteRequest(reason));
      current.answer(this.#host.refusal(400, reason), true);
    } else if (this.#parser.inHead && this.#queue.length === 0) {
      return this.#refuse(400, "the request ended before its head was complete");
    }
    if (this.#queue.length === 0) return this.#close();
    // Answers pending after a FIN: a half-close (kept) or a departure (see http1.ts).
    this.#startProbing();
  }

  #startProbing(): void {
    if (this.#probing || this.#queue.length === 0) return;
    this.#probing = true;
    void this.#probeLoop();
  }

  /** Probes now, and every REPROBE_MS while answers are pending. */
  async #probeLoop(): Promise<void> {
    while (!this.#closed && this.#queue.length > 0) {
      if (!await this.probe()) return;
      const wait = Promise.withResolvers<void>();
      this.#reprobe = setLongTimeout(wait.resolve, REPROBE_MS);
      await wait.promise;
    }
    this.#probing = false;
  }

  /**
   * Whether the client can still read its answers: at once while its side is open, else
   * by interim `100 Continue` writes, a gap apart and then a settling moment apart (a
   * departed client's reset fails the next write). False closes the connection. Shared by
   * every request on it.
   */
  probe(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    if (!this.#readEnded || this.#queue.length === 0) return Promise.resolve(true);
    return this.#probe ??= this.#runProbe().then((present) => {
      this.#probe = undefined;
      if (!present) this.destroy();
      return present;
    });
  }

  async #runProbe(): Promise<boolean> {
    const gapMs = this.#host.probeGapMs;
    const settleMs = Math.min(gapMs, PROBE_SETTLE_MS);
    const over = new AbortController();
    let cancel = () => {};
    // The probe's writes wait behind the answers ahead of them: a client that takes those
    // (the writes progress) is reading, so only a stall of this long counts as a departure.
    const limit = 2 * gapMs + settleMs + PROBE_DEADLINE_MS;
    const started = Date.now();
    const deadline = new Promise<false>((resolve) => {
      const check = () => {
        const stalled = Date.now() - Math.max(this.#lastProgress, started);
        if (stalled >= limit) resolve(false);
        else cancel = setLongTimeout(check, limit - stalled);
      };
      cancel = setLongTimeout(check, limit);
    });
    const closed = this.#closedPromise();
    const pause = (ms: number) => delay(ms, { signal: over.signal }).then(() => true, () => false);
    const probing = (async () =>
      await this.#probeWrite() && await pause(gapMs) &&
      await this.#probeWrite() && await pause(settleMs) &&
      await this.#probeWrite() && !this.#closed)();
    const present = await Promise.race([probing, deadline, closed.promise]);
    cancel();
    closed.cancel();
    over.abort();
    return present;
  }

  /** One interim answer ahead of the first pending one: false if it cannot be written. */
  #probeWrite(): Promise<boolean> {
    const first = this.#queue[0];
    if (this.#closed || !first) return Promise.resolve(!this.#closed);
    // No 1xx for HTTP/1.0: its FIN cannot be told from a departure.
    if (first.head.version === "1.0") return Promise.resolve(false);
    return new Promise((resolve) => this.#write(CONTINUE, resolve));
  }

  /** Resolves false when the connection closes; `cancel` stops waiting (no waiter kept). */
  #closedPromise(): { promise: Promise<false>; cancel: () => void } {
    let waiter = () => {};
    const promise = new Promise<false>((resolve) => {
      waiter = () => resolve(false);
      if (this.#closed) waiter();
      else this.#closedWaiters.add(waiter);
    });
    return { promise, cancel: () => void this.#closedWaiters.delete(waiter) };
  }

  /** Queues bytes for the socket; `done` says whether they were written. */
  #write(bytes: Uint8Array, done?: (ok: boolean) => void): void {
    if (this.#closed) return done?.(false);
    this.#writes.push(done ? { bytes, done } : { bytes });
    this.#unwritten += bytes.length;
    if (!this.#writing) void this.#flush();
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    while (this.#writes.length > 0 && !this.#closed) {
      const item = this.#writes.shift()!;
      try {
        for (let at = 0; at < item.bytes.length;) {
          this.#writeStart = Date.now();
          const n = await this.#conn.write(item.bytes.subarray(at));
          at += n;
          this.#unwritten -= n;
          this.#lastProgress = Date.now();
        }
        item.done?.(true);
      } catch {
        item.done?.(false);
        this.destroy();
      }
      this.unblock();
    }
    this.#writing = false;
    if (this.#closing && !this.#closed) this.#linger();
  }

  /** Ends the connection after what is queued: its side closed, the client's drained. */
  end(): void {
    this.#close();
  }

  #close(): void {
    if (this.#closing || this.#closed) return;
    this.#closing = true;
    this.#parked = [];
    this.#parkedBytes = 0;
    this.unblock();
    if (!this.#writing && this.#writes.length === 0) this.#linger();
  }

  /**
   * Closes the sending side and reads what the client still sends, for up to LINGER_MS: a
   * close with unread bytes would reset the connection and could lose the answer in flight
   * (RFC 9112 section 9.6).
   */
  #linger(): void {
    if (this.#readEnded) return this.destroy();
    try {
      this.#conn.closeWrite().catch(() => this.destroy());
    } catch {
      return this.destroy();
    }
    this.#lingerTimer = setTimeout(() => this.destroy(), LINGER_MS);
  }

  /** Checks the timeouts (called about once a second). */
  sweep(now: number): void {
    if (this.#closed) return;
    // A client that takes none of its answers holds them (and this connection) no longer.
    if (this.#writing && now - this.#writeStart >= WRITE_TIMEOUT_MS) return this.destroy();
    if (this.#closing) return;
    const host = this.#host;
    if (this.#current) {
      if (now - this.#current.startedAt < host.requestTimeoutMs) return;
      return this.#timedOut(this.#current, "the request was not whole in time");
    }
    const headLimit = Math.min(host.headersTimeoutMs, host.requestTimeoutMs);
    // Bytes that wait for the answers ahead of them are not the client's delay.
    if (this.#waiting()) return;
    if (this.#parser.inHead) {
      if (now - this.#headStart < headLimit) return;
      return this.#timedOut(undefined, "the request head was not whole in time");
    }
    if (this.#queue.length > 0 || this.#unwritten > 0 || this.#parkedBytes > 0) return;
    // A new connection has the head's time for its first request; an idle one keep-alive's.
    // (Empty lines, which the parser skips, restart neither clock.)
    if (this.#served === 0) {
      if (now - this.#since >= headLimit) {
        this.#timedOut(undefined, "the request head was not whole in time");
      }
    } else if (now - this.#since >= host.keepAliveMs) this.#close();
  }

  /** A request not whole in time: 408 if its answer is next, else the connection closes. */
  #timedOut(exchange: Exchange | undefined, reason: string): void {
    const ahead = this.#queue.filter((e) => e !== exchange);
    if (ahead.length > 0 || exchange?.answered) return this.destroy();
    this.#current = undefined;
    if (!exchange) return this.#refuse(408, reason);
    exchange.failBody(new IncompleteRequest(reason));
    exchange.answer(this.#host.refusal(408, reason), true);
  }

  /** Closes at once: pending requests see their client leave. */
  destroy(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reprobe();
    clearTimeout(this.#lingerTimer);
    try {
      this.#conn.close();
    } catch { /* closed already */ }
    for (const write of this.#writes.splice(0)) write.done?.(false);
    this.#unwritten = 0;
    this.#parked = [];
    this.#parkedBytes = 0;
    const pending = this.#queue.splice(0);
    for (const exchange of pending) (this.#host.counted(-1), exchange.dropped());
    this.#current?.dropped();
    this.#current = undefined;
    for (const waiter of this.#closedWaiters) waiter();
    this.#closedWaiters.clear();
    this.#gate?.resolve();
    this.#host.closed(this);
  }
}
