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
import { Action, Event, loadMachine, Reason } from "./machine.ts";

/** Options of {@link wsPing}. */
export interface WsPingOptions {
  /** Give up after this many milliseconds, counted from the call (default 10,000). */
  timeoutMs?: number;
  /** Abort the ping; it rejects with code `aborted` and the signal's reason as `cause`. */
  signal?: AbortSignal;
  /** A WebSocket constructor for runtimes without a global one (Node 20: npm `ws`). */
  WebSocket?: WebSocketConstructor;
}

/** The part of the WebSocket constructor wsPing uses (the global one, or npm `ws`). */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The part of a WebSocket wsPing uses. */
export interface WebSocketLike {
  binaryType: string;
  send(data: string): void;
  close(code?: number): void;
  addEventListener(type: string, listener: (event: { data?: unknown }) => void): void;
  removeEventListener(type: string, listener: (event: { data?: unknown }) => void): void;
}

/** How long {@link wsPing} waits by default, in milliseconds. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Why a ping failed. `code` is one of: `invalid_url`, `invalid_scheme`, `invalid_timeout`,
 * `no_websocket` (no constructor on this runtime), `connection_failed` (refused, DNS,
 * TLS or handshake failure: browsers do not say which), `closed` (closed before any
 * message), `socket_error` (an error after the socket opened), `timeout`, `aborted`,
 * `binary_message` (the first message was binary: wsPing speaks text), `too_many_pings`.
 */
export class WsPingError extends Error {
  override name = "WsPingError";
  /** The stable error code. */
  readonly code: string;
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
 * with the first message received. Rejects with {@link WsPingError}. Leaves nothing
 * behind: the socket is closed, the timer cleared and every listener removed once the
 * promise settles; events after that are ignored.
 */
export async function wsPing(
  endpoint: string,
  message: string,
  options: WsPingOptions = {},
): Promise<string> {
  const url = parseEndpoint(endpoint);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new WsPingError(
      "invalid_timeout",
      `timeoutMs must be a positive number, got ${timeoutMs}`,
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
  if (signal?.aborted) {
    throw new WsPingError("aborted", messages["aborted"]!, { cause: signal.reason });
  }
  const started = Date.now();
  const machine = await loadMachine();
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
    const perform = (actions: number) => {
      if (actions & Action.send) socket.send(message);
      if (actions & Action.finish) {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        for (const [type, listener] of listeners) socket.removeEventListener(type, listener);
        machine.release(handle);
      }
      if (actions & Action.close) {
        try {
          socket.close(1000);
        } catch { /* already closing */ }
      }
      if (actions & Action.resolve) resolve(received as string);
      if (actions & Action.reject) {
        const code = Reason[((actions >> 8) & 0xff) as keyof typeof Reason];
        reject(
          new WsPingError(
            code,
            code === "timeout" ? `No message arrived within ${timeoutMs} ms` : messages[code]!,
            code === "aborted" ? { cause: signal?.reason } : undefined,
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
    const timer = setTimeout(on(Event.timeout), Math.max(0, timeoutMs - (Date.now() - started)));
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
