/**
 * The request side of HTTP/1.1 message framing (RFC 9112), as a pure incremental parser:
 * bytes in, in any pieces, events out (a request's head, its body's bytes, its end, or why
 * the stream of requests cannot be read on). No sockets, no timers: http1.ts wraps it.
 *
 * Written here because no library does it well on Deno: `Deno.serve` does not see a client
 * leave after a body of ~460 bytes or more, node:http on Deno costs a third of the
 * throughput (docs/benchmarks.md), and the pure-JavaScript parsers on npm accept what RFC
 * 9112 says to refuse (both Content-Length and Transfer-Encoding, obs-fold, bare LF, a
 * Content-Length of "+1e3"): the request smuggling cases a server in front of a rendezvous
 * must not let through.
 *
 * What it refuses, each with the status a server answers (and the connection then closes):
 * - 400: a request line or field line that is not RFC 9112's grammar (a method that is not
 *   a token, a target with spaces or controls, whitespace before a field's colon, obs-fold,
 *   a bare CR or LF, a control character in a value); Content-Length that is not digits or
 *   whose values differ; Content-Length together with Transfer-Encoding (RFC 9112 section
 *   6.3: a smuggling pattern); Transfer-Encoding on HTTP/1.0 (section 6.1); chunked that is
 *   not the final coding; a chunk size that is not hex digits or past 2^53 − 1; a chunk not
 *   followed by CRLF.
 * - 431: a head (request line and fields) over `maxHeadBytes`, or trailers over it.
 * - 501: a transfer coding other than chunked (section 6.1: "gzip, chunked"), which this
 *   server cannot undo.
 * - 505: an HTTP major version other than 1.
 *
 * Empty lines before a request line are skipped (section 2.2). `Expect` and `Host` are
 * reported, not judged: the server decides (417, 400).
 *
 * @module
 */
import { concatBytes } from "@noble/hashes/utils.js";

/** A request's head as parsed. */
export interface RequestHead {
  /** The method, case kept (methods are case-sensitive). */
  readonly method: string;
  /** The request target as sent. */
  readonly target: string;
  /** "1.0", or "1.1" for any HTTP/1.x above 1.0 (section 2.6: minor versions are compatible). */
  readonly version: "1.0" | "1.1";
  /** The field lines in order, flat: lower-case name, value (its edges' whitespace cut), ... */
  readonly fields: readonly string[];
  /** Whether the connection may carry another request after this one's answer. */
  readonly keepAlive: boolean;
  /** The `Expect` field's value, lower-case, if any (HTTP/1.1 only; ignored on HTTP/1.0). */
  readonly expect: string | undefined;
  /** Body bytes announced by Content-Length, or "chunked". 0 when neither is sent. */
  readonly body: number | "chunked";
}

/** A request parsed so far: see the module documentation. */
export type ParseEvent =
  | { readonly kind: "head"; readonly head: RequestHead }
  | { readonly kind: "data"; readonly bytes: Uint8Array }
  | { readonly kind: "end" }
  | { readonly kind: "error"; readonly status: 400 | 431 | 501 | 505; readonly reason: string };

/** Default of {@link ParserOptions.maxHeadBytes}: 16 KiB, node's and hyper's default. */
export const MAX_HEAD_BYTES = 16_384;

/** Options of {@link RequestParser}. */
export interface ParserOptions {
  /** The largest head (request line and fields, CRLFs included), and the largest trailers. */
  maxHeadBytes?: number;
}

const EMPTY = new Uint8Array(0);

/** The longest chunk-size line (size and extensions) taken. */
const MAX_CHUNK_LINE = 4_096;

