/**
 * The service's Prometheus metrics (prom-client), one registry per service instance.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { RendezvousEvents } from "./rendezvous.ts";

/** What the metrics read when /metrics is scraped, besides the waiting parties. */
export interface MetricSources {
  /** Payload bytes (as received) of the parties waiting now. */
  waitingBytes?: () => number;
  /**
   * The listener: whether it is in an accept outage, and how many accepts failed since the
   * start; undefined before it listens.
   */
  listener?: () => { outage: boolean; acceptFailures: number } | undefined;
}

/** The metrics of one syncpoint instance. */
export class SyncpointMetrics {
  /** The registry /metrics renders. */
  readonly #registry: Registry = new Registry();
  readonly #pairs: Counter;
  readonly #timeouts: Counter;
  readonly #departures: Counter;
  readonly #rejections: Counter<"code">;
  readonly #wait: Histogram;

  /**
   * `waiting` reads the number of parties on hold when /metrics is scraped; `sources` the
   * other gauges (each left out when its source is).
   */
  constructor(waiting: () => number, sources: MetricSources = {}) {
    const registers = [this.#registry];
    new Gauge({
      name: "syncpoint_waiting_parties",
      help: "First parties on hold on this instance",
      registers,
      collect() {
        this.set(waiting());
      },
    });
    const { waitingBytes, listener } = sources;
    if (waitingBytes) {
      new Gauge({
        name: "syncpoint_waiting_payload_bytes",
        help: "Payload bytes (as received) held by the first parties on hold",
        registers,
        collect() {
          this.set(waitingBytes());
        },
      });
    }
    if (listener) {
      new Gauge({
        name: "syncpoint_accepting",
        help: "1 while new connections are accepted, 0 during an accept outage (e.g. EMFILE)",
        registers,
        collect() {
          this.set(listener()?.outage ? 0 : 1);
        },
      });
      let counted = 0;
      new Counter({
        name: "syncpoint_accept_failures_total",
        help: "Times accepting a connection failed (e.g. out of file descriptors); " +
          "the listener restarts by itself",
        registers,
        collect() {
          const failures = listener()?.acceptFailures ?? 0;
          if (failures > counted) this.inc(failures - counted);
          counted = Math.max(counted, failures);
        },
      });
    }
    this.#pairs = new Counter({
      name: "syncpoint_pairs_total",
      help: "Rendezvous completed (each counts two parties)",
      registers,
    });
    this.#timeouts = new Counter({
      name: "syncpoint_timeouts_total",
      help: "First parties answered 408 because no second party came",
      registers,
    });
    this.#departures = new Counter({
      name: "syncpoint_departures_total",
      help: "Parties that hung up before their answer: while sending the body, or waiting",
      registers,
    });
    this.#rejections = new Counter({
      name: "syncpoint_rejections_total",
      help: "Requests answered with an error, by error code",
      labelNames: ["code"],
      registers,
    });
    this.#wait = new Histogram({
      name: "syncpoint_pair_wait_seconds",
      help: "How long the first party waited until the second arrived",
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
  }

  /** Hooks for a rendezvous to report into. */
  readonly events: RendezvousEvents = {
    paired: (waitedMs) => {
      this.#pairs.inc();
      this.#wait.observe(waitedMs / 1000);
    },
    timedOut: () => this.#timeouts.inc(),
    departed: () => this.#departures.inc(),
  };

  /** Counts an error answer. */
  rejected(code: string): void {
    this.#rejections.inc({ code });
  }

  /** The Prometheus text exposition. */
  render(): Promise<string> {
    return this.#registry.metrics();
  }

  /** The content type of {@link render}'s output. */
  get contentType(): string {
    return this.#registry.contentType;
  }
}
