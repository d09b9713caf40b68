/**
 * The syncpoint service as a process part: the handler behind packages/net/http1.ts (which
 * sees a party leave whatever it sent, keeps half-closed parties, and survives running out
 * of file descriptors), and a drain: readiness goes false first, then the listener stops and
 * every waiting party is answered 503 (clients retry elsewhere).
 *
 * @module
 */
import { withDefaults } from "@duet/core/defaults";
import { checkDuration } from "@duet/core/duration";
import { getLogger } from "@logtape/logtape";
import { type Http1Server, serveHttp1 } from "@duet/net/http1";
import {
  type Answer,
  badRequestAnswer,
  createApp,
  createArrivals,
  type HandlerOptions,
  WAIT_PATH,
} from "./handler.ts";
import type { DirectExchange } from "@duet/net/http1";
import { SyncpointMetrics } from "./metrics.ts";
import { LocalRendezvous, type Rendezvous } from "./rendezvous.ts";
import type { RunningService } from "@duet/core/service";
import { delay } from "@duet/core/delay";
import { MAX_TIMEOUT_MS } from "@duet/core/long-timeout";

/** Service settings; every field has a default in {@link DEFAULTS}. */
export interface SyncpointConfig {
  /** Interface to listen on. */
  hostname: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  /**
   * How long a first party waits by default, in ms: 1 to {@link MAX_TIMEOUT_MS} (about
   * 24.8 days, `setTimeout`'s range), else startSyncpoint throws a RangeError.
   */
  defaultTimeoutMs: number;
  /** Cap on `?timeout_ms=`, in ms: 1 to {@link MAX_TIMEOUT_MS}, as `defaultTimeoutMs`. */
  maxTimeoutMs: number;
  /** Most first parties waiting at once on this instance. */
  maxWaiting: number;
  /**
   * Most payload bytes (as received) held by the waiting parties of this instance, summed;
   * past it new first parties get 503 `capacity` (second parties are still paired). 0: no
   * limit. In memory a payload takes up to twice its size (a JS string of UTF-16).
   */
  maxWaitingBytes: number;
  /**
   * Most first parties waiting at once per client address; past it 429 `too_many_waiting`.
   * 0: no limit. Behind a proxy or load balancer that hides client addresses, every client
   * shares one address: set 0 there (or limit in the proxy).
   */
  maxWaitingPerAddress: number;
  /**
   * Arrivals per second per client address (token bucket refill); past it 429
   * `rate_limited` with `Retry-After`. 0: no limit. Same caveat behind a proxy.
   */
  arrivalsPerSecond: number;
  /** Arrivals one address may make at once after a quiet spell (token bucket size). */
  arrivalBurst: number;
  /** Apply the per-address limits to loopback clients too (by default they are exempt). */
  limitLoopback: boolean;
  /** Largest payload in bytes. */
  maxPayloadBytes: number;
  /** Share the rendezvous space with other instances through this Redis server. */
  redisUrl?: string;
  /** Prefix of the Redis keys and channels (instances that pair share one prefix). */
  redisPrefix?: string;
  /**
   * Milliseconds between the start of a drain (shutdown) and the end of serving: /healthz
   * answers 503 `draining` at once so load balancers stop sending parties, while parties
   * keep being served and paired; then waiting parties are answered 503 `shutting_down`.
   * 0: no delay. At most {@link MAX_TIMEOUT_MS} (about 24.8 days), else a RangeError.
   */
  drainMs: number;
}

/** The defaults of `duet syncpoint`. */
export const DEFAULTS: SyncpointConfig = {
  hostname: "127.0.0.1",
  port: 8080,
  defaultTimeoutMs: 10_000,
  maxTimeoutMs: 60_000,
  maxWaiting: 16_000,
  maxWaitingBytes: 64 * 1024 * 1024,
  maxWaitingPerAddress: 64,
  arrivalsPerSecond: 50,
  arrivalBurst: 100,
  limitLoopback: false,
  maxPayloadBytes: 64 * 1024,
  drainMs: 0,
};

/**
 * A started service: the shape of every duet server ({@link RunningService}: `addr`,
 * `shutdown()`, `finished`) and syncpoint's own fields.
 */
