/**
 * One chat connection's lifecycle on the server: admission (the caps, the shutdown), its
 * timers (idle, handshake), the loop that hands its frames to the pure core
 * (server_core.ts) as fast as its limits allow, and letting go of everything it held. Its
 * way in is server_inbox.ts, its way out server_output.ts, and the effects the core asks
 * for run in server_effects.ts.
 *
 * @module
 */
import type { AddressCounter } from "@duet/net/address";
import { initialState, refuse, type State, type Step, step } from "./server_core.ts";
import type { Event } from "./server_core.ts";
import type { ChatServerConfig } from "./server.ts";
import {
  type EffectContext,
  type EffectHost,
  EffectRunner,
  MAX_HISTORY_READS,
} from "./server_effects.ts";
import { Inbox } from "./server_inbox.ts";
import { Changes, ConnectionOutput, type ServerCounters } from "./server_output.ts";

/** What every connection of one server is served with. */
export interface ConnectionContext extends EffectContext {
  config: Pick<
    ChatServerConfig,
    | "messagesPerSecond"
    | "idleTimeoutMs"
    | "handshakeTimeoutMs"
    | "maxConnections"
    | "outputWatermarkBytes"
    | "outputBudgetBytes"
  >;
  counters: ServerCounters;
  /** Connections per client address, with its cap. */
  perAddress: AddressCounter;
  /** The sockets open now, admitted or not. */
  open: Set<Deno.TcpConn>;
  /** True once the server is stopping: new connections are refused. */
  stopping: () => boolean;
}

/**
 * Serves one accepted connection until it ends; it is counted in `context.open` from now.
 *
 * @throws what taking the socket's writer throws (the caller logs it).
 */
export async function serveConnection(
  conn: Deno.TcpConn,
  context: ConnectionContext,
): Promise<void> {
  context.open.add(conn);
  // Awaited in here: a failure to set the connection up rejects, it never throws at the caller.
  await new ServerConnection(conn, context).serve();
}

/** One TCP connection: the core's state, what runs its effects, its way in and out. */
class ServerConnection implements EffectHost {
  /** The core's state (server_core.ts). */
  state: State;
  room?: string;
  name?: string;
  readonly address: string;
  readonly changes: Changes = new Changes();
  readonly output: ConnectionOutput;
  readonly #conn: Deno.TcpConn;
  readonly #context: ConnectionContext;
  readonly #effects: EffectRunner;
  /** No frame is handled before this (`performance.now()` time): the send rate's pause. */
  #pauseUntil = 0;
  #idle: ReturnType<typeof setTimeout> | undefined;
  #handshake: ReturnType<typeof setTimeout> | undefined;

  constructor(conn: Deno.TcpConn, context: ConnectionContext) {
    this.#conn = conn;
    this.#context = context;
    this.address = (conn.remoteAddr as Deno.NetAddr).hostname;
    this.output = new ConnectionOutput({
      conn,
      address: this.address,
      limits: {
        watermarkBytes: context.config.outputWatermarkBytes,
        budgetBytes: context.config.outputBudgetBytes,
      },
      counters: context.counters,
      changes: this.changes,
      onClose: () => this.#effects.wakeAll(),
    });
    this.#effects = new EffectRunner(this, context);
    this.state = initialState({ messagesPerSecond: context.config.messagesPerSecond });
  }

  dispatch(event: Event): void {
    this.apply(step(this.state, event));
  }

  apply(result: Step): void {
    this.state = result.state;
    for (const reply of result.replies) this.output.write(reply);
    for (const effect of result.effects) this.#effects.run(effect);
  }

  pauseUntil(until: number): void {
    this.#pauseUntil = Math.max(this.#pauseUntil, until);
  }

  close(): void {
    this.output.close();
  }

