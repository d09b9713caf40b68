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
/** Requests taken ahead of their answers before the socket is read no more. */
const MAX_QUEUED = 32;
/** Unread body bytes held for a handler before the socket is read no more. */
const HIGH_WATER = 1 << 20;
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
    this.connection.answered();
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
  /** Writes in order; each item resolves its `done`. */
  readonly #writes: { bytes: Uint8Array; done?: (ok: boolean) => void }[] = [];
  #writing = false;
  /** When the head being read (or the wait for one) began, for the timeouts. */
  #since = Date.now();
  /** Requests taken on this connection. */
  #served = 0;
  #lingerTimer: ReturnType<typeof setTimeout> | undefined;
  #gate: PromiseWithResolvers<void> | undefined;
  #probe: Promise<boolean> | undefined;
  #reprobe = () => {};

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
    return this.#queue.length === 0 && !this.#current && !this.#parser.inHead &&
      this.#writes.length === 0 && !this.#writing;
  }

  /** Reads until the connection closes. */
  async run(): Promise<void> {
    // A pending read holds its buffer for as long as the client sends nothing, which for a
    // held party is its whole wait: a small one then (2 KiB per connection, not 64), a large
    // one, taken for one read at a time, while reads come back full.
    const small = new Uint8Array(SMALL_READ);
    let buffer = small;
    while (!this.#closed) {
      if (this.#blocked()) {
        this.#gate = Promise.withResolvers();
        await this.#gate.promise;
        continue;
      }
      let n: number | null;
      try {
        n = await this.#conn.read(buffer);
      } catch {
        this.destroy();
        return;
      }
      if (n === null) return this.#onFin();
      const full = n === buffer.length;
      // The parser keeps views of what it is given (a body may be held for a whole wait): the
      // small buffer is read into again, and a large one mostly empty would be held whole, so
      // those bytes are copied; a large one mostly full is handed over as it is.
      const bytes = buffer === small || n < buffer.length / 2
        ? buffer.slice(0, n)
        : buffer.subarray(0, n);
      if (this.#closing) continue; // lingering: the client's bytes are dropped
      // The first bytes of a head start its clock (the head and request timeouts).
      if (!this.#parser.inHead && !this.#parser.inBody) this.#since = Date.now();
      const events = this.#parser.push(bytes);
      for (const event of events) this.#onEvent(event);
      buffer = this.#nextBuffer(full, small);
    }
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

  /** Reading waits while too many requests or too many unread bytes are held. */
  #blocked(): boolean {
    if (this.#closing) return false;
    return this.#queue.length >= MAX_QUEUED || (this.#current?.buffered ?? 0) > HIGH_WATER;
  }

  /** Reading may go on (a queued answer went out, or a handler read its body). */
  unblock(): void {
    if (this.#gate && !this.#blocked()) {
      const gate = this.#gate;
      this.#gate = undefined;
      gate.resolve();
    }
  }

  #onEvent(event: ParseEvent): void {
    if (this.#closed || this.#closing) return;
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
    const exchange = new Exchange(this, head, this.#since);
    this.#queue.push(exchange);
    this.#host.counted(1);
    this.#served++;
    this.#current = exchange;
    if (head.expect === "100-continue" && head.body !== 0 && this.#queue.length === 1) {
      // The client waits for this before its body (RFC 9110 section 10.1.1).
      this.#write(CONTINUE);
    }
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
    this.#write(this.#host.refusal(status, reason));
    this.#close();
  }

  /** An exchange queued its answer: answers go out in order. */
  answered(): void {
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
        this.#close();
      }
    }
    this.#since = Date.now();
    this.unblock();
    if (this.#readEnded && this.#queue.length === 0 && !this.#closing) this.#close();
  }

  #onFin(): void {
    this.#readEnded = true;
    if (this.#closing) return this.destroy();
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
  }

  /**
   * Whether the client can still read its answers: at once while its side is open, else
   * by two interim `100 Continue` writes a gap apart (a departed client's reset fails the
   * second). False closes the connection. Shared by every request on it.
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
    const over = new AbortController();
    let cancel = () => {};
    const deadline = new Promise<false>((resolve) => {
      cancel = setLongTimeout(() => resolve(false), 2 * gapMs + PROBE_DEADLINE_MS);
    });
    const probing = (async () =>
      await this.#probeWrite() &&
      await delay(gapMs, { signal: over.signal }).then(() => true, () => false) &&
      await this.#probeWrite() && !this.#closed)();
    const present = await Promise.race([probing, deadline, this.#closedPromise()]);
    cancel();
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

  #closedWaiters: (() => void)[] = [];
  #closedPromise(): Promise<false> {
    return new Promise((resolve) => {
      if (this.#closed) resolve(false);
      else this.#closedWaiters.push(() => resolve(false));
    });
  }

  /** Queues bytes for the socket; `done` says whether they were written. */
  #write(bytes: Uint8Array, done?: (ok: boolean) => void): void {
    if (this.#closed) return done?.(false);
    this.#writes.push(done ? { bytes, done } : { bytes });
    if (!this.#writing) void this.#flush();
  }

  async #flush(): Promise<void> {
    this.#writing = true;
    while (this.#writes.length > 0 && !this.#closed) {
      const item = this.#writes.shift()!;
      try {
        for (let at = 0; at < item.bytes.length;) {
          at += await this.#conn.write(item.bytes.subarray(at));
        }
        item.done?.(true);
      } catch {
        item.done?.(false);
        this.destroy();
      }
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
    if (this.#closed || this.#closing) return;
    const host = this.#host;
    const first = this.#queue[0];
    if (this.#current) {
      if (now - this.#current.startedAt < host.requestTimeoutMs) return;
      return this.#timedOut(this.#current, "the request was not whole in time");
    }
    if (this.#parser.inHead || (this.#queue.length === 0 && this.#served === 0)) {
      if (now - this.#since < Math.min(host.headersTimeoutMs, host.requestTimeoutMs)) return;
      return this.#timedOut(undefined, "the request head was not whole in time");
    }
    if (!first && this.#writes.length === 0 && now - this.#since >= host.keepAliveMs) this.#close();
  }

  /** A request not whole in time: 408 if its answer is next, else the connection closes. */
  #timedOut(exchange: Exchange | undefined, reason: string): void {
    const ahead = this.#queue.filter((e) => e !== exchange);
    if (ahead.length > 0 || exchange?.answered) return this.destroy();
    this.#current = undefined;
    exchange?.failBody(new IncompleteRequest(reason));
    const bytes = this.#host.refusal(408, reason);
    if (exchange) exchange.answer(bytes, true);
    else this.#refuse(408, reason);
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
    const pending = this.#queue.splice(0);
    for (const exchange of pending) (this.#host.counted(-1), exchange.dropped());
    this.#current?.dropped();
    this.#current = undefined;
    for (const waiter of this.#closedWaiters.splice(0)) waiter();
    this.#gate?.resolve();
    this.#host.closed(this);
  }
}
