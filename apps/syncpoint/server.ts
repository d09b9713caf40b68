/**
 * The syncpoint service as a process part: the handler behind packages/net/http1.ts (which
 * sees a party leave whatever it sent, keeps half-closed parties, and survives running out
 * of file descriptors), and a drain: readiness goes false first, then the listener stops and
 * every waiting party is answered 503 (clients retry elsewhere).
 *
 * @module
 */
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

/** Service settings; every field has a default in {@link DEFAULTS}. */
export interface SyncpointConfig {
  /** Interface to listen on. */
  hostname: string;
  /** TCP port; 0 picks a free one. */
  port: number;
  /** How long a first party waits by default. */
  defaultTimeoutMs: number;
  /** Cap on `?timeout_ms=`. */
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
   * 0: no delay.
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

/** A started service. */
export interface RunningSyncpoint {
  /** Base URL, e.g. http://127.0.0.1:8080 */
  url: URL;
  /** The rendezvous the service pairs through. */
  rendezvous: Rendezvous;
  /**
   * Drains: readiness false at once, serving for `drainMs`, then stops accepting, answers
   * waiting parties with 503 and resolves when all is done. Idempotent.
   */
  shutdown(): Promise<void>;
  /** True from the start of shutdown(). */
  readonly draining: boolean;
}

const log = getLogger(["duet", "syncpoint"]);

/**
 * Starts the service and resolves once it listens.
 *
 * @param overrides Settings that differ from {@link DEFAULTS}.
 * @throws what listening throws (`Deno.errors.AddrInUse`, `PermissionDenied`), and
 *   RangeError on invalid limits (maxWaiting < 1, a negative limit, arrivalBurst < 1).
 */
export async function startSyncpoint(
  overrides: Partial<SyncpointConfig> = {},
): Promise<RunningSyncpoint> {
  const config = { ...DEFAULTS, ...overrides };
  let rendezvous: Rendezvous;
  let server: Http1Server | undefined;
  let draining = false;
  const metrics = new SyncpointMetrics(() => rendezvous.waiting, {
    waitingBytes: () => rendezvous.waitingBytes,
    listener: () => server,
  });
  const limits = {
    maxWaiting: config.maxWaiting,
    maxWaitingBytes: config.maxWaitingBytes,
    maxWaitingPerAddress: config.maxWaitingPerAddress,
  };
  if (config.redisUrl) {
    const { RedisRendezvous } = await import("./redis_rendezvous.ts");
    rendezvous = await RedisRendezvous.connect(config.redisUrl, {
      ...limits,
      events: metrics.events,
      ...(config.redisPrefix ? { prefix: config.redisPrefix } : {}),
    });
  } else {
    rendezvous = new LocalRendezvous({ ...limits, events: metrics.events });
  }
  try {
    const handlerOptions: HandlerOptions = {
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
          return draining;
        },
      },
    };
    const app = createApp(handlerOptions);
    const arrivals = createArrivals(handlerOptions);
    server = await serveHttp1({
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
  } catch (error) {
    await rendezvous.close(); // so that a Redis connection does not outlive the failure
    throw error;
  }
  const running = server;
  const addr = server.addr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  const url = new URL(`http://${host}:${addr.port}`);
  log.info("Syncpoint listening on {url} ({store})", {
    url: url.href,
    store: config.redisUrl ? "shared through Redis" : "in memory",
  });
  let stopping: Promise<void> | undefined;
  return {
    url,
    rendezvous,
    get draining() {
      return draining;
    },
    shutdown() {
      stopping ??= (async () => {
        draining = true;
        if (config.drainMs > 0) {
          log.info("Draining: /healthz answers 503; serving for {ms} ms more", {
            ms: config.drainMs,
          });
          await new Promise((resolve) => setTimeout(resolve, config.drainMs));
        }
        const waiting = rendezvous.waiting;
        const drained = running.shutdown(); // stop accepting; wait for in-flight responses
        await rendezvous.close(); // which answers the waiting parties with 503
        await drained;
        log.info("Syncpoint stopped; {waiting} waiting parties were answered 503", { waiting });
      })();
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
