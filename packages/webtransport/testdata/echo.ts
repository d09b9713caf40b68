/**
 * The echo application the webtransport tests and benchmark run on a session: every
 * bidirectional stream is answered on itself, every unidirectional stream on a new one,
 * every datagram with itself. `prefix` goes before stream replies (tests check it);
 * `chunked` echoes chunk by chunk instead of after the peer's FIN (round-trip benchmarks).
 */
import type { BidirectionalStream } from "../streams.ts";
import type { SessionRequest } from "../connection.ts";
import type { WebTransportSession } from "../session.ts";

/** What the echo needs from a session (ours, or Deno's wrapper's). */
export interface EchoableSession {
  incomingBidirectionalStreams: ReadableStream<BidirectionalStream>;
  incomingUnidirectionalStreams?: ReadableStream<ReadableStream<Uint8Array>>;
  createUnidirectionalStream?(): Promise<WritableStream<Uint8Array>>;
  datagrams: { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array> };
}

const encoder = new TextEncoder();

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

/** Starts echoing on `session`; runs until the session's streams end. */
export function echo(session: EchoableSession, options: { prefix?: string; chunked?: boolean } = {}): void {
  const prefix = options.prefix === undefined ? [] : [encoder.encode(options.prefix)];
  (async () => {
    for await (const { readable, writable } of session.incomingBidirectionalStreams) {
      (async () => {
        const writer = writable.getWriter();
        if (options.chunked) {
          for await (const chunk of readable) await writer.write(chunk);
        } else {
          for (const chunk of [...prefix, ...await readAll(readable)]) await writer.write(chunk);
        }
        await writer.close();
      })().catch(() => {});
    }
  })().catch(() => {});
  (async () => {
    if (!session.incomingUnidirectionalStreams || !session.createUnidirectionalStream) return;
    for await (const readable of session.incomingUnidirectionalStreams) {
      const received = await readAll(readable);
      const writer = (await session.createUnidirectionalStream()).getWriter();
      for (const chunk of [...(options.prefix === undefined ? [] : [encoder.encode(`uni ${options.prefix}`)]), ...received]) {
        await writer.write(chunk);
      }
      await writer.close();
    }
  })().catch(() => {});
  (async () => {
    const writer = session.datagrams.writable.getWriter();
    for await (const datagram of session.datagrams.readable) await writer.write(datagram);
  })().catch(() => {});
}

/**
 * Serves the echo on `server`: sessions for /echo are accepted (prefix "echo: ") and
 * collected in the returned array, in order; any other path is refused with 404.
 */
export function acceptEchoSessions(server: {
  requests: ReadableStream<SessionRequest>;
}): WebTransportSession[] {
  const sessions: WebTransportSession[] = [];
  (async () => {
    for await (const request of server.requests) {
      if (request.url.pathname !== "/echo") {
        await request.reject(404);
        continue;
      }
      const session = await request.accept();
      sessions.push(session);
      echo(session, { prefix: "echo: " });
    }
  })();
  return sessions;
}
