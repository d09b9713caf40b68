/**
 * WebTransport session flow control (draft-ietf-webtrans-http3 drafts 13–16, "Flow
 * Control"): how many streams of each kind, and how many bytes of stream body in all, one
 * side may send in a session, raised by WT_MAX_STREAMS and WT_MAX_DATA capsules on the
 * CONNECT stream. It is on only when both sides ask for it in their SETTINGS (a non-zero
 * `SETTINGS_WT_INITIAL_*`, or in drafts 13–14 a session limit above 1), and only in those
 * dialects; otherwise its capsules are ignored.
 *
 * Pure bookkeeping, both directions of one session: {@link SessionFlow} says how much the
 * peer lets us send and open (the session waits when it says 0), and what capsule to send
 * when our receive windows need raising. Safari is reported to send nothing until it has
 * credit, which is why we ask for flow control and grant wide windows.
 *
 * @module
 */
import type { Dialect } from "./dialect.ts";
import { Setting } from "./frames.ts";

/** Capsule types of session flow control. */
export const FlowCapsule = {
  WT_MAX_DATA: 0x190b4d3d,
  WT_MAX_STREAMS_BIDI: 0x190b4d3f,
  WT_MAX_STREAMS_UNI: 0x190b4d40,
  WT_DATA_BLOCKED: 0x190b4d41,
  WT_STREAMS_BLOCKED_BIDI: 0x190b4d43,
  WT_STREAMS_BLOCKED_UNI: 0x190b4d44,
  /** WebTransport over HTTP/2's per-stream capsules: forbidden over HTTP/3 (draft-16). */
  WT_MAX_STREAM_DATA: 0x190b4d3e,
  WT_STREAM_DATA_BLOCKED: 0x190b4d42,
} as const;

/** The largest stream count a WT_MAX_STREAMS capsule may carry (2^60). */
export const MAX_STREAM_COUNT = 2 ** 60;

/** Limits one side grants the other: streams of each kind and bytes of stream body. */
export interface FlowLimits {
  /** Bytes of stream body, over all the session's streams (both kinds, both ways counted apart). */
  maxData: number;
  /** Bidirectional streams that may be opened, in all (a count, not streams at once). */
  maxStreamsBidi: number;
  /** Unidirectional streams that may be opened, in all. */
  maxStreamsUni: number;
}

/**
 * What we grant by default: windows so wide they never need raising (2^53 - 1, the largest
 * count a JavaScript number holds exactly). QUIC's own limits still bound each stream, the
 * connection and the streams open at once.
 */
export const DEFAULT_WINDOWS: FlowLimits = {
  maxData: Number.MAX_SAFE_INTEGER,
  maxStreamsBidi: Number.MAX_SAFE_INTEGER,
  maxStreamsUni: Number.MAX_SAFE_INTEGER,
};

/** The SETTINGS that announce initial limits (and so ask for flow control). */
export function flowSettings(windows: FlowLimits): [number, number][] {
  return [
    [Setting.WT_INITIAL_MAX_DATA, windows.maxData],
    [Setting.WT_INITIAL_MAX_STREAMS_UNI, windows.maxStreamsUni],
    [Setting.WT_INITIAL_MAX_STREAMS_BIDI, windows.maxStreamsBidi],
  ];
}

/** Whether a side's SETTINGS ask for flow control in `dialect`. */
function asks(dialect: Dialect, settings: ReadonlyMap<number, number>): boolean {
  return (settings.get(Setting.WT_INITIAL_MAX_DATA) ?? 0) > 0 ||
    (settings.get(Setting.WT_INITIAL_MAX_STREAMS_UNI) ?? 0) > 0 ||
    (settings.get(Setting.WT_INITIAL_MAX_STREAMS_BIDI) ?? 0) > 0 ||
    (dialect === "draft14" && (settings.get(Setting.WT_MAX_SESSIONS) ?? 0) > 1);
}

/** Whether flow control is on for a session in `dialect`: both sides asked for it. */
export function flowControlEnabled(
  dialect: Dialect,
  ours: ReadonlyMap<number, number>,
  theirs: ReadonlyMap<number, number>,
): boolean {
  return (dialect === "draft14" || dialect === "draft16") && asks(dialect, ours) &&
    asks(dialect, theirs);
}

