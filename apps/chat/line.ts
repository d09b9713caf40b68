/**
 * `duet chat --line`: the scriptable mode. Each line of input is sent (or is a command:
 * /key, /accept-key, /help, /quit; see commands.ts); each message received prints as
 * `NAME: TEXT` on the output, everything else on the error stream (a message that only a
 * peer key not yet accepted decrypts is held back, and said there, never printed as the
 * peer's). It ends at the end of input (after waiting up to `lingerMs` to get into the
 * room if it is not in yet, then for unsent messages to be stored while they are, up to
 * `lingerMs` without progress), on /quit, on a fatal refusal, or when `signal` aborts
 * (SIGINT/SIGTERM: at once, the outbox kept for the next start).
 *
 * @module
 */
import { ChatClient, type ClientEvent, type Presence } from "./client.ts";
import type { KeyStore } from "./keystore.ts";
import { printable } from "@duet/core/printable";
import { checkDuration } from "@duet/core/duration";
import { MAX_TIMEOUT_MS } from "@duet/core/long-timeout";
import { readTypedLine, unknownCommandText } from "./commands.ts";

/** What line mode needs. */
export interface LineModeOptions {
  /** HOST:PORT of the server (ChatClientOptions.server). */
  server: string;
  /** Our name in the room. */
  name: string;
  /** The room's id. */
  room: string;
  /** Keys and outbox; the caller closes it after the session. */
  keyStore: KeyStore;
  /** Lines to send; its end ends the session. */
  input: ReadableStream<Uint8Array>;
  /** Messages, and /key's answer. */
  out: (text: string) => void;
  /** Everything else: state, notices, warnings. */
  err: (text: string) => void;
  /** Aborting ends the session at once. */
  signal: AbortSignal;
  /**
   * At the end of input, how long to wait without progress for unsent messages to be
   * stored (ms); also how long /key waits for a key to be agreed.
   */
  lingerMs: number;
  /** Take the name back with this key store's key (see ChatClientOptions.resetKey). */
  resetKey?: boolean;
  /** Meet by this code (see ChatClientOptions.code). */
  code?: string;
}

/** How a line-mode session ended. */
export interface LineModeResult {
  /** A refusal that ends the session (room full, unsupported version), if any. */
  fatal?: string;
  /** Messages still in the outbox (they go out on the next start). */
  unsent: number;
  /** Lines not sent: too long, a slash word that is no command, or refused by the server. */
  refused: number;
  /**
   * Whether the server let us into the room at least once. A session that ends without
   * (nothing answered within `lingerMs` after the end of input, and no refusal said why)
   * reached nobody, whatever it had to send.
   */
  reached: boolean;
  /** Whether the session ended with /quit (before the end of input). */
  quit: boolean;
}

/** The peer's presence in words (client_core.ts, Presence). */
const PRESENCE_WORDS: Record<Presence, (peer: string) => string> = {
  here: (peer) => `${peer} is here`,
  away: (peer) => `${peer} is not connected`,
  came: (peer) => `${peer} is here now`,
  left: (peer) => `${peer} has left`,
};

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
      return {
        stream: "out",
        text: `${m.sender}: ${printable(m.text ?? `[${m.problem}]`)}`,
      };
    }
    case "held":
      if (event.awaitingCode) {
        return {
          stream: "err",
          text: `held back a message from ${event.sender} until the code confirms their key ` +
            `(SHA-256 ${event.fingerprint})`,
        };
      }
      return {
        stream: "err",
        text: `!!! held back a message signed as ${event.sender} under a key you have not ` +
          `accepted (SHA-256 ${event.fingerprint}); whoever holds that key wrote it. Compare ` +
          `the key with ${event.sender} over another channel; /accept-key ` +
          `${event.fingerprint.slice(0, 8)} shows it.`,
      };
    case "key_restored":
      return {
        stream: "err",
        text: `${event.peer} is back on the key you accepted (SHA-256 ${event.fingerprint}); ` +
          "messages go out under it again",
      };
    case "key":
      if (event.awaitingCode) {
        return {
          stream: "err",
          text: event.changed
            ? `!!! WARNING: ${event.peer}'s key CHANGED (new SHA-256 ${event.fingerprint}); ` +
              "nothing is sent, and nothing signed by it is shown, until the code confirms it."
            : `key agreed with ${event.peer}; waiting for the code to confirm it`,
        };
      }
      return {
        stream: "err",
        text: event.changed
          ? `!!! WARNING: ${event.peer}'s key CHANGED (new SHA-256 ${event.fingerprint})` +
            (event.reset
              ? `: the name was taken back without the old key, as after a lost key store, ` +
                `by ${event.peer} or by someone else. `
              : ". ") +
            "Compare it with them over another channel; if it differs, someone is in the " +
            "middle. Nothing is sent, and nothing signed by it is shown, until you type " +
            `/accept-key ${event.fingerprint.slice(0, 8)}.`
          : `key agreed with ${event.peer}; /key shows its SHA-256`,
      };
    case "restored_key":
      return restoredKeyText(event);
    case "code": {
      const text = codeText(event);
      return text === undefined ? undefined : { stream: "err", text };
    }
    case "state":
      return { stream: "err", text: `[${event.state}${event.detail ? ` ${event.detail}` : ""}]` };
    case "welcome":
      return {
        stream: "err",
        text: `[in room ${room} as party ${event.party}${
          event.peer ? `, with ${event.peer}` : ", alone so far"
        }]`,
      };
    case "presence":
      return { stream: "err", text: `[${PRESENCE_WORDS[event.presence](event.peer)}]` };
    case "notice":
      return { stream: "err", text: printable(event.text) };
    case "fatal":
      return { stream: "err", text: `duet chat: ${printable(event.text)}` };
  }
}

