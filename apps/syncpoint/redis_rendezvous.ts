/**
 * A rendezvous shared by several syncpoint instances through Redis.
 *
 * The pairing protocol (all state changes are single Lua scripts, so they are atomic):
 *
 * 1. A party arrives on instance A. A registers the party locally under a fresh token
 *    *before* asking Redis (the wake-up from another instance may beat Redis's reply).
 * 2. `register-or-claim` on key `wait:<id>`: if free, it stores {state: waiting, token,
 *    instance A, payload} with a TTL and the party waits on A. If a party is waiting, the
 *    key becomes {state: claimed, claim: token2}; if it is already claimed, the newcomer
 *    is a third party and gets 409.
 * 3. The claimer (instance B) publishes `wake` on A's channel and waits for A's `ack`.
 *    A settles its party as paired (if it is still there), deletes the key, and acks
 *    `delivered`; if its party left or timed out, it deletes the key and acks `gone`, and
 *    B starts the arrival over, usually as a first party. So nobody is ever paired with a
 *    party that left. No ack in time (A died): B deletes the key and starts over.
 * 4. A waiting party that times out or hangs up deletes its key only if it is still
 *    `waiting` under its token; a claim in flight then finds it gone (step 3).
 *
 * Redis unreachable: arrivals fail at once with `backend_unavailable` (503); ioredis
 * reconnects by itself and re-subscribes. Pairs waiting when Redis restarts are lost
 * (Redis keeps no data here); those parties time out.
 *
 * @module
 */
import { Redis } from "ioredis";
import { getLogger } from "@logtape/logtape";
import {
  type Arrival,
  ledgerFor,
  type Outcome,
  payloadCost,
  type Refusal,
  type Rendezvous,
  type RendezvousEvents,
  type RendezvousLimits,
} from "./rendezvous.ts";
import type { WaitingLedger } from "./limits.ts";

/** Options of {@link RedisRendezvous.connect}; the limits apply to this instance. */
export interface RedisRendezvousOptions extends RendezvousLimits {
  /** Most parties waiting at once on this instance. */
  maxWaiting: number;
  /** Event hooks for metrics. */
  events?: RendezvousEvents;
  /** Key and channel prefix, so several services can share one Redis. */
  prefix?: string;
  /** How long a claimer waits for the first party's instance to confirm (2,000 ms). */
  ackTimeoutMs?: number;
  /** Milliseconds a Redis command may take before it counts as a failure (1,000 ms). */
  commandTimeoutMs?: number;
}

// KEYS[1] wait key; ARGV: token, instance, payload, has-payload, wait ttl ms, claim ttl ms.
const REGISTER_OR_CLAIM = `
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'waiting', 'token', ARGV[1], 'instance', ARGV[2],
    'payload', ARGV[3], 'has', ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'registered'}
elseif state == 'waiting' then
  redis.call('HSET', KEYS[1], 'state', 'claimed', 'claim', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  local f = redis.call('HMGET', KEYS[1], 'token', 'instance', 'payload', 'has')
  return {'claimed', f[1], f[2], f[3], f[4]}
end
return {'conflict'}`;

// KEYS[1] wait key; ARGV: field, value. Deletes the key if field == value.
const DELETE_IF = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  if ARGV[1] ~= 'token' or redis.call('HGET', KEYS[1], 'state') == 'waiting' then
    return redis.call('DEL', KEYS[1])
  end
