/**
 * wsping: open a WebSocket, send one text message, resolve with the first message that
 * comes back. The connection state machine runs in WebAssembly (compiled from
 * AssemblyScript, embedded in this module); this file gives it a socket and a timer.
 * Web APIs only: runs on Deno, Node (>= 22, or 20 with `ws` or --experimental-websocket),
 * Bun and browsers.
 *
 * @example
 * ```ts ignore
 * import { wsPing } from "./mod.ts";
 * const reply = await wsPing("ws://127.0.0.1:8443/ws", "hello", { timeoutMs: 2000 });
 * ```
 *
 * @module
 */
import { setDeadline } from "./_deadline.ts";
import { Action, Event, loadMachine, Reason } from "./machine.ts";

/** Options of {@link wsPing}. */
export interface WsPingOptions {
  /**
   * Give up after this many milliseconds, counted from the call (module loading and connect
   * included): a positive finite number, fractions allowed, any size (delays past
   * `setTimeout`'s 2^31 − 1 ms are waited in steps). Default {@link DEFAULT_TIMEOUT_MS}
   * (10,000 ms). Anything else rejects with code `invalid_timeout`.
   */
  timeoutMs?: number;
  /**
   * Abort the ping, whenever the signal fires (before or after the call, while loading,
   * connecting or waiting): it rejects with code `aborted` and the signal's reason as `cause`.
   */
  signal?: AbortSignal;
  /** A WebSocket constructor for runtimes without a global one (Node 20: npm `ws`). */
  WebSocket?: WebSocketConstructor;
}

/** The part of the WebSocket constructor wsPing uses (the global one, or npm `ws`). */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The part of a WebSocket wsPing uses (the Web `WebSocket`, or npm `ws`). */
export interface WebSocketLike {
  /** Set to `"arraybuffer"` by wsPing, so that a binary reply is not read as a Blob. */
  binaryType: string;
  /** Sends one text message. */
  send(data: string): void;
  /** Starts the closing handshake (wsPing sends code 1000). */
  close(code?: number): void;
  /** Listens for `open`, `message` (text in `event.data`), `error` and `close`. */
  addEventListener(type: string, listener: (event: { data?: unknown }) => void): void;
  /** Removes a listener added with `addEventListener`. */
  removeEventListener(type: string, listener: (event: { data?: unknown }) => void): void;
}

/** How long {@link wsPing} waits by default, in milliseconds (10,000 ms). */
export const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Why a ping failed. `code` is one of: `invalid_url`, `invalid_scheme`, `invalid_timeout`,
 * `no_websocket` (no constructor on this runtime), `connection_failed` (refused, DNS,
 * TLS or handshake failure: browsers do not say which), `closed` (closed before any
 * message), `socket_error` (an error after the socket opened), `timeout`, `aborted`
 * (`cause` is the signal's reason), `binary_message` (the first message was binary: wsPing
 * speaks text), `too_many_pings` (65,536 pings in flight at once).
 *
 * @example Tell a timeout from other failures
 * ```ts ignore
 * import { wsPing, WsPingError } from "./mod.ts";
 * const reply = await wsPing("ws://127.0.0.1:8443/ws", "hi", { timeoutMs: 500 }).catch(
 *   (error) => error instanceof WsPingError && error.code === "timeout" ? null : Promise.reject(error),
 * );
 * ```
 */
