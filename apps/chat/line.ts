/**
 * `duet chat --line`: the scriptable mode. Each line of input is sent (or is a command:
 * /key, /accept-key, /help, /quit); each message received prints as `NAME: TEXT` on the
 * output, everything else on the error stream. It ends at the end of input (after waiting
 * up to `lingerMs` for unsent messages to be stored), on /quit, on a fatal refusal, or
 * when `signal` aborts (SIGINT/SIGTERM: at once, the outbox kept for the next start).
 *
 * @module
 */
import { ChatClient, type ClientEvent } from "./client.ts";
import type { KeyStore } from "./keystore.ts";
import { printable } from "./display.ts";

/** What line mode needs. */
export interface LineModeOptions {
  server: string;
  name: string;
  room: string;
  keyStore: KeyStore;
  /** Lines to send; its end ends the session. */
  input: ReadableStream<Uint8Array>;
  /** Messages, and /key's answer. */
  out: (text: string) => void;
  /** Everything else: state, notices, warnings. */
  err: (text: string) => void;
  /** Aborting ends the session at once. */
  signal: AbortSignal;
  /** At the end of input, how long to wait for unsent messages to be stored (ms). */
  lingerMs: number;
}

/** How a line-mode session ended. */
export interface LineModeResult {
  /** A refusal that ends the session (room full, unsupported version), if any. */
  fatal?: string;
  /** Messages still in the outbox (they go out on the next start). */
  unsent: number;
}

/** The text for an event, and where it goes; undefined for events line mode does not show. */
export function describeEvent(
  event: ClientEvent,
  room: string,
): { stream: "out" | "err"; text: string } | undefined {
  switch (event.type) {
    case "message": {
      const m = event.message;
      if (m.own && !m.fromHistory) {
        return m.status === "failed"
          ? { stream: "err", text: `not sent: ${printable(m.problem ?? "")}` }
          : undefined;
      }
      // Never raw: the text is the peer's, and may hold escapes or a forged line.
      return { stream: "out", text: `${m.sender}: ${printable(m.text ?? `[${m.problem}]`)}` };
    }
    case "key":
      return {
        stream: "err",
        text: event.changed
          ? `!!! WARNING: ${event.peer}'s key CHANGED (new SHA-256 ${event.fingerprint}). ` +
            "Compare it with them over another channel; if it differs, someone is in the " +
            "middle. Nothing is sent until you type /accept-key."
          : `key agreed with ${event.peer}; /key shows its SHA-256`,
      };
    case "restored_key":
      return event.pending
        ? {
          stream: "err",
          text: "!!! WARNING: a changed peer key is still waiting for /accept-key; nothing " +
            "is sent until then.",
        }
        : undefined;
    case "state":
      return { stream: "err", text: `[${event.state}${event.detail ? ` ${event.detail}` : ""}]` };
    case "welcome":
      return {
        stream: "err",
        text: `[in room ${room} as party ${event.party}${
          event.peer ? `, with ${event.peer}` : ", alone so far"
        }]`,
      };
    case "notice":
      return { stream: "err", text: printable(event.text) };
    case "fatal":
      return { stream: "err", text: `duet chat: ${printable(event.text)}` };
  }
}

/** Runs a line-mode session to its end. */
export async function runLineMode(options: LineModeOptions): Promise<LineModeResult> {
  // Attached before the first await, so that a signal that comes during start-up counts.
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  if (options.signal.aborted) stop.abort();
  options.signal.addEventListener("abort", onAbort, { once: true });
  let fatal: string | undefined;
  let fatalSeen: () => void = () => {};
  const fatalPromise = new Promise<void>((resolve) => (fatalSeen = resolve));
  const client = new ChatClient({
    server: options.server,
    name: options.name,
    room: options.room,
    keyStore: options.keyStore,
    onEvent: (event) => {
      if (event.type === "fatal") {
        fatal = event.text;
        fatalSeen();
      }
      const said = describeEvent(event, options.room);
      if (said) options[said.stream](`${said.text}\n`);
    },
  });
  fatalPromise.then(onAbort);
  try {
    await client.start();
    for await (const line of readLines(options.input, stop.signal)) {
      const command = line.trim();
      if (command === "/quit") break;
      if (command === "/key") {
        options.out(`${(await client.fingerprint()) ?? "no shared key yet"}\n`);
      } else if (command === "/accept-key") {
        options.err(client.acceptKey() ? "new key accepted\n" : "no changed key to accept\n");
      } else if (command === "/help") {
        options.err("/key  /accept-key  /quit; anything else is sent\n");
      } else if (line.length) {
        await client.send(line).catch((error) => {
          if (!(error instanceof RangeError)) throw error;
          options.err(`${error.message}\n`); // too long: said, and the next lines go on
        });
      }
    }
    const deadline = Date.now() + options.lingerMs;
    while (client.unsent > 0 && Date.now() < deadline && !stop.signal.aborted) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    options.signal.removeEventListener("abort", onAbort);
    await client.stop();
  }
  return { ...(fatal === undefined ? {} : { fatal }), unsent: client.unsent };
}

/** `stream` as lines, ending at its end or when `signal` aborts. */
export async function* readLines(
  stream: ReadableStream<Uint8Array>,
  signal: AbortSignal,
): AsyncGenerator<string> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  const aborted = new Promise<{ done: true; value: undefined }>((resolve) => {
    if (signal.aborted) resolve({ done: true, value: undefined });
    signal.addEventListener("abort", () => resolve({ done: true, value: undefined }), {
      once: true,
    });
  });
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await Promise.race([reader.read(), aborted]);
      if (done) break;
      buffer += value;
      const parts = buffer.split(/\r?\n/);
      buffer = parts.pop()!;
      for (const part of parts) {
        if (signal.aborted) return;
        yield part;
      }
    }
    if (buffer && !signal.aborted) yield buffer;
  } finally {
    reader.cancel().catch(() => {});
  }
}
