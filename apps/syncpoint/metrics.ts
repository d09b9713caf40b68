/**
 * The service's Prometheus metrics (prom-client), one registry per service instance.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { RendezvousEvents } from "./rendezvous.ts";

/** The metrics of one syncpoint instance. */
export class SyncpointMetrics {
  /** The registry /metrics renders. */
  readonly registry: Registry = new Registry();
  readonly #pairs: Counter;
  readonly #timeouts: Counter;
  readonly #departures: Counter;
  readonly #rejections: Counter<"code">;
  readonly #wait: Histogram;

  /** `waiting` reads the number of parties on hold when /metrics is scraped. */
  constructor(waiting: () => number) {
    const registers = [this.registry];
    new Gauge({
      name: "syncpoint_waiting_parties",
      help: "First parties on hold on this instance",
      registers,
      collect() {
        this.set(waiting());
      },
    });
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
      help: "Waiting parties that hung up before a second party came",
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
    return this.registry.metrics();
  }

  /** The content type of {@link render}'s output. */
  get contentType(): string {
    return this.registry.contentType;
  }
}