end
return 0`;

interface Wake {
  type: "wake";
  id: string;
  waiter: string;
  claim: string;
  replyTo: string;
  payload: string | null;
}

interface Ack {
  type: "ack";
  claim: string;
  delivered: boolean;
}

interface LocalParty {
  id: string;
  since: number;
  settle(outcome: Outcome): void;
}

type RedisWithScripts = Redis & {
  registerOrClaim(key: string, ...args: (string | number)[]): Promise<string[]>;
  deleteIf(key: string, field: string, value: string): Promise<number>;
};

const log = getLogger(["duet", "syncpoint", "redis"]);
const MAX_ATTEMPTS = 5;

/** Pairs parties that reached different instances, through one Redis server. */
export class RedisRendezvous implements Rendezvous {
  readonly #redis: RedisWithScripts;
  readonly #subscriber: Redis;
  readonly #instance = crypto.randomUUID();
  readonly #parties = new Map<string, LocalParty>(); // by token
  readonly #acks = new Map<string, (ack: Ack) => void>(); // by claim token
  readonly #options: { prefix: string; ackTimeoutMs: number };
  readonly #events: RendezvousEvents;
  readonly #ledger: WaitingLedger;
  #closing = false;

  private constructor(redis: Redis, subscriber: Redis, options: RedisRendezvousOptions) {
    this.#redis = redis as RedisWithScripts;
    this.#subscriber = subscriber;
    this.#events = options.events ?? {};
    this.#ledger = ledgerFor(options);
    this.#options = {
      prefix: options.prefix ?? "duet:syncpoint",
      ackTimeoutMs: options.ackTimeoutMs ?? 2_000,
    };
    redis.defineCommand("registerOrClaim", { numberOfKeys: 1, lua: REGISTER_OR_CLAIM });
    redis.defineCommand("deleteIf", { numberOfKeys: 1, lua: DELETE_IF });
    subscriber.on("message", (_channel: string, message: string) => this.#onMessage(message));
  }

  /**
   * Connects to Redis and subscribes to this instance's channel. When Redis is not reachable
   * yet, it still returns: arrivals get `backend_unavailable` until Redis answers.
   */
  static async connect(url: string, options: RedisRendezvousOptions): Promise<RedisRendezvous> {
    const commandTimeout = options.commandTimeoutMs ?? 1_000;
    const common = {
      lazyConnect: true,
      connectTimeout: 2_000,
      // Reconnect for ever, at most every 2 s: the service recovers when Redis returns.
      retryStrategy: (attempt: number) => Math.min(attempt * 100, 2_000),
    };
    // Fail fast instead of queueing commands while Redis is away.
    const redis = new Redis(url, {
      ...common,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout,
    });
    const subscriber = new Redis(url, { ...common, maxRetriesPerRequest: null });
    for (const [name, client] of [["commands", redis], ["subscriber", subscriber]] as const) {
      // An outage is logged once when it starts (and once when it ends), not at every
      // reconnection attempt.
      let down = false;
      client.on("error", (error: Error) => {
        if (down) {
          log.debug(`Redis ${name} connection still down: {message}`, { message: error.message });
        } else {
          down = true;
          log.warn(`Redis ${name} connection: {message}`, { message: error.message });
        }
      });
      client.on("ready", () => {
        down = false;
        log.info(`Redis ${name} connection ready`);
      });
    }
    const rendezvous = new RedisRendezvous(redis, subscriber, options);
    await Promise.allSettled([redis.connect(), subscriber.connect()]);
    // Queued until the subscriber connects, and re-subscribed by ioredis after reconnects.
    subscriber.subscribe(rendezvous.#channel(rendezvous.#instance)).catch((error: Error) => {
      log.warn("Cannot subscribe yet: {message}", { message: error.message });
    });
    return rendezvous;
  }

  get waiting(): number {
    return this.#ledger.waiting;
  }

  get waitingBytes(): number {
    return this.#ledger.bytes;
  }

  /** Whether both Redis connections are up (for health checks). */
  get healthy(): boolean {
    return !this.#closing && this.#redis.status === "ready" && this.#subscriber.status === "ready";
  }

  #key(id: string): string {
    return `${this.#options.prefix}:wait:${id}`;
  }

  #channel(instance: string): string {
    return `${this.#options.prefix}:instance:${instance}`;
  }

  async arrive(arrival: Arrival): Promise<Outcome> {
    const started = performance.now();
    if (arrival.signal?.aborted) {
      // Gone before it arrived: neither held nor paired (see LocalRendezvous).
      this.#events.departed?.();
      return { kind: "departed", waitedMs: 0 };
    }
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (this.#closing) return refused("shutting_down", started);
      const outcome = await this.#attempt(arrival, started);
      if (outcome !== "again") return outcome;
    }
    return refused("conflict", started);
  }

  async #attempt(arrival: Arrival, started: number): Promise<Outcome | "again"> {
    const { id, payload } = arrival;
    const token = crypto.randomUUID();
    const bytes = payloadCost(arrival);
    const refusal = this.#ledger.admit(arrival.address, bytes);
    // Registered before Redis is asked: the wake-up can arrive before Redis's reply.
    const party = refusal ? undefined : this.#prepareToWait(token, arrival, bytes);
    let reply: string[];
    try {
      reply = await this.#redis.registerOrClaim(
        this.#key(id),
        token,
        this.#instance,
        payload ?? "",
        payload === null ? "0" : "1",
        arrival.timeoutMs + 5_000, // outlives its party; cleans up after a crashed instance
        this.#options.ackTimeoutMs + 1_000,
      );
    } catch (error) {
      party?.cancel();
      // Expected while Redis is away, and then at every arrival: the connection's outage
      // is logged once (connect()); this is detail.
      log.debug("Redis unavailable: {message}", { message: (error as Error).message });
      return refused("backend_unavailable", started);
    }
    switch (reply[0]) {
      case "registered":
        if (!party) {
          // Full here: undo the registration (it cannot have been claimed for long).
          await this.#redis.deleteIf(this.#key(id), "token", token).catch(() => 0);
          return refused(refusal ?? "capacity", started);
        }
        return party.hold();
      case "claimed": {
        party?.cancel();
        const [, waiter, instance, storedPayload, has] = reply as string[];
        return await this.#claim(id, token, waiter!, instance!, payload, started) ??
          {
            kind: "paired",
            role: "second",
            waitedMs: performance.now() - started,
            peerPayload: has === "1" ? storedPayload! : null,
          };
      }
      default:
        party?.cancel();
        return refused("conflict", started);
    }
  }

  /** Wakes the waiting party on its instance; undefined when it confirmed the pair. */
  async #claim(
    id: string,
    claim: string,
    waiter: string,
    instance: string,
    payload: string | null,
    started: number,
  ): Promise<"again" | Outcome | undefined> {
    const ack = new Promise<Ack | undefined>((resolve) => {
      const timer = setTimeout(() => {
        this.#acks.delete(claim);
        resolve(undefined);
      }, this.#options.ackTimeoutMs);
      this.#acks.set(claim, (ack) => {
        clearTimeout(timer);
        this.#acks.delete(claim);
        resolve(ack);
      });
    });
    const wake: Wake = { type: "wake", id, waiter, claim, replyTo: this.#instance, payload };
    try {
      await this.#redis.publish(this.#channel(instance), JSON.stringify(wake));
    } catch {
      this.#acks.get(claim)?.({ type: "ack", claim, delivered: false });
      await this.#redis.deleteIf(this.#key(id), "claim", claim).catch(() => 0);
      return refused("backend_unavailable", started);
    }
    const answer = await ack;
    if (answer?.delivered) return undefined;
    if (!answer) {
      log.warn("No answer from instance {instance} for a claim; starting over", { instance });
      await this.#redis.deleteIf(this.#key(id), "claim", claim).catch(() => 0);
    }
    return "again";
  }

  #prepareToWait(token: string, arrival: Arrival, bytes: number) {
    const { id, timeoutMs, address } = arrival;
    const since = performance.now();
    const result = Promise.withResolvers<Outcome>();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let signal: AbortSignal | undefined;
    const leave = (outcome: Outcome, count?: () => void) => {
      if (this.#parties.get(token) !== party) return;
      count?.();
      party.settle(outcome);
      // Only if still waiting under our token: a claim in flight finds the key gone-or-ours
      // and is answered "gone" by #onMessage.
      this.#redis.deleteIf(this.#key(id), "token", token).catch(() => 0);
    };
    const onAbort = () =>
      leave({ kind: "departed", waitedMs: performance.now() - since }, this.#events.departed);
    const party: LocalParty = {
      id,
      since,
      settle: (outcome) => {
        this.#parties.delete(token);
        this.#ledger.release(address, bytes);
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        result.resolve(outcome);
      },
    };
    this.#parties.set(token, party);
    return {
      hold: (): Promise<Outcome> => {
        // Paired already: the wake-up beat Redis's "registered" reply.
        if (this.#parties.get(token) !== party) return result.promise;
        timer = setTimeout(
          () =>
            leave(
              { kind: "refused", reason: "timeout", waitedMs: performance.now() - since },
              this.#events.timedOut,
            ),
          timeoutMs,
        );
        signal = arrival.signal;
        if (signal?.aborted) onAbort();
        else signal?.addEventListener("abort", onAbort, { once: true });
        return result.promise;
      },
      cancel: () => {
        if (this.#parties.get(token) !== party) return;
        this.#parties.delete(token);
        this.#ledger.release(address, bytes);
      },
    };
  }

  #onMessage(text: string): void {
    let message: Wake | Ack;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (message.type === "ack") {
      this.#acks.get(message.claim)?.(message);
    } else if (message.type === "wake") {
      this.#onWake(message).catch((error) => log.warn("Wake-up failed: {error}", { error }));
    }
  }

  async #onWake(wake: Wake): Promise<void> {
    const party = this.#parties.get(wake.waiter);
    const delivered = party !== undefined;
    if (party) {
      const waitedMs = performance.now() - party.since;
      party.settle({ kind: "paired", role: "first", waitedMs, peerPayload: wake.payload });
      this.#events.paired?.(waitedMs);
    }
    // Free the id before the second party is answered, so a later party starts afresh.
    await this.#redis.deleteIf(this.#key(wake.id), "claim", wake.claim).catch(() => 0);
    const ack: Ack = { type: "ack", claim: wake.claim, delivered };
    await this.#redis.publish(this.#channel(wake.replyTo), JSON.stringify(ack));
  }

  async close(): Promise<void> {
    this.#closing = true;
    const parties = [...this.#parties.entries()];
    for (const [token, party] of parties) {
      party.settle({
        kind: "refused",
        reason: "shutting_down",
        waitedMs: performance.now() - party.since,
      });
      await this.#redis.deleteIf(this.#key(party.id), "token", token).catch(() => 0);
    }
    for (const resolve of this.#acks.values()) {
      resolve({ type: "ack", claim: "", delivered: false });
    }
    this.#redis.disconnect();
    this.#subscriber.disconnect();
  }
}

function refused(reason: Refusal, started: number): Outcome {
  return { kind: "refused", reason, waitedMs: performance.now() - started };
}