export interface RunningSyncpoint extends RunningService {
  /** Base URL, e.g. http://127.0.0.1:8080 */
  readonly url: URL;
  /** The rendezvous the service pairs through. */
  readonly rendezvous: Rendezvous;
  /**
   * Drains: readiness false at once, serving for `drainMs`, then stops accepting, answers
   * waiting parties with 503 and resolves when all is done. Idempotent.
   */
  shutdown(): Promise<void>;
  /**
   * Resolves once a {@link RunningSyncpoint.shutdown} has finished (rejects with its error
   * if it failed). The service never stops by itself: an accept outage (out of file
   * descriptors) or a Redis outage is waited out, not fatal.
   */
  readonly finished: Promise<void>;
  /** True from the start of shutdown(). */
  readonly draining: boolean;
}

const log = getLogger(["duet", "syncpoint"]);

/**
 * The durations of `config` that timers use, each a number of ms from its minimum up to
 * {@link MAX_TIMEOUT_MS} (about 24.8 days).
 *
 * @throws {RangeError} naming the setting.
 */
function checkDurations(config: SyncpointConfig): void {
  const max = MAX_TIMEOUT_MS;
  checkDuration("defaultTimeoutMs", config.defaultTimeoutMs, { zero: false, max });
  checkDuration("maxTimeoutMs", config.maxTimeoutMs, { zero: false, max });
  checkDuration("drainMs", config.drainMs, { max });
  if (config.defaultTimeoutMs > config.maxTimeoutMs) {
    throw new RangeError(
      `defaultTimeoutMs (${config.defaultTimeoutMs}) must not exceed maxTimeoutMs ` +
        `(${config.maxTimeoutMs})`,
    );
  }
}

/**
 * Starts the service and resolves once it listens.
 *
 * @param overrides Settings that differ from {@link DEFAULTS}.
 * @returns The running service; stop it with `shutdown()`.
 * @throws what listening throws (`Deno.errors.AddrInUse`, `PermissionDenied`), and
 *   RangeError on invalid limits (maxWaiting < 1, a negative limit, arrivalBurst < 1) or
 *   durations (`defaultTimeoutMs`, `maxTimeoutMs` outside 1 to {@link MAX_TIMEOUT_MS},
 *   `drainMs` outside 0 to {@link MAX_TIMEOUT_MS}), before it connects or listens.
 *
 * @example
 * ```ts ignore
 * const syncpoint = await startSyncpoint({ port: 0, defaultTimeoutMs: 30_000 });
 * console.log(`listening on ${syncpoint.url}`);
 * await syncpoint.shutdown(); // waiting parties get 503 shutting_down
 * await syncpoint.finished;
 * ```
 */
export async function startSyncpoint(
  overrides: Partial<SyncpointConfig> = {},
): Promise<RunningSyncpoint> {
  const config: SyncpointConfig = withDefaults(DEFAULTS, overrides);
  checkDurations(config);
  let server: Http1Server | undefined;
  const state = { draining: false };
  // Read at a scrape, once the rendezvous exists.
  const metrics = new SyncpointMetrics(() => rendezvous.waiting, {
    waitingBytes: () => rendezvous.waitingBytes,
    listener: () => server,
  });
  const rendezvous = await openRendezvous(config, metrics);
  try {
    server = await listen(config, {
      ...config,
      rendezvous,
      metrics,
      ...(config.arrivalsPerSecond > 0
        ? { arrivalRate: { perSecond: config.arrivalsPerSecond, burst: config.arrivalBurst } }
        : {}),
      listener: {
        get outage() {
          return server?.outage ?? false;
        },
        get draining() {
          return state.draining;
        },
      },
    });
  } catch (error) {
    await rendezvous.close(); // so that a Redis connection does not outlive the failure
    throw error;
  }
  return running(config, server, rendezvous, state);
}

/** The rendezvous of `config`: shared through Redis, or in memory. */
async function openRendezvous(
  config: SyncpointConfig,
  metrics: SyncpointMetrics,
): Promise<Rendezvous> {
  const limits = {
    maxWaiting: config.maxWaiting,
    maxWaitingBytes: config.maxWaitingBytes,
    maxWaitingPerAddress: config.maxWaitingPerAddress,
  };
  if (!config.redisUrl) return new LocalRendezvous({ ...limits, events: metrics.events });
  const { RedisRendezvous } = await import("./redis_rendezvous.ts");
  return await RedisRendezvous.connect(config.redisUrl, {
    ...limits,
    events: metrics.events,
    ...(config.redisPrefix ? { prefix: config.redisPrefix } : {}),
  });
}

