// The wsPing connection state machine, compiled to WebAssembly (AssemblyScript).
//
// One machine per ping, addressed by a handle. The host feeds it events (the socket
// opened, a message arrived, the timer fired, ...) and performs the actions it returns.
// Every decision lives here: what to do on each event in each state, which failure
// reason applies, and that events after the ping finished are ignored. The host never
// reads the message content into WebAssembly; it only says whether a message was text.
//
// Memory is static (no allocator at run time): the states of CAPACITY machines and a
// stack of free handles, so a million sequential pings use the same bytes.

// States
const FREE: u8 = 0;
const CONNECTING: u8 = 1;
const SENT: u8 = 2;
const ANSWERED: u8 = 3;
const FAILED: u8 = 4;
const TIMED_OUT: u8 = 5;
const ABORTED: u8 = 6;

// Events (keep in sync with ../machine.ts)
const EVENT_OPEN: i32 = 1;
const EVENT_TEXT: i32 = 2;
const EVENT_BINARY: i32 = 3;
const EVENT_ERROR: i32 = 4;
const EVENT_CLOSE: i32 = 5;
const EVENT_TIMEOUT: i32 = 6;
const EVENT_ABORT: i32 = 7;

// Actions, as bits of the result; the failure reason sits in bits 8-15.
const ACTION_SEND: i32 = 1; // send the message
const ACTION_RESOLVE: i32 = 2; // resolve with the message just received
const ACTION_REJECT: i32 = 4; // reject with the reason
const ACTION_CLOSE: i32 = 8; // close the socket
const ACTION_FINISH: i32 = 16; // stop the timer, drop listeners, release the handle

// Failure reasons
const REASON_CONNECT: i32 = 1; // the connection failed before it opened
const REASON_CLOSED: i32 = 2; // closed before any message arrived
const REASON_TIMEOUT: i32 = 3;
const REASON_ABORTED: i32 = 4;
const REASON_BINARY: i32 = 5; // the first message was binary
const REASON_ERROR: i32 = 6; // a socket error after it opened

const CAPACITY: i32 = 65536;
const states = new StaticArray<u8>(CAPACITY);
const free = new StaticArray<i32>(CAPACITY);
let freeCount: i32 = 0;
let nextUnused: i32 = 0;
let live: i32 = 0;

/** Starts a machine in CONNECTING; returns its handle, or -1 when CAPACITY are live. */
export function create(): i32 {
  let handle: i32;
  if (freeCount > 0) {
    freeCount--;
    handle = unchecked(free[freeCount]);
  } else if (nextUnused < CAPACITY) {
    handle = nextUnused++;
  } else {
    return -1;
  }
  unchecked((states[handle] = CONNECTING));
  live++;
  return handle;
}

function fail(handle: i32, state: u8, reason: i32, close: bool): i32 {
  unchecked((states[handle] = state));
  return ACTION_REJECT | ACTION_FINISH | (close ? ACTION_CLOSE : 0) | (reason << 8);
}

/** Feeds an event to a machine; returns the actions for the host (0: ignore it). */
export function dispatch(handle: i32, event: i32): i32 {
  if (handle < 0 || handle >= CAPACITY) return 0;
  const state = unchecked(states[handle]);
  if (state != CONNECTING && state != SENT) return 0; // finished or free: late event
  if (event == EVENT_TIMEOUT) return fail(handle, TIMED_OUT, REASON_TIMEOUT, true);
  if (event == EVENT_ABORT) return fail(handle, ABORTED, REASON_ABORTED, true);
  if (state == CONNECTING) {
    if (event == EVENT_OPEN) {
      unchecked((states[handle] = SENT));
      return ACTION_SEND;
    }
    if (event == EVENT_ERROR || event == EVENT_CLOSE) {
      return fail(handle, FAILED, REASON_CONNECT, event == EVENT_ERROR);
    }
    return 0; // no message can arrive before the socket opens
  }
  // SENT: the first message decides.
  if (event == EVENT_TEXT) {
    unchecked((states[handle] = ANSWERED));
    return ACTION_RESOLVE | ACTION_CLOSE | ACTION_FINISH;
  }
  if (event == EVENT_BINARY) return fail(handle, FAILED, REASON_BINARY, true);
  if (event == EVENT_ERROR) return fail(handle, FAILED, REASON_ERROR, true);
  if (event == EVENT_CLOSE) return fail(handle, FAILED, REASON_CLOSED, false);
  return 0;
}

/** The state of a machine (0 free, 1 connecting, 2 sent, 3 answered, 4 failed, 5 timed out, 6 aborted). */
export function state(handle: i32): i32 {
  if (handle < 0 || handle >= CAPACITY) return FREE;
  return unchecked(states[handle]);
}

/** Returns a finished machine's handle for reuse. */
export function release(handle: i32): void {
  if (handle < 0 || handle >= CAPACITY) return;
  const current = unchecked(states[handle]);
  if (current == FREE || current == CONNECTING || current == SENT) return;
  unchecked((states[handle] = FREE));
  unchecked((free[freeCount] = handle));
  freeCount++;
  live--;
}

/** Machines created and not yet released. */
export function liveCount(): i32 {
  return live;
}