  /** Admits the connection or refuses it, serves its frames, then lets go of all it held. */
  async serve(): Promise<void> {
    const { perAddress, rooms, open } = this.#context;
    const admitted = perAddress.tryAcquire(this.address);
    rooms.add(this);
    try {
      const refusal = this.#refusal(admitted);
      if (refusal) return this.apply(refusal);
      this.#armIdle();
      this.#handshake = setTimeout(() => {
        if (this.state.phase !== "open") this.dispatch({ type: "idle" });
      }, this.#context.config.handshakeTimeoutMs);
      await this.#handleFrames();
    } finally {
      clearTimeout(this.#idle);
      clearTimeout(this.#handshake);
      rooms.remove(this);
      if (admitted) perAddress.release(this.address);
      open.delete(this.#conn);
      this.close();
    }
  }

  /** The refusal of a connection the server does not take now, if it is one. */
  #refusal(admitted: boolean): Step | undefined {
    const { config, counters, open, perAddress, stopping } = this.#context;
    if (stopping()) return refuse("shutting_down", "the server is shutting down");
    if (config.maxConnections && open.size > config.maxConnections) {
      counters.refusedConnections++;
      return refuse(
        "too_many_connections",
        `the server holds its maximum of ${config.maxConnections} connections; try again ` +
          "shortly",
      );
    }
    if (!admitted) {
      const held = perAddress.held(this.address);
      counters.refusedConnections++;
      return refuse(
        "too_many_connections",
        `already ${held} connection${held === 1 ? "" : "s"} from your address`,
      );
    }
    return undefined;
  }

  /** (Re)starts the idle timer: whole frames count as activity. */
  #armIdle(): void {
    clearTimeout(this.#idle);
    this.#idle = setTimeout(
      () => this.dispatch({ type: "idle" }),
      this.#context.config.idleTimeoutMs,
    );
  }

  /**
   * Hands the frames read to the core one by one, each when {@link #mayHandle} says, until
   * the connection closes or the client's input ends or breaks.
   */
  async #handleFrames(): Promise<void> {
    const output = this.output;
    const inbox = new Inbox(this.#conn, this.changes, () => output.closed, () => this.#armIdle());
    const pumping = inbox.pump();
    handling: while (!output.closed && inbox.input !== "reset") {
      const batch = inbox.first;
      if (!batch) {
        if (inbox.input !== "open") break;
        await this.changes.changed();
        continue;
      }
      while (batch.items.length) {
        if (!(await this.#mayHandle(inbox))) break handling;
        const item = batch.items.shift()!;
        if ("error" in item) {
          this.dispatch({ type: "frame_error", error: item.error });
          break handling;
        }
        this.dispatch({ type: "frame", payload: item.payload, now: performance.now() });
      }
      inbox.shift();
    }
    // A client that ended its input gets the answers to what was handled, then the close;
    // one that reset gets nothing (it is gone). The idle timer bounds the wait.
    while (inbox.input === "ended" && !output.closed && this.#effects.inFlight > 0) {
      await this.changes.changed();
    }
    // The pump ends with the socket, closed by the caller.
    pumping.catch(() => {});
  }

  /**
   * Waits until the next frame may be handled: after the pause the one before asked for
   * (a burst that arrived in one chunk is paced like one that arrived frame by frame),
   * while the client reads what it was sent (the watermark), with at most
   * MAX_HISTORY_READS history reads running (measured: 2,000 pipelined requests stalled
   * every room for 90 s). False when it is not to be handled: the connection closed, or
   * the client's input ended while the frame was held back.
   *
   * A client that ended its input (a FIN) may have closed or only half-closed: nothing
   * tells them apart until a write to it fails. Frames it sent that the server takes in at
   * once are handled and answered (a half-closed client can still read its answers, as
   * RFC 9112 lets an HTTP client half-close and read its response); frames held back by
   * its pace, the watermark or its history reads are dropped, as unread bytes are when a
   * connection closes: handling them would hold its slot for as long as the limits say,
   * for a client that is most likely gone, and let a client escape its pace by ending its
   * input. A client's outbox sends again what was not answered.
   */
  async #mayHandle(inbox: Inbox): Promise<boolean> {
    for (;;) {
      if (this.output.closed || inbox.input === "reset") return false;
      const wait = this.#pauseUntil - performance.now();
      if (wait <= 0 && this.output.mayRead && this.#effects.reads < MAX_HISTORY_READS) {
        return true;
      }
      if (inbox.input !== "open") return false;
      await this.changes.changed(wait > 0 ? wait : undefined);
    }
  }
}