/** Listens with the handler of `handlerOptions`: the wait endpoint direct, the rest Hono. */
function listen(config: SyncpointConfig, handlerOptions: HandlerOptions): Promise<Http1Server> {
  const { metrics } = handlerOptions;
  const app = createApp(handlerOptions);
  const arrivals = createArrivals(handlerOptions);
  return serveHttp1({
    hostname: config.hostname,
    port: config.port,
    onError: (error) => {
      log.error("Unhandled error: {error}", { error });
      return new Response(null, { status: 500 });
    },
    onBadRequest: (status, reason) => {
      const answer = badRequestAnswer(status, reason, metrics);
      return {
        headers: { ...answer.headers, "content-type": "application/json" },
        text: JSON.stringify(answer.body),
      };
    },
    // The wait endpoint, the hot path, without Web Request and Response objects; the
    // same arrival function as the Hono route (handler.ts). Everything else goes to Hono.
    direct: (exchange) => {
      const arrival = directArrival(exchange);
      if (!arrival) return false;
      arrivals(arrival).then((answer) => respond(exchange, answer), (error) => {
        log.error("Unhandled error: {error}", { error });
        exchange.respond(500, {}, "");
      });
      return true;
    },
  }, app.fetch);
}

/** The started service around its listener and rendezvous: its URL, drain and shutdown. */
function running(
  config: SyncpointConfig,
  server: Http1Server,
  rendezvous: Rendezvous,
  state: { draining: boolean },
): RunningSyncpoint {
  const addr = server.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = new URL(`http://${host}:${addr.port}`);
  log.info("Syncpoint listening on {url} ({store})", {
    url: url.href,
    store: config.redisUrl ? "shared through Redis" : "in memory",
  });
  const finished = Promise.withResolvers<void>();
  finished.promise.catch(() => {}); // a failed shutdown is its caller's to report
  let stopping: Promise<void> | undefined;
  const stop = async () => {
    state.draining = true;
    if (config.drainMs > 0) {
      log.info("Draining: /healthz answers 503; serving for {ms} ms more", {
        ms: config.drainMs,
      });
      await delay(config.drainMs);
    }
    const waiting = rendezvous.waiting;
    const drained = server.shutdown(); // stop accepting; wait for in-flight responses
    await rendezvous.close(); // which answers the waiting parties with 503
    await drained;
    log.info(
      waiting === 1
        ? "Syncpoint stopped; {waiting} waiting party was answered 503"
        : "Syncpoint stopped; {waiting} waiting parties were answered 503",
      { waiting },
    );
  };
  return {
    url,
    addr,
    rendezvous,
    finished: finished.promise,
    get draining() {
      return state.draining;
    },
    shutdown() {
      stopping ??= stop().then(finished.resolve, (error) => {
        finished.reject(error);
        throw error;
      });
      return stopping;
    },
  };
}

const PREFIX = `${WAIT_PATH}/`;

/**
 * The arrival of a `POST /wait-for-second-party/ID[?query]`, or undefined for anything else
 * (another method, path or an id that does not decode: Hono answers those, as before).
 */
function directArrival(exchange: DirectExchange) {
  if (exchange.method !== "POST" || !exchange.target.startsWith(PREFIX)) return undefined;
  const query = exchange.target.indexOf("?");
  const path = query < 0 ? exchange.target : exchange.target.slice(0, query);
  const raw = path.slice(PREFIX.length);
  if (raw.length === 0 || raw.includes("/")) return undefined;
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    return undefined;
  }
  const timeoutQuery = query < 0
    ? undefined
    : new URLSearchParams(exchange.target.slice(query + 1)).get("timeout_ms") ?? undefined;
  return {
    id,
    timeoutQuery,
    contentLength: exchange.header("content-length") ?? null,
    body: (max: number) => exchange.body(max),
    address: exchange.remoteAddr.hostname,
    signal: exchange.signal,
    presence: exchange.presence,
  };
}

/** Writes an answer of the arrival function as Hono would (JSON, or no body). */
function respond(exchange: DirectExchange, answer: Answer): void {
  if (answer.body === null) exchange.respond(answer.status, answer.headers, "");
  else {
    exchange.respond(
      answer.status,
      isEmpty(answer.headers) ? JSON_HEADERS : { ...answer.headers, ...JSON_HEADERS },
      JSON.stringify(answer.body),
    );
  }
}

const JSON_HEADERS: Record<string, string> = { "content-type": "application/json" };

function isEmpty(headers: Record<string, string>): boolean {
  for (const _ in headers) return false;
  return true;
}