/** What line mode says of a key a restarted client holds (ClientEvent `restored_key`). */
function restoredKeyText(
  event: Extract<ClientEvent, { type: "restored_key" }>,
): { stream: "err"; text: string } | undefined {
  if (event.codeFailed) {
    return {
      stream: "err",
      text: `!!! WARNING: a code run failed against the peer's key (SHA-256 ` +
        `${event.fingerprint}): nothing is sent to it, and nothing signed by it is shown. ` +
        "Start with --code and the right code to confirm it, or compare it with your " +
        `peer and type /accept-key ${event.fingerprint.slice(0, 8)}.`,
    };
  }
  // With a code, the run says what it waits for.
  if (!event.pending || event.awaitingCode) return undefined;
  return {
    stream: "err",
    text: `!!! WARNING: the peer's key (SHA-256 ${event.fingerprint}) is not trusted yet: ` +
      "nothing is sent until you compare it with your peer and type /accept-key " +
      `${event.fingerprint.slice(0, 8)}, or a code confirms it (--code).`,
  };
}

/** A code event in words (ClientEvent `code`). */
export function codeText(event: Extract<ClientEvent, { type: "code" }>): string | undefined {
  const peer = event.peer ?? "your peer";
  if (event.state === "failed") return undefined; // the fatal line that follows says it
  if (event.state === "waiting") {
    return event.peer
      ? `[code: waiting for ${peer} to confirm the code; nothing is sent until then]`
      : "[code: waiting for the other party to come and confirm the code; nothing is sent " +
        "until then]";
  }
  return event.earlier
    ? `[code: ${peer}'s key was confirmed by a code before; nobody is in the middle (the ` +
      "code given now was not needed)]"
    : `[code confirmed: ${peer} has the same code and your keys reached each other ` +
      `unchanged, so nobody is in the middle; no fingerprint to compare (key SHA-256 ` +
      `${event.fingerprint})]`;
}

/**
 * Runs a line-mode session to its end (see the module documentation): at the end of input
 * once the outbox is empty or made no progress for `lingerMs`, on /quit, on a fatal refusal,
 * or as soon as `signal` aborts (also when it aborts right after this call).
 *
 * @returns How it ended; messages still unsent stay in the key store for the next start.
 * @throws {RangeError} when `lingerMs` is not a number of milliseconds in [0, 2^31 − 1].
 * @throws what the key store throws (a file that is no key store, say).
 *
 * @example Send two lines, print what comes
 * ```ts ignore
 * import { KeyStore, runLineMode } from "@duet/chat";
 *
 * const keyStore = await KeyStore.open("/tmp/bob-keys.sqlite");
 * const result = await runLineMode({
 *   server: "127.0.0.1:7070",
 *   name: "bob",
 *   room: "tea",
 *   keyStore,
 *   input: ReadableStream.from(["hello\n", "/key\n"]).pipeThrough(new TextEncoderStream()),
 *   out: (text) => Deno.stdout.writeSync(new TextEncoder().encode(text)),
 *   err: (text) => Deno.stderr.writeSync(new TextEncoder().encode(text)),
 *   signal: AbortSignal.timeout(30_000),
 *   lingerMs: 5_000,
 * });
 * keyStore.close();
 * console.log(result); // { unsent: 0, refused: 0 } once all was stored
 * ```
 */