export class WsPingError extends Error {
  /** Always `"WsPingError"`. */
  override name = "WsPingError";
  /** The stable error code (see the class documentation). */
  readonly code: string;
  /**
   * Makes an error; wsPing is the only caller that needs to.
   *
   * @param code The stable error code.
   * @param message A human-readable explanation (English, may change).
   * @param options `cause`: the underlying error or the abort reason.
   */
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

const messages: Record<string, string> = {
  connection_failed: "Cannot connect to the WebSocket endpoint",
  closed: "The connection closed before any message arrived",
  socket_error: "The connection failed after it opened",
  timeout: "No message arrived in time",
  aborted: "The ping was aborted",
  binary_message: "The first message was binary; wsPing expects text",
};

/**
 * Opens a WebSocket to `endpoint` (ws: or wss:), sends `message` as text, and resolves
 * with the first message received, as text. Leaves nothing behind: the socket is closed,
 * the timer cleared and every listener removed once the promise settles (but a no-op
 * `error` listener on a socket closed by wsPing); events after that are ignored.
 *
 * `options.signal` is honoured whenever it aborts: before the call, synchronously after it,
 * while the WebAssembly module loads, while connecting or while waiting for the reply. The
 * promise then rejects with code `aborted` (the signal's reason as `cause`) and no socket
 * is opened if none was yet. `options.timeoutMs` may be any positive finite number of
 * milliseconds, including delays beyond `setTimeout`'s 2^31 − 1 ms (about 24.8 days).
 *
 * @param endpoint An absolute `ws:` or `wss:` URL.
 * @param message The text to send once the connection is open.
 * @param options Timeout in milliseconds, abort signal, WebSocket constructor.
 * @returns The first message the endpoint sends back (a string).
 * @throws {WsPingError} (as a rejection, never synchronously) with `code`: `invalid_url`,
 *   `invalid_scheme`, `invalid_timeout` (`timeoutMs` not a positive finite number),
 *   `no_websocket`, `connection_failed`, `closed`, `socket_error`, `timeout`, `aborted`,
 *   `binary_message` or `too_many_pings`.
 *
 * @example Ping an echo server, giving up after 2 seconds or when the user cancels
 * ```ts ignore
 * import { wsPing, WsPingError } from "./mod.ts";
 * const cancel = new AbortController();
 * try {
 *   const reply = await wsPing("ws://127.0.0.1:8443/ws", "hello", {
 *     timeoutMs: 2_000,
 *     signal: cancel.signal,
 *   });
 *   console.log(reply);
 * } catch (error) {
 *   if (error instanceof WsPingError && error.code === "timeout") console.log("no answer");
 *   else throw error;
 * }
 * ```
 */
export async function wsPing(
  endpoint: string,
  message: string,
  options: WsPingOptions = {},
): Promise<string> {
  const started = performance.now();
  const url = parseEndpoint(endpoint);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== "number" || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new WsPingError(
      "invalid_timeout",
      `timeoutMs must be a positive finite number of milliseconds, got ${timeoutMs}`,
    );
  }
  const WebSocketClass = options.WebSocket ??
    (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!WebSocketClass) {
    throw new WsPingError(
      "no_websocket",
      "This runtime has no global WebSocket: pass options.WebSocket (e.g. from npm ws)",
    );
  }
  const { signal } = options;
  // The signal is watched from here on, without a gap: while the module loads (the only
  // await), then by the listener added next to the socket's.
  const machine = await untilAborted(loadMachine(), signal);
  // An abort queued between the module's arrival and this continuation.
  if (signal?.aborted) throw abortedError(signal);
  const handle = machine.create();
  if (handle < 0) throw new WsPingError("too_many_pings", "Too many pings in flight (65,536)");

  return new Promise<string>((resolve, reject) => {
    let socket: WebSocketLike;
    try {
      socket = new WebSocketClass(url);
    } catch (error) {
      machine.dispatch(handle, Event.error);
      machine.release(handle);
      reject(
        new WsPingError("connection_failed", String((error as Error)?.message ?? error), {
          cause: error,
        }),
      );
      return;
    }
    socket.binaryType = "arraybuffer";
    let received: unknown;
    let cancelTimer = () => {};
    const perform = (actions: number) => {
      if (actions & Action.send) socket.send(message);
      if (actions & Action.finish) {
        cancelTimer();
        signal?.removeEventListener("abort", onAbort);
        for (const [type, listener] of listeners) socket.removeEventListener(type, listener);
        machine.release(handle);
      }
      if (actions & Action.close) {
        // Closing before the socket opened makes npm ws emit an `error` event later, which
        // it throws as an uncaught exception when nothing listens: leave one no-op listener
        // on the socket being discarded (browsers and Deno report that close as an error too).
        socket.addEventListener("error", ignore);
        try {
          socket.close(1000);
        } catch { /* already closing */ }
      }
      if (actions & Action.resolve) resolve(received as string);
      if (actions & Action.reject) {
        const code = Reason[((actions >> 8) & 0xff) as keyof typeof Reason];
        reject(
          code === "aborted" ? abortedError(signal) : new WsPingError(
            code,
            code === "timeout" ? `No message arrived within ${timeoutMs} ms` : messages[code]!,
          ),
        );
      }
    };
    const on = (event: number) => () => perform(machine.dispatch(handle, event));
    const listeners: [string, (event: { data?: unknown }) => void][] = [
      ["open", on(Event.open)],
      ["message", (event) => {
        received = event.data;
        perform(
          machine.dispatch(handle, typeof event.data === "string" ? Event.text : Event.binary),
        );
      }],
      ["error", on(Event.error)],
      ["close", on(Event.close)],
    ];
    for (const [type, listener] of listeners) socket.addEventListener(type, listener);
    const onAbort = on(Event.abort);
    signal?.addEventListener("abort", onAbort, { once: true });
    cancelTimer = setDeadline(
      on(Event.timeout),
      Math.max(0, timeoutMs - (performance.now() - started)),
    );
    // A WebSocket constructor is caller code (options.WebSocket) and may have aborted the
    // signal while the socket was made, before the listener above was there to hear it.
    if (signal?.aborted) onAbort();
  });
}

function ignore(): void {}

function abortedError(signal: AbortSignal | undefined): WsPingError {
  return new WsPingError("aborted", messages["aborted"]!, { cause: signal?.reason });
}

/** `promise`, or a rejection with `aborted` as soon as `signal` aborts (at once if it has). */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortedError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortedError(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function parseEndpoint(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new WsPingError("invalid_url", `Not an absolute URL: ${JSON.stringify(endpoint)}`);
  }
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    throw new WsPingError("invalid_scheme", `Expected a ws: or wss: URL, got ${url.protocol}`);
  }
  return url.href;
}