/** The limits a side's SETTINGS grant at the start (0 where absent). */
export function initialLimits(settings: ReadonlyMap<number, number>): FlowLimits {
  return {
    maxData: settings.get(Setting.WT_INITIAL_MAX_DATA) ?? 0,
    maxStreamsBidi: settings.get(Setting.WT_INITIAL_MAX_STREAMS_BIDI) ?? 0,
    maxStreamsUni: settings.get(Setting.WT_INITIAL_MAX_STREAMS_UNI) ?? 0,
  };
}

/** A stream kind. */
export type StreamKind = "bidi" | "uni";

/** A capsule to send: its type and its one varint value. */
export interface FlowSignal {
  /** The capsule type (one of {@link FlowCapsule}). */
  type: number;
  /** Its value: a byte count or a stream count. */
  value: number;
}

/** The peer broke flow control: the session ends with WT_FLOW_CONTROL_ERROR. */
export class FlowControlError extends Error {
  /** Always "FlowControlError". */
  override name = "FlowControlError";
}

/**
 * Flow control of one session, both directions. Sending: {@link takeStream} and
 * {@link takeData} spend the peer's credit, {@link onCapsule} raises it. Receiving:
 * {@link receivedStream} and {@link receivedData} check the peer against our windows,
 * {@link closedStream} and {@link consumedData} report what the application is done with
 * and return the capsule that raises our window, when half of it is used.
 */
export class SessionFlow {
  /** What the peer lets us send. */
  readonly #send: FlowLimits;
  /** How much of it we used. */
  #sentData = 0;
  readonly #opened = { bidi: 0, uni: 0 };
  /** Our windows, and what the peer was told it may send. */
  readonly #windows: FlowLimits;
  readonly #granted: FlowLimits;
  #receivedData = 0;
  #consumedData = 0;
  readonly #received = { bidi: 0, uni: 0 };
  readonly #closed = { bidi: 0, uni: 0 };

  /**
   * Flow control at the start of a session, from both sides' SETTINGS.
   *
   * @param peer the limits the peer's SETTINGS grant us
   * @param windows our windows, which our SETTINGS granted the peer
   */
  constructor(peer: FlowLimits, windows: FlowLimits) {
    this.#send = { ...peer };
    this.#windows = windows;
    this.#granted = { ...windows };
  }

  /**
   * Whether bytes we send need counting: false once the peer's data limit is 2^53 - 1 or
   * more, which no session reaches (counting would cost a stream layer per write for nothing).
   */
  get meterSend(): boolean {
    return this.#send.maxData < Number.MAX_SAFE_INTEGER;
  }

  /** Whether what the peer sends needs counting: false when all our windows are 2^53 - 1. */
  get meterReceive(): boolean {
    return this.#windows.maxData < Number.MAX_SAFE_INTEGER ||
      this.#windows.maxStreamsBidi < Number.MAX_SAFE_INTEGER ||
      this.#windows.maxStreamsUni < Number.MAX_SAFE_INTEGER;
  }

