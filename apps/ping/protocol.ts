/**
 * Ping wire protocol v1 (README.md, "Protocol (v1)"): one UTF-8 line per message,
 * ending in `\n` on a stream, without it in a datagram. `ping[ PAYLOAD]` is answered with
 * `pong[ PAYLOAD]`; anything else with `error REASON`.
 *
 * Pure: no I/O, so the server, the client, the page and the tests share it.
 *
 * @module
 */
import { concatChunks } from "@duet/core/bytes";

/**
 * The protocol's name as a WebTransport application protocol (`WT-Available-Protocols`,
 * the W3C `protocols` option): a client offers it, the server answers it. The version
 * changes only if the lines change.
 */
export const PING_PROTOCOL = "duet-ping.v1";

/** The longest line either side accepts, newline excluded. */
export const MAX_LINE_BYTES = 16_384;

const encoder = new TextEncoder();
// ignoreBOM: a line that begins with U+FEFF keeps it (the default drops it, unseen).
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** The answer to one received line (without its newline). */
export function answer(line: string): string {
  if (line === "ping") return "pong";
  if (line.startsWith("ping ")) return `pong${line.slice(4)}`;
  return `error expected "ping" or "ping PAYLOAD", got ${describe(line)}`;
}

/** The answer to a datagram, which holds one line without the newline. */
export function answerDatagram(datagram: Uint8Array): Uint8Array {
  let line: string;
  try {
    line = strictDecoder.decode(datagram);
  } catch {
    return encoder.encode("error not UTF-8");
  }
  return encoder.encode(answerMessage(line));
}

/**
 * The answer to a message that is already text (a WebSocket text message): what
 * {@link answerDatagram} answers for its UTF-8 bytes, without encoding and decoding.
 */
export function answerMessage(line: string): string {
  if (line.includes("\n")) return "error a datagram holds one line, no newline";
  return answer(line);
}

/**
 * A client's ping line (without the newline): `ping KEY`, then a space and `payloadBytes`
 * bytes of padding (`x`) when there are any. The server echoes KEY and the padding back.
 */
export function pingLine(key: string, payloadBytes = 0): string {
  return payloadBytes > 0 ? `ping ${key} ${"x".repeat(payloadBytes)}` : `ping ${key}`;
}

/**
 * A reply line as a client reads it: its first word (`pong` or `error`) and the key that
 * follows (what the client put after `ping`), undefined when there is none.
 */
export function parseReply(line: string): { word: string; key: string | undefined } {
  const [word, key] = line.split(" ", 2);
  return { word: word!, key };
}

/** A short, printable description of a bad line for error replies. */
function describe(line: string): string {
  const shown = line.length > 32 ? `${line.slice(0, 32)}...` : line;
  return JSON.stringify(shown);
}

/** A line, or a protocol violation the reader cannot recover from. */
export type LineEvent =
  | { kind: "line"; line: string }
  | { kind: "too-long" }
  | { kind: "not-utf8" };

/**
 * Splits a byte stream into lines. Written by hand because the stream decoders at hand
 * (TextDecoderStream and friends) neither bound a line's length nor tell a malformed
 * line from a good one, and both matter against a hostile peer.
 */
export class LineSplitter {
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  /** The last byte of what is pending (a CR may be the newline's first half). */
  #lastPending = -1;
  /** A line was too long: nothing after it is a line any more. */
  #failed = false;
  readonly #max: number;

  /**
   * A splitter for one stream.
   *
   * @param maxLineBytes The longest line accepted, its newline (LF or CR LF) excluded.
   */
  constructor(maxLineBytes = MAX_LINE_BYTES) {
    this.#max = maxLineBytes;
  }

  /**
   * Feeds bytes; returns the complete lines they finish, in order. The events are the same
   * however the bytes are cut. After a `too-long` event nothing more comes: the line has no
   * end that could be found again, so the caller ends the stream.
   */
  push(chunk: Uint8Array): LineEvent[] {
    const events: LineEvent[] = [];
    if (this.#failed) return events;
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      if (newline === -1) break;
      const piece = chunk.subarray(start, newline);
      if (!this.#fits(piece)) return this.#fail(events);
      events.push(this.#finish(piece));
      start = newline + 1;
    }
    const rest = chunk.subarray(start);
    if (!this.#fits(rest)) return this.#fail(events);
    if (rest.length) {
      this.#pending.push(rest.slice());
      this.#pendingBytes += rest.length;
      this.#lastPending = rest[rest.length - 1]!;
    }
    return events;
  }

  /** Whether the pending bytes and `more` are within the limit, a final CR not counted. */
  #fits(more: Uint8Array): boolean {
    const total = this.#pendingBytes + more.length;
    const last = more.length ? more[more.length - 1] : this.#lastPending;
    return total <= this.#max || (total === this.#max + 1 && last === 0x0d);
  }

  #fail(events: LineEvent[]): LineEvent[] {
    this.#failed = true;
    this.#pending = [];
    this.#pendingBytes = 0;
    events.push({ kind: "too-long" });
    return events;
  }

  /** Bytes of an unfinished line (a stream that ends here ended mid-line). */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  #finish(piece: Uint8Array): LineEvent {
    let bytes = piece;
    if (this.#pending.length) {
      this.#pending.push(piece);
      bytes = concatChunks(this.#pending);
      this.#pending = [];
      this.#pendingBytes = 0;
      this.#lastPending = -1;
    }
    // A trailing CR is tolerated, so `printf 'ping\r\n'` and telnet-style clients work.
    if (bytes.length && bytes[bytes.length - 1] === 0x0d) bytes = bytes.subarray(0, -1);
    try {
      return { kind: "line", line: strictDecoder.decode(bytes) };
    } catch {
      return { kind: "not-utf8" };
    }
  }
}

/** Encodes one line for a stream. */
export function encodeLine(line: string): Uint8Array {
  return encoder.encode(`${line}\n`);
}

/** The reply to a violation, sent before the stream is ended. */
export function violationReply(event: Exclude<LineEvent, { kind: "line" }>): string {
  return event.kind === "too-long"
    ? `error line longer than ${MAX_LINE_BYTES} bytes`
    : "error not UTF-8";
}

/**
 * Answers every line of one stream until it ends: the server side of the protocol over
 * any byte stream. A violation is answered with an error line and ends the stream.
 */
export async function serveLines(
  readable: ReadableStream<Uint8Array>,
  writable: WritableStream<Uint8Array>,
): Promise<void> {
  const splitter = new LineSplitter();
  const writer = writable.getWriter();
  const reader = readable.getReader();
  let violated = false;
  try {
    while (!violated) {
      const { value, done } = await reader.read();
      if (done) break;
      const replies: string[] = [];
      for (const event of splitter.push(value)) {
        if (event.kind === "line") {
          replies.push(answer(event.line));
        } else {
          replies.push(violationReply(event));
          violated = true;
        }
      }
      // One write per chunk: a pipelining client gets its answers in one packet.
      if (replies.length) await writer.write(encoder.encode(replies.join("\n") + "\n"));
      if (violated) await reader.cancel("protocol violation").catch(() => {});
    }
    if (!violated && splitter.pendingBytes) {
      await writer.write(encodeLine("error the stream ended inside a line"));
    }
    await writer.close();
  } catch {
    // The peer reset the stream or the session ended: nothing to answer.
    await writer.abort().catch(() => {});
  }
}
