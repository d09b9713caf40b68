/**
 * The syncpoint service as a process part: the handler behind `Deno.serve`, and a
 * shutdown that stops accepting, answers every waiting party with 503 and returns.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createApp } from "./handler.ts";
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
  /** Largest payload in bytes. */
  maxPayloadBytes: number;
  /** Share the rendezvous space with other instances through this Redis server. */
  redisUrl?: string;
  /** Prefix of the Redis keys and channels (instances that pair share one prefix). */
  redisPrefix?: string;
}

/** The defaults of `duet syncpoint`. */
export const DEFAULTS: SyncpointConfig = {
  hostname: "127.0.0.1",
  port: 8080,
  defaultTimeoutMs: 10_000,
  maxTimeoutMs: 60_000,
  maxWaiting: 16_000,
  maxPayloadBytes: 64 * 1024,
};

/** A started service. */
export interface RunningSyncpoint {
  /** Base URL, e.g. http://127.0.0.1:8080 */
  url: URL;
  /** The rendezvous the service pairs through. */
  rendezvous: Rendezvous;
  /** Stops accepting, answers waiting parties with 503, and resolves when all is done. */
  shutdown(): Promise<void>;
}

const log = getLogger(["duet", "syncpoint"]);

/** Starts the service and resolves once it listens. */
export async function startSyncpoint(
  overrides: Partial<SyncpointConfig> = {},
): Promise<RunningSyncpoint> {
  const config = { ...DEFAULTS, ...overrides };
  let rendezvous: Rendezvous;
  const metrics = new SyncpointMetrics(() => rendezvous.waiting);
  if (config.redisUrl) {
    const { RedisRendezvous } = await import("./redis_rendezvous.ts");
    rendezvous = await RedisRendezvous.connect(config.redisUrl, {
      maxWaiting: config.maxWaiting,
      events: metrics.events,
      ...(config.redisPrefix ? { prefix: config.redisPrefix } : {}),
    });
  } else {
    rendezvous = new LocalRendezvous({ maxWaiting: config.maxWaiting, events: metrics.events });
  }
  const app = createApp({ ...config, rendezvous, metrics });
  const listening = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname: config.hostname,
    port: config.port,
    onListen: (addr) => listening.resolve(addr as Deno.NetAddr),
    onError: (error) => {
      log.error("Unhandled error: {error}", { error });
      return new Response(null, { status: 500 });
    },
  }, app.fetch);
  const addr = await listening.promise;
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
    shutdown() {
      stopping ??= (async () => {
        const waiting = rendezvous.waiting;
        const drained = server.shutdown(); // stop accepting; wait for in-flight responses
        await rendezvous.close(); // which answers the waiting parties with 503
        await drained;
        log.info("Syncpoint stopped; {waiting} waiting parties were answered 503", { waiting });
      })();
      return stopping;
    },
  };
}