  /** Opens a stream of `kind` if the peer's limit allows: true, and counted; else false. */
  takeStream(kind: StreamKind): boolean {
    const limit = kind === "bidi" ? this.#send.maxStreamsBidi : this.#send.maxStreamsUni;
    if (this.#opened[kind] >= limit) return false;
    this.#opened[kind]++;
    return true;
  }

  /** Bytes of stream body we may send now, up to `wanted`; they are counted as sent. */
  takeData(wanted: number): number {
    const granted = Math.max(0, Math.min(wanted, this.#send.maxData - this.#sentData));
    this.#sentData += granted;
    return granted;
  }

  /** The capsule saying we are blocked on streams of `kind` (WT_STREAMS_BLOCKED). */
  streamsBlocked(kind: StreamKind): FlowSignal {
    return kind === "bidi"
      ? { type: FlowCapsule.WT_STREAMS_BLOCKED_BIDI, value: this.#send.maxStreamsBidi }
      : { type: FlowCapsule.WT_STREAMS_BLOCKED_UNI, value: this.#send.maxStreamsUni };
  }

  /** The capsule saying we are blocked on data (WT_DATA_BLOCKED). */
  dataBlocked(): FlowSignal {
    return { type: FlowCapsule.WT_DATA_BLOCKED, value: this.#send.maxData };
  }

  /**
   * A flow-control capsule from the peer. Returns true when it raised a limit (waiting
   * senders may go on).
   *
   * @throws {FlowControlError} a limit that does not increase, a stream limit above 2^60,
   *   or a per-stream capsule of WebTransport over HTTP/2.
   */
  onCapsule(type: number, value: number): boolean {
    const raise = (key: keyof FlowLimits, name: string) => {
      if (value <= this.#send[key]) {
        throw new FlowControlError(`${name} of ${value} does not raise ${this.#send[key]}`);
      }
      this.#send[key] = value;
      return true;
    };
    switch (type) {
      case FlowCapsule.WT_MAX_DATA:
        return raise("maxData", "WT_MAX_DATA");
      case FlowCapsule.WT_MAX_STREAMS_BIDI:
      case FlowCapsule.WT_MAX_STREAMS_UNI:
        if (value > MAX_STREAM_COUNT) {
          throw new FlowControlError(`WT_MAX_STREAMS of ${value} is above 2^60`);
        }
        return type === FlowCapsule.WT_MAX_STREAMS_BIDI
          ? raise("maxStreamsBidi", "WT_MAX_STREAMS (bidirectional)")
          : raise("maxStreamsUni", "WT_MAX_STREAMS (unidirectional)");
      case FlowCapsule.WT_STREAMS_BLOCKED_BIDI:
      case FlowCapsule.WT_STREAMS_BLOCKED_UNI:
        if (value > MAX_STREAM_COUNT) {
          throw new FlowControlError(`WT_STREAMS_BLOCKED of ${value} is above 2^60`);
        }
        return false;
      case FlowCapsule.WT_MAX_STREAM_DATA:
      case FlowCapsule.WT_STREAM_DATA_BLOCKED:
        throw new FlowControlError("Per-stream flow-control capsules are not used over HTTP/3");
      default:
        return false; // WT_DATA_BLOCKED and capsules that are not flow control
    }
  }

  /**
   * The peer opened a stream of `kind`.
   *
   * @throws {FlowControlError} past the limit we granted.
   */
  receivedStream(kind: StreamKind): void {
    const limit = kind === "bidi" ? this.#granted.maxStreamsBidi : this.#granted.maxStreamsUni;
    if (this.#received[kind] >= limit) {
      throw new FlowControlError(
        `The peer opened ${kind} stream ${this.#received[kind] + 1} of ${limit}`,
      );
    }
    this.#received[kind]++;
  }

  /**
   * The peer sent `bytes` of stream body.
   *
   * @throws {FlowControlError} past the limit we granted.
   */
  receivedData(bytes: number): void {
    this.#receivedData += bytes;
    if (this.#receivedData > this.#granted.maxData) {
      throw new FlowControlError(
        `The peer sent ${this.#receivedData} bytes; it was granted ${this.#granted.maxData}`,
      );
    }
  }

  /** A peer's stream of `kind` ended; the capsule that raises its stream limit, if due. */
  closedStream(kind: StreamKind): FlowSignal | undefined {
    this.#closed[kind]++;
    const key = kind === "bidi" ? "maxStreamsBidi" : "maxStreamsUni";
    const window = this.#windows[key];
    if (this.#granted[key] - this.#closed[kind] > window / 2) return undefined;
    this.#granted[key] = Math.min(MAX_STREAM_COUNT, this.#closed[kind] + window);
    return {
      type: kind === "bidi" ? FlowCapsule.WT_MAX_STREAMS_BIDI : FlowCapsule.WT_MAX_STREAMS_UNI,
      value: this.#granted[key],
    };
  }

  /** The application read `bytes`; the WT_MAX_DATA capsule that raises the window, if due. */
  consumedData(bytes: number): FlowSignal | undefined {
    this.#consumedData += bytes;
    const window = this.#windows.maxData;
    if (this.#granted.maxData - this.#consumedData > window / 2) return undefined;
    this.#granted.maxData = this.#consumedData + window;
    return { type: FlowCapsule.WT_MAX_DATA, value: this.#granted.maxData };
  }

  /** Counters, for tests and metrics. */
  get state(): {
    send: FlowLimits;
    sentData: number;
    opened: { bidi: number; uni: number };
    granted: FlowLimits;
    receivedData: number;
    received: { bidi: number; uni: number };
  } {
    return {
      send: { ...this.#send },
      sentData: this.#sentData,
      opened: { ...this.#opened },
      granted: { ...this.#granted },
      receivedData: this.#receivedData,
      received: { ...this.#received },
    };
  }
}