export async function runLineMode(options: LineModeOptions): Promise<LineModeResult> {
  checkDuration("lingerMs", options.lingerMs, { max: MAX_TIMEOUT_MS });
  // Attached before the first await, so that a signal that comes during start-up counts.
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  if (options.signal.aborted) stop.abort();
  options.signal.addEventListener("abort", onAbort, { once: true });
  let fatal: string | undefined;
  let refused = 0;
  let shownState: string | undefined;
  let reached = false;
  let quit = false;
  let fatalSeen: () => void = () => {};
  const fatalPromise = new Promise<void>((resolve) => (fatalSeen = resolve));
  const client = new ChatClient({
    server: options.server,
    name: options.name,
    room: options.room,
    keyStore: options.keyStore,
    resetKey: options.resetKey ?? false,
    ...(options.code === undefined ? {} : { code: options.code }),
    onEvent: (event) => {
      // Refused for good by the server (too large, unstorable): as good as lost to a script.
      if (event.type === "message" && event.message.own && event.message.status === "failed") {
        refused++;
      }
      if (event.type === "fatal") {
        fatal = event.text;
        fatalSeen();
      }
      if (event.type === "welcome") reached = true;
      if (event.type === "state") {
        // Once per change of state: the retries of one outage are one "[reconnecting ...]".
        if (event.state === shownState) return;
        shownState = event.state;
      }
      const said = describeEvent(event, options.room);
      if (said) options[said.stream](`${said.text}\n`);
    },
  });
  fatalPromise.then(onAbort);
  try {
    await client.start();
    for await (const raw of readLines(options.input, stop.signal)) {
      const line = readTypedLine(raw);
      if (line.kind === "empty") continue;
      if (line.kind === "unknown") {
        options.err(`${unknownCommandText(line.word)}\n`);
        refused++;
        continue;
      }
      if (line.kind === "text") {
        await client.send(line.text).catch((error) => {
          if (!(error instanceof RangeError)) throw error;
          options.err(`${error.message}\n`); // too long: said, and the next lines go on
          refused++;
        });
        continue;
      }
      if (line.command === "/quit") {
        quit = true;
        break;
      }
      if (line.command === "/key") {
        // A script's /key comes before the key is agreed: it waits for it, as long as it
        // would wait for unsent messages.
        const hex = await until(() => client.fingerprint(), options.lingerMs, stop.signal);
        if (hex) options.out(`${hex}\n`);
        else options.err("no shared key yet: it is agreed when both of you have joined\n");
      } else if (line.command === "/accept-key") {
        const outcome = await client.acceptKey(line.argument || undefined);
        options.err(
          outcome.accepted
            ? `accepted ${outcome.peer ?? "the peer"}'s key SHA-256 ${outcome.fingerprint}` +
              (outcome.released ? `; ${outcome.released} held message(s) follow` : "") + "\n"
            : `not accepted: ${outcome.problem}\n`,
        );
      } else {
        options.err(
          "/key  /accept-key [FINGERPRINT]  /quit; // starts a line that begins with /; anything else is sent\n",
        );
      }
    }
    await settle(client, () => reached || fatal !== undefined, quit, options, stop.signal);
  } finally {
    options.signal.removeEventListener("abort", onAbort);
    await client.stop();
  }
  return {
    ...(fatal === undefined ? {} : { fatal }),
    unsent: client.unsent,
    refused,
    reached,
    quit,
  };
}

/**
 * At the end of input: a session not yet in the room waits up to `lingerMs` to get there (or
 * to be told why not, `settled`), so that even an empty input says whether the server is
 * reachable (not after /quit: the user's own end). Then it waits while the outbox empties,
 * giving up only after `lingerMs` without progress (a long piped file is paced by the
 * server, not stuck).
 */
async function settle(
  client: ChatClient,
  settled: () => boolean,
  quit: boolean,
  options: LineModeOptions,
  signal: AbortSignal,
): Promise<void> {
  if (!settled() && !quit && !signal.aborted) {
    await until(() => Promise.resolve(settled() ? true : null), options.lingerMs, signal);
    // Never in: what is unsent cannot go out, so there is nothing more to wait for.
    if (!settled()) return;
  }
  let unsent = client.unsent;
  let deadline = Date.now() + options.lingerMs;
  while (unsent > 0 && Date.now() < deadline && !signal.aborted) {
    await pause(50, signal);
    const now = client.unsent;
    if (now < unsent) deadline = Date.now() + options.lingerMs;
    unsent = now;
  }
}

/** Polls `read` until it gives a value, `ms` pass or `signal` aborts (then null). */
async function until<T>(
  read: () => Promise<T | null>,
  ms: number,
  signal: AbortSignal,
): Promise<T | null> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (value !== null || Date.now() >= deadline || signal.aborted) return value;
    await pause(50, signal);
  }
}

/** Resolves after `ms`, or as soon as `signal` aborts (at once if it has). */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    if (signal.aborted) done();
  });
}

/**
 * `stream` as lines, ending at its end or when `signal` aborts: also when it aborted after
 * this call and before the first line was asked for (nothing is read then), and while a line
 * is being read or handled (none after it is given). The stream is cancelled at the end.
 */
export async function* readLines(
  stream: ReadableStream<Uint8Array>,
  signal: AbortSignal,
): AsyncGenerator<string> {
  if (signal.aborted) {
    await stream.cancel().catch(() => {});
    return;
  }
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let onAbort = () => {};
  const aborted = new Promise<{ done: true; value: undefined }>((resolve) => {
    onAbort = () => resolve({ done: true, value: undefined });
    signal.addEventListener("abort", onAbort, { once: true });
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
    signal.removeEventListener("abort", onAbort);
    reader.cancel().catch(() => {});
  }
}
