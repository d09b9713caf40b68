/**
 * The host's view of the WebAssembly state machine (assembly/machine.ts): loading the
 * embedded module once, and the event, action and reason codes it speaks.
 *
 * @module
 */
import { MACHINE_WASM_BASE64 } from "./_wasm.ts";

/** Events the host feeds to a machine. */
export const Event = {
  open: 1,
  text: 2,
  binary: 3,
  error: 4,
  close: 5,
  timeout: 6,
  abort: 7,
} as const;

/** Bits of a machine's answer. */
export const Action = {
  send: 1,
  resolve: 2,
  reject: 4,
  close: 8,
  finish: 16,
} as const;

/** Failure reasons, in bits 8-15 of an answer. */
export const Reason = {
  1: "connection_failed",
  2: "closed",
  3: "timeout",
  4: "aborted",
  5: "binary_message",
  6: "socket_error",
} as const;

/** The machine's exports. */
export interface Machine {
  create(): number;
  dispatch(handle: number, event: number): number;
  state(handle: number): number;
  release(handle: number): void;
  liveCount(): number;
}

let loading: Promise<Machine> | undefined;

function decodeBase64(text: string): Uint8Array {
  // atob exists on every target runtime (Uint8Array.fromBase64 does not yet on Node 20).
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * The machine, instantiated on first use and shared afterwards. Asynchronous, since
 * browsers refuse to compile modules over 4 KB synchronously on the main thread.
 */
export function loadMachine(): Promise<Machine> {
  loading ??= WebAssembly.compile(decodeBase64(MACHINE_WASM_BASE64) as BufferSource)
    .then((module) => WebAssembly.instantiate(module, {}))
    .then((instance) => instance.exports as unknown as Machine);
  return loading;
}

/** The embedded module's bytes (for tests and benchmarks). */
export function machineBytes(): Uint8Array {
  return decodeBase64(MACHINE_WASM_BASE64);
}