const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/(\d)\.(\d)$/;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** A field value's characters: VCHAR, SP, HTAB and obs-text. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const DIGITS = /^\d+$/;
const CHUNK_SIZE = /^([0-9A-Fa-f]+)[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?$/;

type State = "head" | "sized" | "chunk-size" | "chunk-data" | "chunk-crlf" | "trailers" | "failed";

/** Thrown inside the parser for a request that cannot be read on. */
class Refused extends Error {
  constructor(readonly status: 400 | 431 | 501 | 505, reason: string) {
    super(reason);
  }
}

/**
 * Parses a stream of requests (pipelined ones too), fed in any pieces.
 *
 * @example
 * ```ts
 * import { RequestParser } from "./_h1_parse.ts";
 * const parser = new RequestParser();
 * const bytes = new TextEncoder().encode("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
 * const events = parser.push(bytes); // head, data "hi", end
 * ```
 */
export class RequestParser {
  readonly #maxHead: number;
  #state: State = "head";
  /** Bytes fed and not consumed yet. */
  #buffer: Uint8Array = EMPTY;
  /** Where the search for the head's end resumes in the buffer. */
  #scanned = 0;
  /** Body bytes left in the current Content-Length body or chunk. */
  #left = 0;
  #trailerBytes = 0;
  #paused = false;

  /** @param options The head size limit. */
  constructor(options: ParserOptions = {}) {
    this.#maxHead = options.maxHeadBytes ?? MAX_HEAD_BYTES;
  }

  /** True between a head and its end: a request is being read. */
  get inBody(): boolean {
    return this.#state !== "head" && this.#state !== "failed";
  }

  /** Bytes of a Content-Length body still to come, or undefined (no body, or chunked). */
  get bodyLeft(): number | undefined {
    return this.#state === "sized" ? this.#left : undefined;
  }

  /** True when bytes of a next request's head have come (a request is being read). */
  get inHead(): boolean {
    return this.#state === "head" && this.#buffer.length > 0;
  }

  /**
   * Feeds bytes; returns what they complete, in order, or, with `handle`, gives each event to
   * it as it comes (returning none), stopping at the end of a request for which `handle`
   * returns true (the caller cannot take more now: see {@link RequestParser.paused}). After
   * an error event nothing more is parsed. The bytes are not copied: a data event's bytes
   * are a view of them.
   */
  push(bytes: Uint8Array, handle?: (event: ParseEvent) => boolean): ParseEvent[] {
    const events: ParseEvent[] = [];
    this.#paused = false;
    if (this.#state === "failed") return events;
    if (bytes.length > 0) {
      this.#buffer = this.#buffer.length === 0 ? bytes : concatBytes(this.#buffer, bytes);
    }
    try {
      for (;;) {
        const more = this.#step(events);
        if (handle) {
          let pause = false;
          for (const event of events.splice(0)) {
            if (handle(event) && event.kind === "end") pause = true;
          }
          if (pause && this.#buffer.length > 0) {
            this.#paused = true;
            break;
          }
        }
        if (!more) break;
      }
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      this.#state = "failed";
      this.#buffer = EMPTY;
      const event: ParseEvent = { kind: "error", status: error.status, reason: error.message };
      if (handle) handle(event);
      else events.push(event);
    }
    return events;
  }

  /**
   * True when the last {@link RequestParser.push} stopped at the end of a request because
   * its `handle` asked to: bytes are left, parsed by the next push (of no bytes, say).
   */
  get paused(): boolean {
    return this.#paused;
  }

  /** Bytes fed and not parsed yet. */
  get pending(): number {
    return this.#buffer.length;
  }

  /** One step of the state machine: false when it needs more bytes. */
  #step(events: ParseEvent[]): boolean {
    switch (this.#state) {
      case "head":
        return this.#head(events);
      case "sized":
        return this.#data(events, "sized");
      case "chunk-data":
        return this.#data(events, "chunk-data");
      case "chunk-size":
        return this.#chunkSize();
      case "chunk-crlf":
        return this.#chunkCrlf();
      case "trailers":
        return this.#trailers(events);
      default:
        return false;
    }
  }

  #take(n: number): Uint8Array {
    const taken = this.#buffer.subarray(0, n);
    // An empty view would still hold the whole buffer it was cut from (a held request's
    // last read, for as long as it waits).
    this.#buffer = n === this.#buffer.length ? EMPTY : this.#buffer.subarray(n);
    return taken;
  }

  #head(events: ParseEvent[]): boolean {
    const buffer = this.#buffer;
    // Empty lines before a request line are skipped (section 2.2).
    let start = 0;
    while (buffer[start] === 13 && buffer[start + 1] === 10) start += 2;
    if (start > 0) {
      this.#take(start);
      this.#scanned = 0;
      return this.#buffer.length > 0;
    }
    const end = headEnd(buffer, this.#scanned);
    if (end < 0) {
      if (buffer.length > this.#maxHead) throw new Refused(431, "the request head is too large");
      this.#scanned = Math.max(0, buffer.length - 3);
      return false;
    }
    if (end > this.#maxHead) throw new Refused(431, "the request head is too large");
    const head = parseHead(latin1(this.#take(end)));
    this.#scanned = 0;
    events.push({ kind: "head", head });
    if (head.body === "chunked") this.#state = "chunk-size";
    else if (head.body > 0) {
      this.#left = head.body;
      this.#state = "sized";
    } else events.push({ kind: "end" });
    return this.#buffer.length > 0;
  }

  #data(events: ParseEvent[], state: "sized" | "chunk-data"): boolean {
    const n = Math.min(this.#left, this.#buffer.length);
    if (n === 0) return false;
    events.push({ kind: "data", bytes: this.#take(n) });
    this.#left -= n;
    if (this.#left > 0) return false;
    if (state === "sized") {
      events.push({ kind: "end" });
      this.#state = "head";
    } else this.#state = "chunk-crlf";
    return this.#buffer.length > 0;
  }

  #chunkSize(): boolean {
    const line = this.#line(MAX_CHUNK_LINE, 400, "a chunk size line is too long");
    if (line === undefined) return false;
    const match = CHUNK_SIZE.exec(line);
    if (!match) throw new Refused(400, "a chunk size is not hexadecimal digits");
    const size = parseInt(match[1]!, 16);
    if (match[1]!.length > 14 || size > Number.MAX_SAFE_INTEGER) {
      throw new Refused(400, "a chunk size is too large");
    }
    if (size === 0) {
      this.#state = "trailers";
      this.#trailerBytes = 0;
    } else {
      this.#left = size;
      this.#state = "chunk-data";
    }
    return this.#buffer.length > 0;
  }

  #chunkCrlf(): boolean {
    if (this.#buffer.length < 2) return false;
    if (this.#buffer[0] !== 13 || this.#buffer[1] !== 10) {
      throw new Refused(400, "a chunk is not followed by CRLF");
    }
    this.#take(2);
    this.#state = "chunk-size";
    return this.#buffer.length > 0;
  }

  #trailers(events: ParseEvent[]): boolean {
    const room = this.#maxHead - this.#trailerBytes;
    const line = this.#line(room, 431, "the trailers are too large");
    if (line === undefined) return false;
    this.#trailerBytes += line.length + 2;
    if (line === "") {
      events.push({ kind: "end" });
      this.#state = "head";
      return this.#buffer.length > 0;
    }
    // Trailer fields are read for their framing only and dropped (section 7.1.2 allows it).
    if (!parseField(line)) throw new Refused(400, "a trailer field is malformed");
    return this.#buffer.length > 0;
  }

  /** The next CRLF-ended line, or undefined if it has not come whole; refused past `max`. */
  #line(max: number, status: 400 | 431, reason: string): string | undefined {
    const buffer = this.#buffer;
    const lf = buffer.indexOf(10);
    if (lf < 0) {
      if (buffer.length > max) throw new Refused(status, reason);
      return undefined;
    }
    if (lf > max) throw new Refused(status, reason);
    if (lf === 0 || buffer[lf - 1] !== 13) throw new Refused(400, "a line ends in a bare LF");
    const line = latin1(buffer.subarray(0, lf - 1));
    this.#take(lf + 1);
    if (line.includes("\r")) throw new Refused(400, "a line holds a bare CR");
    return line;
  }
}

/**
 * The index just past the head's CRLF CRLF, searching from `from`, or -1; refuses a bare
 * LF as soon as it comes (a client that ends its lines so would otherwise wait for a
 * timeout).
 */
function headEnd(buffer: Uint8Array, from: number): number {
  for (let lf = buffer.indexOf(10, from); lf >= 0; lf = buffer.indexOf(10, lf + 1)) {
    if (buffer[lf - 1] !== 13) throw new Refused(400, "a line ends in a bare LF");
    if (lf >= 3 && buffer[lf - 2] === 10 && buffer[lf - 3] === 13) return lf + 1;
  }
  return -1;
}

/** Parses a whole head (its text through the empty line). */
function parseHead(text: string): RequestHead {
  const lines = text.slice(0, -4).split("\r\n");
  const match = REQUEST_LINE.exec(lines[0]!);
  if (!match) {
    throw new Refused(
      400,
      lines[0]!.includes("\n") ? "a line ends in a bare LF" : "invalid request line",
    );
  }
  if (match[3] !== "1") throw new Refused(505, `HTTP/${match[3]}.${match[4]} is not supported`);
  const version = match[4] === "0" ? "1.0" : "1.1";
  const fields: string[] = [];
  const lengths: string[] = [];
  const codings: string[] = [];
  let connection = "";
  let expect: string | undefined;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const field = parseField(line);
    if (!field) throw new Refused(400, fieldError(line));
    const name = field.name.toLowerCase();
    const value = field.value;
    fields.push(name, value);
    if (name === "content-length") lengths.push(...value.split(","));
    else if (name === "transfer-encoding") codings.push(...value.split(","));
    else if (name === "connection") connection += "," + value.toLowerCase();
    else if (name === "expect" && version === "1.1") {
      expect = expect === undefined ? value.toLowerCase() : `${expect}, ${value.toLowerCase()}`;
    }
  }
  const tokens = connection.split(",").map((token) => token.trim());
  const keepAlive = version === "1.1" ? !tokens.includes("close") : tokens.includes("keep-alive");
  return {
    method: match[1]!,
    target: match[2]!,
    version,
    fields,
    keepAlive,
    expect,
    body: framing(version, lengths, codings),
  };
}

/**
 * A field line's name and value (its edges' spaces and tabs cut), or undefined when it is
 * not `token ":" OWS value OWS`. By hand, not one regular expression: a value's optional
 * whitespace on both sides of a lazy value makes backtracking cubic in the line's length
 * (measured: 4,000 spaces and a control character took 11.8 s of one thread).
 */
function parseField(line: string): { name: string; value: string } | undefined {
  const colon = line.indexOf(":");
  if (colon <= 0) return undefined;
  const name = line.slice(0, colon);
  if (!TOKEN.test(name)) return undefined;
  let start = colon + 1;
  let end = line.length;
  while (start < end && isOws(line.charCodeAt(start))) start++;
  while (end > start && isOws(line.charCodeAt(end - 1))) end--;
  const value = line.slice(start, end);
  return FIELD_VALUE.test(value) ? { name, value } : undefined;
}

function isOws(code: number): boolean {
  return code === 0x20 || code === 0x09;
}

/** Why a field line does not parse, in a few words. */
function fieldError(line: string): string {
  if (line.startsWith(" ") || line.startsWith("\t")) return "obs-fold is not accepted";
  if (line.includes("\n")) return "a line ends in a bare LF";
  if (/^[^:]*[ \t]:/.test(line)) return "whitespace before a field's colon";
  return "a field line is malformed";
}

/** The body's framing (section 6.3) from its Content-Length and transfer coding values. */
function framing(version: "1.0" | "1.1", lengths: string[], codings: string[]): number | "chunked" {
  if (codings.length > 0) {
    if (lengths.length > 0) {
      throw new Refused(400, "both Content-Length and Transfer-Encoding are sent");
    }
    if (version === "1.0") throw new Refused(400, "Transfer-Encoding on HTTP/1.0");
    const list = codings.map((coding) => coding.trim().toLowerCase()).filter((c) => c !== "");
    if (list.at(-1) !== "chunked") throw new Refused(400, "chunked is not the final coding");
    if (list.length > 1) {
      throw new Refused(501, `transfer coding not implemented: ${list.join(", ")}`);
    }
    return "chunked";
  }
  if (lengths.length === 0) return 0;
  const values = new Set(lengths.map((length) => length.trim()));
  if (values.size !== 1) throw new Refused(400, "Content-Length values differ");
  const [value] = values as unknown as [string];
  if (!DIGITS.test(value)) throw new Refused(400, "Content-Length is not digits");
  const length = Number(value);
  if (length > Number.MAX_SAFE_INTEGER) throw new Refused(400, "Content-Length is too large");
  return length;
}

/** The bytes as text, one character per byte (ISO-8859-1, as HTTP fields are read). */
function latin1(bytes: Uint8Array): string {
  let text = "";
  for (let at = 0; at < bytes.length; at += 8_192) {
    text += String.fromCharCode.apply(null, bytes.subarray(at, at + 8_192) as unknown as number[]);
  }
  return text;
}
